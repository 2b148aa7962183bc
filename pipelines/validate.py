"""Pure transformations from raw records to typed rows, quarantine rows and table rows.

Nothing here reads, writes, collects or looks up configuration: each function takes DataFrames
and returns a DataFrame, composed by :mod:`pipelines.ingest` with ``DataFrame.transform``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pyarrow as pa
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.functions import arrow_udf

from pipelines import hashing
from pipelines.columns import (
    BLANK,
    CONTENT_HASH,
    INGESTED_AT,
    MALFORMED,
    MONO,
    RAW,
    REASON,
    ROW_IN_FILE,
    RUN_ID,
    SOURCE_FILE,
    SOURCE_ROW,
    SPLIT_START,
    col,
    value_col,
)
from pipelines.datasets import Dataset, SchemaVersion
from pipelines.reading import STRICT_JSON

QUARANTINE_KEY = "_quarantine_key"
_SHOWN_CHARS = 60  # how much of a bad value a reason quotes
# A partition value becomes a directory name, `column=value`, with these characters escaped as
# %XX (Spark's Hive-style escaping); most file systems allow at most 255 bytes in a name.
_PATH_ESCAPED = r"""[\x01-\x1f"#%'*/:=?\\\x7f{\[\]^]"""
_MAX_NAME_BYTES = 255


def typed_col(index: int) -> str:
    return f"__t{index}"


def _cast_from_source(source: Column, source_type: T.DataType, target: T.DataType) -> Column:
    """Strict (ANSI) conversion: null when the value does not fit the target type."""
    complex_target = isinstance(target, T.ArrayType | T.MapType | T.StructType)
    if isinstance(source_type, T.StringType) and complex_target:
        return F.from_json(source, cast(Any, target), {"mode": "PERMISSIVE", **STRICT_JSON})
    if isinstance(source_type, T.StringType) and isinstance(target, T.StringType):
        return source
    return source.try_cast(target)


def with_typed_values(frame: DataFrame, dataset: Dataset) -> DataFrame:
    """Typed values ``__t<i>``, ``_reason`` (null for a valid record) and the locators.

    The raw source values are dropped here, and the raw record is kept for refused records
    only: the frame that a run keeps in memory stays as narrow as the table.
    """
    schema = dataset.schema
    null_tokens = list(dataset.csv.null_values) if dataset.format == "csv" else []
    typed: list[Column] = []
    problems: list[Column] = []
    for i, column in enumerate(schema.columns):
        source = col(value_col(i))
        source_type = frame.schema[value_col(i)].dataType
        if null_tokens and isinstance(source_type, T.StringType):
            source = F.when(~source.isin(null_tokens), source)
        value = _cast_from_source(source, source_type, column.dtype)
        typed.append(value.alias(typed_col(i)))
        does_not_fit = source.isNotNull() & value.isNull()
        shown = F.substring(source.cast("string"), 1, _SHOWN_CHARS)
        problems.append(
            F.when(
                does_not_fit,
                F.concat(
                    F.lit(f"column {column.name}: cannot read '"),
                    shown,
                    F.lit(f"' as {column.dtype.simpleString()}"),
                ),
            )
        )
        if not column.nullable:
            missing = source.isNull()
            problems.append(
                F.when(missing, F.lit(f"column {column.name}: null in a non-nullable column"))
            )
        if column.name in dataset.partition_by and isinstance(column.dtype, T.StringType):
            problems.append(_partition_value_problem(column.name, value))
    joined = F.concat_ws("; ", *problems)
    reason = F.coalesce(col(MALFORMED), F.when(joined != "", joined))
    return frame.select(
        *typed,
        reason.alias(REASON),
        F.when(reason.isNotNull(), col(RAW)).alias(RAW),
        SOURCE_FILE,
        SPLIT_START,
        MONO,
        ROW_IN_FILE,
        BLANK,
    )


def _escaped_bytes(text: Column) -> Column:
    """UTF-8 bytes of ``text`` once Spark has escaped it for a path (each escape adds 2)."""
    escaped = F.length(text) - F.length(F.regexp_replace(text, _PATH_ESCAPED, ""))
    return F.octet_length(text) + 2 * escaped


def _partition_value_problem(name: str, value: Column) -> Column:
    """Why a string cannot be stored as a partition value unchanged, else null.

    Spark writes an empty partition string as null and cannot name a directory after a value
    that is too long or holds U+0000: such rows are refused, never silently changed, and the
    rule is the same whatever the storage, so a file is read the same way everywhere.
    """
    name_bytes = _escaped_bytes(F.lit(name)) + 1  # "column="
    size = name_bytes + _escaped_bytes(value)
    return (
        F.when(
            value == "",
            F.lit(f"column {name}: empty string as a partition value (stored as null)"),
        )
        .when(
            F.instr(value, "\u0000") > 0,
            F.lit(f"column {name}: U+0000 in a partition value"),
        )
        .when(
            size > _MAX_NAME_BYTES,
            F.concat(
                F.lit(f"column {name}: partition value too long for a directory name ("),
                size.cast("string"),
                F.lit(f" bytes, at most {_MAX_NAME_BYTES})"),
            ),
        )
    )


def with_content_hash(frame: DataFrame, schema: SchemaVersion) -> DataFrame:
    """Add ``_content_hash`` (16 bytes) to valid records, computed by :mod:`pipelines.hashing`."""
    record = F.struct(*[col(typed_col(i)).alias(c.name) for i, c in enumerate(schema.columns)])
    valid = col(REASON).isNull() & ~col(BLANK)
    # The function's type hints make it a scalar Arrow UDF; pyspark's stubs do not see that.
    hash_udf = arrow_udf(_hash_records, T.BinaryType())  # type: ignore[call-overload]
    return frame.withColumn(CONTENT_HASH, F.when(valid, hash_udf(record)))


def _hash_records(records: pa.Array) -> pa.Array:
    return hashing.content_hashes(records)


def refused_with_source_rows(frame: DataFrame) -> DataFrame:
    """The refused records, with ``_source_row``: their 1-based record number in their file.

    A file may be read in several splits; within a split rows keep file order and consecutive
    ``monotonically_increasing_id`` values. So a row's number is the rows of the file's earlier
    splits plus its offset in its own split. Parquet gives the row index directly.
    """
    per_split = frame.groupBy(SOURCE_FILE, SPLIT_START).agg(
        F.count(F.lit(1)).alias("_split_rows"), F.min(MONO).alias("_split_first")
    )
    earlier = (
        Window.partitionBy(SOURCE_FILE)
        .orderBy(SPLIT_START)
        .rowsBetween(Window.unboundedPreceding, -1)
    )
    offsets = per_split.select(
        SOURCE_FILE,
        SPLIT_START,
        "_split_first",
        F.coalesce(F.sum("_split_rows").over(earlier), F.lit(0)).alias("_rows_before"),
    )
    refused = frame.filter(col(REASON).isNotNull() & ~col(BLANK))
    located = refused.join(F.broadcast(offsets), on=[SOURCE_FILE, SPLIT_START], how="left")
    counted = col("_rows_before") + (col(MONO) - col("_split_first")) + 1
    return located.withColumn(SOURCE_ROW, F.coalesce(col(ROW_IN_FILE) + 1, counted)).drop(
        "_split_first", "_rows_before"
    )


def hash_copies(valid: DataFrame) -> DataFrame:
    """Each distinct content hash with its number of rows, ``_copies`` (a shuffle of hashes)."""
    return valid.groupBy(CONTENT_HASH).agg(F.count(F.lit(1)).alias("_copies"))


def first_of_each_hash(valid: DataFrame, repeated: DataFrame | None = None) -> DataFrame:
    """Keep one row per content hash: the first by source file and position (deterministic).

    Given the (small) set of ``repeated`` hashes, rows with a unique hash pass through without
    a shuffle and only the repeated rows are ordered to pick the first; without it, every row
    is shuffled and ordered.
    """
    order = Window.partitionBy(CONTENT_HASH).orderBy(SOURCE_FILE, SPLIT_START, MONO)

    def firsts(rows: DataFrame) -> DataFrame:
        ranked = rows.withColumn("_nth", F.row_number().over(order))
        return ranked.filter(col("_nth") == 1).drop("_nth")

    if repeated is None:
        return firsts(valid)
    small = F.broadcast(repeated)
    unique = valid.join(small, on=CONTENT_HASH, how="left_anti")
    return unique.unionByName(firsts(valid.join(small, on=CONTENT_HASH, how="left_semi")))


def not_in(rows: DataFrame, existing: DataFrame | None, key: str) -> DataFrame:
    """Rows whose ``key`` is not among ``existing``'s (all of them when there is no table)."""
    if existing is None:
        return rows
    return rows.join(existing.select(key), on=key, how="left_anti")


def table_rows(frame: DataFrame, schema: SchemaVersion, run_id: str, now: Column) -> DataFrame:
    """The table's columns, in order, with their declared types."""
    declared = [col(typed_col(i)).cast(c.dtype).alias(c.name) for i, c in enumerate(schema.columns)]
    return frame.select(
        *declared,
        col(CONTENT_HASH).cast("binary").alias(CONTENT_HASH),
        col(SOURCE_FILE).cast("string").alias(SOURCE_FILE),
        F.lit(run_id).alias(RUN_ID),
        now.cast("timestamp").alias(INGESTED_AT),
    )


def table_schema(schema: SchemaVersion) -> T.StructType:
    """The Delta table's schema: declared columns (nullability kept) plus bookkeeping."""
    return T.StructType(
        [
            *schema.struct().fields,
            T.StructField(CONTENT_HASH, T.BinaryType(), nullable=False),
            T.StructField(SOURCE_FILE, T.StringType(), nullable=False),
            T.StructField(RUN_ID, T.StringType(), nullable=False),
            T.StructField(INGESTED_AT, T.TimestampType(), nullable=False),
        ]
    )


QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField(QUARANTINE_KEY, T.StringType(), nullable=False),
        T.StructField(SOURCE_FILE, T.StringType(), nullable=False),
        T.StructField(SOURCE_ROW, T.LongType(), nullable=False),
        T.StructField(RAW, T.StringType(), nullable=True),
        T.StructField(REASON, T.StringType(), nullable=False),
        T.StructField("_format", T.StringType(), nullable=False),
        T.StructField("_schema_version", T.IntegerType(), nullable=False),
        T.StructField(RUN_ID, T.StringType(), nullable=False),
        T.StructField("_quarantined_at", T.TimestampType(), nullable=False),
    ]
)


def quarantine_rows(bad: DataFrame, dataset: Dataset, run_id: str, now: Column) -> DataFrame:
    """Quarantine records: where each came from, the raw record, and why it was refused.

    The key (file, row, raw record) makes quarantining idempotent: the same bad record read
    again from the same place is recognised, not stored twice.
    """
    key = F.sha2(
        F.concat_ws(
            "\u0000",
            col(SOURCE_FILE),
            col(SOURCE_ROW).cast("string"),
            F.coalesce(col(RAW), F.lit("")),
        ),
        256,
    )
    return bad.select(
        key.alias(QUARANTINE_KEY),
        col(SOURCE_FILE),
        col(SOURCE_ROW).cast("long").alias(SOURCE_ROW),
        col(RAW),
        col(REASON),
        F.lit(dataset.format).alias("_format"),
        F.lit(dataset.schema.version).alias("_schema_version"),
        F.lit(run_id).alias(RUN_ID),
        now.cast("timestamp").alias("_quarantined_at"),
    )


def schema_fields(schema: T.StructType) -> Sequence[tuple[str, str, bool]]:
    """(name, type, nullable) triples, for comparing schemas in tests and checks."""
    return [(f.name, f.dataType.simpleString(), f.nullable) for f in schema.fields]
