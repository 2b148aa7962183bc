"""The ingest run: source files -> validated, hashed, deduplicated rows -> Delta, exactly once.

Order of work, and why:

1. Take the dataset's lease (one writer per dataset at a time; see :mod:`pipelines.lease`),
   close out runs that died without an outcome (``abandoned``), log this run as ``running``.
2. List the sources; look every file up in the ledger in one batch (:mod:`pipelines.ledger`):
   unchanged files are skipped unopened; new ones are hashed and checked on executors
   (:mod:`pipelines.files`): same bytes as a file already taken -> skipped, broken -> rejected.
3. Read, type, hash every record of the files taken once and keep the result (memory, spilling
   to disk), so the input is parsed once whatever follows.
4. Count records; write refused records to the quarantine (skipping any already there), with
   file, row number, raw record and reason.
5. Drop duplicates inside the batch (first by file and position wins) and rows whose hash is
   already in the table; append the rest in one commit, whose metadata holds the run's counts.
6. Record the files in the ledger, then the run's outcome in the run log.

Crash safety comes from keyed, idempotent writes rather than a cross-table transaction: the
table takes only hashes it lacks, the quarantine only keys it lacks, the ledger is written
last. A run that dies anywhere leaves its files out of the ledger, so the next run reads them
again and adds exactly what is missing; it also records the dead run as ``abandoned`` with the
rows that run committed (from the commits' metadata), so the run log still sums to the tables.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Row, SparkSession, Window
from pyspark.sql import functions as F

from pipelines import (
    __version__,
    evolution,
    files,
    lake,
    ledger,
    objectstore,
    reading,
    rules,
    storage,
    validate,
)
from pipelines import lease as leases
from pipelines.columns import (
    BLANK,
    CONTENT_HASH,
    DROPPED,
    REASON,
    RESCUED,
    RULES,
    SOURCE_FILE,
    SOURCE_ROW,
    col,
)
from pipelines.datasets import Dataset
from pipelines.errors import (
    LakeshardError,
    PolicyError,
    describe,
    raise_if_stopped,
    stop_requested,
)
from pipelines.settings import Settings

R = TypeVar("R")
# The counts a run's table commit carries in its metadata (with rows_written, from the commit).
RUN_COUNTS = ("rows_read", "rows_duplicate", "rows_quarantined", "rows_dropped")
# Summary fields kept in the run log's ``details`` JSON.
DETAILS = ("rules", "drift", "rows_released", "rows_updated")
BROADCAST_REPEATED_MAX = 2_000_000  # 16-byte hashes: about 32 MB on each executor
BROADCAST_BATCH_MAX = 4_000_000  # a batch's distinct hashes sent to every task of the lookup


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
    """Report a step on stderr; also a checkpoint where a requested stop (SIGTERM) happens."""
    raise_if_stopped()
    print(f"lakeshard: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class LeaseOptions:
    wait_s: float = 0.0  # how long to wait for a run that holds the dataset's lease
    ttl_s: float = leases.DEFAULT_TTL_S  # how long a claim lives without a heartbeat


# The work of one command, done while the run holds the dataset's lease: (summary, lease,
# the planned schema evolution) -> None, filling in the summary.
Work = Callable[[Summary, leases.Lease, "evolution.Evolution | None"], None]


def run_ingest(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    sources: list[str],
    lease_options: LeaseOptions | None = None,
) -> Summary:
    """Ingest ``sources`` into ``dataset``'s table; record the run whether it succeeds or not."""

    def work(summary: Summary, held: leases.Lease, change: evolution.Evolution | None) -> None:
        _ingest(spark, settings, dataset, sources, summary, held, change)

    return run_recorded(spark, settings, dataset, "ingest", sources, lease_options, work)


def run_recorded(
    spark: SparkSession,
    settings: Settings,
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
    rules.check_rules(spark, dataset)
    with leases.held(
        settings.lease_uri(dataset.name), run_id, options.ttl_s, options.wait_s
    ) as held:
        # Refused before anything is written: an incompatible schema version (exit 3).
        change = planned_evolution(spark, settings, dataset)
        _ensure_tables(spark, settings, dataset)
        if held.previous is not None:  # a claim left by a run that died: close its records
            _close_abandoned_runs(spark, settings, dataset, held)
        started = datetime.now(UTC)
        log = settings.runs_uri(dataset.name)

        def record(error: str | None) -> dict[str, Any]:
            return _run_record(dataset, command, sources, summary, started, error)

        lake.record_run(spark, log, record(None))
        progress(f"run {run_id} ({command}) holds the lease on {dataset.name}")
        error: str | None = None
        try:
            work(summary, held, change)
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
            print(f"lakeshard: recording run {run_id} as {summary.status}", file=sys.stderr)
            try:
                lake.record_run(spark, log, record(error))
            except Exception as exc:  # the run's own outcome matters more than its log line
                progress(f"warning: could not write the run log: {describe(exc)}")
    return summary


def planned_evolution(
    spark: SparkSession, settings: Settings, dataset: Dataset
) -> evolution.Evolution | None:
    """How the existing table must change to take the current schema version (None: no table)."""
    uri = settings.table_uri(dataset.name)
    if not lake.table_exists(spark, uri):
        return None
    plan = evolution.plan(dataset, lake.schema_of(spark, uri), lake.properties(spark, uri))
    if plan.needed:
        shown = "; ".join(c.describe() for c in plan.changes)
        progress(f"schema: the table holds {plan.table_label}; {dataset.schema.label}: {shown}")
    return plan


def _prepare_table(
    spark: SparkSession, uri: str, dataset: Dataset, plan: evolution.Evolution | None
) -> bool:
    """Just before the data commit: drop lakeshard's CHECK constraints that are stale (or all
    of them when the schema evolves: Delta refuses to rename, drop or widen a column that a
    constraint names), then apply the evolution's metadata commits. True when the data commit
    must merge the schema (new columns, wider types). :func:`_add_constraints` follows it."""
    evolving = plan is not None and plan.needed
    present = lake.properties(spark, uri)
    drop, _ = rules.constraint_changes(
        present, {} if evolving else rules.wanted_constraints(dataset)
    )
    for name in drop:
        lake.alter(spark, uri, f"DROP CONSTRAINT IF EXISTS `{name}`")
    merge = False
    if plan is not None:
        for statement in plan.statements:
            progress(f"schema: ALTER TABLE … {statement}")
            lake.alter(spark, uri, statement)
        for statement in plan.try_statements:
            try:
                lake.alter(spark, uri, statement)
            except Exception as exc:
                progress(
                    f"warning: could not {statement} ({describe(exc)}); earlier rows break it, "
                    "so lakeshard alone keeps refusing nulls there"
                )
        merge = plan.merge
    if dataset.on_drift == "rescue" and RESCUED not in lake.schema_of(spark, uri).names:
        merge = True
    return merge


def _add_constraints(spark: SparkSession, uri: str, dataset: Dataset) -> None:
    """Add the CHECK constraints of the rules that refuse rows, where missing. A constraint
    that rows already in the table break is not added; that is noted in a table property
    (``lakeshard.unenforced.<name>``) so later runs do not scan the table for it again."""
    present = lake.properties(spark, uri)
    _, add = rules.constraint_changes(present, rules.wanted_constraints(dataset))
    for name, expr in add.items():
        try:
            lake.alter(spark, uri, f"ADD CONSTRAINT `{name}` CHECK ({expr})")
        except Exception as exc:
            progress(
                f"warning: constraint {name} not added: rows already in the table break it "
                f"({describe(exc)}); new rows are still checked by the rule"
            )
            text = expr.replace("\\", "\\\\").replace("'", "\\'")
            lake.alter(spark, uri, f"SET TBLPROPERTIES ('{rules.UNENFORCED}{name}' = '{text}')")


def _ensure_tables(spark: SparkSession, settings: Settings, dataset: Dataset) -> None:
    name = dataset.name
    tables = [
        (settings.table_uri(name), validate.table_schema(dataset), "dataset"),
        (settings.quarantine_uri(name), validate.QUARANTINE_SCHEMA, "quarantine of"),
        (settings.ledger_uri(name), ledger.SCHEMA, "file ledger of"),
        (settings.runs_uri(name), lake.RUNS_SCHEMA, "run log of"),
    ]
    for uri, schema, what in tables:
        partitions = dataset.partition_by if what == "dataset" else ()
        lake.ensure_table(spark, uri, schema, partitions, description=f"lakeshard {what} {name}")
    # Quarantines made by an earlier lakeshard lack the newer (nullable) columns.
    lake.ensure_columns(spark, settings.quarantine_uri(name), validate.QUARANTINE_SCHEMA)


def _close_abandoned_runs(
    spark: SparkSession, settings: Settings, dataset: Dataset, held: leases.Lease
) -> None:
    """Record runs that died without an outcome as ``abandoned``, with what they committed.

    Holding the lease, this run is the only live writer: any other run still ``running`` is
    dead. Its table commit (if any) carries its counts; its quarantine commit, its refused rows.
    Only called after taking over a dead claim: every run that logs ``running`` holds the
    lease and releases it when it ends, so a run that died always leaves its claim behind.
    """
    log = settings.runs_uri(dataset.name)
    for record in lake.unfinished_runs(spark, log):
        run_id = record["run_id"]
        table = lake.commit_of(spark, settings.table_uri(dataset.name), run_id)
        quarantine = lake.commit_of(spark, settings.quarantine_uri(dataset.name), run_id)
        counts = {key: 0 for key in ("rows_duplicate", "rows_dropped")}
        counts["rows_quarantined"] = quarantine.rows
        counts["rows_read"] = quarantine.rows
        if table.version is not None:
            counts.update({k: v for k, v in table.notes.items() if k in RUN_COUNTS})
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
            details["rows_released"] = lake.count_where(
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
        lake.record_run(spark, log, record)
        progress(f"run {run_id} had died: recorded as abandoned ({note})")


def _ingest(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    sources: list[str],
    out: Summary,
    held: leases.Lease,
    change: evolution.Evolution | None,
) -> None:
    t0 = time.monotonic()
    context = spark.sparkContext
    out.extra["spark"] = {"master": context.master, "app_id": context.applicationId}
    listed = storage.list_sources(spark, sources)
    size_mb = sum(f.size for f in listed) / 1e6
    progress(f"listing: {len(listed)} file(s), {size_mb:,.1f} MB for {dataset.name}")
    known = ledger.load(spark, settings.ledger_uri(dataset.name))

    def inspect(candidates: list[storage.SourceFile]) -> list[files.Inspection]:
        progress(f"inspecting {len(candidates)} new file(s)")
        return files.run_inspections(
            context.parallelize,
            [c.uri for c in candidates],
            files.Rules.of(dataset),
            objectstore.s3_options(),
            slices=context.defaultParallelism * 2,
        )

    plan = ledger.plan(listed, known, inspect, dataset.on_changed_file, out.run_id)
    out.files_seen = len(listed)
    out.files_skipped = plan.skipped
    out.extra["files_rejected"] = len(plan.rejected)
    out.extra["files_ingested"] = len(plan.take)
    for entry in plan.rejected:
        progress(f"rejected {entry.path}: {entry.reason}")
    progress(
        f"reading {len(plan.take)} file(s); {plan.unchanged} unchanged and "
        f"{plan.duplicates} duplicate file(s) skipped, {len(plan.rejected)} rejected"
    )
    if plan.take:
        uris = [f.uri for f in plan.take]
        _ingest_rows(spark, dataset, uris, plan.layouts, out, held, change, t0)
    held.check()
    progress(f"ledger: recording {len(plan.entries)} file(s)")
    ledger.append(spark, settings.ledger_uri(dataset.name), plan.entries, datetime.now(UTC))
    out.table_version = lake.current_version(spark, out.table)
    progress(
        f"done in {time.monotonic() - t0:.1f}s: {out.rows_written:,} written, "
        f"{out.rows_duplicate:,} duplicate, {out.rows_quarantined:,} quarantined"
    )


def _ingest_rows(
    spark: SparkSession,
    dataset: Dataset,
    uris: list[str],
    layouts: Mapping[str, reading.Layout],
    out: Summary,
    held: leases.Lease,
    change: evolution.Evolution | None,
    t0: float,
) -> None:
    now = F.lit(datetime.now(UTC))
    since = window_start(spark, dataset, out.table)
    records = (
        _checked(lambda: reading.read_raw(spark, dataset, uris, layouts))
        .transform(lambda df: validate.with_typed_values(df, dataset))
        .transform(lambda df: validate.with_rules(df, dataset, since))
        .transform(lambda df: validate.with_content_hash(df, dataset.schema))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        counts = _checked(lambda: _first_counts(records, dataset))
        out.rows_read, bad = int(counts["read"]), int(counts["bad"])
        dropped = int(counts["dropped"])
        _report_checks(records, dataset, counts, out)
        progress(
            f"read {out.rows_read:,} records ({bad:,} refused, {dropped:,} dropped by rules) "
            f"in {time.monotonic() - t0:.1f}s"
        )

        quarantined = 0
        if bad:
            refused = records.transform(validate.refused_with_source_rows).transform(
                lambda df: validate.quarantine_rows(df, dataset, out.run_id, now)
            )
            present = lake.read_if_data(spark, out.quarantine)
            fresh = validate.not_in(refused, present, validate.QUARANTINE_KEY)
            held.check()
            progress("quarantining refused records")
            quarantined = _checked(lambda: lake.append(fresh, out.quarantine, out.run_id)).rows
            progress(f"quarantined {quarantined:,} records at {time.monotonic() - t0:.1f}s")
        out.rows_quarantined = quarantined
        out.rows_dropped = dropped

        valid = records.filter(col(REASON).isNull() & ~col(BLANK) & ~col(DROPPED))
        _write_new_rows(spark, dataset, valid, bad, out, held, change, now, t0, since)
    finally:
        records.unpersist()


def _first_counts(records: DataFrame, dataset: Dataset) -> Row:
    """One pass over the batch: records, refused, dropped, drift, and each rule's violations."""
    present = records.filter(~col(BLANK))
    rule_counts = [
        F.count(F.when(F.array_contains(col(RULES), rule.name), True)).alias(f"rule_{index}")
        for index, rule in enumerate(dataset.rules)
    ]
    return present.agg(  # a global aggregate always has exactly one row
        F.count(F.lit(1)).alias("read"),
        F.count(col(REASON)).alias("bad"),
        F.count(F.when(col(DROPPED), True)).alias("dropped"),
        F.count(F.when(col(validate.DRIFT), True)).alias("drift"),
        F.count(F.when(col(validate.IGNORED), True)).alias("ignored"),
        *rule_counts,
    ).collect()[0]


def _report_checks(records: DataFrame, dataset: Dataset, counts: Row, out: Summary) -> None:
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
        where = _first_located(records, F.array_contains(col(RULES), rule.name))
        raise PolicyError(
            f"{dataset.declaration}: {rule.key}: rule {rule.name} (on_violation: fail) failed "
            f"for {violations[rule.name]:,} row(s), first {where}; nothing was written"
        )
    if dataset.on_drift == "fail" and counts["drift"]:
        where = _first_located(records, col(validate.DRIFT))
        raise PolicyError(
            f"schema drift (on_drift: fail) in {int(counts['drift']):,} row(s), first {where}; "
            "nothing was written"
        )


def _first_located(records: DataFrame, condition: Column) -> str:
    """Where the first record meeting ``condition`` is: file, row, and why it was refused."""
    located = records.transform(lambda df: validate.located_rows(df, condition))
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
    table = lake.read_if_data(spark, uri)
    if table is None:
        return None
    newest = table.agg(F.max(col(dedup.column))).first()
    if newest is None or newest[0] is None:
        return None
    return newest[0] - timedelta(days=dedup.days)


def _write_new_rows(
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
    # read once more, from the cache, to be written.
    copies = validate.hash_copies(valid).persist(StorageLevel.MEMORY_AND_DISK)
    known: DataFrame | None = None
    try:
        plan = _checked(
            lambda: copies.agg(
                F.count(F.lit(1)).alias("distinct"),
                F.count(F.when(col("_copies") > 1, True)).alias("repeated"),
            ).collect()[0]
        )
        existing = lake.read_if_data(spark, out.table)
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
                .persist(StorageLevel.MEMORY_AND_DISK)
            )
            found = _checked(known.count)
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
            merge = _prepare_table(spark, out.table, dataset, change)
            progress(f"writing {pending:,} new rows to {out.table}")
            commit = _checked(
                lambda: lake.append(
                    new_rows, out.table, out.run_id, _notes(dataset, out), merge_schema=merge
                )
            )
            # From the Delta commit itself: accounting checks it wrote exactly the plan.
            out.rows_written = commit.rows
            _add_constraints(spark, out.table, dataset)
    finally:
        copies.unpersist()
        if known is not None:
            known.unpersist()


def _notes(dataset: Dataset, out: Summary) -> dict[str, Any]:
    """What a run's data commit carries in its metadata: the run's counts, schema version."""
    notes: dict[str, Any] = {key: getattr(out, key) for key in RUN_COUNTS}
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
    merge = _prepare_table(spark, out.table, dataset, change)
    progress(f"upserting up to {pending:,} rows into {out.table} by {', '.join(dedup.keys)}")
    commit = _checked(
        lambda: lake.upsert(
            latest, out.table, dedup.keys, order, out.run_id, _notes(dataset, out), merge
        )
    )
    out.rows_written = commit.rows
    updated = int(commit.notes.get("rows_updated", 0))
    out.extra["rows_updated"] = updated
    # Rows of the batch that lost to a newer record (in the batch or the table): duplicates.
    out.rows_duplicate += pending - out.rows_written
    _add_constraints(spark, out.table, dataset)


def _checked(action: Callable[[], R]) -> R:
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
        **{key: getattr(summary, key) for key in ("rows_written", *RUN_COUNTS)},
        "error": error,
        "lakeshard_version": __version__,
        # Per-rule violation counts and drift counts (JSON; see README "Row rules").
        "details": {k: summary.extra[k] for k in DETAILS if k in summary.extra} or None,
    }
