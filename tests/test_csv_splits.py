"""Splittable CSV: a file whose every line is one record is read line by line, in parallel
splits, with the same records and row numbers as the multiLine parser gives; any other file is
still read whole. The per-file checks decide (``inspection.LineRecords``)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from pipelines.config import S3Settings
from pipelines.ingest import inspection
from pipelines.schema.datasets import Limits
from tests.helpers import accounting_holds, declare, ingest_quietly

ROWS = [b"id,name,tags", b'1,ann,"[""a""]"', b'2,"b, c",[]']


def _verdict(data: bytes, chunks: list[int] | None = None, escape: str = '"') -> bool:
    records = inspection.LineRecords('"', escape)
    at = 0
    for size in chunks or [len(data)]:
        records.feed(data[at : at + size])
        at += size
    if at < len(data):
        records.feed(data[at:])
    return records.finish()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\n".join(ROWS) + b"\n", True),  # quotes, doubled quotes, commas in quotes
        (b"\r\n".join(ROWS) + b"\r\n", True),
        (b"\r".join(ROWS), True),  # no final line break
        (b"id,name\n1,a\n\n2,b\n", True),  # an empty line: skipped by both readers
        (b'id,name\n1,"two\nlines"\n', False),  # a line break inside a quoted value
        (b'id,name\n1,"two\r\nlines"\r\n', False),
        (b'id,name\n1,"a ""quoted\n"" word"\n', False),
        (b"id,name\n1,a\n   \n2,b\n", False),  # only spaces: dropped by the line reader
        (b"id,name\n1,a\n\t\x0c\n", False),
        (b"id,name\n1,a\n \r\n", False),  # a stray CR in an LF file
        (b"id,name\r\n1,a\n2,b\r\n", False),  # mixed line breaks
        (b"id,name\n1,a\r", False),
        (b'id,name\n1,"open\n', False),  # a quote left open at the end
        (b"\xef\xbb\xbfid,name\n1,a\n", False),  # a byte-order mark
        (b"id,name\n 1,a\n", True),  # a leading space before data is a value
        (b"id,name", True),  # one line
        (b"", True),
    ],
)
def test_line_records_are_found_whatever_the_chunks(data: bytes, expected: bool) -> None:
    assert _verdict(data) is expected
    assert _verdict(data, [1] * len(data)) is expected  # byte by byte: every boundary
    rnd = random.Random(len(data))
    for _ in range(20):
        cuts = [rnd.randint(1, 5) for _ in range(len(data))]
        assert _verdict(data, cuts) is expected


def test_with_an_escape_other_than_the_quote_only_files_without_quotes_qualify() -> None:
    assert _verdict(b"id,name\n1,a\n", escape="\\") is True
    assert _verdict(b'id,name\n1,"a"\n', escape="\\") is False


def test_the_checks_say_which_files_are_line_records(tmp_path: Path) -> None:
    checks = inspection.FileChecks("csv", "utf-8", Limits(), csv_quote='"', csv_escape='"')
    plain, quoted = tmp_path / "plain.csv", tmp_path / "quoted.csv"
    plain.write_bytes(b"\n".join(ROWS) + b"\n")
    quoted.write_bytes(b'id,name\n1,"two\nlines"\n')
    found = [inspection.inspect_file(f"file:{p}", checks, S3Settings()) for p in (plain, quoted)]
    assert [f.layout.line_records for f in found if f.layout] == [True, False]
    unasked = inspection.FileChecks("csv", "utf-8", Limits())
    layout = inspection.inspect_file(f"file:{plain}", unasked, S3Settings()).layout
    assert layout is not None
    assert layout.line_records is False


def _big_csv(path: Path, rows: int, bad_every: int, quoted_newline_at: int | None) -> list[int]:
    """A CSV file of ``rows`` records; every ``bad_every``-th has a bad id. Returns the bad
    records' row numbers (1-based, the header not counted)."""
    lines, bad = ["id,name,note"], []
    for n in range(1, rows + 1):
        note = '"two\nlines"' if n == quoted_newline_at else f'"say ""{n}"", ok"'
        if n % bad_every == 0:
            lines.append(f"x{n},name {n},{note}")
            bad.append(n)
        else:
            lines.append(f"{n},name {n},{note}")
    path.write_text("\n".join(lines) + "\n")
    return bad


@pytest.mark.parametrize("quoted_newline", [False, True], ids=["line-records", "multiline"])
def test_row_numbers_stay_exact_when_a_csv_file_is_split(
    spark: SparkSession, tmp_path: Path, quoted_newline: bool
) -> None:
    schemas = tmp_path / "schemas"
    declare(schemas, "notes", "csv", [("id", "long"), ("name", "string"), ("note", "string")])
    raw = tmp_path / "raw"
    raw.mkdir()
    bad = _big_csv(raw / "big.csv", 1500, 211, 700 if quoted_newline else None)
    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "4096")
    try:
        summary = ingest_quietly(
            "notes", str(raw), "--lake", str(tmp_path / "lake"), "--schemas", str(schemas)
        )
        table = spark.read.format("delta").load(summary["table"])
        splits = table.select("_source_file").distinct().count()
        quarantine = spark.read.format("delta").load(summary["quarantine"]).collect()
        # How many splits Spark read the file in, as ingest read it: by its file block starts.
        read_in = (
            spark.read.option("multiLine", quoted_newline)
            .csv(str(raw))
            .select("_metadata.file_block_start")
            .distinct()
            .count()
        )
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)
    assert splits == 1
    assert (read_in > 1) is not quoted_newline
    assert accounting_holds(summary)
    assert (summary["rows_read"], summary["rows_quarantined"]) == (1500, len(bad))
    assert sorted(r["_source_row"] for r in quarantine) == bad
    note = table.filter("id = 700").first()
    assert note is not None
    assert note["note"] == ("two\nlines" if quoted_newline else 'say "700", ok')
