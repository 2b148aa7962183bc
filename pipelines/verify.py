"""``lakeshard verify``: is a dataset's table what its runs say it is?

Three checks on one pinned table version, each reported with numbers and a few examples:

* **unique**: no ``_content_hash`` appears twice (one aggregation over the hash column).
* **hashes**: each stored hash is the content hash of the row as it reads now
  (:func:`pipelines.hashing.content_hashes`, in an Arrow function on the executors), on a
  random sample or every row. A row is hashed under the names and types of the schema version
  it was written with (the run's data commit carries ``schema_version``; the run log too): a
  column renamed since is hashed under its old name, a date widened to a timestamp since is
  hashed as the date it was. Rows whose version had a column that has been dropped since (or a
  type changed in a way that alters its encoding) cannot be recomputed: they are counted as
  such, not as mismatches.
* **accounting**: every finished run in the run log satisfies ``rows_read = rows_written +
  rows_duplicate + rows_quarantined + rows_dropped``, and the rows the runs wrote, less those
  they updated in place (``details.rows_updated``), are the table's rows.

The run log is read before the table version is pinned, so every run it shows finished has its
commit in that version; rows committed by runs it does not show finished (still running, or
started since) are taken from their data commits, so a verify next to a live ingest agrees.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.functions import arrow_udf

from pipelines import evolution, hashing, lake
from pipelines.columns import CONTENT_HASH, RESCUED, RUN_ID, SOURCE_FILE, col
from pipelines.datasets import Dataset, SchemaVersion
from pipelines.errors import ConfigError
from pipelines.ingest import accounting_holds, progress
from pipelines.settings import Settings

DEFAULT_SAMPLE = 10_000
EXAMPLES = 5
FINISHED = ("succeeded", "abandoned")
WRITERS = ("ingest", "replay")  # the commands whose rows_written land in the table
COUNTS = ("rows_read", "rows_written", "rows_duplicate", "rows_quarantined", "rows_dropped")
_INTEGERS = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_FLOATS = (T.FloatType, T.DoubleType)
# A stored _rescued is to_json({fields, values, file}) and its hashed content the same JSON
# without the last member, "file" (Spark writes struct members in order; a JSON string cannot
# hold an unescaped quote, so only the real last member matches this).
_RESCUED_FILE = r""","file":"(?:[^"\\]|\\.)*"\}$"""
# Positional names inside the Arrow function: declared names may hold any character.
_GROUP, _STORED, _FILE, _RUN, _RESCUED_TEXT = "__g", "__h", "__f", "__run", "__r"
_GOT = "__got"


@dataclass(frozen=True)
class Options:
    sample: int = DEFAULT_SAMPLE  # rows whose hash is recomputed (ignored with ``full``)
    full: bool = False


@dataclass(frozen=True)
class HashPlan:
    """How to hash rows written under one schema version, from the table's columns now."""

    fields: tuple[tuple[str, str], ...]  # (positional column of the batch, name hashed under)
    why_not: str | None = None  # set when such rows cannot be recomputed


# --- the command -------------------------------------------------------------------------------


def verify(
    spark: SparkSession, settings: Settings, dataset: Dataset, options: Options
) -> dict[str, Any]:
    """Check the dataset's table; the report's ``ok`` is False on any violation."""
    uri = settings.table_uri(dataset.name)
    if not lake.table_exists(spark, uri):
        raise ConfigError(f"{dataset.name}: no table at {uri} (nothing has been ingested)")
    runs = _latest_records(_run_log(spark, settings.runs_uri(dataset.name)))
    version = lake.current_version(spark, uri)
    table = lake.read_table(spark, uri, version)
    commits = _data_commits(spark, uri, version)
    rows = int(table.count())
    progress(f"verifying {dataset.name} at table version {version}: {rows:,} rows")

    progress("checking that content hashes are unique")
    unique = _check_unique(table)
    sample = "every row" if options.full else f"a sample of {options.sample:,} rows"
    progress(f"recomputing content hashes of {sample}")
    hashes = _check_hashes(spark, table, dataset, rows, options, _run_versions(commits, runs))
    progress("checking the run log's accounting")
    accounting = check_accounting(runs, commits, rows)
    checks = {"unique": unique, "hashes": hashes, "accounting": accounting}
    return {
        "dataset": dataset.name,
        "table": uri,
        "table_version": version,
        "rows": rows,
        "checks": checks,
        "ok": all(check["ok"] for check in checks.values()),
    }


def problems(report: Mapping[str, Any]) -> list[str]:
    """One short description per failed check, for the one-line error."""
    checks = report["checks"]
    found: list[str] = []
    unique = checks["unique"]
    if not unique["ok"]:
        first = unique["examples"][0] if unique["examples"] else None
        where = f" (e.g. {first['hash']} in {', '.join(first['source_files'])})" if first else ""
        found.append(
            f"{unique['duplicates']:,} content hash(es) appear more than once, "
            f"{unique['extra_rows']:,} extra row(s){where}"
        )
    hashes = checks["hashes"]
    if not hashes["ok"]:
        first = hashes["examples"][0] if hashes["examples"] else None
        where = (
            f" (e.g. {first['hash']} in {first['source_file']}, run {first['run_id']})"
            if first
            else ""
        )
        found.append(
            f"{hashes['mismatches']:,} of {hashes['checked']:,} recomputed content hash(es) "
            f"differ from the stored ones{where}"
        )
    accounting = checks["accounting"]
    if accounting["bad_runs"]:
        first = accounting["bad_runs"][0]
        found.append(
            f"{len(accounting['bad_runs'])} run(s) break rows_read = rows_written + "
            f"rows_duplicate + rows_quarantined + rows_dropped (e.g. run {first['run_id']}: "
            f"{first['rows_read']} != {first['accounted']})"
        )
    if accounting["table_rows"] != accounting["expected_rows"]:
        found.append(
            f"the table has {accounting['table_rows']:,} rows but the run log accounts for "
            f"{accounting['expected_rows']:,} (written {accounting['sum_written']:,} - updated "
            f"{accounting['sum_updated']:,} + uncommitted runs' {accounting['unrecorded']:,})"
        )
    return found


def print_report(report: Mapping[str, Any]) -> None:
    checks = report["checks"]
    state = "OK" if report["ok"] else "FAILED"
    print(
        f"{report['dataset']}: {state} — {report['rows']:,} rows at table version "
        f"{report['table_version']} ({report['table']})"
    )
    unique = checks["unique"]
    print(f"  unique hashes: {_mark(unique)} ({unique['duplicates']:,} repeated)")
    hashes = checks["hashes"]
    skipped = hashes["not_recomputable"]
    skipped_text = f", {skipped:,} not recomputable" if skipped else ""
    print(
        f"  content hashes: {_mark(hashes)} ({hashes['checked']:,} recomputed, "
        f"{hashes['mismatches']:,} mismatched{skipped_text})"
    )
    accounting = checks["accounting"]
    print(
        f"  accounting: {_mark(accounting)} ({accounting['runs']} run(s), "
        f"{len(accounting['bad_runs'])} unbalanced; written {accounting['sum_written']:,} - "
        f"updated {accounting['sum_updated']:,} + unrecorded {accounting['unrecorded']:,} = "
        f"{accounting['expected_rows']:,} vs {accounting['table_rows']:,} rows)"
    )
    for problem in problems(report):
        print(f"  problem: {problem}")


def _mark(check: Mapping[str, Any]) -> str:
    return "ok" if check["ok"] else "FAILED"


# --- unique hashes -----------------------------------------------------------------------------


def repeated_hashes(table: DataFrame) -> DataFrame:
    """Each content hash stored more than once, with its number of rows (``_copies``)."""
    copies = table.groupBy(CONTENT_HASH).agg(F.count(F.lit(1)).alias("_copies"))
    return copies.filter(col("_copies") > 1)


def _check_unique(table: DataFrame) -> dict[str, Any]:
    repeated = repeated_hashes(table)
    totals = repeated.agg(
        F.count(F.lit(1)).alias("hashes"),
        F.coalesce(F.sum(col("_copies") - 1), F.lit(0)).alias("extra"),
    ).collect()[0]
    examples: list[dict[str, Any]] = []
    if totals["hashes"]:
        first = repeated.orderBy(col("_copies").desc(), CONTENT_HASH).limit(EXAMPLES).collect()
        wanted = [bytes(row[CONTENT_HASH]) for row in first]
        located = (
            table.select(CONTENT_HASH, SOURCE_FILE)
            .filter(col(CONTENT_HASH).isin(wanted))
            .groupBy(CONTENT_HASH)
            .agg(F.sort_array(F.collect_set(SOURCE_FILE)).alias("files"))
            .collect()
        )
        files = {bytes(row[CONTENT_HASH]): list(row["files"]) for row in located}
        examples = [
            {
                "hash": bytes(row[CONTENT_HASH]).hex(),
                "copies": int(row["_copies"]),
                "source_files": files.get(bytes(row[CONTENT_HASH]), []),
            }
            for row in first
        ]
    return {
        "ok": totals["hashes"] == 0,
        "duplicates": int(totals["hashes"]),
        "extra_rows": int(totals["extra"]),
        "examples": examples,
    }


# --- recomputed hashes -------------------------------------------------------------------------


def hash_plans(
    versions: Sequence[SchemaVersion], table: T.StructType
) -> tuple[dict[int, HashPlan], HashPlan]:
    """A plan per declared version number for rows written under it, and the plan for rows
    whose version is unknown (the common one when all agree, else one that skips them).

    Columns are named by position in the batch: ``__c<i>`` the table's i-th declared column,
    ``__d<i>`` the same read as a date (see :func:`hash_inputs`)."""
    declared = evolution.declared_part(table)
    held = evolution.held_version(versions, declared)
    top = len(versions) - 1 if held is None else held
    plans = {
        version.version: _plan(versions, index, top, declared)
        for index, version in enumerate(versions)
    }
    candidates = {plans[v.version] for v in versions[: top + 1]}
    if len(candidates) == 1:
        unknown = next(iter(candidates))
    else:
        unknown = HashPlan((), "schema version unknown (neither commit nor run log names it)")
    return plans, unknown


def _plan(versions: Sequence[SchemaVersion], index: int, top: int, table: T.StructType) -> HashPlan:
    version = versions[index]
    if index > top:
        return HashPlan((), f"written under {version.label}, newer than the table's schema")
    renamed = evolution.composed_renames(versions[: top + 1], index)  # now -> then
    now_of = {then: now for now, then in renamed.items()}
    position = {f.name: i for i, f in enumerate(table.fields)}
    fields: list[tuple[str, str]] = []
    used: set[str] = set()
    for column in version.columns:
        now = now_of.get(column.name)
        if now is None and column.name not in renamed:
            now = column.name
        if now is None or now not in position:
            return HashPlan((), f"not recomputable (column {column.name} dropped since)")
        dtype = table.fields[position[now]].dataType
        if _same_encoding(column.dtype, dtype):
            fields.append((f"__c{position[now]}", column.name))
        elif isinstance(column.dtype, T.DateType) and isinstance(
            dtype, T.TimestampType | T.TimestampNTZType
        ):
            fields.append((f"__d{position[now]}", column.name))
        else:
            return HashPlan(
                (),
                f"not recomputable (column {column.name} changed type since: "
                f"{column.dtype.simpleString()} -> {dtype.simpleString()})",
            )
        used.add(now)
    names = {name for _, name in fields}
    # Columns added since were null in these rows (null fields are not hashed); hashing them
    # anyway catches a value put there later.
    for i, f in enumerate(table.fields):
        if f.name not in used and f.name not in names:
            fields.append((f"__c{i}", f.name))
    return HashPlan(tuple(sorted(fields)))


def _same_encoding(old: T.DataType, new: T.DataType) -> bool:
    """Whether values of ``old`` read as ``new`` (after a Delta widening) encode alike."""
    for family in (_INTEGERS, _FLOATS, (T.DecimalType,)):
        if isinstance(old, family) and isinstance(new, family):
            return True
    if isinstance(old, T.ArrayType) and isinstance(new, T.ArrayType):
        return _same_encoding(old.elementType, new.elementType)
    if isinstance(old, T.MapType) and isinstance(new, T.MapType):
        return _same_encoding(old.keyType, new.keyType) and _same_encoding(
            old.valueType, new.valueType
        )
    if isinstance(old, T.StructType) and isinstance(new, T.StructType):
        fields = {f.name: f.dataType for f in new.fields}
        return all(
            f.name in fields and _same_encoding(f.dataType, fields[f.name]) for f in old.fields
        )
    return type(old) is type(new)


def hash_inputs(table: DataFrame, groups: DataFrame | None, unknown: int) -> DataFrame:
    """The table's rows as the Arrow function reads them: declared columns by position, each
    date-or-timestamp column also as a date, the rescued content, and the plan group of the
    row's run (from ``groups``: ``_run_id``, ``__g``; ``unknown`` where it has none)."""
    declared = evolution.declared_part(table.schema)
    values = [col(f.name).alias(f"__c{i}") for i, f in enumerate(declared.fields)]
    dates = [
        col(f.name).try_cast(T.DateType()).alias(f"__d{i}")
        for i, f in enumerate(declared.fields)
        if isinstance(f.dataType, T.TimestampType | T.TimestampNTZType)
    ]
    rescued = (
        [F.regexp_replace(col(RESCUED), _RESCUED_FILE, "}").alias(_RESCUED_TEXT)]
        if RESCUED in table.columns
        else []
    )
    if groups is None:
        framed = table.withColumn(_GROUP, F.lit(0))
    else:
        framed = table.join(F.broadcast(groups), on=RUN_ID, how="left").withColumn(
            _GROUP, F.coalesce(col(_GROUP), F.lit(unknown))
        )
    return framed.select(
        *values,
        *dates,
        *rescued,
        col(_GROUP).cast("int").alias(_GROUP),
        col(CONTENT_HASH).alias(_STORED),
        col(SOURCE_FILE).alias(_FILE),
        col(RUN_ID).alias(_RUN),
    )


def with_recomputed(inputs: DataFrame, plans: Sequence[HashPlan]) -> DataFrame:
    """``__got``: each row's content hash recomputed as ``plans[__g]`` says (a scalar Arrow
    UDF over record batches, as at ingest); null where its plan cannot recompute it."""
    values = [c for c in inputs.columns if c not in (_STORED, _FILE, _RUN)]
    # The function's type hints make it a scalar Arrow UDF; pyspark's stubs do not see that.
    recompute = arrow_udf(_recomputer(plans), T.BinaryType())  # type: ignore[call-overload]
    return inputs.withColumn(_GOT, recompute(F.struct(*[col(c) for c in values])))


def _recomputer(plans: Sequence[HashPlan]) -> Callable[[pa.Array], pa.Array]:
    chosen = list(plans)

    def recompute(records: pa.Array) -> pa.Array:
        return _recompute(records, chosen)

    return recompute


def _recompute(records: pa.StructArray, plans: Sequence[HashPlan]) -> pa.Array:
    groups = records.field(_GROUP)
    rescued = records.type.get_field_index(_RESCUED_TEXT) >= 0
    parts: list[pa.Array] = []
    places: list[pa.Array] = []
    for index, plan in enumerate(plans):
        positions = pc.indices_nonzero(pc.fill_null(pc.equal(groups, index), False))
        if len(positions) == 0:
            continue
        places.append(positions)
        if plan.why_not is not None:
            parts.append(pa.nulls(len(positions), pa.binary()))
            continue
        arrays = [pc.take(records.field(source), positions) for source, _ in plan.fields]
        names = [name for _, name in plan.fields]
        if rescued:
            arrays.append(pc.take(records.field(_RESCUED_TEXT), positions))
            names.append(RESCUED)
        parts.append(hashing.content_hashes(pa.StructArray.from_arrays(arrays, names=names)))
    if not parts:
        return pa.nulls(len(records), pa.binary())
    # Back in row order: every row is in exactly one group.
    order = pc.sort_indices(pa.concat_arrays(places))
    return pc.take(pa.concat_arrays(parts), order)


def _check_hashes(
    spark: SparkSession,
    table: DataFrame,
    dataset: Dataset,
    rows: int,
    options: Options,
    run_versions: Mapping[str, int],
) -> dict[str, Any]:
    by_version, unknown = hash_plans(dataset.versions, table.schema)
    plans = sorted(set(by_version.values()) | {unknown}, key=repr)
    index = {plan: i for i, plan in enumerate(plans)}
    groups: DataFrame | None = None
    if len(plans) > 1:
        pairs = [
            (run, index[by_version.get(number, unknown)]) for run, number in run_versions.items()
        ]
        schema = T.StructType(
            [T.StructField(RUN_ID, T.StringType()), T.StructField(_GROUP, T.IntegerType())]
        )
        groups = spark.createDataFrame(pairs, schema=schema)
    chosen, seed = table, None
    if not options.full and options.sample < rows:
        seed = random.randrange(2**31)
        # Bernoulli sampling: ask for a few standard deviations more, so that `limit` nearly
        # always finds N rows, without ordering the whole table. Kept, so that the examples
        # come from the rows counted.
        fraction = min(1.0, (options.sample + 4 * math.sqrt(options.sample) + 10) / rows)
        chosen = (
            table.sample(withReplacement=False, fraction=fraction, seed=seed)
            .limit(options.sample)
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
    try:
        checked = with_recomputed(hash_inputs(chosen, groups, index[unknown]), plans)
        got = col(_GOT)
        mismatch = got.isNotNull() & ~F.coalesce(got == col(_STORED), F.lit(False))
        counts = (
            checked.groupBy(_GROUP)
            .agg(
                F.count(F.lit(1)).alias("rows"),
                F.count(got).alias("checked"),
                F.count(F.when(mismatch, True)).alias("mismatches"),
            )
            .collect()
        )
        mismatched = sum(int(r["mismatches"]) for r in counts)
        examples = []
        if mismatched:
            shown = checked.filter(mismatch).orderBy(_FILE, _STORED).limit(EXAMPLES).collect()
            examples = [
                {
                    "hash": bytes(r[_STORED]).hex() if r[_STORED] is not None else None,
                    "recomputed": bytes(r[_GOT]).hex(),
                    "source_file": r[_FILE],
                    "run_id": r[_RUN],
                }
                for r in shown
            ]
    finally:
        if chosen is not table:
            chosen.unpersist()
    skipped: dict[str, int] = {}
    for r in counts:
        why = plans[int(r[_GROUP])].why_not
        if why is not None:
            skipped[why] = skipped.get(why, 0) + int(r["rows"])
    return {
        "ok": mismatched == 0,
        "full": seed is None,
        "seed": seed,
        "checked": sum(int(r["checked"]) for r in counts),
        "mismatches": mismatched,
        "examples": examples,
        "not_recomputable": sum(skipped.values()),
        "not_recomputable_reasons": skipped,
        "renames": "mapped: rows are hashed under the names of their run's schema version",
    }


# --- accounting --------------------------------------------------------------------------------


def check_accounting(
    runs: Sequence[Mapping[str, Any]], commits: Sequence[Mapping[str, Any]], table_rows: int
) -> dict[str, Any]:
    """Each finished run balances its rows; the runs' rows add up to the table's.

    ``runs``: each run's latest run-log record. A failed run counts what it committed (its
    record's ``rows_written``, set from its data commit; 0 when it failed before): its other
    counts may be partial, so it is not held to the identity. Rows of a data commit whose run
    the log does not show ended (still running, or started after the log was read) are taken
    from the commit (``unrecorded``)."""
    committed: dict[str, int] = {}
    for commit in commits:
        run_id = str(commit["run_id"])
        committed[run_id] = committed.get(run_id, 0) + int(commit["rows"])
    ended: set[str] = set()
    bad: list[dict[str, Any]] = []
    written = updated = finished = 0
    for run in runs:
        if run["status"] == "running":
            continue
        ended.add(run["run_id"])
        if run["command"] not in WRITERS:
            continue
        counts = {key: int(run.get(key) or 0) for key in COUNTS}
        updated += _rows_updated(run.get("details"))
        if run["status"] not in FINISHED:
            # Failed: it may have died after its commit landed and before recording it.
            written += max(counts["rows_written"], committed.get(run["run_id"], 0))
            continue
        written += counts["rows_written"]
        finished += 1
        if not accounting_holds(counts):
            accounted = counts["rows_written"] + counts["rows_duplicate"]
            accounted += counts["rows_quarantined"] + counts["rows_dropped"]
            bad.append(
                {
                    "run_id": run["run_id"],
                    "command": run["command"],
                    "status": run["status"],
                    **counts,
                    "accounted": accounted,
                }
            )
    unrecorded = {run: rows for run, rows in committed.items() if run not in ended}
    expected = written - updated + sum(unrecorded.values())
    return {
        "ok": not bad and expected == table_rows,
        "table_rows": table_rows,
        "sum_written": written,
        "sum_updated": updated,
        "unrecorded": sum(unrecorded.values()),
        "unrecorded_runs": sorted(unrecorded),
        "expected_rows": expected,
        "runs": finished,
        "bad_runs": bad,
    }


def _rows_updated(details: Any) -> int:
    if not details:
        return 0
    try:
        parsed = json.loads(details) if isinstance(details, str) else details
    except ValueError:
        return 0
    value = parsed.get("rows_updated") if isinstance(parsed, dict) else None
    return int(value) if isinstance(value, int | float) else 0


# --- reading the run log and the table's commits ------------------------------------------------


def _run_log(spark: SparkSession, uri: str) -> list[dict[str, Any]]:
    if not lake.table_exists(spark, uri) or not lake.has_data(spark, uri):
        return []
    wanted = ["run_id", "command", "status", "ended_at", "schema_version", *COUNTS, "details"]
    return [row.asDict() for row in lake.read_table(spark, uri).select(*wanted).collect()]


def _latest_records(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each run's state: its outcome record (the latest one), else its ``running`` record."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        key = (record["status"] != "running", str(record["ended_at"] or ""))
        seen = latest.get(record["run_id"])
        if seen is None or key > (seen["status"] != "running", str(seen["ended_at"] or "")):
            latest[record["run_id"]] = dict(record)
    return sorted(latest.values(), key=lambda r: str(r["run_id"]))


def _data_commits(spark: SparkSession, uri: str, version: int | None) -> list[dict[str, Any]]:
    """The table's commits (up to ``version``) that carry a run id: run, rows, schema version."""
    history = DeltaTable.forPath(spark, uri).history()
    if version is not None:
        history = history.filter(col("version") <= version)
    found: list[dict[str, Any]] = []
    rows = history.select("version", "operation", "operationMetrics", "userMetadata").collect()
    for row in rows:
        try:
            notes = json.loads(row["userMetadata"] or "{}")
        except ValueError:
            continue
        if not isinstance(notes, dict) or "run_id" not in notes or "marks" in notes:
            continue
        metrics = row["operationMetrics"] or {}
        if row["operation"] == "WRITE":
            written = int(metrics.get("numOutputRows", 0))
        elif row["operation"] == "MERGE":
            written = int(metrics.get("numTargetRowsInserted", 0))
        else:
            continue
        found.append(
            {
                "version": int(row["version"]),
                "run_id": notes["run_id"],
                "rows": written,
                "schema_version": notes.get("schema_version"),
            }
        )
    return found


def _run_versions(
    commits: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]]
) -> dict[str, int]:
    """Each run's schema version: from its data commit, else from its run-log record."""
    versions = {
        str(r["run_id"]): int(r["schema_version"])
        for r in runs
        if r.get("schema_version") is not None
    }
    for commit in commits:
        if isinstance(commit["schema_version"], int):
            versions[str(commit["run_id"])] = commit["schema_version"]
    return versions
