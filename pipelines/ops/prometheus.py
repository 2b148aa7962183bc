"""A dataset's run metrics in Prometheus's exposition format: pushed to a Pushgateway (the usual
way for batch jobs) and/or written for node_exporter's textfile collector.

Gauges describe the newest finished run (``lakeshard_last_run_*``); counters (``*_total``) are
sums over the whole run log, so they only grow however often they are pushed and survive a
Pushgateway restart. The dataset is a label; a run id never is (one series per run would grow
without bound).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway
from prometheus_client.exposition import write_to_textfile

from pipelines.config import Secret
from pipelines.ops.detect import Finding
from pipelines.runs.summary import ROW_COUNTS

JOB = "lakeshard"
# The run log's Spark task metrics -> metric name suffix (all under lakeshard_last_run_spark_).
_SPARK = (
    ("executor_cpu_seconds", "executor_cpu_seconds", "executor CPU time of the run's tasks"),
    ("executor_run_seconds", "executor_run_seconds", "wall time of the run's tasks, summed"),
    ("jvm_gc_seconds", "jvm_gc_seconds", "JVM garbage collection time of the run's tasks"),
    ("peak_execution_memory_bytes", "peak_execution_memory_bytes", "largest task's peak"),
    ("memory_spilled_bytes", "memory_spilled_bytes", "bytes spilled (in memory)"),
    ("disk_spilled_bytes", "disk_spilled_bytes", "bytes spilled to disk"),
    ("shuffle_read_bytes", "shuffle_read_bytes", "shuffle bytes read"),
    ("shuffle_write_bytes", "shuffle_write_bytes", "shuffle bytes written"),
    ("input_bytes", "input_bytes", "bytes read by the run's tasks"),
    ("tasks", "tasks", "tasks run"),
)


def registry(
    dataset: str, runs: list[dict[str, Any]], findings: list[Finding]
) -> CollectorRegistry:
    """The metrics of a dataset from its run history (newest first, details parsed)."""
    reg = CollectorRegistry()
    finished = [r for r in runs if r["status"] != "running"]
    rows_total = Counter(
        "lakeshard_rows", "rows over all runs, by outcome", ["dataset", "outcome"], registry=reg
    )
    runs_total = Counter(
        "lakeshard_runs", "finished runs, by status", ["dataset", "status"], registry=reg
    )
    for key in ROW_COUNTS:
        rows_total.labels(dataset, key.removeprefix("rows_")).inc(
            sum(r.get(key) or 0 for r in finished)
        )
    for status in ("succeeded", "failed", "abandoned"):
        runs_total.labels(dataset, status).inc(sum(r["status"] == status for r in finished))
    open_findings = Gauge(
        "lakeshard_open_findings",
        "findings of the last check, by kind and severity",
        ["dataset", "kind", "severity"],
        registry=reg,
    )
    for finding in findings:
        open_findings.labels(dataset, finding.kind, finding.severity).inc()
    succeeded = next((r for r in finished if r["status"] == "succeeded"), None)
    if succeeded is not None:
        _gauge(reg, "last_success_timestamp_seconds", "end of the newest successful run").labels(
            dataset
        ).set(succeeded["ended"].timestamp())
    if finished:
        _last_run(reg, dataset, finished[0])
    return reg


def _last_run(reg: CollectorRegistry, dataset: str, run: dict[str, Any]) -> None:
    details = run.get("details") or {}
    metrics = details.get("metrics") or {}

    def last(name: str, doc: str, value: float | None) -> None:
        if value is not None:
            _gauge(reg, f"last_run_{name}", doc).labels(dataset).set(value)

    last("start_timestamp_seconds", "start of the newest finished run", run["started"].timestamp())
    last("success", "1 if the newest finished run succeeded, else 0", run["status"] == "succeeded")
    last("duration_seconds", "wall time of the newest finished run", run.get("duration_s"))
    last("source_bytes", "bytes of the source files the run read", details.get("source_bytes"))
    last("delta_commits", "Delta commits the run made", metrics.get("delta_commits"))
    last(
        "driver_peak_rss_bytes",
        "driver peak RSS (Python + JVM)",
        metrics.get("driver_peak_rss_bytes"),
    )
    rows = Gauge(
        "lakeshard_last_run_rows",
        "rows of the newest run, by outcome",
        ["dataset", "outcome"],
        registry=reg,
    )
    for key in ROW_COUNTS:
        rows.labels(dataset, key.removeprefix("rows_")).set(run.get(key) or 0)
    files = Gauge(
        "lakeshard_last_run_files",
        "source files of the newest run, by outcome",
        ["dataset", "outcome"],
        registry=reg,
    )
    for outcome in ("seen", "skipped", "rejected"):
        files.labels(dataset, outcome).set(run.get(f"files_{outcome}") or 0)
    phases = details.get("phases_s") or {}
    if phases:
        phase = Gauge(
            "lakeshard_last_run_phase_duration_seconds",
            "wall time per phase of the newest run",
            ["dataset", "phase"],
            registry=reg,
        )
        for name, seconds in phases.items():
            phase.labels(dataset, name).set(seconds)
    spark = metrics.get("spark") or {}
    for key, name, doc in _SPARK:
        if spark.get(key) is not None:
            _gauge(reg, f"last_run_spark_{name}", doc).labels(dataset).set(spark[key])


def _gauge(reg: CollectorRegistry, name: str, doc: str) -> Gauge:
    return Gauge(f"lakeshard_{name}", doc, ["dataset"], registry=reg)


def push(gateway: Secret, dataset: str, reg: CollectorRegistry, timeout_s: float = 10) -> None:
    """Replace this dataset's group on the Pushgateway (job ``lakeshard``, label dataset)."""
    push_to_gateway(
        gateway.reveal(),
        job=JOB,
        grouping_key={"dataset": dataset},
        registry=reg,
        timeout=timeout_s,
    )


def write_textfile(folder: Path, dataset: str, reg: CollectorRegistry) -> Path:
    """``lakeshard_<dataset>.prom`` for node_exporter, replaced in one rename."""
    os.makedirs(folder, exist_ok=True)
    path = folder / f"lakeshard_{dataset}.prom"
    write_to_textfile(str(path), reg)
    return path
