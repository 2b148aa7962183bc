"""A recorded run: the lease, the schema check, its running and final run-log records, and
the runs that died before it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import SparkSession

from pipelines import __version__
from pipelines.config import DEFAULT_LEASE_TTL_S, Config
from pipelines.errors import (
    LakeshardError,
    describe,
    stop_requested,
)
from pipelines.lake import delta, deltalog, ledger, runlog
from pipelines.lake import lease as leases
from pipelines.lake.quarantine import QUARANTINE_SCHEMA
from pipelines.runs.metrics import RunMeter
from pipelines.runs.progress import info, progress, warn
from pipelines.runs.summary import (
    COMMIT_COUNTS,
    DETAILS,
    ROW_COUNTS,
    Summary,
    keep_committed,
    new_run_id,
    phase,
)
from pipelines.schema import evolution, rules, tables
from pipelines.schema.datasets import Dataset


@dataclass(frozen=True)
class LeaseOptions:
    wait_s: float = 0.0  # how long to wait for a run that holds the dataset's lease
    ttl_s: float = DEFAULT_LEASE_TTL_S  # how long a claim lives without a heartbeat


# The work of one command, done while the run holds the dataset's lease: (summary, lease,
# the planned schema evolution) -> None, filling in the summary.
Work = Callable[[Summary, leases.Lease, "evolution.Evolution | None"], None]


def run_recorded(
    spark: SparkSession,
    settings: Config,
    dataset: Dataset,
    command: str,
    sources: list[str],
    lease_options: LeaseOptions | None,
    work: Work,
) -> Summary:
    """Run a command that writes ``dataset``'s tables: check its rules, take the lease, refuse
    an incompatible schema before writing anything, log the run as ``running``, do the work,
    and log its outcome whatever happens."""
    options = lease_options or LeaseOptions()
    run_id = new_run_id()
    summary = Summary(
        dataset=dataset.name,
        run_id=run_id,
        status="running",
        table=settings.table_uri(dataset.name),
        table_version=None,
        quarantine=settings.quarantine_uri(dataset.name),
    )
    with phase(summary, "start"):
        rules.check_rules(spark, dataset)
    with leases.held(
        settings.lease_uri(dataset.name), run_id, options.ttl_s, options.wait_s
    ) as held:
        started = datetime.now(UTC)
        log = settings.runs_uri(dataset.name)

        def record(error: str | None) -> dict[str, Any]:
            return _run_record(dataset, command, sources, summary, started, error)

        with phase(summary, "start"):
            # Refused before anything is written: an incompatible schema version (exit 3).
            change = planned_evolution(spark, settings, dataset)
            _ensure_tables(spark, settings, dataset)
            if held.previous is not None:  # a claim left by a run that died: close its records
                _close_abandoned_runs(spark, settings, dataset, held)
            runlog.record_run(spark, log, record(None))
            meter = _start_meter(spark, settings, dataset)
        progress(f"run {run_id} ({command}) holds the lease on {dataset.name}")
        error: str | None = None
        try:
            work(summary, held, change)
            with phase(summary, "finish"):
                # The table version the run leaves behind (whether or not it committed to it).
                summary.table_version = delta.current_version(summary.table)
            summary.status = "succeeded"
        except LakeshardError as exc:
            summary.status, error = "failed", exc.message
            raise
        except Exception as exc:
            summary.status = "failed"
            error = "terminated (SIGTERM)" if stop_requested() else describe(exc)
            raise
        except BaseException as exc:  # Ctrl-C: recorded too, never left "running"
            summary.status, error = "failed", f"interrupted ({type(exc).__name__})"
            raise
        finally:
            if summary.status == "failed":
                keep_committed(summary)
            if meter is not None:
                try:  # the running record came before the meter, the final one comes after
                    summary.extra["metrics"] = meter.finish(own_commits=2)
                except Exception as exc:  # measuring must never cost the run its record
                    warn(f"could not measure the run: {describe(exc)}")
            info(f"recording run {run_id} as {summary.status}")
            try:
                runlog.record_run(spark, log, record(error))
            except Exception as exc:  # the run's own outcome matters more than its log line
                warn(f"could not write the run log: {describe(exc)}")
                # Its "running" record stays open: the claim, left to expire rather than
                # released, makes the next run close it as abandoned.
                held.keep_on_release = True
    return summary


def _start_meter(spark: SparkSession, settings: Config, dataset: Dataset) -> RunMeter | None:
    name = dataset.name
    uris = [settings.table_uri(name), settings.quarantine_uri(name), settings.ledger_uri(name)]
    try:
        return RunMeter(spark, [*uris, settings.runs_uri(name)])
    except Exception as exc:
        warn(f"could not measure the run: {describe(exc)}")
        return None


def planned_evolution(
    spark: SparkSession, settings: Config, dataset: Dataset
) -> evolution.Evolution | None:
    """How the existing table must change to take the current schema version (None: no table)."""
    uri = settings.table_uri(dataset.name)
    snap = deltalog.snapshot(uri)  # one read of the log for the schema and the properties
    if snap is None:
        return None
    plan = evolution.plan(dataset, snap.schema, dict(snap.configuration))
    if plan.needed:
        shown = "; ".join(c.describe() for c in plan.changes)
        progress(f"schema: the table holds {plan.table_label}; {dataset.schema.label}: {shown}")
    return plan


def _ensure_tables(spark: SparkSession, settings: Config, dataset: Dataset) -> None:
    name = dataset.name
    wanted = [
        (settings.table_uri(name), tables.table_schema(dataset), "dataset"),
        (settings.quarantine_uri(name), QUARANTINE_SCHEMA, "quarantine of"),
        (settings.ledger_uri(name), ledger.SCHEMA, "file ledger of"),
        (settings.runs_uri(name), runlog.RUNS_SCHEMA, "run log of"),
    ]
    for uri, schema, what in wanted:
        partitions = dataset.partition_by if what == "dataset" else ()
        delta.ensure_table(spark, uri, schema, partitions, description=f"lakeshard {what} {name}")
    # Quarantines made by an earlier lakeshard lack the newer (nullable) columns.
    delta.ensure_columns(spark, settings.quarantine_uri(name), QUARANTINE_SCHEMA)


def _close_abandoned_runs(
    spark: SparkSession, settings: Config, dataset: Dataset, held: leases.Lease
) -> None:
    """Record runs that died without an outcome as ``abandoned``, with what they committed.

    Holding the lease, this run is the only live writer: any other run still ``running`` is
    dead. Its table commit (if any) carries its counts; its quarantine commit, its refused rows.
    Only called after taking over a dead claim: every run that logs ``running`` holds the
    lease and releases it when it ends, so a run that died always leaves its claim behind.
    """
    log = settings.runs_uri(dataset.name)
    for record in runlog.unfinished_runs(spark, log):
        run_id = record["run_id"]
        table = delta.commit_of(spark, settings.table_uri(dataset.name), run_id)
        quarantine = delta.commit_of(spark, settings.quarantine_uri(dataset.name), run_id)
        counts = {key: 0 for key in ("rows_duplicate", "rows_dropped")}
        counts["rows_quarantined"] = quarantine.rows
        counts["rows_read"] = quarantine.rows
        if table.version is not None:
            counts.update({k: v for k, v in table.notes.items() if k in COMMIT_COUNTS})
        counts["rows_written"] = table.rows
        note = (
            "the run died; it committed rows to the table but not its files to the ledger, "
            "so a later run read them again as duplicates"
            if table.version is not None
            else "the run died before committing rows to the table"
        )
        details: dict[str, Any] = {"closed_by": held.claim.run_id}
        if record["command"] == "replay":
            # What a dead replay released is what it marked in the quarantine (maybe nothing);
            # rows it wrote but did not mark are released by the next replay, as duplicates.
            counts["rows_quarantined"] = counts["rows_read"] - counts["rows_written"]
            counts["rows_quarantined"] -= counts["rows_duplicate"] + counts["rows_dropped"]
            details["rows_released"] = delta.count_where(
                spark, settings.quarantine_uri(dataset.name), "_replayed_by", run_id
            )
        record.update(
            counts,
            status="abandoned",
            ended_at=datetime.now(UTC),
            table_version=table.version,
            error=note,
            details=json.dumps(details),
        )
        runlog.record_run(spark, log, record)
        progress(f"run {run_id} had died: recorded as abandoned ({note})")


def _run_record(
    dataset: Dataset,
    command: str,
    sources: list[str],
    summary: Summary,
    started: datetime,
    error: str | None,
) -> dict[str, Any]:
    running = summary.status == "running"
    return {
        "run_id": summary.run_id,
        "command": command,
        "dataset": dataset.name,
        "status": summary.status,
        "started_at": started,
        "ended_at": None if running else datetime.now(UTC),
        "sources": list(sources),
        "schema_version": dataset.schema.version,
        "table_version": summary.table_version,
        "files_seen": summary.files_seen,
        "files_skipped": summary.files_skipped,
        "files_rejected": summary.extra.get("files_rejected", 0),
        **{key: getattr(summary, key) for key in ROW_COUNTS},
        "error": error,
        "lakeshard_version": __version__,
        # Per-rule violation counts and drift counts (JSON; see README "Row rules").
        "details": {k: summary.extra[k] for k in DETAILS if k in summary.extra} or None,
    }
