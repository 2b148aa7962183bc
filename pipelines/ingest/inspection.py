"""Whole-file checks made before any row is read: the hash of a file's bytes and the guards.

A file is streamed in fixed-size chunks, so memory stays bounded whatever its size: once for
the XXH3-128 hash of its raw bytes (what the file ledger recognises a file by, under any name),
and, for text formats, once more decompressed, to enforce the dataset's limits and encoding:

* a compressed file that expands past ``limits.max_file_bytes`` (a decompression bomb) is
  rejected as soon as the limit is passed, without writing anything to disk;
* a line longer than ``limits.max_line_bytes`` is rejected (Spark holds a line in memory);
* bytes that do not decode under the declared ``encoding`` are rejected with their offset, so
  no replacement characters are ever written;
* a truncated or corrupt compressed stream, a corrupt Parquet file and an unreadable file are
  rejected with the error that showed it.

The checks run on executors, a few files per task with a small thread pool for storage latency;
the driver receives one short :class:`Inspection` per file.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import xxhash

from pipelines.config import S3Settings
from pipelines.errors import first_line
from pipelines.ingest.layout import HEAD_BYTES, Layout, layout_of
from pipelines.schema.datasets import Dataset, Limits
from pipelines.storage import arrowfs

CHUNK = 4 * 2**20
CODECS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
_THREADS_PER_TASK = 8
_NEWLINE, _CR = 10, 13


@dataclass(frozen=True)
class Inspection:
    uri: str
    file_hash: bytes | None  # None when the file could not be read at all
    problem: str | None  # why the whole file is rejected; None for a file fit to read
    layout: Layout | None = None  # a text file's charset and line break, for the reader


@dataclass(frozen=True)
class FileChecks:
    """What a file of this dataset is checked against (picklable, sent to executors)."""

    format: str
    encoding: str
    limits: Limits

    @classmethod
    def of(cls, dataset: Dataset) -> FileChecks:
        return cls(format=dataset.format, encoding=dataset.encoding, limits=dataset.limits)


def inspect_file(uri: str, rules: FileChecks, s3: S3Settings) -> Inspection:
    """Hash one file's bytes and check it against ``rules``; never raises for a bad file."""
    try:
        fs, path = arrowfs.filesystem(uri, s3)
        hasher = xxhash.xxh3_128()
        with fs.open_input_stream(path, compression=None) as raw:
            while chunk := raw.read(CHUNK):
                hasher.update(chunk)
    except (OSError, pa.ArrowException) as exc:
        return Inspection(uri, None, f"cannot read the file: {first_line(exc)}")
    digest = hasher.digest()
    layout = None
    try:
        if rules.format == "parquet":
            problem = _parquet_problem(fs, path)
        else:
            problem, head = _text_problem(fs, path, uri, rules)
            layout = layout_of(head, rules.encoding)
    except (OSError, pa.ArrowException) as exc:
        problem = f"cannot read the file: {first_line(exc)}"
    return Inspection(uri, digest, problem, layout)


def inspect_many(uris: Iterable[str], rules: FileChecks, s3: S3Settings) -> Iterator[Inspection]:
    """Inspect files with a few threads: for small files, storage latency dominates."""
    items = list(uris)
    with ThreadPoolExecutor(max_workers=min(_THREADS_PER_TASK, max(1, len(items)))) as pool:
        yield from pool.map(lambda uri: inspect_file(uri, rules, s3), items)


def _parquet_problem(fs: pafs.FileSystem, path: str) -> str | None:
    """Decode every page, checking page checksums where the writer stored them (Spark and
    pyarrow can): a cut footer or a corrupt page shows here, one row group at a time."""
    try:
        with fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle, page_checksum_verification=True)
            for _ in parquet.iter_batches(batch_size=65_536):
                pass
    except (OSError, pa.ArrowException) as exc:
        return f"not a readable Parquet file: {first_line(exc)}"
    return None


def _text_problem(
    fs: pafs.FileSystem, path: str, uri: str, rules: FileChecks
) -> tuple[str | None, bytes]:
    """Why the file cannot be read (or None), and its first decompressed bytes."""
    limits = rules.limits
    head = b""
    codec = next((c for suffix, c in CODECS.items() if uri.lower().endswith(suffix)), None)
    with fs.open_input_stream(path, compression=None) as raw:
        stream: Any = pa.CompressedInputStream(raw, codec) if codec else raw
        decoder = codecs.getincrementaldecoder(rules.encoding)(errors="strict")
        lines = _LineLengths()
        total = 0
        try:
            while chunk := stream.read(CHUNK):
                if not head:
                    head = chunk[:HEAD_BYTES]
                total += len(chunk)
                if total > limits.max_file_bytes:
                    what = (
                        f"decompresses past {limits.max_file_bytes:,} bytes"
                        if codec
                        else (f"is larger than {limits.max_file_bytes:,} bytes")
                    )
                    return f"file {what} (limits.max_file_bytes): not read", head
                longest = lines.feed(chunk)
                if longest > limits.max_line_bytes:
                    problem = (
                        f"a line at byte {lines.offset:,} is longer than "
                        f"{limits.max_line_bytes:,} bytes (limits.max_line_bytes): not read"
                    )
                    return problem, head
                _decode(decoder, chunk, total - len(chunk), rules.encoding)
            _decode(decoder, b"", total, rules.encoding, final=True)
        except _NotDecodable as exc:
            return str(exc), head
        except (OSError, pa.ArrowException) as exc:
            if codec:
                return f"cannot decompress ({codec}): {first_line(exc)}", head
            raise
    return None, head


class _NotDecodable(Exception):
    pass


def _decode(
    decoder: codecs.IncrementalDecoder,
    chunk: bytes,
    offset: int,
    encoding: str,
    final: bool = False,
) -> None:
    if not final and encoding == "utf-8" and _is_ascii(chunk):
        return  # the common case, without building a string
    try:
        decoder.decode(chunk, final)
    except UnicodeDecodeError as exc:
        at = offset + max(exc.start, 0)
        shown = exc.object[exc.start : exc.start + 4].hex(" ")
        raise _NotDecodable(
            f"not valid {encoding} at byte {at:,} ({shown}): declare the file's encoding "
            "in dataset.yaml (encoding:) or fix the file; not read"
        ) from None


def _is_ascii(chunk: bytes) -> bool:
    return bool(np.frombuffer(chunk, dtype=np.uint8).max(initial=0) < 0x80)


class _LineLengths:
    """The longest line seen so far across chunks (LF, CR or CRLF end a line), and where."""

    def __init__(self) -> None:
        self.current = 0  # bytes of the line still open at the end of the last chunk
        self.longest = 0
        self.offset = 0  # byte offset at which the longest line starts
        self._consumed = 0

    def feed(self, chunk: bytes) -> int:
        data = np.frombuffer(chunk, dtype=np.uint8)
        ends = np.flatnonzero((data == _NEWLINE) | (data == _CR))
        open_from = self._consumed - self.current
        if ends.size == 0:
            self._note(self.current + len(chunk), open_from)
            self.current += len(chunk)
        else:
            self._note(self.current + int(ends[0]), open_from)
            if ends.size > 1:
                gaps = np.diff(ends) - 1
                at = int(np.argmax(gaps))
                self._note(int(gaps[at]), self._consumed + int(ends[at]) + 1)
            self.current = len(chunk) - int(ends[-1]) - 1
        self._consumed += len(chunk)
        return self.longest

    def _note(self, length: int, offset: int) -> None:
        if length > self.longest:
            self.longest, self.offset = length, offset


def run_inspections(
    parallelize: Callable[[list[str], int], Any],
    uris: list[str],
    rules: FileChecks,
    s3: S3Settings,
    slices: int,
) -> list[Inspection]:
    """Inspect ``uris`` as a Spark job: ``parallelize`` is ``SparkContext.parallelize``."""
    if not uris:
        return []
    rdd = parallelize(uris, max(1, min(len(uris), slices)))
    inspections: list[Inspection] = rdd.mapPartitions(
        lambda part: inspect_many(part, rules, s3)
    ).collect()
    return inspections
