"""Recomputing stored content hashes, each row under the schema version it was written with."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.functions import arrow_udf

from pipelines.columns import CONTENT_HASH, RESCUED, RUN_ID, SOURCE_FILE, col
from pipelines.ingest import hashing
from pipelines.lake.commits import Commit
from pipelines.schema import evolution
from pipelines.schema.datasets import Dataset, SchemaVersion
from pipelines.verify.options import EXAMPLES, VerifyOptions

_INTEGERS = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_FLOATS = (T.FloatType, T.DoubleType)
# A stored _rescued is to_json({fields, values, file}) and its hashed content the same JSON
# without the last member, "file" (Spark writes struct members in order; a JSON string cannot
# hold an unescaped quote, so only the real last member matches this).
_RESCUED_FILE = r""","file":"(?:[^"\\]|\\.)*"\}$"""
# Positional names inside the Arrow function: declared names may hold any character.
_GROUP = "__g"
_STORED = "__h"
_FILE = "__f"
_RUN = "__run"
_RESCUED_TEXT = "__r"
_GOT = "__got"


@dataclass(frozen=True)
class HashPlan:
    """How to hash rows written under one schema version, from the table's columns now."""

    fields: tuple[tuple[str, str], ...]  # (positional column of the batch, name hashed under)
    why_not: str | None = None  # set when such rows cannot be recomputed


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


def check_hashes(
    spark: SparkSession,
    table: DataFrame,
    dataset: Dataset,
    rows: int,
    options: VerifyOptions,
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


def run_versions(commits: Sequence[Commit], runs: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Each run's schema version: from its data commit, else from its run-log record."""
    versions = {
        str(r["run_id"]): int(r["schema_version"])
        for r in runs
        if r.get("schema_version") is not None
    }
    for commit in commits:
        schema_version = commit.notes.get("schema_version")
        if isinstance(schema_version, int):
            versions[str(commit.run_id)] = schema_version
    return versions
