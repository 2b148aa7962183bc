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
import dataclasses
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
_SPACE = 32
# Encodings where a line break, a quote and a space are single bytes of their own.
_SPLITTABLE = ("utf-8", "latin-1", "cp1252")
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Inspection:
    uri: str
    file_hash: bytes | None  # None when the file could not be read at all
    problem: str | None  # why the whole file is rejected; None for a file fit to read
    layout: Layout | None = None  # a text file's charset and line break, for the reader
    # The storage failed to give the file's bytes (after retries): the run fails, the file is
    # not judged (a file rejected for an outage would stay in the ledger as rejected).
    storage_error: str | None = None


@dataclass(frozen=True)
class FileChecks:
    """What a file of this dataset is checked against (picklable, sent to executors)."""

    format: str
    encoding: str
    limits: Limits
    # A multiLine CSV dataset's quote and escape: the checks then also say whether each file
    # can be read line by line (LineRecords). None: not asked.
    csv_quote: str | None = None
    csv_escape: str | None = None

    @classmethod
    def of(cls, dataset: Dataset) -> FileChecks:
        asked = dataset.format == "csv" and dataset.csv.multiline
        return cls(
            format=dataset.format,
            encoding=dataset.encoding,
            limits=dataset.limits,
            csv_quote=dataset.csv.quote if asked else None,
            csv_escape=dataset.csv.escape if asked else None,
        )


def inspect_file(uri: str, rules: FileChecks, s3: S3Settings) -> Inspection:
    """Hash one file's bytes and check it against ``rules``; never raises for a bad file.

    A text file is read once: the checks read through a stream that hashes every raw byte.
    A Parquet file is hashed, then decoded (its checks need random access)."""
    hashing: _Hashing | None = None
    try:
        fs, path = arrowfs.filesystem(uri, s3)
        with fs.open_input_stream(path, compression=None) as raw:
            hashing = _Hashing(raw)
            if rules.format == "parquet":
                digest = hashing.drain()
                problem, layout = _parquet_problem(fs, path), None
            else:
                problem, head, line_records = _text_problem(hashing, uri, rules)
                digest = hashing.drain()  # the rest of a file the checks stopped reading
                layout = dataclasses.replace(
                    layout_of(head, rules.encoding), line_records=line_records
                )
    except (OSError, pa.ArrowException) as exc:
        if hashing is not None and hashing.failed is None:
            # Every byte came; decoding them failed (a corrupt file).
            return Inspection(uri, hashing.digest(), f"cannot read the file: {first_line(exc)}")
        failure = hashing.failed if hashing is not None and hashing.failed else exc
        if isinstance(failure, FileNotFoundError | PermissionError | IsADirectoryError):
            # Deleted or locked since the listing: this file's problem, not the storage's.
            return Inspection(uri, None, f"cannot read the file: {first_line(exc)}")
        return Inspection(uri, None, None, storage_error=first_line(failure))
    return Inspection(uri, digest, problem, layout)


class _Hashing:
    """A raw byte stream that hashes what is read through it (XXH3-128 of the whole file once
    drained), and remembers a failure to read the storage itself."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._hasher = xxhash.xxh3_128()
        self.failed: BaseException | None = None
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        try:
            data: bytes = self._raw.read(size)
        except (OSError, pa.ArrowException) as exc:
            self.failed = exc
            raise
        self._hasher.update(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True  # the caller closes the storage stream

    def drain(self) -> bytes:
        while self.read(CHUNK):
            pass
        return self.digest()

    def digest(self) -> bytes:
        return self._hasher.digest()


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


def _text_problem(raw: _Hashing, uri: str, rules: FileChecks) -> tuple[str | None, bytes, bool]:
    """Why the file cannot be read (or None), its first decompressed bytes, and whether it can
    be read line by line (:class:`LineRecords`; asked of uncompressed CSV files only: a
    compressed one is read in one task either way)."""
    limits = rules.limits
    head = b""
    codec = next((c for suffix, c in CODECS.items() if uri.lower().endswith(suffix)), None)
    records = (
        LineRecords(rules.csv_quote, rules.csv_escape or rules.csv_quote)
        if rules.csv_quote is not None and codec is None and rules.encoding in _SPLITTABLE
        else None
    )
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
                return f"file {what} (limits.max_file_bytes): not read", head, False
            longest = lines.feed(chunk)
            if longest > limits.max_line_bytes:
                problem = (
                    f"a line at byte {lines.offset:,} is longer than "
                    f"{limits.max_line_bytes:,} bytes (limits.max_line_bytes): not read"
                )
                return problem, head, False
            _decode(decoder, chunk, total - len(chunk), rules.encoding)
            if records is not None:
                records.feed(chunk)
        _decode(decoder, b"", total, rules.encoding, final=True)
    except _NotDecodable as exc:
        return str(exc), head, False
    except (OSError, pa.ArrowException) as exc:
        if codec and raw.failed is None:
            return f"cannot decompress ({codec}): {first_line(exc)}", head, False
        raise
    return None, head, records is not None and records.finish()


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


class LineRecords:
    """Whether every line of a CSV file is one record, fed the file's bytes chunk by chunk.

    Spark's multiLine CSV parser reads a file in one task; line by line, Spark splits it
    across tasks. The two give the same records, values and row numbers only when no line
    break sits inside a quoted value (counted by the parity of the quotes before each break;
    with an escape other than the quote, only a file without quotes qualifies), every line
    break is the file's first kind (a stray CR would stay in a value in one mode only), no line
    holds only spaces, tabs or control characters (the line reader drops a line that Java's
    ``trim()`` empties; the multiLine parser makes it a malformed record) and no byte-order
    mark starts the file. An empty line is skipped by both.
    """

    def __init__(self, quote: str, escape: str) -> None:
        self._quote = ord(quote)
        self._doubled = quote == escape  # RFC 4180: a quote inside a quoted value is doubled
        self._ok = True
        self._sep: bytes | None = None
        self._tail = b""  # the bytes of the line still open (rescanned with the next chunk)
        self._inside = 0  # the parity of the quotes before the tail
        self._first = b""  # the file's first bytes, to see a byte-order mark

    def feed(self, chunk: bytes) -> None:
        if len(self._first) < len(_UTF8_BOM):
            self._first = (self._first + chunk)[: len(_UTF8_BOM)]
            self._ok = self._ok and not self._first.startswith(_UTF8_BOM)
        if not self._ok:
            return
        joined = self._tail + chunk
        data = np.frombuffer(joined, dtype=np.uint8)
        ends = self._line_ends(data)
        if ends is None or not self._ok:
            self._tail = joined
            return
        quotes = np.flatnonzero(data == self._quote)
        if quotes.size and not self._doubled:
            self._ok = False
            return
        before = np.searchsorted(quotes, ends)
        if ((before + self._inside) % 2).any():
            self._ok = False  # a line break inside a quoted value
            return
        starts = np.concatenate(([0], ends[:-1] + 1))
        # Lines that start with a space or a control character are rare: only those are looked
        # at closely.
        stop = ends - 1 if self._sep == b"\r\n" else ends  # where each line's content ends
        for start, end in zip(starts.tolist(), stop.tolist(), strict=True):
            if start < end and joined[start] <= _SPACE and _trims_away(joined[start:end]):
                self._ok = False
                return
        done = int(ends[-1]) + 1
        self._inside = (self._inside + int(np.searchsorted(quotes, done))) % 2
        self._tail = joined[done:]

    def _line_ends(self, data: np.ndarray) -> np.ndarray | None:
        """Where the complete lines of ``data`` end (their last byte); None when it holds no
        complete line. Clears ``_ok`` on a line break of another kind than the first."""
        cr = np.flatnonzero(data == _CR)
        lf = np.flatnonzero(data == _NEWLINE)
        if self._sep is None:
            if not cr.size and not lf.size:
                return None
            first = min(cr[0] if cr.size else len(data), lf[0] if lf.size else len(data))
            if data[first] == _NEWLINE:
                self._sep = b"\n"
            elif first + 1 == len(data):
                return None  # a CR at the end: CR or CRLF, the next chunk says
            else:
                self._sep = b"\r\n" if data[first + 1] == _NEWLINE else b"\r"
        if self._sep == b"\n":
            self._ok = not cr.size
            return lf if lf.size else None
        if self._sep == b"\r":
            self._ok = not lf.size
            return cr if cr.size else None
        pending = cr.size and cr[-1] == len(data) - 1  # a CR whose LF is in the next chunk
        crs = cr[:-1] if pending else cr
        self._ok = lf.size == crs.size and bool(np.array_equal(lf, crs + 1))
        return lf if lf.size else None

    def finish(self) -> bool:
        """The verdict, once the whole file was fed."""
        if not self._ok:
            return False
        tail = self._tail
        if self._sep == b"\r\n" and tail.endswith(b"\r"):
            return False
        quotes = tail.count(bytes([self._quote]))
        if (self._inside + quotes) % 2:
            return False  # an open quote at the end of the file
        return not _trims_away(tail)


def _trims_away(line: bytes) -> bool:
    """Whether Java's ``String.trim()`` leaves nothing of a non-empty line (every byte is at
    most a space)."""
    return bool(line) and max(line) <= _SPACE


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
