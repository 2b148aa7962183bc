"""Progress of long work, through the ``lakeshard`` logger; also the stop checkpoint.

The command line shows these lines on stderr as ``lakeshard: <message>`` (``--quiet``: warnings
only, ``--verbose``: debug too). Called as a library, lakeshard adds that stderr handler itself
unless logging is already configured for it (a handler on ``lakeshard`` or an ancestor), so
notebooks see progress and applications keep control. Metrics and alerts hook in here.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from pipelines.errors import raise_if_stopped

LOGGER = logging.getLogger("lakeshard")
QUIET, NORMAL, VERBOSE = logging.WARNING, logging.INFO, logging.DEBUG


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is logged (tests and notebooks swap it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("lakeshard: %(message)s"))

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always the current sys.stderr


def configure(level: int = NORMAL) -> None:
    """Show the ``lakeshard`` logger's lines at ``level`` and above on stderr (the CLI's way)."""
    if not any(isinstance(h, _StderrHandler) for h in LOGGER.handlers):
        LOGGER.addHandler(_StderrHandler())
    LOGGER.setLevel(level)
    LOGGER.propagate = False


def _ensure_shown() -> None:
    if not LOGGER.hasHandlers():  # nobody configured logging: behave like the CLI
        configure(NORMAL)


def progress(message: str) -> None:
    """Report a step; also a checkpoint where a requested stop (SIGTERM) happens."""
    raise_if_stopped()
    info(message)


def info(message: str) -> None:
    """Report a step without the stop checkpoint (for cleanup that must run to its end)."""
    _ensure_shown()
    LOGGER.info(message)


def warn(message: str) -> None:
    """Something the user should know that does not stop the run (``warning: ...``)."""
    _ensure_shown()
    LOGGER.warning("warning: %s", message)


def debug(message: str) -> None:
    _ensure_shown()
    LOGGER.debug(message)
