"""Read raw source files into one uniform frame, one row per record, nothing dropped.

Every format yields the same columns: ``__v0 .. __vN`` (the declared columns as found in the
file: text for CSV and JSON lines, the file's own type for Parquet), ``_raw`` (the record as
text), ``_malformed`` (why the record could not be split into fields, else null),
``_source_file``, and the locator columns ``_split_start``, ``_mono``, ``_row_index`` from which
:func:`pipelines.validate.with_source_rows` derives each record's row number in its file.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.columns import (
    BLANK,
    MALFORMED,
    MONO,
    RAW,
    ROW_IN_FILE,
    SOURCE_FILE,
    SPLIT_START,
    col,
    value_col,
)
from pipelines.datasets import Dataset

CORRUPT = "_corrupt_record"
# Spark turns unquoted empty CSV fields into null whatever nullValue is; with this nullValue
# nothing else is, so the dataset's null_values list is applied by lakeshard alone.
_NO_NULL_TOKEN = "\u0000"  # noqa: S105 - not a password


def read_raw(spark: SparkSession, dataset: Dataset, files: list[str]) -> DataFrame:
    """The uniform raw frame for ``files`` of ``dataset`` (see the module docstring)."""
    readers = {"csv": _read_csv, "json": _read_json_lines, "parquet": _read_parquet}
    frame = readers[dataset.format](spark, dataset, files)
    if BLANK not in frame.columns:
        frame = frame.withColumn(BLANK, F.lit(False))
    return frame


def _locators() -> list[Column]:
    return [
        F.col("_metadata.file_path").alias(SOURCE_FILE),
        F.col("_metadata.file_block_start").alias(SPLIT_START),
        F.monotonically_increasing_id().alias(MONO),
    ]


def _read_csv(spark: SparkSession, dataset: Dataset, files: list[str]) -> DataFrame:
    names = dataset.schema.names
    opts = dataset.csv
    text_schema = T.StructType(
        [T.StructField(n, T.StringType()) for n in names] + [T.StructField(CORRUPT, T.StringType())]
    )
    frame = (
        spark.read.format("csv")
        .schema(text_schema)
        .option("header", opts.header)
        .option("enforceSchema", False)  # a header that names other columns is an error
        .option("sep", opts.delimiter)
        .option("quote", opts.quote)
        .option("escape", opts.escape)
        .option("multiLine", opts.multiline)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT)
        .option("nullValue", _NO_NULL_TOKEN)
        .option("encoding", "UTF-8")
        .load(files)
    )
    values = [col(n).alias(value_col(i)) for i, n in enumerate(names)]
    reencoded = F.to_csv(
        F.struct(*[col(n) for n in names]),
        {"sep": opts.delimiter, "quote": opts.quote, "escape": opts.escape},
    )
    return frame.select(
        *values,
        F.coalesce(col(CORRUPT), reencoded).alias(RAW),
        F.when(
            col(CORRUPT).isNotNull(),
            F.lit(f"malformed CSV record: expected {len(names)} fields"),
        ).alias(MALFORMED),
        *_locators(),
        F.lit(None).cast("long").alias(ROW_IN_FILE),
    )


def _read_json_lines(spark: SparkSession, dataset: Dataset, files: list[str]) -> DataFrame:
    names = dataset.schema.names
    text_schema = T.StructType(
        [T.StructField(n, T.StringType()) for n in names] + [T.StructField(CORRUPT, T.StringType())]
    )
    lines = spark.read.format("text").load(files).select(F.col("value"), *_locators())
    parsed = F.from_json(
        F.col("value"),
        text_schema,
        {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT},
    )
    is_object = F.ltrim(F.col("value")).startswith("{")
    return lines.select(
        *[parsed.getField(n).alias(value_col(i)) for i, n in enumerate(names)],
        F.col("value").alias(RAW),
        F.when(~is_object, F.lit("not a JSON object"))
        .when(parsed.getField(CORRUPT).isNotNull(), F.lit("malformed JSON"))
        .alias(MALFORMED),
        SOURCE_FILE,
        SPLIT_START,
        MONO,
        F.lit(None).cast("long").alias(ROW_IN_FILE),
        # Blank lines hold no record: they keep their place in the line count, then go.
        (F.trim(F.col("value")) == "").alias(BLANK),
    )


def _read_parquet(spark: SparkSession, dataset: Dataset, files: list[str]) -> DataFrame:
    frame = spark.read.format("parquet").load(files)
    present = {f.name.lower(): f.name for f in frame.schema.fields}
    values = []
    for i, column in enumerate(dataset.schema.columns):
        found = present.get(column.name.lower())
        values.append((col(found) if found else F.lit(None).cast(column.dtype)).alias(value_col(i)))
    raw = F.to_json(F.struct(*[col(f.name) for f in frame.schema.fields]))
    return frame.select(
        *values,
        raw.alias(RAW),
        F.lit(None).cast("string").alias(MALFORMED),
        *_locators(),
        F.col("_metadata.row_index").alias(ROW_IN_FILE),
    )
