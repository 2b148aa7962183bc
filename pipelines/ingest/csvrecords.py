"""CSV records: matching a file's header to the declared columns, reading files with Spark, and
splitting quarantined CSV records into fields again for a replay."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession
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
from pipelines.ingest.layout import Layout, by_layout
from pipelines.ingest.rawframe import (
    CARRIED,
    CORRUPT,
    CP1252_FROM,
    CP1252_TO,
    NO_NULL_TOKEN,
    located,
    with_locators,
)
from pipelines.schema.datasets import Dataset


def read_csv(
    spark: SparkSession, dataset: Dataset, files: list[str], known: Mapping[str, Layout]
) -> DataFrame:
    groups = by_layout(spark, files, dataset.encoding, known)
    frames = [_read_csv_files(spark, dataset, layout, uris) for layout, uris in groups.items()]
    return reduce(DataFrame.unionByName, frames)


def header_names(dataset: Dataset, layout: Layout) -> list[str]:
    """The column names of a CSV file: its header's (when it has one that parses), else the
    declared ones. Files are read by their own header, so columns may come in any order and
    undeclared ones are seen (schema drift) rather than refused as a whole file."""
    opts = dataset.csv
    declared = list(dataset.schema.names)
    if not opts.header or layout.first_line is None:
        return declared
    try:
        rows = list(
            csv.reader(
                [layout.first_line],
                delimiter=opts.delimiter,
                quotechar=opts.quote,
                doublequote=opts.escape == opts.quote,
                escapechar=None if opts.escape == opts.quote else opts.escape,
                strict=True,
            )
        )
    except csv.Error:
        return declared
    names = rows[0] if len(rows) == 1 else []
    if not names or len(set(names)) != len(names) or any(n == "" for n in names):
        return declared  # Spark's own header check then reports the mismatch
    return names


def _matched(dataset: Dataset, header: list[str]) -> dict[str, str]:
    """Declared column -> header name: the same name, else the one name equal ignoring case
    (as Spark matches a CSV header and Parquet columns)."""
    found: dict[str, str] = {}
    for name in dataset.schema.names:
        if name in header:
            found[name] = name
            continue
        alike = [h for h in header if h.lower() == name.lower()]
        if len(alike) == 1 and alike[0] not in dataset.schema.names:
            found[name] = alike[0]
    return found


def _read_csv_files(
    spark: SparkSession, dataset: Dataset, layout: Layout, files: list[str]
) -> DataFrame:
    opts = dataset.csv
    # Spark reads CSV in few charsets: windows-1252 is read as ISO-8859-1 (one character per
    # byte there too; the delimiter and friends spelled the same way) and mapped after parsing.
    cp1252 = layout.charset == "windows-1252"
    spelled = _latin1_spelling if cp1252 else str
    found = header_names(dataset, layout)
    names = [spelled(n) for n in found]
    spelled_of = dict(zip(found, names, strict=True))
    by_name = {
        declared: spelled_of[header] for declared, header in _matched(dataset, found).items()
    }
    text_schema = T.StructType(
        [T.StructField(n, T.StringType()) for n in names] + [T.StructField(CORRUPT, T.StringType())]
    )
    # A file whose every line is a record (the per-file checks say) is read line by line: Spark
    # then splits it across tasks instead of parsing it whole in one.
    multiline = opts.multiline and not layout.line_records
    reader = (
        spark.read.format("csv")
        .schema(text_schema)
        .option("header", opts.header)
        .option("enforceSchema", False)  # a header that names other columns is an error
        .option("sep", spelled(opts.delimiter))
        .option("quote", spelled(opts.quote))
        .option("escape", spelled(opts.escape))
        .option("multiLine", multiline)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT)
        .option("nullValue", NO_NULL_TOKEN)
        .option("encoding", "ISO-8859-1" if cp1252 else layout.charset)
    )
    # Line by line (multiLine off), Hadoop splits on any of LF, CR, CRLF, but only in
    # ASCII-compatible encodings: UTF-16 needs the separator spelled out.
    utf16 = layout.charset.startswith("UTF-16")
    line_sep = layout.line_sep or ("\n" if utf16 else None)
    if line_sep is not None and (multiline or utf16):
        reader = reader.option("lineSep", line_sep)
    frame = with_locators(reader.load(files))

    def text(value: Column) -> Column:
        return F.translate(value, CP1252_FROM, CP1252_TO) if cp1252 else value

    values = [
        (text(col(by_name[n])) if n in by_name else F.lit(None).cast("string")).alias(value_col(i))
        for i, n in enumerate(dataset.schema.names)
    ]
    matched = set(_matched(dataset, found).values())
    undeclared = [n for n in found if n not in matched]
    extra = (
        F.to_json(
            F.create_map(
                *[part for n in undeclared for part in (F.lit(n), text(col(spelled_of[n])))]
            )
        )
        if undeclared
        else F.lit(None).cast("string")
    )
    reencoded = F.to_csv(
        F.struct(*[col(n) for n in names]),
        {
            "sep": spelled(opts.delimiter),
            "quote": spelled(opts.quote),
            "escape": spelled(opts.escape),
            # Spark's CSV writer trims values by default: the raw record keeps them as read.
            "ignoreLeadingWhiteSpace": "false",
            "ignoreTrailingWhiteSpace": "false",
        },
    )
    return frame.select(
        *values,
        text(F.coalesce(col(CORRUPT), reencoded)).alias(RAW),
        F.when(col(CORRUPT).isNull(), extra).alias(EXTRA),
        F.lit(found).alias(FIELDS),
        F.when(
            col(CORRUPT).isNotNull(),
            F.lit(f"malformed CSV record: expected {len(names)} fields"),
        ).alias(MALFORMED),
        *located(),
        F.lit(None).cast("long").alias(ROW_IN_FILE),
    )


def _latin1_spelling(text: str) -> str:
    """``text`` as a windows-1252 file read as ISO-8859-1 shows it (unchanged if it cannot be)."""
    try:
        return text.encode("cp1252").decode("latin-1")
    except UnicodeEncodeError:
        return text


def csv_records(quarantined: DataFrame, dataset: Dataset) -> DataFrame:
    """The uniform raw frame of CSV records kept in the quarantine (``_raw`` holds the record
    as CSV text, ``_fields`` its file's column names), for a replay; locators as given."""
    opts = dataset.csv
    options = {
        "sep": opts.delimiter,
        "quote": opts.quote,
        "escape": opts.escape,
        "nullValue": NO_NULL_TOKEN,
        "mode": "PERMISSIVE",
        "columnNameOfCorruptRecord": CORRUPT,
    }
    groups = [row[0] for row in quarantined.select(FIELDS).distinct().collect()]
    frames = []
    # No record (say, all replayed already): the declared columns' frame, of no rows.
    for names in groups or [None]:
        fields = list(names) if names else list(dataset.schema.names)
        schema = T.StructType(
            [T.StructField(n, T.StringType()) for n in fields]
            + [T.StructField(CORRUPT, T.StringType())]
        )
        rows = quarantined.filter(
            col(FIELDS).isNull() if names is None else col(FIELDS) == F.lit(fields)
        )
        ddl = ", ".join("`" + f.name.replace("`", "``") + "` STRING" for f in schema.fields)
        parsed = F.from_csv(col(RAW), ddl, options)
        undeclared = [n for n in fields if n not in dataset.schema.names]
        extra = (
            F.to_json(
                F.create_map(*[p for n in undeclared for p in (F.lit(n), parsed.getField(n))])
            )
            if undeclared
            else F.lit(None).cast("string")
        )
        values = [
            (parsed.getField(n) if n in fields else F.lit(None).cast("string")).alias(value_col(i))
            for i, n in enumerate(dataset.schema.names)
        ]
        corrupt = parsed.getField(CORRUPT).isNotNull()
        frames.append(
            rows.select(
                *values,
                col(RAW),
                F.when(~corrupt, extra).alias(EXTRA),
                F.lit(fields).alias(FIELDS),
                F.when(
                    corrupt, F.lit(f"malformed CSV record: expected {len(fields)} fields")
                ).alias(MALFORMED),
                SOURCE_FILE,
                SPLIT_START,
                MONO,
                F.lit(None).cast("long").alias(ROW_IN_FILE),
                F.lit(False).alias(BLANK),
                *[c for c in CARRIED if c in rows.columns],
            )
        )
    return reduce(DataFrame.unionByName, frames)
