"""``lakeshard status``: the lake's state and its runs, read without Spark or Java."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import deltalake
import pytest
from pyspark.sql import SparkSession

from pipelines import sample
from pipelines.lake import runlog
from tests.conftest import SCHEMAS
from tests.helpers import ingest_quietly, run_cli

pytestmark = pytest.mark.jvm


def status_json(lake: Path, *args: str) -> dict[str, Any]:
    """``lakeshard status --json`` as a user runs it, with no Java to be found: a status
    that tried to start a JVM would fail here."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "SPARK_HOME")}
    env["PATH"] = os.path.dirname(sys.executable)  # no java on it
    done = run_cli(
        "status", *args, "--lake", str(lake), "--schemas", str(SCHEMAS), "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_status_reports_the_table_its_runs_and_the_quarantine(
    spark: SparkSession, tmp_path: Path
) -> None:
    sample.write_events(tmp_path / "raw")
    lake = tmp_path / "lake"
    args = ["events", str(tmp_path / "raw"), "--lake", str(lake), "--schemas", str(SCHEMAS)]
    first = ingest_quietly(*args)
    second = ingest_quietly(*args)  # nothing new

    report = status_json(lake, "events")
    (events,) = report["datasets"]
    table = deltalake.DeltaTable(str(lake / "tables/events"))
    assert events["table_version"] == table.version() == first["table_version"]
    assert events["rows"] == table.to_pyarrow_table().num_rows == first["rows_written"]
    assert events["files"] == len(table.file_uris())
    assert events["bytes"] == sum(os.path.getsize(p) for p in table.file_uris())
    assert events["schema_version"] == 1
    assert events["lease"] is None
    assert events["findings"] == []
    assert events["spark_free_readable"] is True

    assert [r["run_id"] for r in events["runs"]] == [second["run_id"], first["run_id"]]
    newest, oldest = events["runs"]
    for key in ("rows_read", "rows_written", "rows_duplicate", "rows_quarantined"):
        assert oldest[key] == first[key], key
        assert newest[key] == second[key], key
    assert oldest["status"] == newest["status"] == "succeeded"
    assert oldest["duration_s"] > 0

    backlog = events["quarantine_backlog"]
    assert backlog["rows"] == first["rows_quarantined"] == sum(backlog["reasons"].values())
    assert any("cannot read 'oops' as bigint" in reason for reason in backlog["reasons"])

    # A run whose driver died: its claim and its "running" record are left behind.
    dead = {
        "run_id": "20260101T000000Z-deadbeef",
        "host": socket.gethostname(),
        "pid": 2**22 + 12345,  # above the default pid_max: no such process
        "acquired_at": time.time(),
        "expires_at": time.time() + 3600,
    }
    leases = lake / "_lakeshard/leases/events"
    top = max(int(p.stem) for p in leases.glob("*.json"))
    (leases / f"{top + 1:012d}.json").write_text(json.dumps(dead))
    runlog.record_run(
        spark,
        str(lake / "_lakeshard/runs/events"),
        {
            "run_id": dead["run_id"],
            "command": "ingest",
            "dataset": "events",
            "status": "running",
            "started_at": datetime.now(UTC),
            "lakeshard_version": "test",
        },
    )
    names = [d["dataset"] for d in status_json(lake)["datasets"]]  # every declared dataset
    assert names == ["clicks", "events"]
    events = status_json(lake, "events")["datasets"][0]
    assert events["lease"]["run_id"] == dead["run_id"]
    assert events["lease"]["alive"] is False
    assert events["runs"][0]["run_id"] == dead["run_id"]
    assert events["runs"][0]["status"] == "running"
    (finding,) = events["findings"]
    assert finding["kind"] == "abandoned"
    assert finding["runs"] == [dead["run_id"]]


def test_status_of_a_lake_never_written_is_an_ordinary_success(tmp_path: Path) -> None:
    report = status_json(tmp_path / "lake")
    assert [d["dataset"] for d in report["datasets"]] == ["clicks", "events"]
    for dataset in report["datasets"]:
        assert dataset["table_version"] is None
        assert dataset["runs"] == []
        assert dataset["quarantine_backlog"] == {"rows": 0, "reasons": {}}
