"""Progress goes through the ``lakeshard`` logger: stderr by default, --quiet and --verbose."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from pipelines.cli.parser import build_parser
from pipelines.errors import Terminated, clear_stop, request_stop
from pipelines.runs import progress


@pytest.fixture(autouse=True)
def fresh_logger() -> Iterator[None]:
    """Each test starts from an unconfigured ``lakeshard`` logger and leaves it as it was."""
    logger = logging.getLogger("lakeshard")
    saved = (logger.handlers[:], logger.level, logger.propagate, logger.disabled)
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
    logger.propagate, logger.disabled = True, False
    yield
    logger.handlers[:], logger.level, logger.propagate, logger.disabled = saved
    clear_stop()


def _no_logging_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a plain script or notebook: no handler anywhere (pytest adds its capture handlers
    to the root logger for each test phase; set them aside for this one)."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(logging.getLogger("lakeshard"), "handlers", [])


def test_levels_choose_what_reaches_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    progress.configure(progress.NORMAL)
    progress.progress("reading 3 file(s)")
    progress.debug("detail")
    progress.configure(progress.QUIET)
    progress.progress("hidden")
    progress.warn("constraint c not added")
    progress.configure(progress.VERBOSE)
    progress.debug("detail shown")
    assert capsys.readouterr().err.splitlines() == [
        "lakeshard: reading 3 file(s)",
        "lakeshard: warning: constraint c not added",
        "lakeshard: detail shown",
    ]


def test_a_library_caller_sees_progress_unless_it_configured_logging(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_logging_configured(monkeypatch)
    logger = logging.getLogger("lakeshard")
    mine: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            mine.append(record.getMessage())

    progress.info("shown by default")
    assert capsys.readouterr().err == "lakeshard: shown by default\n"
    logger.handlers.clear()
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    progress.info("to the application's handler")
    assert capsys.readouterr().err == ""
    assert mine == ["to the application's handler"]


def test_progress_is_the_stop_checkpoint_and_info_is_not(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_logging_configured(monkeypatch)
    request_stop()
    progress.info("cleanup goes on")
    with pytest.raises(Terminated):
        progress.progress("next step")
    assert "cleanup goes on" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--quiet", "-q", "--verbose", "-v"])
def test_every_verb_takes_quiet_and_verbose(flag: str) -> None:
    parser = build_parser()
    for verb in (["ingest", "d", "src"], ["verify", "d"], ["export", "d", "--shards", "2"]):
        args = parser.parse_args([*verb, flag])
        assert args.quiet or args.verbose
