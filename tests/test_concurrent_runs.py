"""Overlapping runs and a scheduler's SIGTERM, with real processes (kill trials: test_chaos.py).

Kept apart from the kill trials so that the two long files run on different test workers.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from pipelines.config import resolve_config
from tests.helpers import last_json_line
from tests.test_chaos import _ingest_process, _read, _run_log_problems, _snapshot, raw

__all__ = ["raw"]  # the module fixture, shared with the kill trials


@pytest.mark.slow  # two ingests, each in its own Spark process
def test_two_overlapping_runs_take_each_file_once(
    spark: SparkSession, raw: Path, tmp_path: Path
) -> None:
    lake_dir = tmp_path / "lake"
    both = [_ingest_process(raw, lake_dir, "--wait", "300") for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in both]
    assert [p.returncode for p in both] == [0, 0], [err[-2000:] for _, err in outputs]
    summaries = [last_json_line(out) for out, _ in outputs]

    files = summaries[0]["files_seen"]
    assert sorted(s["files_ingested"] for s in summaries) == [0, files]
    assert sorted(s["files_skipped"] for s in summaries) == [0, files]
    snapshot = _snapshot(lake_dir)
    assert (
        len(snapshot["table"])
        == len(set(snapshot["table"]))
        == max(s["rows_written"] for s in summaries)
    )
    assert _run_log_problems(lake_dir, snapshot) == []
    runs = _read(resolve_config(lake=str(lake_dir)).runs_uri("events"))
    took = [r["run_id"] for r in runs if r["status"] == "succeeded" and r["rows_read"]]
    assert took == [s["run_id"] for s in summaries if s["files_ingested"]]


@pytest.mark.jvm  # the ingest it stops runs in a child process, without the fixture
def test_sigterm_records_the_run_as_failed_and_frees_the_dataset(raw: Path, tmp_path: Path) -> None:
    """A scheduler stopping the job (SIGTERM) is not a crash: the run says so and lets go."""
    lake_dir = tmp_path / "lake"
    process = _ingest_process(raw, lake_dir)
    assert process.stderr is not None
    for line in process.stderr:
        if "reading" in line:
            process.send_signal(signal.SIGTERM)  # the driver only, as a scheduler would
            break
    _, err = process.communicate(timeout=300)
    assert process.returncode == 143, err[-2000:]
    assert "error: terminated (SIGTERM)" in err
    records = _read(resolve_config(lake=str(lake_dir)).runs_uri("events"))
    assert sorted(r["status"] for r in records) == ["failed", "running"]
    assert next(r["error"] for r in records if r["status"] == "failed") == "terminated (SIGTERM)"
    # The lease is free: its last claim is marked released.
    claims = list((lake_dir / "_lakeshard" / "leases" / "events").glob("*.json"))
    assert [json.loads(c.read_text())["released"] for c in claims] == [True]
