"""Quarantine tools: counts by reason and rule, and replay of records that now pass.

A replay re-validates quarantined records not yet replayed against the current schema and rules,
writes those that pass like an ingest (:func:`pipelines.ingest.write.write_new_rows`), then marks
every record it resolved with its run id (``_replayed_by``), so a second replay, or the next one
after a crash, moves nothing twice (README: "The quarantine").
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.columns import (
    BLANK,
    DROPPED,
    FIELDS,
    MALFORMED,
    MONO,
    RAW,
    REASON,
    RULES,
    SOURCE_FILE,
    SOURCE_ROW,
    SPLIT_START,
    col,
)
from pipelines.config import Config
from pipelines.ingest import csvrecords, reading, validate
from pipelines.ingest.write import checked, first_counts, report_checks, write_new_rows
from pipelines.lake import delta
from pipelines.lake.lease import Lease
from pipelines.lake.quarantine import QUARANTINE_KEY, REPLAYED_AT, REPLAYED_BY
from pipelines.runs.lifecycle import LeaseOptions, run_recorded
from pipelines.runs.progress import progress, warn
from pipelines.runs.summary import Summary
from pipelines.schema.datasets import Dataset
from pipelines.schema.evolution import Evolution
from pipelines.spark import require_hash_engine

KEY = QUARANTINE_KEY


def pending(quarantine: DataFrame, reason: str | None, rule: str | None) -> DataFrame:
    """Quarantined records not yet replayed, filtered by reason text and failed rule."""
    rows = quarantine.filter(col(REPLAYED_BY).isNull())
    if reason:
        rows = rows.filter(F.instr(col(REASON), reason) > 0)
    if rule:
        rows = rows.filter(F.array_contains(F.coalesce(col(RULES), F.array()), rule))
    return rows


def counts(spark: SparkSession, uri: str, replayed: bool = False) -> dict[str, Any]:
    """Quarantined records (not yet replayed, unless ``replayed``): how many, and how many by
    reason and failed rule (a record that failed two rules is in two groups)."""
    if not delta.table_exists(spark, uri) or not delta.has_data(spark, uri):
        return {"rows": 0, "groups": []}
    table = delta.read_table(spark, uri)
    if not replayed:
        table = pending(table, None, None)
    table = table.persist(StorageLevel.DISK_ONLY)  # in the heap, a large one can run out of it
    try:
        return {"rows": table.count(), "groups": _groups(table)}
    finally:
        table.unpersist()


def _groups(table: DataFrame) -> list[dict[str, Any]]:
    grouped = (
        table.withColumn("rule", F.explode_outer(col(RULES)))
        .groupBy(F.col("rule"), col(REASON).alias("reason"))
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.countDistinct(col(SOURCE_FILE)).alias("files"),
            F.min(col("_quarantined_at")).alias("first"),
            F.max(col("_quarantined_at")).alias("last"),
        )
        .orderBy(F.desc("rows"), "reason", "rule")
    )
    return [
        {
            "reason": row["reason"],
            "rule": row["rule"],
            "rows": int(row["rows"]),
            "files": int(row["files"]),
            "first": row["first"].isoformat() if row["first"] else None,
            "last": row["last"].isoformat() if row["last"] else None,
        }
        for row in grouped.collect()
    ]


def run_replay(
    spark: SparkSession,
    settings: Config,
    dataset: Dataset,
    reason: str | None = None,
    rule: str | None = None,
    lease_options: LeaseOptions | None = None,
) -> Summary:
    """Move the quarantined records of ``dataset`` that now pass into its table, once."""
    if rule is not None and rule not in {r.name for r in dataset.rules}:
        # Rows may name a rule since removed: allowed, but say what is declared now.
        warn(f"rule {rule!r} is not declared now ({_rule_names(dataset)})")
    sources = [f"quarantine:{settings.quarantine_uri(dataset.name)}"]

    def work(summary: Summary, held: Lease, change: Evolution | None) -> None:
        _replay(spark, settings.spark.hash_engine, dataset, reason, rule, summary, held, change)

    return run_recorded(spark, settings, dataset, "replay", sources, lease_options, work)


def _rule_names(dataset: Dataset) -> str:
    return ", ".join(r.name for r in dataset.rules) or "no rules"


def _replay(
    spark: SparkSession,
    engine: str,
    dataset: Dataset,
    reason: str | None,
    rule: str | None,
    out: Summary,
    held: Lease,
    change: Evolution | None,
) -> None:
    t0 = time.monotonic()
    now = datetime.now(UTC)
    quarantine = delta.read_if_data(spark, out.quarantine)
    out.extra["rows_released"] = 0
    if quarantine is None:
        progress("the quarantine is empty: nothing to replay")
        return
    chosen = pending(quarantine, reason, rule).filter(col("_format") == dataset.format)
    require_hash_engine(spark, engine)
    records = (
        _parsed(chosen, dataset)
        .transform(lambda df: validate.with_typed_values(df, dataset))
        .transform(lambda df: validate.with_rules(df, dataset))
        .transform(lambda df: validate.with_content_hash(df, dataset.schema, engine))
        .persist(StorageLevel.DISK_ONLY)
    )
    try:
        first = checked(lambda: first_counts(records, dataset))
        out.rows_read, bad = int(first["read"]), int(first["bad"])
        report_checks(records, dataset, first, out)
        out.rows_dropped = int(first["dropped"])
        out.rows_quarantined = bad  # still refused: they stay in the quarantine
        progress(
            f"replaying {out.rows_read:,} quarantined records: {bad:,} still refused, "
            f"{out.rows_dropped:,} dropped by rules"
        )
        valid = records.filter(col(REASON).isNull() & ~col(BLANK) & ~col(DROPPED))
        write_new_rows(spark, dataset, valid, bad, out, held, change, F.lit(now), t0)
        released = records.filter(col(REASON).isNull()).select(KEY).dropDuplicates([KEY])
        out.extra["rows_released"] = out.rows_read - bad
        if out.rows_read - bad:
            held.check()
            progress(f"marking {out.rows_read - bad:,} records as replayed by {out.run_id}")
            _mark(spark, out.quarantine, released, out.run_id, now)
    finally:
        records.unpersist()


def _parsed(chosen: DataFrame, dataset: Dataset) -> DataFrame:
    """The quarantined records as the uniform raw frame an ingest reads (see reading)."""
    located = chosen.select(
        KEY,
        col(RAW),
        col(FIELDS),
        col(SOURCE_FILE),
        F.lit(0).cast("long").alias(SPLIT_START),
        col(SOURCE_ROW).alias(MONO),
        col(REASON).alias("_old_reason"),
    )
    # A record that could not be split into fields stays so: its bytes have not changed.
    broken = col("_old_reason").startswith("malformed")
    if dataset.format == "csv":
        frame = csvrecords.csv_records(located.filter(col(RAW).isNotNull()), dataset)
    else:  # JSON lines, and Parquet records (kept as JSON text)
        lines = located.filter(col(RAW).isNotNull()).select(
            col(RAW).alias("value"), SOURCE_FILE, SPLIT_START, MONO, KEY, F.lit(False).alias("_cut")
        )
        frame = reading.json_records(lines, dataset.schema.names)
    kept = located.select(KEY, broken.alias("_broken"), col("_old_reason"))
    joined = frame.join(kept, on=KEY, how="inner")
    return joined.withColumn(
        MALFORMED,
        F.when(col("_broken"), col("_old_reason")).otherwise(col(MALFORMED)),
    ).drop("_broken", "_old_reason")


def _mark(spark: SparkSession, uri: str, released: DataFrame, run_id: str, now: datetime) -> None:
    """Mark the released records in the quarantine (one MERGE commit, tagged with the run)."""
    spark.conf.set(
        "spark.databricks.delta.commitInfo.userMetadata",
        json.dumps({"run_id": run_id, "marks": "replayed"}),
    )
    try:
        (
            DeltaTable.forPath(spark, uri)
            .alias("q")
            .merge(released.alias("r"), f"q.{KEY} = r.{KEY} AND q.{REPLAYED_BY} IS NULL")
            .whenMatchedUpdate(
                set={
                    REPLAYED_BY: F.lit(run_id),
                    REPLAYED_AT: F.lit(now).cast("timestamp"),
                }
            )
            .execute()
        )
    finally:
        spark.conf.unset("spark.databricks.delta.commitInfo.userMetadata")
