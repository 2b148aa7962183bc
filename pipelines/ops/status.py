"""``lakeshard status``: what the lake holds and how its runs went, read without Spark.

Everything comes from the lake's own files through pyarrow: each table's Delta log (version,
live files, bytes, row counts from the files' statistics), the run log's and the quarantine's
Parquet files as that log lists them, and the lease. No JVM starts, so a status check costs
seconds, fit for an hourly cron line or a page a person reloads.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pipelines.columns import REASON
from pipelines.config import Config
from pipelines.lake import deltafiles, deltalog, lease, runlog
from pipelines.lake.quarantine import REPLAYED_BY
from pipelines.ops import detect
from pipelines.schema.datasets import Dataset

RUNS_SHOWN = 10  # the newest runs per dataset in the report
RUNS_CHARTED = 60  # ... and in the status page's charts
_RUN_FIELDS = (
    "run_id",
    "command",
    "status",
    "started_at",
    "ended_at",
    "schema_version",
    "table_version",
    "files_seen",
    "files_skipped",
    "files_rejected",
    "rows_read",
    "rows_written",
    "rows_duplicate",
    "rows_quarantined",
    "rows_dropped",
    "error",
    "details",
)


def status(
    settings: Config,
    datasets_: list[Dataset],
    runs_shown: int = RUNS_SHOWN,
    partition_detail: bool = False,
) -> dict[str, Any]:
    """The report for these datasets (``--json``: this object); ``partition_detail`` adds each
    dataset's ``partition_files`` (the page's file-size chart)."""
    started = time.monotonic()
    datasets = [dataset_status(settings, d, runs_shown, partition_detail) for d in datasets_]
    return {"datasets": datasets, "seconds": round(time.monotonic() - started, 2)}


def dataset_status(
    settings: Config, dataset: Dataset, runs_shown: int = RUNS_SHOWN, partition_detail: bool = False
) -> dict[str, Any]:
    name = dataset.name
    table = deltalog.data_files(settings.table_uri(name))
    # One listing of the log where the files came back; a second only where they did not.
    version = table.version if table else deltalog.latest_version(settings.table_uri(name))
    holder = lease_holder(settings.lease_uri(name))
    runs = run_history(settings.runs_uri(name))
    spark_only = spark_only_features(settings.table_uri(name)) if version is not None else []
    findings = judge(dataset, runs, holder)
    report: dict[str, Any] = {
        "dataset": name,
        "table_version": version,
        "rows": table.rows if table else None,
        "files": len(table.files) if table else None,
        "bytes": table.bytes if table else None,
        "partitions": len({f.partition for f in table.files}) if table else None,
        "schema_version": next(
            (r["schema_version"] for r in runs if r["status"] == "succeeded"), None
        ),
        "runs": runs[:runs_shown],
        "runs_total": len(runs),
        "quarantine_backlog": _backlog(settings.quarantine_uri(name)),
        "lease": holder,
        "findings": [f.as_json() for f in findings],
        "spark_only_features": spark_only,
        # False: only Spark reads this table. delta-rs (and DuckDB and Polars through it) refuse
        # the features above; this report's own reader cannot follow column mapping, deletion
        # vectors or a V2 checkpoint either (its counts are then null).
        "spark_free_readable": (table is not None or version is None) and not spark_only,
    }
    if partition_detail and table is not None:
        report["partition_files"] = _partition_files(table)
    return report


def judge(
    dataset: Dataset, runs: list[dict[str, Any]], holder: dict[str, Any] | None
) -> list[detect.Finding]:
    """The findings on a run history (newest first, as :func:`run_history` gives it), given
    the lease's holder: a run that holds it alive is running, not abandoned."""
    live = holder["run_id"] if holder and holder["alive"] else None
    oldest_first = list(reversed(runs))
    return detect.findings(dataset.name, oldest_first, dataset.monitor, datetime.now(UTC), live)


def spark_only_features(uri: str) -> list[str]:
    """The table's Delta features that Spark-free readers refuse, as measured with delta-rs 1.6
    (the reader under DuckDB's and Polars' Delta support): column mapping, which an in-place
    rename or drop turns on, and type widening. See the README's reader matrix."""
    snap = deltalog.snapshot(uri)
    if snap is None:
        return []
    properties = snap.configuration
    return [
        feature
        for feature, on in (
            ("columnMapping", properties.get("delta.columnMapping.mode", "none") != "none"),
            ("typeWidening", properties.get("delta.enableTypeWidening") == "true"),
        )
        if on
    ]


def _partition_files(table: deltalog.DataFiles) -> list[dict[str, Any]]:
    """Files, bytes and rows per partition, the newest partition values first."""
    totals: dict[str, list[int]] = {}
    for f in table.files:
        name = "/".join(f"{column}={value}" for column, value in f.partition)
        files, size, rows = totals.setdefault(name, [0, 0, 0])
        totals[name] = [files + 1, size + f.size, rows + (f.rows or 0)]
    return [
        {"partition": name, "files": files, "bytes": size, "rows": rows}
        for name, (files, size, rows) in sorted(totals.items(), reverse=True)
    ]


def run_history(uri: str) -> list[dict[str, Any]]:
    """Each run's latest record, newest first, with its duration and its ``details`` parsed
    (phases, rule counts, metrics; None for records that have none)."""
    table = deltafiles.read_columns(uri, list(_RUN_FIELDS))
    if table is None:
        return []
    runs = runlog.latest_records(table.to_pylist())
    runs.sort(key=lambda r: (r["started_at"], r["run_id"]), reverse=True)
    for run in runs:
        started, ended = run.pop("started_at"), run.pop("ended_at")
        run["started"], run["ended"] = started, ended
        run["duration_s"] = (
            round((ended - started).total_seconds(), 1) if started and ended else None
        )
        run["details"] = _parsed(run["details"])
    return runs


def _parsed(details: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(details) if details else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _backlog(uri: str) -> dict[str, Any] | None:
    """Quarantined records not yet replayed, by reason (None: not readable without Spark)."""
    table = deltafiles.read_columns(uri, [REASON, REPLAYED_BY])
    if table is None:
        return None if deltalog.latest_version(uri) is not None else {"rows": 0, "reasons": {}}
    waiting = Counter(
        reason
        for reason, replayed in zip(
            table.column(REASON).to_pylist(), table.column(REPLAYED_BY).to_pylist(), strict=True
        )
        if replayed is None
    )
    return {"rows": sum(waiting.values()), "reasons": dict(waiting.most_common())}


def lease_holder(uri: str) -> dict[str, Any] | None:
    """The dataset's current claim, if a run holds it (or held it and died)."""
    store = lease.store_for(uri)
    generations = store.generations()
    data = store.read(max(generations)) if generations else None
    if not data:
        return None
    claim = lease.Claim.of(data)
    if claim.released:
        return None
    return {
        "run_id": claim.run_id,
        "host": claim.host,
        "pid": claim.pid,
        "since": datetime.fromtimestamp(claim.acquired_at, UTC),
        "expires": datetime.fromtimestamp(claim.expires_at, UTC),
        "alive": claim.alive(time.time()),
    }


def print_report(report: dict[str, Any]) -> None:
    """The report as text a person reads in a terminal."""
    for ds in report["datasets"]:
        if ds["table_version"] is None:
            print(f"{ds['dataset']}: nothing ingested yet")
        else:
            rows = "?" if ds["rows"] is None else f"{ds['rows']:,}"
            size = "?" if ds["bytes"] is None else f"{ds['bytes'] / 1e6:,.1f} MB"
            print(
                f"{ds['dataset']}: version {ds['table_version']}, {rows} rows, {ds['files']} "
                f"file(s), {size}, {ds['partitions']} partition(s), schema "
                f"v{ds['schema_version']}"
            )
        if ds["table_version"] is not None and not ds["spark_free_readable"]:
            why = ", ".join(ds["spark_only_features"]) or "column mapping or deletion vectors"
            print(f"  only Spark reads this table ({why}): delta-rs, DuckDB and Polars refuse it")
        holder = ds["lease"]
        if holder is not None:
            state = "running" if holder["alive"] else "left by a run that died"
            print(f"  lease: {holder['run_id']} on {holder['host']} ({state})")
        backlog = ds["quarantine_backlog"]
        if backlog and backlog["rows"]:
            print(f"  quarantine: {backlog['rows']:,} record(s) waiting")
            for reason, count in list(backlog["reasons"].items())[:5]:
                print(f"    {count:>8,}  {reason}")
        if ds["runs"]:
            print(
                f"  {'run':<27} {'command':<8} {'status':<10} {'secs':>7} {'read':>10} "
                f"{'written':>10} {'dup':>8} {'quar':>8}"
            )
        for run in ds["runs"]:
            secs = "" if run["duration_s"] is None else f"{run['duration_s']:.1f}"
            print(
                f"  {run['run_id']:<27} {run['command']:<8} {run['status']:<10} {secs:>7} "
                f"{run['rows_read'] or 0:>10,} {run['rows_written'] or 0:>10,} "
                f"{run['rows_duplicate'] or 0:>8,} {run['rows_quarantined'] or 0:>8,}"
            )
        for finding in ds["findings"]:
            print(f"  {finding['severity']}: {finding['message']}")
