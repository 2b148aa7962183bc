"""The ingest run: source files -> validated, hashed, deduplicated rows -> Delta, one commit each.

Order of work, and why:

1. List the sources (files, folders, globs; local or s3a).
2. Read, type, hash every record once and keep the result (memory, spilling to disk), so the
   input is parsed once whatever follows.
3. Count records; write refused records to the quarantine (skipping any already there, so a
   rerun adds nothing), with file, row number, raw record and reason.
4. Drop duplicates inside the batch (first by file and position wins) and rows whose hash is
   already in the table; append the rest in one commit.
5. Record the run, with its counts, in the run log.

A run that fails before step 4 commits nothing to the table; quarantine and table writes are
each idempotent (by quarantine key and content hash), so a rerun after a failure converges on
what one clean run gives.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pyspark import StorageLevel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines import __version__, lake, reading, storage, validate
from pipelines.columns import BLANK, CONTENT_HASH, REASON, col
from pipelines.datasets import Dataset
from pipelines.errors import LakeshardError, PolicyError, describe
from pipelines.settings import Settings

R = TypeVar("R")
BROADCAST_REPEATED_MAX = 2_000_000  # 16-byte hashes: about 32 MB on each executor


@dataclass
class Summary:
    dataset: str
    run_id: str
    status: str
    table: str
    table_version: int | None
    quarantine: str
    files_seen: int = 0
    files_skipped: int = 0
    rows_read: int = 0
    rows_written: int = 0
    rows_duplicate: int = 0
    rows_quarantined: int = 0
    rows_dropped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        data.update(extra)
        return data


def accounting_holds(summary: Mapping[str, Any]) -> bool:
    """rows_read = rows_written + rows_duplicate + rows_quarantined + rows_dropped."""
    parts = ("rows_written", "rows_duplicate", "rows_quarantined", "rows_dropped")
    return bool(summary["rows_read"] == sum(summary[key] for key in parts))


def new_run_id() -> str:
    """Sortable by start time, unique across machines."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def progress(message: str) -> None:
    print(f"lakeshard: {message}", file=sys.stderr, flush=True)


def run_ingest(
    spark: SparkSession, settings: Settings, dataset: Dataset, sources: list[str]
) -> Summary:
    """Ingest ``sources`` into ``dataset``'s table; record the run whether it succeeds or not."""
    run_id = new_run_id()
    started = datetime.now(UTC)
    summary = Summary(
        dataset=dataset.name,
        run_id=run_id,
        status="running",
        table=settings.table_uri(dataset.name),
        table_version=None,
        quarantine=settings.quarantine_uri(dataset.name),
    )
    error: str | None = None
    try:
        _ingest(spark, settings, dataset, sources, summary)
        summary.status = "succeeded"
    except LakeshardError as exc:
        summary.status, error = "failed", exc.message
        raise
    except Exception as exc:
        summary.status, error = "failed", describe(exc)
        raise
    finally:
        _record(spark, settings, dataset, sources, summary, started, error)
    return summary


def _ingest(
    spark: SparkSession, settings: Settings, dataset: Dataset, sources: list[str], out: Summary
) -> None:
    t0 = time.monotonic()
    context = spark.sparkContext
    out.extra["spark"] = {"master": context.master, "app_id": context.applicationId}
    files = storage.list_sources(spark, sources)
    out.files_seen = len(files)
    size_mb = sum(f.size for f in files) / 1e6
    progress(f"run {out.run_id}: {len(files)} file(s), {size_mb:,.1f} MB for {dataset.name}")
    lake.ensure_table(
        spark,
        out.table,
        validate.table_schema(dataset.schema),
        dataset.partition_by,
        description=f"lakeshard dataset {dataset.name}",
    )
    lake.ensure_table(
        spark,
        out.quarantine,
        validate.QUARANTINE_SCHEMA,
        description=f"lakeshard quarantine of {dataset.name}",
    )
    if not files:
        out.table_version = lake.current_version(spark, out.table)
        return

    now = F.lit(datetime.now(UTC))
    records = (
        reading.read_raw(spark, dataset, [f.uri for f in files])
        .transform(lambda df: validate.with_typed_values(df, dataset))
        .transform(lambda df: validate.with_content_hash(df, dataset.schema))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        counts = _checked(
            lambda: (
                records.filter(~col(BLANK))
                .agg(F.count(F.lit(1)).alias("read"), F.count(col(REASON)).alias("bad"))
                .collect()[0]  # a global aggregate always has exactly one row
            )
        )
        out.rows_read, bad = int(counts["read"]), int(counts["bad"])
        progress(
            f"read {out.rows_read:,} records ({bad:,} refused) in {time.monotonic() - t0:.1f}s"
        )

        quarantined = 0
        if bad:
            refused = records.transform(validate.refused_with_source_rows).transform(
                lambda df: validate.quarantine_rows(df, dataset, out.run_id, now)
            )
            held = lake.read_if_data(spark, out.quarantine)
            fresh = validate.not_in(refused, held, validate.QUARANTINE_KEY)
            quarantined = _checked(lambda: lake.append(fresh, out.quarantine, out.run_id)).rows
            progress(f"quarantined {quarantined:,} records at {time.monotonic() - t0:.1f}s")
        out.rows_quarantined = quarantined

        valid = records.filter(col(REASON).isNull() & ~col(BLANK))
        # The plan is made on the hashes alone (a narrow shuffle): how many rows repeat inside
        # the batch and how many are already in the table. Only then are the rows themselves
        # read once more, from the cache, to be written.
        copies = validate.hash_copies(valid).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            plan = _checked(
                lambda: copies.agg(
                    F.count(F.lit(1)).alias("distinct"),
                    F.count(F.when(col("_copies") > 1, True)).alias("repeated"),
                ).collect()[0]
            )
            existing = lake.read_if_data(spark, out.table)
            known = (
                0
                if existing is None
                else _checked(copies.join(existing, on=CONTENT_HASH, how="left_semi").count)
            )
            pending = int(plan["distinct"]) - known
            progress(f"{pending:,} new rows after dedup at {time.monotonic() - t0:.1f}s")
            # Few repeated hashes (the usual case): broadcast them, shuffle only their rows.
            repeated = copies.filter(col("_copies") > 1).select(CONTENT_HASH)
            small = repeated if plan["repeated"] <= BROADCAST_REPEATED_MAX else None
            new_rows = (
                valid.transform(lambda df: validate.first_of_each_hash(df, small))
                .transform(lambda df: validate.not_in(df, existing, CONTENT_HASH))
                .transform(lambda df: validate.table_rows(df, dataset.schema, out.run_id, now))
            )
            if pending:
                progress(f"writing {pending:,} new rows to {out.table}")
                commit = _checked(lambda: lake.append(new_rows, out.table, out.run_id))
                out.rows_written = commit.rows
        finally:
            copies.unpersist()
    finally:
        records.unpersist()
    # Duplicates: valid rows repeated in the batch or already in the table, and refused rows
    # already in the quarantine. `rows_written` comes from the Delta commit itself, so the
    # accounting identity checks that the commit wrote exactly the rows planned.
    out.rows_duplicate = (out.rows_read - bad - pending) + (bad - quarantined)
    out.table_version = lake.current_version(spark, out.table)
    progress(
        f"done in {time.monotonic() - t0:.1f}s: {out.rows_written:,} written, "
        f"{out.rows_duplicate:,} duplicate, {out.rows_quarantined:,} quarantined"
    )


def _checked(action: Callable[[], R]) -> R:
    """Run a Spark action, turning known input problems into one-line policy errors."""
    try:
        return action()
    except Exception as exc:
        text = str(exc)
        if "CSV header does not conform to the schema" in text:
            raise PolicyError(_csv_header_problem(text)) from None
        raise


def _csv_header_problem(text: str) -> str:
    lines = [line.strip() for line in text.splitlines()]
    found = next((line for line in lines if line.startswith("Header:")), "")
    expected = next((line for line in lines if line.startswith("Schema:")), "")
    where = next((line for line in lines if line.startswith("CSV file:")), "")
    return f"CSV header does not match the declared schema: {found}; {expected}; {where}"


def _record(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    sources: list[str],
    summary: Summary,
    started: datetime,
    error: str | None,
) -> None:
    record = {
        "run_id": summary.run_id,
        "command": "ingest",
        "dataset": dataset.name,
        "status": summary.status,
        "started_at": started,
        "ended_at": datetime.now(UTC),
        "sources": list(sources),
        "schema_version": dataset.schema.version,
        "table_version": summary.table_version,
        "files_seen": summary.files_seen,
        "files_skipped": summary.files_skipped,
        "rows_read": summary.rows_read,
        "rows_written": summary.rows_written,
        "rows_duplicate": summary.rows_duplicate,
        "rows_quarantined": summary.rows_quarantined,
        "rows_dropped": summary.rows_dropped,
        "error": error,
        "lakeshard_version": __version__,
    }
    try:
        lake.record_run(spark, settings.runs_uri(), record)
    except Exception as exc:  # the run's own outcome matters more than its log line
        progress(f"warning: could not write the run log: {describe(exc)}")
