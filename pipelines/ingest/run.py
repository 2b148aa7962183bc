"""The ingest run: source files -> validated, hashed, deduplicated rows -> Delta, exactly once.

Under the dataset's lease (:mod:`pipelines.runs.lifecycle`): list the sources, plan which files
to read from the ledger (:mod:`.fileplan`), read and validate them once, then write the batch
(:mod:`.write`) and record the files in the ledger last. Crash safety comes from keyed,
idempotent writes, not a cross-table transaction (README: "What a run does", "Guarantees").
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime

from pyspark import StorageLevel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.columns import (
    BLANK,
    DROPPED,
    REASON,
    col,
)
from pipelines.config import Config
from pipelines.ingest import fileplan, inspection, reading, validate
from pipelines.ingest.layout import Layout
from pipelines.ingest.write import (
    checked,
    first_counts,
    report_checks,
    window_start,
    write_new_rows,
)
from pipelines.lake import delta, ledger
from pipelines.lake import lease as leases
from pipelines.lake.quarantine import QUARANTINE_KEY
from pipelines.runs.lifecycle import LeaseOptions, run_recorded
from pipelines.runs.progress import progress
from pipelines.runs.summary import Summary, phase
from pipelines.schema import evolution
from pipelines.schema.datasets import Dataset
from pipelines.spark import require_hash_engine
from pipelines.storage import listing


def run_ingest(
    spark: SparkSession,
    settings: Config,
    dataset: Dataset,
    sources: list[str],
    lease_options: LeaseOptions | None = None,
) -> Summary:
    """Ingest ``sources`` into ``dataset``'s table; record the run whether it succeeds or not."""

    def work(summary: Summary, held: leases.Lease, change: evolution.Evolution | None) -> None:
        _ingest(spark, settings, dataset, sources, summary, held, change)

    return run_recorded(spark, settings, dataset, "ingest", sources, lease_options, work)


def _ingest(
    spark: SparkSession,
    settings: Config,
    dataset: Dataset,
    sources: list[str],
    out: Summary,
    held: leases.Lease,
    change: evolution.Evolution | None,
) -> None:
    t0 = time.monotonic()
    context = spark.sparkContext
    out.extra["spark"] = {"master": context.master, "app_id": context.applicationId}
    with phase(out, "list"):
        listed = listing.list_sources(spark, sources)
    size_mb = sum(f.size for f in listed) / 1e6
    progress(f"listing: {len(listed)} file(s), {size_mb:,.1f} MB for {dataset.name}")
    with phase(out, "ledger"):
        known = ledger.load(spark, settings.ledger_uri(dataset.name))

    def inspect(candidates: list[listing.SourceFile]) -> list[inspection.Inspection]:
        progress(f"inspecting {len(candidates)} new file(s)")
        return inspection.run_inspections(
            context.parallelize,
            [c.uri for c in candidates],
            inspection.FileChecks.of(dataset),
            settings.s3,
            slices=context.defaultParallelism * 2,
        )

    with phase(out, "inspect"):
        plan = fileplan.plan(listed, known, inspect, dataset.on_changed_file, out.run_id)
    out.files_seen = len(listed)
    out.files_skipped = plan.skipped
    out.extra["files_rejected"] = len(plan.rejected)
    out.extra["files_ingested"] = len(plan.take)
    out.extra["source_bytes"] = sum(f.size for f in plan.take)
    for entry in plan.rejected:
        progress(f"rejected {entry.path}: {entry.reason}")
    progress(
        f"reading {len(plan.take)} file(s); {plan.unchanged} unchanged and "
        f"{plan.duplicates} duplicate file(s) skipped, {len(plan.rejected)} rejected"
    )
    if plan.take:
        uris = [f.uri for f in plan.take]
        _ingest_rows(spark, settings, dataset, uris, plan.layouts, out, held, change, t0)
    held.check()
    progress(f"ledger: recording {len(plan.entries)} file(s)")
    with phase(out, "ledger"):
        ledger.append(spark, settings.ledger_uri(dataset.name), plan.entries, datetime.now(UTC))
    progress(
        f"done in {time.monotonic() - t0:.1f}s: {out.rows_written:,} written, "
        f"{out.rows_duplicate:,} duplicate, {out.rows_quarantined:,} quarantined"
    )


def _ingest_rows(
    spark: SparkSession,
    settings: Config,
    dataset: Dataset,
    uris: list[str],
    layouts: Mapping[str, Layout],
    out: Summary,
    held: leases.Lease,
    change: evolution.Evolution | None,
    t0: float,
) -> None:
    now = F.lit(datetime.now(UTC))
    engine = settings.spark.hash_engine
    require_hash_engine(spark, engine)
    since = window_start(spark, dataset, out.table)
    records = (
        checked(lambda: reading.read_raw(spark, dataset, uris, layouts))
        .transform(lambda df: validate.with_typed_values(df, dataset))
        .transform(lambda df: validate.with_rules(df, dataset, since))
        .transform(lambda df: validate.with_content_hash(df, dataset.schema, engine))
        # Read once, used by every later step: kept on local disk, written and read back as a
        # stream. In memory (MEMORY_AND_DISK) a batch larger than the heap ran out of it (800 MB
        # of CSV at a 1g driver, 3.2 GB at 4g).
        .persist(StorageLevel.DISK_ONLY)
    )
    try:
        with phase(out, "read"):
            counts = checked(lambda: first_counts(records, dataset))
        out.rows_read, bad = int(counts["read"]), int(counts["bad"])
        dropped = int(counts["dropped"])
        report_checks(records, dataset, counts, out)
        progress(
            f"read {out.rows_read:,} records ({bad:,} refused, {dropped:,} dropped by rules) "
            f"in {time.monotonic() - t0:.1f}s"
        )

        quarantined = 0
        if bad:
            refused = records.transform(
                lambda df: validate.refused_with_source_rows(df, counts.splits)
            ).transform(lambda df: validate.quarantine_rows(df, dataset, out.run_id, now))
            progress("quarantining refused records")
            with phase(out, "quarantine"):
                present = delta.read_if_data(spark, out.quarantine)
                fresh = validate.not_in(refused, present, QUARANTINE_KEY)
                held.check()
                commit = checked(lambda: delta.append(fresh, out.quarantine, out.run_id))
            quarantined = commit.rows
            progress(f"quarantined {quarantined:,} records at {time.monotonic() - t0:.1f}s")
        out.rows_quarantined = quarantined
        out.rows_dropped = dropped

        valid = records.filter(col(REASON).isNull() & ~col(BLANK) & ~col(DROPPED))
        write_new_rows(spark, dataset, valid, bad, out, held, change, now, t0, since)
    finally:
        records.unpersist()
