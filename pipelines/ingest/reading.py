"""Read raw source files into one uniform frame, one row per record, nothing dropped.

Every format yields the same columns: ``__v0 .. __vN`` (the declared columns as found in the
file: text for CSV and JSON lines, the file's own type for Parquet), ``_raw`` (the record as
text), ``_extra`` (the record's undeclared fields as a JSON object, else null), ``_fields``
(CSV: the names of the fields in ``_raw``), ``_malformed`` (why the record could not be split
into fields, else null),
``_source_file``, and the locator columns ``_split_start``, ``_mono``, ``_row_index`` from which
:func:`pipelines.ingest.validate.with_source_rows` derives each record's row number in its file.

Text files are read under the dataset's declared ``encoding``. The files reaching this module
have passed the per-file inspection (they decompress, decode strictly, and keep to the line
limit), so decoding here never has to guess or replace characters.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import reduce
from typing import Any

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
from pipelines.schema.datasets import Dataset

CORRUPT = "_corrupt_record"
# Columns passed through untouched when present (a replay carries each record's quarantine key).
CARRIED = ("_quarantine_key",)
# Spark turns unquoted empty CSV fields into null whatever nullValue is; with this nullValue
# nothing else is, so the dataset's null_values list is applied by lakeshard alone.
_NO_NULL_TOKEN = "\u0000"  # noqa: S105 - not a password
# RFC 8259 JSON: Spark's parser accepts NaN, Infinity and 'single quotes' unless told not to.
STRICT_JSON = {"allowNonNumericNumbers": "false", "allowSingleQuotes": "false"}
_SHOWN_KEY_CHARS = 60  # how much of a repeated key a reason quotes

# Java names of the declared encodings. "utf-16" is resolved per file by its byte-order mark.
_CHARSETS = {
    "utf-8": "UTF-8",
    "utf-16le": "UTF-16LE",
    "utf-16be": "UTF-16BE",
    "latin-1": "ISO-8859-1",
    "cp1252": "windows-1252",
}
_PYTHON_CODECS = {"UTF-16LE": "utf-16-le", "UTF-16BE": "utf-16-be", "windows-1252": "cp1252"}
# Spark's decode() knows few charsets; windows-1252 is ISO-8859-1 but for 0x80-0x9F, where
# it maps 27 bytes to other characters (the other 5 fail the strict decode before reading).
_CP1252_BYTES = bytes(b for b in range(0x80, 0xA0) if bytes([b]).decode("cp1252", "ignore"))
_CP1252_FROM = _CP1252_BYTES.decode("latin-1")
_CP1252_TO = _CP1252_BYTES.decode("cp1252")
HEAD_BYTES = 64 * 1024  # enough to find the first line break of any sane file
_SNIFF_THREADS = 8  # heads are read from the driver; object stores answer slowly, in parallel
_LINE_BREAK = re.compile("\r\n|\r|\n")
_JSON_SPACE = "[ \t\r\n]*"


@dataclass(frozen=True)
class Layout:
    """How a text file is laid out: its Java charset (byte order resolved) and line break."""

    charset: str
    line_sep: str | None  # the file's first line break; None when its head holds none
    first_line: str | None = None  # the file's first line (a CSV header), when its head holds it


def layout_of(head: bytes, encoding: str) -> Layout:
    """The layout of a file whose first bytes are ``head``, declared as ``encoding``.

    A file's line break is its first one: Spark's CSV parser keeps a line break inside a quoted
    value exactly only when told the file's line separator (it normalises it to LF otherwise).
    ``utf-16`` without a byte-order mark is little-endian, as Python reads it.
    """
    if encoding == "utf-16":
        charset = "UTF-16BE" if head.startswith(b"\xfe\xff") else "UTF-16LE"
    else:
        charset = _CHARSETS[encoding]
    text = head.decode(_PYTHON_CODECS.get(charset, charset), errors="ignore")
    found = _LINE_BREAK.search(text)
    ambiguous = found is not None and found.group() == "\r" and found.end() == len(text)
    if found is None or ambiguous:
        return Layout(charset, None)
    return Layout(charset, found.group(), text[: found.start()].removeprefix("\ufeff"))


def _head(spark: SparkSession, uri: str) -> bytes:
    """The first bytes of a file, decompressed, read through Hadoop as Spark reads it."""
    jvm: Any = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    path = jvm.org.apache.hadoop.fs.Path(uri)
    codec = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(conf).getCodec(path)
    stream = path.getFileSystem(conf).open(path)
    try:
        if codec is not None:
            stream = codec.createInputStream(stream)
        head = jvm.org.apache.commons.io.input.BoundedInputStream(stream, HEAD_BYTES)
        return bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(head))
    finally:
        stream.close()


def _by_layout(
    spark: SparkSession, files: list[str], encoding: str, known: Mapping[str, Layout]
) -> dict[Layout, list[str]]:
    """Files grouped by layout: from ``known`` (found by the per-file checks) or sniffed here."""
    unknown = [uri for uri in files if uri not in known]
    with ThreadPoolExecutor(_SNIFF_THREADS) as pool:
        heads = dict(zip(unknown, pool.map(lambda uri: _head(spark, uri), unknown), strict=True))
    groups: dict[Layout, list[str]] = {}
    for uri in files:
        layout = known[uri] if uri in known else layout_of(heads[uri], encoding)
        groups.setdefault(layout, []).append(uri)
    return groups


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
        frame = _read_csv(spark, dataset, files, known)
    elif dataset.format == "json":
        frame = _read_json_lines(spark, dataset, files, known)
    else:
        frame = _read_parquet(spark, dataset, files)
    if BLANK not in frame.columns:
        frame = frame.withColumn(BLANK, F.lit(False))
    if FIELDS not in frame.columns:
        frame = frame.withColumn(FIELDS, F.lit(None).cast("array<string>"))
    return frame


def _locators() -> list[Column]:
    return [
        F.col("_metadata.file_path").alias(SOURCE_FILE),
        F.col("_metadata.file_block_start").alias(SPLIT_START),
        F.monotonically_increasing_id().alias(MONO),
    ]


def _read_csv(
    spark: SparkSession, dataset: Dataset, files: list[str], known: Mapping[str, Layout]
) -> DataFrame:
    groups = _by_layout(spark, files, dataset.encoding, known)
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
    reader = (
        spark.read.format("csv")
        .schema(text_schema)
        .option("header", opts.header)
        .option("enforceSchema", False)  # a header that names other columns is an error
        .option("sep", spelled(opts.delimiter))
        .option("quote", spelled(opts.quote))
        .option("escape", spelled(opts.escape))
        .option("multiLine", opts.multiline)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT)
        .option("nullValue", _NO_NULL_TOKEN)
        .option("encoding", "ISO-8859-1" if cp1252 else layout.charset)
    )
    # Line by line (multiLine off), Hadoop splits on any of LF, CR, CRLF, but only in
    # ASCII-compatible encodings: UTF-16 needs the separator spelled out.
    utf16 = layout.charset.startswith("UTF-16")
    line_sep = layout.line_sep or ("\n" if utf16 else None)
    if line_sep is not None and (opts.multiline or utf16):
        reader = reader.option("lineSep", line_sep)
    frame = reader.load(files)

    def text(value: Column) -> Column:
        return F.translate(value, _CP1252_FROM, _CP1252_TO) if cp1252 else value

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
        *_locators(),
        F.lit(None).cast("long").alias(ROW_IN_FILE),
    )


def _latin1_spelling(text: str) -> str:
    """``text`` as a windows-1252 file read as ISO-8859-1 shows it (unchanged if it cannot be)."""
    try:
        return text.encode("cp1252").decode("latin-1")
    except UnicodeEncodeError:
        return text


def _read_json_lines(
    spark: SparkSession, dataset: Dataset, files: list[str], known: Mapping[str, Layout]
) -> DataFrame:
    by_charset: dict[str, list[str]] = {}
    if dataset.encoding == "utf-16":
        for layout, uris in _by_layout(spark, files, dataset.encoding, known).items():
            by_charset.setdefault(layout.charset, []).extend(uris)
    else:
        by_charset[_CHARSETS[dataset.encoding]] = files
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
                F.substring(F.element_at(repeated, 1), 1, _SHOWN_KEY_CHARS),
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
    lines = reader.load(files).select(F.col("value"), *_locators())
    raw = F.col("value").cast("binary")
    cut = F.lit(False)
    if charset == "UTF-8":
        text = F.col("value")
    elif charset == "windows-1252":
        text = F.translate(F.decode(raw, "ISO-8859-1"), _CP1252_FROM, _CP1252_TO)
    elif charset == "ISO-8859-1":
        text = F.decode(raw, charset)
    else:
        text = F.regexp_replace(F.decode(raw, charset), "\r$", "")
        cut = F.octet_length(raw) % 2 == 1
    # A byte-order mark starts a file; it is not part of the first record.
    text = F.regexp_replace(text, "^\ufeff", "")
    return lines.select(text.alias("value"), SOURCE_FILE, SPLIT_START, MONO, cut.alias("_cut"))


def csv_records(quarantined: DataFrame, dataset: Dataset) -> DataFrame:
    """The uniform raw frame of CSV records kept in the quarantine (``_raw`` holds the record
    as CSV text, ``_fields`` its file's column names), for a replay; locators as given."""
    opts = dataset.csv
    options = {
        "sep": opts.delimiter,
        "quote": opts.quote,
        "escape": opts.escape,
        "nullValue": _NO_NULL_TOKEN,
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


def _read_parquet(spark: SparkSession, dataset: Dataset, files: list[str]) -> DataFrame:
    # Every file's columns (merged): a column only some files have is seen, never lost.
    frame = spark.read.format("parquet").option("mergeSchema", "true").load(files)
    present = {f.name.lower(): f.name for f in frame.schema.fields}
    values = []
    for i, column in enumerate(dataset.schema.columns):
        found = present.get(column.name.lower())
        values.append((col(found) if found else F.lit(None).cast(column.dtype)).alias(value_col(i)))
    declared = {n.lower() for n in dataset.schema.names}
    undeclared = [f.name for f in frame.schema.fields if f.name.lower() not in declared]
    # to_json leaves null fields out: a record without values there has no undeclared field.
    extra = F.to_json(F.struct(*[col(n) for n in undeclared])) if undeclared else None
    raw = F.to_json(
        F.struct(*[col(f.name) for f in frame.schema.fields]),
        {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"},  # microseconds, as stored
    )
    return frame.select(
        *values,
        raw.alias(RAW),
        (F.when(extra != "{}", extra) if extra is not None else F.lit(None).cast("string")).alias(
            EXTRA
        ),
        F.lit(None).cast("string").alias(MALFORMED),
        *_locators(),
        F.col("_metadata.row_index").alias(ROW_IN_FILE),
    )
