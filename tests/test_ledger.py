"""The file ledger: each file taken once, by path and by bytes; broken files rejected whole."""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash
from pyspark.sql import SparkSession

from pipelines.config import S3Settings
from pipelines.errors import StorageError
from pipelines.ingest import fileplan, inspection
from pipelines.ingest.layout import Layout
from pipelines.lake import ledger
from pipelines.schema.datasets import Limits
from pipelines.schema.declarations import load_dataset
from pipelines.storage.listing import SourceFile
from tests.helpers import accounting_holds, ingest_quietly

LINES = [
    '{"click_id": "a", "day": "2024-05-01", "url": "/x"}',
    '{"click_id": "b", "day": "2024-05-01", "url": "/y"}',
    '{"click_id": "c", "day": "2024-05-02"}',
]


def _declare(schemas: Path, extra: str = "", fmt: str = "json") -> None:
    folder = schemas / "clicks"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.yaml").write_text(f"format: {fmt}\npartition_by: [day]\n{extra}")
    (folder / "v1.yaml").write_text(
        "columns:\n"
        "  - {name: click_id, type: string, nullable: false}\n"
        "  - {name: day, type: date, nullable: false}\n"
        "  - {name: url, type: string}\n"
    )


def _ingest(tmp_path: Path, *sources: Path | str) -> dict[str, Any]:
    args = [str(s) for s in sources]
    lake, schemas = str(tmp_path / "lake"), str(tmp_path / "schemas")
    return ingest_quietly("clicks", *args, "--lake", lake, "--schemas", schemas)


def _ledger(spark: SparkSession, tmp_path: Path) -> list[tuple[str, str, str | None]]:
    rows = spark.read.format("delta").load(str(tmp_path / "lake/_lakeshard/ledger/clicks"))
    return sorted((Path(r.path).name, r.outcome, r.reason) for r in rows.collect())


def test_a_file_is_taken_once_by_path_and_once_by_bytes(
    spark: SparkSession, tmp_path: Path
) -> None:
    _declare(tmp_path / "schemas")
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "one.jsonl").write_text("\n".join(LINES[:2]) + "\n")
    first = _ingest(tmp_path, raw)
    again = _ingest(tmp_path, raw)
    copies = tmp_path / "redelivered"
    copies.mkdir()
    shutil.copy(raw / "one.jsonl", copies / "renamed.jsonl")
    shutil.copy(raw / "one.jsonl", copies / "renamed-twice.jsonl")
    renamed = _ingest(tmp_path, copies)

    assert (first["files_ingested"], first["rows_written"]) == (1, 2)
    assert (again["files_seen"], again["files_skipped"], again["rows_read"]) == (1, 1, 0)
    assert (renamed["files_seen"], renamed["files_skipped"], renamed["rows_read"]) == (2, 2, 0)
    assert all(accounting_holds(s) for s in (first, again, renamed))
    entries = _ledger(spark, tmp_path)
    assert [e[:2] for e in entries] == [
        ("one.jsonl", "ingested"),
        ("renamed-twice.jsonl", "duplicate"),
        ("renamed.jsonl", "duplicate"),
    ]
    assert all("same bytes as" in (e[2] or "") and "one.jsonl" in (e[2] or "") for e in entries[1:])


def test_two_copies_in_one_listing_are_read_once(spark: SparkSession, tmp_path: Path) -> None:
    _declare(tmp_path / "schemas")
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("a.jsonl", "b.jsonl"):
        (raw / name).write_text("\n".join(LINES) + "\n")
    summary = _ingest(tmp_path, raw)
    assert (summary["files_ingested"], summary["files_skipped"]) == (1, 1)
    assert (summary["rows_read"], summary["rows_written"]) == (3, 3)
    assert [e[:2] for e in _ledger(spark, tmp_path)] == [
        ("a.jsonl", "ingested"),
        ("b.jsonl", "duplicate"),
    ]


@pytest.mark.parametrize("policy", ["reject", "reingest"])
def test_a_file_changed_in_place_follows_the_declared_policy(
    spark: SparkSession, tmp_path: Path, policy: str
) -> None:
    _declare(tmp_path / "schemas", f"on_changed_file: {policy}\n")
    raw = tmp_path / "raw"
    raw.mkdir()
    path = raw / "day.jsonl"
    path.write_text("\n".join(LINES[:2]) + "\n")
    _ingest(tmp_path, raw)
    path.write_text("\n".join(LINES) + "\n")  # one line more
    os.utime(path, (1, 1_700_000_000))
    changed = _ingest(tmp_path, raw)

    assert accounting_holds(changed)
    table = spark.read.format("delta").load(changed["table"])
    if policy == "reject":
        assert (changed["files_rejected"], changed["rows_read"]) == (1, 0)
        assert table.count() == 2
        reason = _ledger(spark, tmp_path)[-1][2] or ""
        assert "changed since run" in reason
        assert "on_changed_file: reject" in reason
    else:
        assert (changed["files_ingested"], changed["rows_read"]) == (1, 3)
        assert (changed["rows_written"], changed["rows_duplicate"]) == (1, 2)
        assert sorted(r.click_id for r in table.collect()) == ["a", "b", "c"]


def _gzip_bomb(path: Path, expanded: int) -> None:
    """A gzip stream of ``expanded`` newline bytes (short lines: only the size limit can stop
    it), written without holding them: one compressed 1 MiB block, flushed so that it is
    byte-aligned and repeatable, then repeated. The trailer's CRC is left at zero rather than
    computed over 11 GB; no reader that respects the limit gets that far."""
    block = b"\n" * 2**20
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    with path.open("wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")
        out.write(chunk * (expanded // len(block)))
        out.write(deflate.flush(zlib.Z_FINISH))
        out.write(bytes(4) + (expanded % 2**32).to_bytes(4, "little"))


def test_broken_files_are_rejected_whole_with_reasons(spark: SparkSession, tmp_path: Path) -> None:
    _declare(tmp_path / "schemas", "limits: {max_file_bytes: 64MiB, max_line_bytes: 1MiB}\n")
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "good.jsonl").write_text(LINES[0] + "\n")
    whole = gzip.compress(("\n".join(LINES) + "\n").encode() * 200)
    (raw / "truncated.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    _gzip_bomb(raw / "bomb.jsonl.gz", 11 * 2**30)  # 11 GiB of zeros in about 11 MB
    (raw / "latin1.jsonl").write_bytes('{"click_id": "é", "day": "2024-05-01"}\n'.encode("latin-1"))
    (raw / "long-line.jsonl").write_text(LINES[1] + "\n" + "x" * (2**20 + 1) + "\n")
    (raw / "folder.jsonl").mkdir()  # a directory named like a data file
    (raw / "folder.jsonl" / "part.jsonl").write_text(LINES[2] + "\n")

    summary = _ingest(tmp_path, raw / "*.jsonl*")

    assert (summary["files_seen"], summary["files_rejected"], summary["files_ingested"]) == (
        6,
        5,
        1,
    )
    assert (summary["rows_read"], summary["rows_written"]) == (1, 1)
    assert accounting_holds(summary)
    reasons = {name: reason for name, outcome, reason in _ledger(spark, tmp_path) if reason}
    assert "decompresses past 67,108,864 bytes (limits.max_file_bytes)" in reasons["bomb.jsonl.gz"]
    assert "cannot decompress (gzip)" in reasons["truncated.jsonl.gz"]
    assert "not valid utf-8 at byte 14" in reasons["latin1.jsonl"]
    assert "longer than 1,048,576 bytes (limits.max_line_bytes)" in reasons["long-line.jsonl"]
    assert "is a directory where a file was expected" in reasons["folder.jsonl"]


def test_a_corrupt_parquet_file_is_rejected(spark: SparkSession, tmp_path: Path) -> None:
    _declare(tmp_path / "schemas", fmt="parquet")
    raw = tmp_path / "raw"
    raw.mkdir()
    table = pa.table({"click_id": ["a", "b"], "day": pa.array([19844, 19845], pa.date32())})
    pq.write_table(table, raw / "good.parquet", write_page_checksum=True)
    data = (raw / "good.parquet").read_bytes()
    (raw / "cut.parquet").write_bytes(data[: len(data) - 20])  # the footer is gone
    flipped = bytearray(data)
    at = data.index(b"a")  # inside the first data page: its checksum no longer matches
    flipped[at] = ord("z")
    (raw / "flipped.parquet").write_bytes(bytes(flipped))

    summary = _ingest(tmp_path, raw)

    reasons = {name: reason for name, outcome, reason in _ledger(spark, tmp_path) if reason}
    assert set(reasons) == {"cut.parquet", "flipped.parquet"}
    assert all("not a readable Parquet file" in r for r in reasons.values())
    assert (summary["files_rejected"], summary["rows_written"]) == (2, 2)
    assert accounting_holds(summary)


def test_an_unreadable_or_vanished_file_is_rejected_with_the_error(tmp_path: Path) -> None:
    """Between listing and reading a producer may delete or lock a file: the run goes on."""
    dataset_dir = tmp_path / "schemas"
    _declare(dataset_dir)
    rules = inspection.FileChecks.of(load_dataset(dataset_dir, "clicks"))
    good, gone, locked = tmp_path / "good.jsonl", tmp_path / "gone.jsonl", tmp_path / "locked.jsonl"
    good.write_text(LINES[0] + "\n")
    locked.write_text(LINES[1] + "\n")
    locked.chmod(0)
    listed = [SourceFile(f"file:{p}", 10, 1) for p in (good, gone, locked)]

    plan = fileplan.plan(
        listed,
        ledger.Known(),
        lambda found: [inspection.inspect_file(f.uri, rules, S3Settings()) for f in found],
        "reject",
        "run-1",
    )

    assert [f.uri for f in plan.take] == [f"file:{good}"] + (
        [f"file:{locked}"] if os.geteuid() == 0 else []  # root reads whatever the mode says
    )
    reasons = {Path(e.path).name: e.reason for e in plan.rejected}
    assert "cannot read the file" in (reasons["gone.jsonl"] or "")
    assert "No such file" in (reasons["gone.jsonl"] or "")
    if os.geteuid() != 0:
        assert "Permission denied" in (reasons["locked.jsonl"] or "")


@pytest.mark.parametrize(
    ("encoding", "data", "charset", "line_sep", "header"),
    [
        ("utf-8", b"a,b\r\n1,2\r\n", "UTF-8", "\r\n", "a,b"),
        ("utf-8", gzip.compress(b"a,b\r1,2\r", mtime=0), "UTF-8", "\r", "a,b"),
        (
            "utf-16",
            "a,b\n1,2\n".encode("utf-16-be").join([b"\xfe\xff", b""]),
            "UTF-16BE",
            "\n",
            "a,b",
        ),
        ("latin-1", "é,b\n".encode("latin-1"), "ISO-8859-1", "\n", "é,b"),
    ],
)
def test_the_checks_hand_the_reader_each_text_file_s_layout(
    tmp_path: Path, encoding: str, data: bytes, charset: str, line_sep: str, header: str
) -> None:
    """The reader needs a file's charset, line break and header; the checks, reading it
    anyway, say."""
    path = tmp_path / ("f.csv.gz" if data[:2] == b"\x1f\x8b" else "f.csv")
    path.write_bytes(data)
    rules = inspection.FileChecks("csv", encoding, Limits())
    found = inspection.inspect_file(f"file:{path}", rules, S3Settings())
    assert found.problem is None
    assert found.layout == Layout(charset, line_sep, header)


@pytest.mark.parametrize(
    ("name", "data", "limits", "problem"),
    [
        ("ok.csv", b"a,b\n" + b"1,2\n" * 1_200_000, Limits(), None),
        ("ok.csv.gz", gzip.compress(b"a,b\n" + b"1,2\n" * 1_200_000, mtime=0), Limits(), None),
        (
            "gz-then-junk.csv.gz",
            gzip.compress(b"a,b\n1,2\n", mtime=0) + b"\0" * 70_000,
            Limits(),
            "cannot decompress",
        ),
        (
            "long.csv",
            b"a,b\n" + b"x" * 200_000 + b"\n" + b"1,2\n" * 1_200_000,
            Limits(max_line_bytes=100_000),
            "longer than",
        ),
        ("big.csv", b"a,b\n" + b"1,2\n" * 1_200_000, Limits(max_file_bytes=1000), "larger than"),
        ("bad.csv", b"a,b\n\xff\xfe\n" + b"1,2\n" * 1_200_000, Limits(), "not valid utf-8"),
        (
            "cut.csv.gz",
            gzip.compress(b"a,b\n" + b"1,2\n" * 1_200_000, mtime=0)[:-4],
            Limits(),
            "Truncated",
        ),
    ],
)
def test_the_file_hash_covers_every_byte_when_the_checks_stop_early(
    tmp_path: Path, name: str, data: bytes, limits: Limits, problem: str | None
) -> None:
    """One read serves the hash and the checks: a check that stops early (or a decompressor
    that stops at the end of its stream) must not cut the hash short."""
    path = tmp_path / name
    path.write_bytes(data)
    rules = inspection.FileChecks("csv", "utf-8", limits)
    found = inspection.inspect_file(f"file:{path}", rules, S3Settings())
    assert found.file_hash == xxhash.xxh3_128_digest(data)
    if problem is None:
        assert found.problem is None
    else:
        assert problem in (found.problem or "")


def test_a_file_the_storage_fails_to_give_fails_the_run_instead_of_being_rejected(
    tmp_path: Path,
) -> None:
    """An outage while inspecting is the storage's failure, not the file's: no ledger entry
    that would call the file rejected, and the run stops naming the storage (exit 1)."""
    dataset_dir = tmp_path / "schemas"
    _declare(dataset_dir)
    rules = inspection.FileChecks.of(load_dataset(dataset_dir, "clicks"))
    with socket.socket() as probe:  # a port nothing listens on: every connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    s3 = S3Settings(endpoint=f"http://127.0.0.1:{port}", attempts=1, connect_timeout_s=1.0)
    uri = "s3a://raw/clicks/a.jsonl"

    found = inspection.inspect_file(uri, rules, s3)

    assert (found.problem, found.file_hash) == (None, None)
    assert found.storage_error
    with pytest.raises(StorageError, match=r"^storage failed reading source s3a://raw/clicks"):
        fileplan.plan(
            [SourceFile(uri, 10, 1)], ledger.Known(), lambda _: [found], "reject", "run-1"
        )
