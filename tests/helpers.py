"""Helpers shared by the integration tests."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines import cli

REPO = Path(__file__).resolve().parent.parent


def ingest(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    """Run ``lakeshard ingest ARGS --json`` in this process (the shared SparkSession)."""
    code = cli.main(["ingest", *args, "--json"])
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1]) if code == 0 else {}
    return code, summary, err


def ingest_quietly(*args: str) -> dict[str, Any]:
    """Run ``lakeshard ingest ARGS --json`` in this process where no capsys is at hand."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["ingest", *args, "--json"])
    assert code == 0, f"ingest {args} exited {code}"
    summary: dict[str, Any] = json.loads(out.getvalue().strip().splitlines()[-1])
    return summary


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipelines ARGS`` as a separate process, as a user or cron would."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def accounting_holds(summary: dict[str, Any]) -> bool:
    return bool(
        summary["rows_read"]
        == summary["rows_written"]
        + summary["rows_duplicate"]
        + summary["rows_quarantined"]
        + summary["rows_dropped"]
    )
