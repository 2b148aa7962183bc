"""Writing a validated batch: count it, quarantine what was refused, drop duplicates (in the
batch, against the table) and commit the rest in one Delta commit."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipelines.columns import (
    BLANK,
    CONTENT_HASH,
    DROPPED,
    MONO,
    REASON,
    RESCUED,
    RULES,
    SOURCE_FILE,
    SOURCE_ROW,
    SPLIT_START,
    col,
)
from pipelines.errors import (
    PolicyError,
    describe,
)
from pipelines.ingest import validate
from pipelines.lake import delta
from pipelines.lake import lease as leases
from pipelines.runs.progress import progress, warn
from pipelines.runs.summary import COMMIT_COUNTS, Summary, phase
from pipelines.schema import evolution, rules
from pipelines.schema.datasets import Dataset

R = TypeVar("R")
BROADCAST_REPEATED_MAX = 2_000_000  # 16-byte hashes: about 32 MB on each executor
BROADCAST_BATCH_MAX = 4_000_000  # a batch's distinct hashes sent to every task of the lookup


def prepare_table(
    spark: SparkSession,
    uri: str,
    dataset: Dataset,
    plan: evolution.Evolution | None,
    run_id: str,
) -> bool:
    """Just before the data commit: drop lakeshard's CHECK constraints that are stale (or all
    of them when the schema evolves: Delta refuses to rename, drop or widen a column that a
    constraint names), apply the evolution's metadata commits, rewrite the table under the
    current schema (``evolution: portable``), then try to make columns required. True when the
    data commit must merge the schema (new columns, wider types). :func:`add_constraints`
    follows it."""
    evolving = plan is not None and plan.needed
    present = delta.properties(spark, uri)
    drop, _ = rules.constraint_changes(
        present, {} if evolving else rules.wanted_constraints(dataset)
    )
    for name in drop:
        delta.alter(spark, uri, f"DROP CONSTRAINT IF EXISTS `{name}`")
    merge = False
    if plan is not None:
        for statement in plan.statements:
            progress(f"schema: ALTER TABLE … {statement}")
            delta.alter(spark, uri, statement)
        if plan.rewrite is not None:
            progress(f"schema: rewriting {uri} as {dataset.schema.label} (evolution: portable)")
            rewritten = plan.rewrite.frame(delta.read_table(spark, uri))
            notes = {"rewrite": f"{plan.table_label} -> {dataset.schema.label}"}
            delta.overwrite(rewritten, uri, run_id, notes, plan.rewrite.partition_by)
        for statement in plan.try_statements:
            try:
                delta.alter(spark, uri, statement)
            except Exception as exc:
                warn(
                    f"could not {statement} ({describe(exc)}); earlier rows break it, "
                    "so lakeshard alone keeps refusing nulls there"
                )
        merge = plan.merge
    if dataset.on_drift == "rescue" and RESCUED not in delta.schema_of(spark, uri).names:
        merge = True
    return merge


def add_constraints(spark: SparkSession, uri: str, dataset: Dataset) -> None:
    """Add the CHECK constraints of the rules that refuse rows, where missing. A constraint
    that rows already in the table break is not added; that is noted in a table property
    (``lakeshard.unenforced.<name>``) so later runs do not scan the table for it again."""
    present = delta.properties(spark, uri)
    _, add = rules.constraint_changes(present, rules.wanted_constraints(dataset))
    for name, expr in add.items():
        try:
            delta.alter(spark, uri, f"ADD CONSTRAINT `{name}` CHECK ({expr})")
        except Exception as exc:
            warn(
                f"constraint {name} not added: rows already in the table break it "
                f"({describe(exc)}); new rows are still checked by the rule"
            )
            text = expr.replace("\\", "\\\\").replace("'", "\\'")
            delta.alter(spark, uri, f"SET TBLPROPERTIES ('{rules.UNENFORCED}{name}' = '{text}')")


@dataclass(frozen=True)
class FirstCounts:
    """What the first pass over a batch counts: the batch's totals (``read``, ``bad``,
    ``dropped``, ``drift``, ``ignored``, ``rule_<i>``) and where each split of each file
    starts (for the records' row numbers, :func:`pipelines.ingest.validate.located_rows`)."""

    totals: dict[str, int]
    splits: list[validate.SplitOffset]

    def __getitem__(self, key: str) -> int:
        return self.totals[key]


def first_counts(records: DataFrame, dataset: Dataset) -> FirstCounts:
    """One pass over the batch: records, refused, dropped, drift, and each rule's violations,
    per split of each file; the driver adds them up and derives the splits' offsets, so that
    row numbers need no second pass."""
    present = ~col(BLANK)

    def counted(condition: Column) -> Column:
        return F.count(F.when(present & condition, True))

    names = ["read", "bad", "dropped", "drift", "ignored"]
    conditions = [
        F.lit(True),
        col(REASON).isNotNull(),
        col(DROPPED),
        col(validate.DRIFT),
        col(validate.IGNORED),
    ]
    for index, rule in enumerate(dataset.rules):
        names.append(f"rule_{index}")
        conditions.append(F.array_contains(col(RULES), rule.name))
    rows = records.groupBy(SOURCE_FILE, SPLIT_START).agg(
        F.count(F.lit(1)).alias("_split_rows"),
        F.min(MONO).alias("_split_first"),
        *[counted(c).alias(n) for n, c in zip(names, conditions, strict=True)],
    )
    collected = rows.collect()
    totals = {name: sum(int(r[name]) for r in collected) for name in names}
    splits = validate.split_offsets(
        [(r[0], r[1], int(r["_split_rows"]), r["_split_first"]) for r in collected]
    )
    return FirstCounts(totals, splits)


def report_checks(records: DataFrame, dataset: Dataset, counts: FirstCounts, out: Summary) -> None:
    """Per-rule and drift counts into the summary; stop (exit 3) on a ``fail`` rule or drift
    under ``on_drift: fail``, naming the first offending record, before anything is written."""
    violations = {rule.name: int(counts[f"rule_{i}"]) for i, rule in enumerate(dataset.rules)}
    out.extra["rules"] = violations
    out.extra["drift"] = {
        "mode": dataset.on_drift,
        "rows": int(counts["drift"]),
        "ignored_fields_rows": int(counts["ignored"]),
    }
    for rule in dataset.rules:
        if violations[rule.name]:
            progress(f"rule {rule.name} ({rule.on_violation}): {violations[rule.name]:,} row(s)")
    failing = [r for r in dataset.rules if r.on_violation == "fail" and violations[r.name]]
    if failing:
        rule = failing[0]
        where = first_located(records, F.array_contains(col(RULES), rule.name), counts.splits)
        raise PolicyError(
            f"{dataset.declaration}: {rule.key}: rule {rule.name} (on_violation: fail) failed "
            f"for {violations[rule.name]:,} row(s), first {where}; nothing was written"
        )
    if dataset.on_drift == "fail" and counts["drift"]:
        where = first_located(records, col(validate.DRIFT), counts.splits)
        raise PolicyError(
            f"schema drift (on_drift: fail) in {int(counts['drift']):,} row(s), first {where}; "
            "nothing was written"
        )


def first_located(records: DataFrame, condition: Column, splits: list[validate.SplitOffset]) -> str:
    """Where the first record meeting ``condition`` is: file, row, and why it was refused."""
    located = records.transform(lambda df: validate.located_rows(df, condition, splits))
    row = located.orderBy(SOURCE_FILE, SOURCE_ROW).select(SOURCE_FILE, SOURCE_ROW, REASON).first()
    if row is None:
        return ""
    return f"in {row[0]} row {row[1]}" + (f" ({row[2]})" if row[2] else "")


def window_start(spark: SparkSession, dataset: Dataset, uri: str) -> Any:
    """Under ``dedup: window``, the oldest value a new record may have: ``days`` before the
    newest value already in the table (from Delta's statistics; None for an empty table)."""
    dedup = dataset.dedup
    if dedup.scope != "window" or dedup.column is None:
        return None
    table = delta.read_if_data(spark, uri)
    if table is None:
        return None
    newest = table.agg(F.max(col(dedup.column))).first()
    if newest is None or newest[0] is None:
        return None
    return newest[0] - timedelta(days=dedup.days)


def write_new_rows(
    spark: SparkSession,
    dataset: Dataset,
    valid: DataFrame,
    bad: int,
    out: Summary,
    held: leases.Lease,
    change: evolution.Evolution | None,
    now: Column,
    t0: float,
    since: Any = None,
) -> None:
    """Drop duplicates (in the batch, against the table), write the rest in one commit.

    The lookup against the table reads its hash column only (Parquet column pruning), joined
    with the batch's distinct hashes broadcast to every task: the table side is streamed, never
    shuffled. Under ``dedup: window`` only the files of the window are read (``since``).
    """
    # The plan is made on the hashes alone (a narrow shuffle): how many rows repeat inside
    # the batch and how many are already in the table. Only then are the rows themselves
    # read once more, from the cache, to be written. Both hash sets are kept on local disk,
    # like the batch: in memory (MEMORY_AND_DISK) the batch's 124 M distinct hashes ran out
    # of a 4g heap (make large at 6.5 GB), on disk they pass.
    copies = validate.hash_copies(valid).persist(StorageLevel.DISK_ONLY)
    known: DataFrame | None = None
    try:
        with phase(out, "dedup"):
            plan = checked(
                lambda: copies.agg(
                    F.count(F.lit(1)).alias("distinct"),
                    F.count(F.when(col("_copies") > 1, True)).alias("repeated"),
                ).collect()[0]
            )
            existing = delta.read_if_data(spark, out.table)
            if existing is not None and since is not None and dataset.dedup.column is not None:
                existing = existing.filter(col(dataset.dedup.column) >= F.lit(since))
            found = 0
            if existing is not None:
                batch = copies.select(CONTENT_HASH)
                if plan["distinct"] <= BROADCAST_BATCH_MAX:
                    batch = F.broadcast(batch)
                known = (
                    existing.select(CONTENT_HASH)
                    .join(batch, on=CONTENT_HASH, how="left_semi")
                    .persist(StorageLevel.DISK_ONLY)
                )
                found = checked(known.count)
        pending = int(plan["distinct"]) - found
        progress(f"{pending:,} new rows after dedup at {time.monotonic() - t0:.1f}s")
        # Duplicates: valid rows repeated in the batch or already in the table, and refused
        # rows already in the quarantine.
        valid_rows = out.rows_read - bad - out.rows_dropped
        out.rows_duplicate = (valid_rows - pending) + (bad - out.rows_quarantined)
        # Few repeated hashes (the usual case): broadcast them, shuffle only their rows.
        repeated = copies.filter(col("_copies") > 1).select(CONTENT_HASH)
        small = repeated if plan["repeated"] <= BROADCAST_REPEATED_MAX else None
        firsts = valid.transform(lambda df: validate.first_of_each_hash(df, small))
        if known is not None and found:
            seen = F.broadcast(known) if found <= BROADCAST_REPEATED_MAX else known
            firsts = firsts.join(seen, on=CONTENT_HASH, how="left_anti")
        new_rows = firsts.transform(lambda df: validate.table_rows(df, dataset, out.run_id, now))
        if dataset.dedup.scope == "keys":
            _upsert(spark, dataset, new_rows, pending, out, held, change)
        elif pending:
            held.check()
            merge = prepare_table(spark, out.table, dataset, change, out.run_id)
            progress(f"writing {pending:,} new rows to {out.table}")
            with phase(out, "write"):
                commit = checked(
                    lambda: delta.append(
                        new_rows, out.table, out.run_id, _notes(dataset, out), merge_schema=merge
                    )
                )
            # From the Delta commit itself: accounting checks it wrote exactly the plan.
            out.rows_written = commit.rows
        out.counts_final = True  # committed, or nothing new to commit
        if pending:
            add_constraints(spark, out.table, dataset)
    finally:
        copies.unpersist()
        if known is not None:
            known.unpersist()


def _notes(dataset: Dataset, out: Summary) -> dict[str, Any]:
    """What a run's data commit carries in its metadata: the run's counts, schema version."""
    notes: dict[str, Any] = {key: getattr(out, key) for key in COMMIT_COUNTS}
    notes["schema_version"] = dataset.schema.version
    return notes


def _upsert(
    spark: SparkSession,
    dataset: Dataset,
    rows: DataFrame,
    pending: int,
    out: Summary,
    held: leases.Lease,
    change: evolution.Evolution | None,
) -> None:
    """``dedup: keys``: the newest record of each key (by ``order_by``, then content hash)
    replaces the table's row for that key if it is newer, or is inserted if the key is new;
    one MERGE commit. Everything else is a duplicate (superseded)."""
    dedup = dataset.dedup
    order = dedup.order_by or ""
    newest = Window.partitionBy(*[col(k) for k in dedup.keys]).orderBy(
        col(order).desc_nulls_last(), col(CONTENT_HASH).desc()
    )
    latest = rows.withColumn("_nth", F.row_number().over(newest)).filter("_nth = 1").drop("_nth")
    if not pending:
        return
    held.check()
    merge = prepare_table(spark, out.table, dataset, change, out.run_id)
    progress(f"upserting up to {pending:,} rows into {out.table} by {', '.join(dedup.keys)}")
    with phase(out, "write"):
        commit = checked(
            lambda: delta.upsert(
                latest, out.table, dedup.keys, order, out.run_id, _notes(dataset, out), merge
            )
        )
    out.rows_written = commit.rows
    updated = int(commit.notes.get("rows_updated", 0))
    out.extra["rows_updated"] = updated
    # Rows of the batch that lost to a newer record (in the batch or the table): duplicates.
    out.rows_duplicate += pending - out.rows_written


def checked(action: Callable[[], R]) -> R:
    """Run a Spark action, turning known input problems into one-line policy errors."""
    try:
        return action()
    except Exception as exc:
        text = str(exc)
        if "CSV header does not conform to the schema" in text:
            raise PolicyError(_csv_header_problem(text)) from None
        if "CANNOT_MERGE" in text or "Failed to merge" in text:
            first = next((line.strip() for line in text.splitlines() if line.strip()), text)
            raise PolicyError(
                f"Parquet files of this batch give a column different types, which no on_drift "
                f"mode can reconcile: {first}"
            ) from None
        raise


def _csv_header_problem(text: str) -> str:
    lines = [line.strip() for line in text.splitlines()]
    found = next((line for line in lines if line.startswith("Header:")), "")
    expected = next((line for line in lines if line.startswith("Schema:")), "")
    where = next((line for line in lines if line.startswith("CSV file:")), "")
    return f"CSV header does not match the declared schema: {found}; {expected}; {where}"
