"""Read raw source files into the uniform raw frame (:mod:`.rawframe`), one row per record,
nothing dropped: CSV (:mod:`.csvrecords`), JSON lines and Parquet.

Text files are read under the dataset's declared ``encoding``. The files reaching this module
have passed the per-file inspection (they decompress, decode strictly, and keep to the line
limit), so decoding here never has to guess or replace characters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.columns import (
    BLANK,
    EXTRA,
    FIELDS,
    MALFORMED,
    MONO,
    RAW,
    ROW_IN_FILE,
    SOURCE_FILE,
    SPLIT_START,
    col,
    value_col,
)
from pipelines.ingest.csvrecords import read_csv
from pipelines.ingest.layout import CHARSETS, Layout, by_layout
from pipelines.ingest.rawframe import (
    CARRIED,
    CORRUPT,
    CP1252_FROM,
    CP1252_TO,
    SHOWN_KEY_CHARS,
    STRICT_JSON,
    located,
    locators,
    with_locators,
)
from pipelines.schema.datasets import Dataset

_JSON_SPACE = "[ \t\r\n]*"


def read_raw(
    spark: SparkSession,
    dataset: Dataset,
    files: list[str],
    layouts: Mapping[str, Layout] | None = None,
) -> DataFrame:
    """The uniform raw frame for ``files`` of ``dataset`` (see the module docstring).

    ``layouts`` gives text files' layouts already known (:mod:`pipelines.ingest.inspection`
    finds them while checking each file); the others' first bytes are read from the driver.
    """
    known = layouts or {}
    if dataset.format == "csv":
        frame = read_csv(spark, dataset, files, known)
    elif dataset.format == "json":
        frame = _read_json_lines(spark, dataset, files, known)
    else:
        frame = _read_parquet(spark, dataset, files)
    if BLANK not in frame.columns:
        frame = frame.withColumn(BLANK, F.lit(False))
    if FIELDS not in frame.columns:
        frame = frame.withColumn(FIELDS, F.lit(None).cast("array<string>"))
    return frame


def _read_json_lines(
    spark: SparkSession, dataset: Dataset, files: list[str], known: Mapping[str, Layout]
) -> DataFrame:
    by_charset: dict[str, list[str]] = {}
    if dataset.encoding == "utf-16":
        for layout, uris in by_layout(spark, files, dataset.encoding, known).items():
            by_charset.setdefault(layout.charset, []).extend(uris)
    else:
        by_charset[CHARSETS[dataset.encoding]] = files
    frames = [_read_json_files(spark, dataset, c, uris) for c, uris in sorted(by_charset.items())]
    return reduce(DataFrame.unionByName, frames)


def _read_json_files(
    spark: SparkSession, dataset: Dataset, charset: str, files: list[str]
) -> DataFrame:
    return json_records(_lines(spark, charset, files), dataset.schema.names)


def json_records(lines: DataFrame, names: Sequence[str]) -> DataFrame:
    """The uniform raw frame of JSON-lines records, from a frame of their lines (``value``),
    the locators and ``_cut`` (see :func:`_lines`)."""
    text_schema = T.StructType(
        [T.StructField(n, T.StringType()) for n in names] + [T.StructField(CORRUPT, T.StringType())]
    )
    line = F.col("value")
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT, **STRICT_JSON}
    parsed = F.from_json(line, text_schema, options)
    is_object = line.rlike("^" + _JSON_SPACE + "[{]")
    # Spark's parser stops after the first JSON value and keeps the last of repeated keys.
    # Two cheap streaming passes refuse both instead: "[line]" must hold exactly one value
    # (catches glued records and trailing text), and the object's keys must be distinct.
    # (Null when "[line]" does not parse: trailing text, or an object at the depth limit.)
    one_value = F.coalesce(
        F.json_array_length(F.concat(F.lit("["), line, F.lit("]"))) == 1, F.lit(False)
    )
    keys = F.json_object_keys(line)
    repeated = F.filter(keys, lambda key, i: F.array_position(keys, key) != i + 1)
    declared = [F.lit(n) for n in names]
    undeclared = F.filter(keys, lambda key: ~key.isin(*declared))
    # Undeclared fields keep their JSON types (variant), read only for records that have some.
    fields = F.from_json(line, "map<string,variant>")
    extra = F.when(
        F.size(undeclared) > 0,
        F.to_json(F.map_filter(fields, lambda key, _: ~key.isin(*declared))),
    )
    malformed = (
        F.when(F.col("_cut"), F.lit("malformed UTF-16 line: a line break inside a character"))
        .when(~is_object, F.lit("not a JSON object"))
        .when(parsed.getField(CORRUPT).isNotNull(), F.lit("malformed JSON"))
        .when(~one_value, F.lit("malformed JSON: text after the object"))
        .when(
            F.size(repeated) > 0,
            F.concat(
                F.lit("malformed JSON: duplicate key '"),
                F.substring(F.element_at(repeated, 1), 1, SHOWN_KEY_CHARS),
                F.lit("'"),
            ),
        )
    )
    return lines.select(
        *[parsed.getField(n).alias(value_col(i)) for i, n in enumerate(names)],
        line.alias(RAW),
        F.when(malformed.isNull(), extra).alias(EXTRA),
        F.lit(None).cast("array<string>").alias(FIELDS),
        malformed.alias(MALFORMED),
        SOURCE_FILE,
        SPLIT_START,
        MONO,
        F.lit(None).cast("long").alias(ROW_IN_FILE),
        # Blank lines hold no record: they keep their place in the line count, then go.
        (F.trim(line) == "").alias(BLANK),
        *[c for c in CARRIED if c in lines.columns],
    )


def _lines(spark: SparkSession, charset: str, files: list[str]) -> DataFrame:
    """The files' lines as text (``value``), the locators, and ``_cut`` (UTF-16 only).

    Spark's text reader splits bytes on LF, CR or CRLF and does not decode: ASCII-compatible
    encodings are split there and decoded here. UTF-16 is split on the two bytes of its LF
    (CRLF leaves a CR, removed here; CR alone is no line break in UTF-16 files). Those two
    bytes can also straddle two characters (U+0Axx then U+xx00): such a line has an odd number
    of bytes, and ``_cut`` marks it to be refused rather than decoded into wrong characters.
    """
    reader = spark.read.format("text")
    if charset == "UTF-16LE":
        reader = reader.option("lineSep", "\n\u0000")
    elif charset == "UTF-16BE":
        reader = reader.option("lineSep", "\u0000\n")
    lines = reader.load(files).select(F.col("value"), *locators())
    raw = F.col("value").cast("binary")
    cut = F.lit(False)
    if charset == "UTF-8":
        text = F.col("value")
    elif charset == "windows-1252":
        text = F.translate(F.decode(raw, "ISO-8859-1"), CP1252_FROM, CP1252_TO)
    elif charset == "ISO-8859-1":
        text = F.decode(raw, charset)
    else:
        text = F.regexp_replace(F.decode(raw, charset), "\r$", "")
        cut = F.octet_length(raw) % 2 == 1
    # A byte-order mark starts a file; it is not part of the first record.
    text = F.regexp_replace(text, "^\ufeff", "")
    return lines.select(text.alias("value"), SOURCE_FILE, SPLIT_START, MONO, cut.alias("_cut"))


def _read_parquet(spark: SparkSession, dataset: Dataset, files: list[str]) -> DataFrame:
    # Every file's columns (merged): a column only some files have is seen, never lost.
    files_read = spark.read.format("parquet").option("mergeSchema", "true").load(files)
    frame = with_locators(files_read, row_index=True)
    locator_names = {SOURCE_FILE, SPLIT_START, MONO, ROW_IN_FILE}
    fields = [f for f in frame.schema.fields if f.name not in locator_names]
    present = {f.name.lower(): f.name for f in fields}
    values = []
    for i, column in enumerate(dataset.schema.columns):
        found = present.get(column.name.lower())
        values.append((col(found) if found else F.lit(None).cast(column.dtype)).alias(value_col(i)))
    declared = {n.lower() for n in dataset.schema.names}
    undeclared = [f.name for f in fields if f.name.lower() not in declared]
    # to_json leaves null fields out: a record without values there has no undeclared field.
    extra = F.to_json(F.struct(*[col(n) for n in undeclared])) if undeclared else None
    raw = F.to_json(
        F.struct(*[col(f.name) for f in fields]),
        {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"},  # microseconds, as stored
    )
    return frame.select(
        *values,
        raw.alias(RAW),
        (F.when(extra != "{}", extra) if extra is not None else F.lit(None).cast("string")).alias(
            EXTRA
        ),
        F.lit(None).cast("string").alias(MALFORMED),
        *located(),
        col(ROW_IN_FILE),
    )
