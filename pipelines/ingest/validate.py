"""Pure transformations from raw records to typed rows, quarantine rows and table rows.

Nothing here reads, writes, collects or looks up configuration: each function takes DataFrames
and returns a DataFrame, composed by :mod:`pipelines.ingest.run` with ``DataFrame.transform``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pyarrow as pa
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.functions import arrow_udf

from pipelines import jvm
from pipelines.columns import (
    BLANK,
    CONTENT_HASH,
    DROPPED,
    EXTRA,
    FIELDS,
    INGESTED_AT,
    MALFORMED,
    MONO,
    RAW,
    REASON,
    RESCUED,
    ROW_IN_FILE,
    RULES,
    RUN_ID,
    SOURCE_FILE,
    SOURCE_ROW,
    SPLIT_START,
    col,
    value_col,
)
from pipelines.ingest import hashing
from pipelines.ingest.rawframe import CARRIED, STRICT_JSON
from pipelines.lake.quarantine import QUARANTINE_KEY, REPLAYED_AT, REPLAYED_BY
from pipelines.schema.datasets import Dataset, SchemaVersion

DRIFT = "_drift"  # the record has undeclared fields or a value of another type
IGNORED = "_ignored"  # on_drift: ignore — the record's undeclared fields were dropped
RESCUED_CONTENT = "_rescued_content"  # what a rescued record's hash includes (see below)
_SHOWN_CHARS = 60  # how much of a bad value a reason quotes
# A partition value becomes a directory name, `column=value`, with these characters escaped as
# %XX (Spark's Hive-style escaping); most file systems allow at most 255 bytes in a name.
_PATH_ESCAPED = r"""[\x01-\x1f"#%'*/:=?\\\x7f{\[\]^]"""
_MAX_NAME_BYTES = 255
_PLAIN_JSON_STRING = r'"[^"\\\x00-\x1f]*+"'  # a JSON string without escapes or control characters
_JSON_WHITE_SPACE = r"[ \t\r\n]++"
_STRING_MARK = "\u0001"
# Spark's JSON reader refuses a string of more characters (its maxStringLen): a text of at most
# this many bytes cannot hold one, so the fast path reads it as from_json would.
_JSON_MAX_STRING_CHARS = 20_000_000


def typed_col(index: int) -> str:
    return f"__t{index}"


def cast_from_source(source: Column, source_type: T.DataType, target: T.DataType) -> Column:
    """Strict (ANSI) conversion: null when the value does not fit the target type."""
    complex_target = isinstance(target, T.ArrayType | T.MapType | T.StructType)
    if isinstance(source_type, T.StringType) and complex_target:
        parsed = F.from_json(source, cast(Any, target), {"mode": "PERMISSIVE", **STRICT_JSON})
        if target == T.ArrayType(T.StringType()):
            return F.coalesce(plain_string_array(source), parsed)
        return parsed
    if isinstance(source_type, T.StringType) and isinstance(target, T.StringType):
        return source
    return source.try_cast(target)


def plain_string_array(text: Column) -> Column:
    """``array<string>`` from JSON text when it is a plain array (strings without escapes or
    control characters, JSON white space between), else null: split by regular expressions,
    about twice as fast as Spark's JSON parser, which reads the other texts.

    Each whole string becomes U+0001 (which a plain array cannot hold: it is a control
    character) and white space goes; a plain array is then ``[]`` or ``[`` + U+0001 + (``,`` +
    U+0001) * n + ``]``, and any quote left over was not part of a string. No expression repeats
    a group: Java's regular expressions recurse per repetition of a group, and a long array
    would overflow the stack."""
    shape = F.regexp_replace(
        F.regexp_replace(text, _PLAIN_JSON_STRING, _STRING_MARK), _JSON_WHITE_SPACE, ""
    )
    one = F.lit(f"[{_STRING_MARK}]")
    # Without the first test, "[" + (",", string) * k + string + (",", string) * n + "]" passed.
    listed = F.startswith(shape, F.lit("[" + _STRING_MARK)) & (
        F.replace(shape, F.lit("," + _STRING_MARK), F.lit("")) == one
    )
    plain = (
        (F.octet_length(text) <= _JSON_MAX_STRING_CHARS)
        & (F.instr(text, _STRING_MARK) == 0)
        & ((shape == F.lit("[]")) | listed)
    )
    return F.when(plain, F.regexp_extract_all(text, F.lit('"([^"]*+)"'), 1))


def with_typed_values(frame: DataFrame, dataset: Dataset) -> DataFrame:
    """Typed values ``__t<i>``, ``_reason`` (null for a valid record), drift, and the locators.

    Schema drift (undeclared fields, values of another type) is handled by ``on_drift``:
    ``quarantine`` refuses the record, ``rescue`` keeps what does not fit in ``_rescued``,
    ``ignore`` drops undeclared fields (a value of another type is still refused: it cannot
    be dropped without losing it), ``fail`` flags it (``_drift``) for the run to stop on.

    The raw source values are dropped here (the raw record goes in :func:`with_rules`).
    """
    schema = dataset.schema
    mode = dataset.on_drift
    null_tokens = list(dataset.csv.null_values) if dataset.format == "csv" else []
    typed: list[Column] = []
    problems: list[Column] = []
    unfit: list[Column] = []  # (name, source text) entries for values that do not fit
    any_unfit: Column = F.lit(False)
    extra = col(EXTRA)
    if mode != "rescue" and mode != "ignore":
        problems.append(
            F.when(
                extra.isNotNull(),
                F.concat(
                    F.lit("undeclared field(s): "),
                    F.substring(F.array_join(F.json_object_keys(extra), ", "), 1, _SHOWN_CHARS),
                ),
            )
        )
    for i, column in enumerate(schema.columns):
        source = col(value_col(i))
        source_type = frame.schema[value_col(i)].dataType
        if null_tokens and isinstance(source_type, T.StringType):
            source = F.when(~source.isin(null_tokens), source)
        value = cast_from_source(source, source_type, column.dtype)
        typed.append(value.alias(typed_col(i)))
        does_not_fit = source.isNotNull() & value.isNull()
        shown = F.substring(source.cast("string"), 1, _SHOWN_CHARS)
        unfit.append(F.when(does_not_fit, F.struct(F.lit(column.name), source.cast("string"))))
        any_unfit = any_unfit | does_not_fit
        rescued_here = mode == "rescue" and column.nullable
        problems.append(
            F.when(
                does_not_fit & F.lit(not rescued_here),
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
    # Plain boolean logic, no array: a higher-order function (a lambda) would keep the whole
    # projection out of Spark's whole-stage code generation. Rescue alone builds the entries.
    drift = extra.isNotNull() | any_unfit
    extras: list[Column] = []
    if mode == "rescue":
        unfit_entries = F.filter(F.array(*unfit), lambda entry: entry.isNotNull())
        fields = F.parse_json(extra).alias("fields")
        values = F.when(F.size(unfit_entries) > 0, F.map_from_entries(unfit_entries))
        rescued = F.to_json(
            F.struct(fields, values.alias("values"), col(SOURCE_FILE).alias("file"))
        )
        content = F.to_json(F.struct(fields, values.alias("values")))
        keep = reason.isNull() & drift
        extras += [
            F.when(keep, rescued).alias(RESCUED),
            F.when(keep, content).alias(RESCUED_CONTENT),
        ]
    return frame.select(
        *typed,
        reason.alias(REASON),
        RAW,
        FIELDS,
        F.coalesce(col(MALFORMED).isNull() & drift, F.lit(False)).alias(DRIFT),
        F.coalesce(F.lit(mode == "ignore") & extra.isNotNull(), F.lit(False)).alias(IGNORED),
        *extras,
        SOURCE_FILE,
        SPLIT_START,
        MONO,
        ROW_IN_FILE,
        BLANK,
        *[c for c in CARRIED if c in frame.columns],
    )


def with_rules(frame: DataFrame, dataset: Dataset, window_start: Any = None) -> DataFrame:
    """Evaluate the dataset's row rules on valid records: ``_rules`` (the names of the rules a
    record failed, else null), ``_dropped``, and ``_reason`` for ``quarantine``/``fail`` rules.

    A rule passes only when its expression is true: false and null both fail it (a rule on a
    missing value is not silently passed). Precedence: quarantine (or fail) over drop over warn.
    The raw record is kept for refused records only: the frame that a run keeps in memory
    stays as narrow as the table.
    """
    frame = _outside_window(frame, dataset, window_start)
    if not dataset.rules:
        return _raw_of_refused(
            frame.withColumn(RULES, F.lit(None).cast("array<string>")).withColumn(
                DROPPED, F.lit(False)
            )
        )
    names = [col(typed_col(i)).alias(c.name) for i, c in enumerate(dataset.schema.columns)]
    evaluated = col(REASON).isNull() & ~col(BLANK)

    def failing(kinds: tuple[str, ...]) -> Column:
        checks = [
            F.when(~F.coalesce(F.expr(r.expr).cast("boolean"), F.lit(False)), F.lit(r.name))
            for r in dataset.rules
            if r.on_violation in kinds
        ]
        found = F.array_compact(F.array(*checks)) if checks else F.array().cast("array<string>")
        return F.when(evaluated, found)

    every = failing(("quarantine", "fail", "drop", "warn"))
    refusing = failing(("quarantine", "fail"))
    dropping = failing(("drop",))
    reason = F.when(
        F.size(refusing) > 0, F.concat(F.lit("failed rule(s): "), F.array_join(refusing, ", "))
    )
    checked = frame.select("*", *names)
    ruled = checked.select(
        *[col(c) for c in frame.columns if c != REASON],
        F.coalesce(col(REASON), reason).alias(REASON),
        F.when(F.size(every) > 0, every).alias(RULES),
        F.coalesce((F.size(refusing) == 0) & (F.size(dropping) > 0), F.lit(False)).alias(DROPPED),
    )
    return _raw_of_refused(ruled)


def _outside_window(frame: DataFrame, dataset: Dataset, start: Any) -> DataFrame:
    """Under ``dedup: window``, refuse a record older than the window: it cannot be checked
    against the table's older rows, so it is neither written unchecked nor dropped."""
    name = dataset.dedup.column
    if start is None or name is None:
        return frame
    index = dataset.schema.names.index(name)
    value = col(typed_col(index))
    days = dataset.dedup.days
    why = F.lit(
        f"column {name}: before the dedup window, which starts at {start} "
        f"({days} days before the newest {name} in the table)"
    )
    outside = col(REASON).isNull() & ~col(BLANK) & (value < F.lit(start))
    return frame.withColumn(REASON, F.when(outside, why).otherwise(col(REASON)))


def _raw_of_refused(frame: DataFrame) -> DataFrame:
    refused = col(REASON).isNotNull()
    return frame.withColumn(RAW, F.when(refused, col(RAW))).withColumn(
        FIELDS, F.when(refused, col(FIELDS))
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


def with_content_hash(frame: DataFrame, schema: SchemaVersion, engine: str = "jvm") -> DataFrame:
    """Add ``_content_hash`` (16 bytes) to valid records (:mod:`pipelines.ingest.hashing`).

    ``engine``: ``jvm``, lakeshard's Spark expression ``lakeshard_content_hash`` (its jar,
    ``pipelines/jvm/src``), or ``python``, the Arrow UDF; the two compute the same bytes.

    Under ``on_drift: rescue`` a record's rescued content (``{"fields", "values"}`` of
    ``_rescued``, without the file) is hashed with it as a string field ``_rescued``: two
    records that differ only there are different records. Null for the others, so their hash
    is the plain one (null fields are left out of the encoding).
    """
    fields = [col(typed_col(i)).alias(c.name) for i, c in enumerate(schema.columns)]
    if RESCUED_CONTENT in frame.columns:
        fields.append(col(RESCUED_CONTENT).alias(RESCUED))
    record = F.struct(*fields)
    valid = col(REASON).isNull() & ~col(BLANK)
    if DROPPED in frame.columns:
        valid = valid & ~col(DROPPED)
    return frame.withColumn(CONTENT_HASH, F.when(valid, content_hash_column(record, engine)))


def content_hash_column(record: Column, engine: str = "jvm") -> Column:
    """The content hash of ``record`` (a struct column), computed by ``engine``."""
    if engine == "jvm":
        return F.call_function(jvm.CONTENT_HASH_FUNCTION, record)
    # The function's type hints make it a scalar Arrow UDF; pyspark's stubs do not see that.
    hash_udf = arrow_udf(_hash_records, T.BinaryType())  # type: ignore[call-overload]
    return cast(Column, hash_udf(record))


def _hash_records(records: pa.Array) -> pa.Array:
    return hashing.content_hashes(records)


def refused_with_source_rows(frame: DataFrame, splits: list[SplitOffset]) -> DataFrame:
    """The refused records, with ``_source_row`` (see :func:`located_rows`)."""
    return located_rows(frame, col(REASON).isNotNull(), splits)


# A split of a file: (file, split start, its first monotone id, the file's rows before it).
SplitOffset = tuple[str, int, int, int]
_OFFSETS = T.StructType(
    [
        T.StructField(SOURCE_FILE, T.StringType()),
        T.StructField(SPLIT_START, T.LongType()),
        T.StructField("_split_first", T.LongType()),
        T.StructField("_rows_before", T.LongType()),
    ]
)


def split_offsets(splits: Sequence[tuple[str, int, int, int]]) -> list[SplitOffset]:
    """From (file, split start, rows in the split, first monotone id) per split: each split's
    offset, the rows of the same file's earlier splits."""
    offsets: list[SplitOffset] = []
    before: dict[str, int] = {}
    for file, start, rows, first in sorted(splits, key=lambda s: (s[0], s[1])):
        offsets.append((file, start, first, before.get(file, 0)))
        before[file] = before.get(file, 0) + rows
    return offsets


def located_rows(frame: DataFrame, condition: Column, splits: list[SplitOffset]) -> DataFrame:
    """The records meeting ``condition``, with ``_source_row``: their 1-based record number
    in their file.

    A file may be read in several splits; within a split rows keep file order and consecutive
    ``monotonically_increasing_id`` values. So a row's number is the rows of the file's earlier
    splits plus its offset in its own split (``splits``, counted by the first pass over the
    batch: :func:`split_offsets`). Parquet gives the row index directly.
    """
    offsets = frame.sparkSession.createDataFrame(splits, _OFFSETS)
    refused = frame.filter(condition & ~col(BLANK))
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


def table_rows(frame: DataFrame, dataset: Dataset, run_id: str, now: Column) -> DataFrame:
    """The table's columns, in order, with their declared types."""
    schema = dataset.schema
    declared = [col(typed_col(i)).cast(c.dtype).alias(c.name) for i, c in enumerate(schema.columns)]
    rescued = [col(RESCUED)] if dataset.on_drift == "rescue" else []
    return frame.select(
        *declared,
        col(CONTENT_HASH).cast("binary").alias(CONTENT_HASH),
        col(SOURCE_FILE).cast("string").alias(SOURCE_FILE),
        F.lit(run_id).alias(RUN_ID),
        now.cast("timestamp").alias(INGESTED_AT),
        *rescued,
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
        col(RULES),
        col(FIELDS),
        F.lit(None).cast("string").alias(REPLAYED_BY),
        F.lit(None).cast("timestamp").alias(REPLAYED_AT),
    )


def schema_fields(schema: T.StructType) -> Sequence[tuple[str, str, bool]]:
    """(name, type, nullable) triples, for comparing schemas in tests and checks."""
    return [(f.name, f.dataType.simpleString(), f.nullable) for f in schema.fields]
