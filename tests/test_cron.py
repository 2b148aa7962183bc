"""The crontab's lines, run the way cron runs them: ``/bin/sh -c`` with cron's environment only
(the crontab's own assignments, ``HOME``, ``PATH=/usr/bin:/bin``), no terminal, no stdin."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import deltalake
import pytest

from pipelines import sample
from pipelines.config import resolve_config
from tests.helpers import REPO

pytestmark = pytest.mark.jvm

CRONTAB = REPO / "infra" / "cron" / "crontab"


def crontab() -> tuple[dict[str, str], dict[str, str]]:
    """The crontab's variable assignments, and each job's command by its job name."""
    assignments: dict[str, str] = {}
    commands: dict[str, str] = {}
    for line in CRONTAB.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if sep and " " not in name.strip():
            assignments[name.strip()] = value.strip()
            continue
        command = line.split(None, 5)[5]  # after the five time fields
        commands[command.split()[1]] = command
    return assignments, commands


def start_tick(command: str, home: Path, landing: Path) -> subprocess.Popen[str]:
    """Start one job as cron would, with the crontab's variables pointed at this test."""
    assignments, _ = crontab()
    env = {**assignments, "LAKESHARD_HOME": str(REPO), "LAKESHARD_LANDING": str(landing)}
    env["HOME"] = str(home)
    return subprocess.Popen(
        ["/bin/sh", "-c", command],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # no controlling terminal
    )


def write_env_file(home: Path, lake: Path, mode: int = 0o600) -> Path:
    path = home / ".config/lakeshard/cron.env"
    path.parent.mkdir(parents=True, exist_ok=True)
    # The JVM artifacts `make env` resolved, as a user whose cron HOME differs would set it.
    cache = resolve_config().cache
    path.write_text(f"LAKESHARD_LAKE={lake}\nLAKESHARD_CACHE={cache}\n")
    path.chmod(mode)
    return path


def test_the_crontab_names_every_scheduled_verb() -> None:
    assignments, commands = crontab()
    assert assignments["PATH"] == "/usr/bin:/bin"
    assert set(commands) == {
        "ingest-events",
        "ingest-clicks",
        "maintain-events",
        "maintain-clicks",
        "status",
    }
    for job in ("ingest-events", "ingest-clicks", "maintain-events", "maintain-clicks"):
        assert "--wait" in commands[job], job


def test_two_ticks_over_one_slow_run_wait_and_nothing_doubles(tmp_path: Path) -> None:
    home, lake, landing = tmp_path / "home", tmp_path / "lake", tmp_path / "landing"
    sample.write_events(landing / "events")
    write_env_file(home, lake)
    _, commands = crontab()
    ticks = [start_tick(commands["ingest-events"], home, landing) for _ in range(2)]
    outcomes = [tick.communicate(timeout=900) for tick in ticks]
    assert [tick.returncode for tick in ticks] == [0, 0], outcomes

    logs = sorted((home / ".local/state/lakeshard/log").glob("ingest-events-*.log"))
    assert len(logs) == 2
    summaries = []
    for log in logs:
        text = log.read_text()
        assert "lakeshard-cron: ingest-events: exit 0" in text
        summaries.append(
            json.loads(next(ln for ln in reversed(text.splitlines()) if ln[:1] == "{"))
        )
    written = sorted(s["rows_written"] for s in summaries)
    assert written[0] == 0  # the tick that waited found every file already taken
    assert written[1] > 0
    assert sorted(s["files_skipped"] for s in summaries) == [0, 3]
    table = deltalake.DeltaTable(str(lake / "tables/events")).to_pyarrow_table()
    assert table.num_rows == written[1]  # nothing doubled
    hashes = table.column("_content_hash").to_pylist()
    assert len(set(hashes)) == len(hashes)


def test_a_readable_env_file_is_refused_and_the_exit_code_passes_through(tmp_path: Path) -> None:
    home, lake, landing = tmp_path / "home", tmp_path / "lake", tmp_path / "landing"
    env_file = write_env_file(home, lake, mode=0o644)
    _, commands = crontab()
    tick = start_tick(commands["status"], home, landing)
    _, err = tick.communicate(timeout=120)
    assert tick.returncode == 2
    assert f"{env_file} has mode 644; it holds secrets: chmod 600 it" in err

    env_file.chmod(0o600)
    tick = start_tick(commands["status"], home, landing)
    _, err = tick.communicate(timeout=120)
    assert tick.returncode == 0, err
    (log,) = (home / ".local/state/lakeshard/log").glob("status-*.log")
    report = json.loads(next(ln for ln in reversed(log.read_text().splitlines()) if ln[:1] == "{"))
    assert [d["dataset"] for d in report["datasets"]] == ["clicks", "events"]
    assert os.stat(log).st_size > 0
