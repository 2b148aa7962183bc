"""Monitoring end to end: run metrics on a real Pushgateway, an anomaly found in real runs, and
alerts delivered once to a webhook and through a real Alertmanager (both built from the Go
module proxy by infra/go/build.sh and cached)."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyspark.sql import SparkSession

from infra.monitoring import servers
from pipelines import cli
from pipelines.config import resolve_config
from pipelines.lake import runlog
from pipelines.ops.status import run_history
from tests.helpers import Receiver, dead_claim, declare, ingest_quietly

pytestmark = pytest.mark.jvm


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


def monitor(lake: Path, schemas: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    """``lakeshard monitor --json`` in this process: exit code and report."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(
            ["monitor", *flags, "--lake", str(lake), "--schemas", str(schemas), "--json"]
        )
    report: dict[str, Any] = json.loads(out.getvalue().strip().splitlines()[-1])
    return code, report


def scrape(url: str, dataset: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The Pushgateway's /metrics, lakeshard's samples of one dataset: (name, labels) -> value."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("lakeshard_") and sample.labels.get("dataset") == dataset:
                labels = tuple(
                    sorted((k, v) for k, v in sample.labels.items() if k not in ("job", "instance"))
                )
                samples[(sample.name, labels)] = sample.value
    return samples


def rows_file(folder: Path, name: str, first: int, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(
        "".join(json.dumps({"id": i, "v": f"r{i}"}) + "\n" for i in range(first, first + count))
    )
    return path


def test_a_volume_drop_in_real_runs_is_pushed_and_alerted_once(
    spark: SparkSession, tmp_path: Path, receiver: Receiver
) -> None:
    schemas, lake = tmp_path / "schemas", tmp_path / "lake"
    # Judge from the third run on, so that three small ingests show it.
    declare(
        schemas,
        "tiny",
        "json",
        [("id", "long"), ("v", "string")],
        # Durations and memory of runs in a shared test process say little: not judged here.
        "monitor: {history: 5, min_history: 2, spike: 1000}\n",
    )
    with servers.pushgateway(tmp_path) as gateway:
        flags = ["--pushgateway", gateway, "--webhook", f"{receiver.url}/hook"]
        where = ["--lake", str(lake), "--schemas", str(schemas), *flags]
        summaries = [
            ingest_quietly("tiny", str(rows_file(tmp_path / "raw1", "a.jsonl", 0, 100)), *where),
            ingest_quietly("tiny", str(rows_file(tmp_path / "raw2", "b.jsonl", 100, 110)), *where),
        ]
        assert receiver.at("/hook") == []  # nothing unusual yet
        summaries.append(
            ingest_quietly("tiny", str(rows_file(tmp_path / "raw3", "c.jsonl", 300, 20)), *where)
        )
        last = summaries[-1]
        metrics = scrape(gateway, "tiny")

    def value(name: str, **labels: str) -> float:
        return metrics[(name, tuple(sorted({"dataset": "tiny", **labels}.items())))]

    # The gauges are the last run's summary; the counters sum every run.
    for outcome in ("read", "written", "duplicate", "quarantined", "dropped"):
        assert value("lakeshard_last_run_rows", outcome=outcome) == last[f"rows_{outcome}"]
        total = sum(s[f"rows_{outcome}"] for s in summaries)
        assert value("lakeshard_rows_total", outcome=outcome) == total
    assert value("lakeshard_runs_total", status="succeeded") == 3
    assert value("lakeshard_last_run_files", outcome="seen") == last["files_seen"]
    assert value("lakeshard_last_run_success") == 1
    assert value("lakeshard_last_run_source_bytes") == last["source_bytes"]
    run_metrics = last["metrics"]
    # Its "running" record, the table, the ledger, its final record (nothing quarantined).
    assert value("lakeshard_last_run_delta_commits") == run_metrics["delta_commits"] == 4
    assert value("lakeshard_last_run_driver_peak_rss_bytes") == run_metrics["driver_peak_rss_bytes"]
    spark_metrics = run_metrics["spark"]
    assert spark_metrics["tasks"] > 0
    assert spark_metrics["executor_cpu_seconds"] > 0
    assert value("lakeshard_last_run_spark_tasks") == spark_metrics["tasks"]
    assert value("lakeshard_last_run_spark_executor_cpu_seconds") == pytest.approx(
        spark_metrics["executor_cpu_seconds"]
    )
    for phase, seconds in last["phases_s"].items():
        assert value("lakeshard_last_run_phase_duration_seconds", phase=phase) == seconds
    assert value("lakeshard_open_findings", kind="volume", severity="critical") == 1

    # The run log keeps the same metrics with the run.
    (recorded,) = [
        r for r in run_history(str(lake / "_lakeshard/runs/tiny")) if r["run_id"] == last["run_id"]
    ]
    assert recorded["details"]["metrics"] == run_metrics

    # The third run's drop was found after it ran and sent once.
    (alert,) = receiver.at("/hook")
    assert alert["status"] == "firing"
    finding = alert["finding"]
    assert (finding["kind"], finding["severity"], finding["metric"]) == (
        "volume",
        "critical",
        "rows_read",
    )
    assert finding["observed"] == 20
    assert finding["runs"] == [s["run_id"] for s in reversed(summaries)][:1] + [
        s["run_id"] for s in summaries[:2]
    ]
    # Checking again: still open (exit 3), not sent again.
    code, report = monitor(lake, schemas, "--webhook", f"{receiver.url}/hook")
    assert code == 3
    alerting = [(f["kind"], f["metric"]) for f in report["findings"] if f["alerting"]]
    assert alerting == [("volume", "rows_read")]
    assert len(receiver.at("/hook")) == 1


def test_a_dead_run_is_alerted_through_alertmanager_and_resolved(
    spark: SparkSession, tmp_path: Path, receiver: Receiver
) -> None:
    schemas, lake = tmp_path / "schemas", tmp_path / "lake"
    declare(schemas, "tiny", "json", [("id", "long")])
    settings = resolve_config(lake=str(lake), schemas=str(schemas))
    # A run whose driver died: its claim and its "running" record are left behind.
    leases = lake / "_lakeshard/leases/tiny"
    dead = dead_claim(leases)
    record = {
        "run_id": dead["run_id"],
        "command": "ingest",
        "dataset": "tiny",
        "status": "running",
        "started_at": datetime.now(UTC),
        "lakeshard_version": "test",
    }
    runlog.record_run(spark, settings.runs_uri("tiny"), record)

    with servers.alertmanager(tmp_path, f"{receiver.url}/am") as manager:
        flags = ["--alertmanager", manager, "--webhook", f"{receiver.url}/hook"]
        code, report = monitor(lake, schemas, *flags)
        assert code == 3
        (finding,) = report["findings"]
        assert (finding["kind"], finding["runs"]) == ("abandoned", [dead["run_id"]])
        assert report["alerts"]["tiny"] == {"firing": 2, "resolved": 0, "failed": 0}
        (forwarded,) = receiver.wait_for("/am", 1)
        (alert,) = forwarded["alerts"]
        assert forwarded["status"] == alert["status"] == "firing"
        assert alert["labels"]["alertname"] == "lakeshard_abandoned"
        assert alert["labels"]["dataset"] == "tiny"
        assert dead["run_id"] in alert["annotations"]["summary"]

        assert monitor(lake, schemas, *flags)[0] == 3  # still open: nothing sent again
        assert len(receiver.at("/hook")) == 1

        # The next run closes the dead one (here: the record it would write) and frees the lease.
        runlog.record_run(
            spark,
            settings.runs_uri("tiny"),
            record | {"status": "abandoned", "ended_at": datetime.now(UTC)},
        )
        (leases / f"{2:012d}.json").write_text(json.dumps(dead | {"released": True}))
        code, report = monitor(lake, schemas, *flags)
        assert (code, report["findings"]) == (0, [])
        assert report["alerts"]["tiny"] == {"firing": 0, "resolved": 2, "failed": 0}
        hooks = receiver.at("/hook")
        assert [h["status"] for h in hooks] == ["firing", "resolved"]
        resolved = receiver.wait_for("/am", 2)[-1]
        assert resolved["status"] == "resolved"


def test_an_unreachable_target_is_a_warning_and_retried_next_time(
    spark: SparkSession, tmp_path: Path, receiver: Receiver
) -> None:
    """Delivery failures never fail the check, print no secret, and are tried again."""
    schemas, lake = tmp_path / "schemas", tmp_path / "lake"
    declare(schemas, "tiny", "json", [("id", "long")])
    now = datetime.now(UTC)
    failed = {
        "run_id": "20260101T000000Z-0badc0de",
        "command": "ingest",
        "dataset": "tiny",
        "status": "failed",
        "started_at": now,
        "ended_at": now,
        "error": "storage failed",
        "lakeshard_version": "test",
    }
    runlog.record_run(spark, resolve_config(lake=str(lake)).runs_uri("tiny"), failed)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    secret_hook = f"http://user:s3cret@127.0.0.1:{port}/hooks/T000/B000/XXXXSECRET"
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli.main(
            ["monitor", "--lake", str(lake), "--schemas", str(schemas), "--webhook", secret_hook]
        )
    assert code == 3  # the failed run is open, whatever happened to the alert
    assert f"could not send an alert to http://127.0.0.1:{port}/…" in err.getvalue()
    assert "s3cret" not in err.getvalue()
    assert "SECRET" not in err.getvalue()

    code, report = monitor(lake, schemas, "--webhook", f"{receiver.url}/hook")
    assert code == 3
    assert report["alerts"]["tiny"] == {"firing": 1, "resolved": 0, "failed": 0}
    (alert,) = receiver.at("/hook")
    assert alert["finding"]["kind"] == "failed"
    assert alert["finding"]["severity"] == "critical"
