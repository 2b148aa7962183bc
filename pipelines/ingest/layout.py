"""How a text file is laid out (its charset, byte order resolved, and line break), from its head."""

from __future__ import annotations

import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

# Java names of the declared encodings. "utf-16" is resolved per file by its byte-order mark.
CHARSETS = {
    "utf-8": "UTF-8",
    "utf-16le": "UTF-16LE",
    "utf-16be": "UTF-16BE",
    "latin-1": "ISO-8859-1",
    "cp1252": "windows-1252",
}


_PYTHON_CODECS = {"UTF-16LE": "utf-16-le", "UTF-16BE": "utf-16-be", "windows-1252": "cp1252"}


HEAD_BYTES = 64 * 1024  # enough to find the first line break of any sane file


_SNIFF_THREADS = 8  # heads are read from the driver; object stores answer slowly, in parallel


_LINE_BREAK = re.compile("\r\n|\r|\n")


@dataclass(frozen=True)
class Layout:
    """How a text file is laid out: its Java charset (byte order resolved) and line break."""

    charset: str
    line_sep: str | None  # the file's first line break; None when its head holds none
    first_line: str | None = None  # the file's first line (a CSV header), when its head holds it
    # A CSV file whose every line is one record (the per-file checks read every byte and say):
    # it can be read line by line, in parallel splits, with the same records and row numbers
    # as Spark's multiLine parser gives (see pipelines.ingest.inspection.LineRecords).
    line_records: bool = False


def layout_of(head: bytes, encoding: str) -> Layout:
    """The layout of a file whose first bytes are ``head``, declared as ``encoding``.

    A file's line break is its first one: Spark's CSV parser keeps a line break inside a quoted
    value exactly only when told the file's line separator (it normalises it to LF otherwise).
    ``utf-16`` without a byte-order mark is little-endian, as Python reads it.
    """
    if encoding == "utf-16":
        charset = "UTF-16BE" if head.startswith(b"\xfe\xff") else "UTF-16LE"
    else:
        charset = CHARSETS[encoding]
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


def by_layout(
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
