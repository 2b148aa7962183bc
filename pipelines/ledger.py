"""The file ledger: every source file a run saw, what it was, and what became of it.

One Delta table per dataset (``<lake>/_lakeshard/ledger/<dataset>``), appended once per run
after the run's rows are committed. A file is recognised:

* by **path, size and modification time** — an unchanged file is skipped without reading a
  byte (one batch lookup for the whole listing, no request per file);
* by the **XXH3-128 hash of its bytes** — the same bytes under a new name or path are skipped
  as a duplicate file.

A file that changed at a path already ingested follows ``on_changed_file`` in dataset.yaml:
``reject`` (the default) records and skips it; ``reingest`` reads it as new content, with
row-level dedup still applying. Outcomes: ``ingested``, ``duplicate`` (same bytes as a file
already taken), ``rejected`` (with the reason).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from pipelines import lake
from pipelines.files import Inspection
from pipelines.reading import Layout
from pipelines.storage import SourceFile

INGESTED, DUPLICATE, REJECTED = "ingested", "duplicate", "rejected"

SCHEMA = T.StructType(
    [
        T.StructField("path", T.StringType(), nullable=False),
        T.StructField("size", T.LongType(), nullable=False),
        T.StructField("modified_ms", T.LongType(), nullable=False),
        T.StructField("file_hash", T.BinaryType(), nullable=True),  # null: unreadable
        T.StructField("outcome", T.StringType(), nullable=False),
        T.StructField("reason", T.StringType(), nullable=True),
        T.StructField("run_id", T.StringType(), nullable=False),
        T.StructField("recorded_at", T.TimestampType(), nullable=False),
    ]
)


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    modified_ms: int
    file_hash: bytes | None
    outcome: str
    reason: str | None
    run_id: str


@dataclass
class Known:
    """What the ledger already holds: the latest entry per path, ingested files by hash."""

    by_path: dict[str, Entry] = field(default_factory=dict)
    ingested: dict[bytes, Entry] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        self.by_path[entry.path] = entry
        if entry.outcome == INGESTED and entry.file_hash is not None:
            self.ingested.setdefault(entry.file_hash, entry)


@dataclass
class FilePlan:
    take: list[SourceFile] = field(default_factory=list)  # to read in this run
    entries: list[Entry] = field(default_factory=list)  # new ledger entries for this run
    unchanged: int = 0  # already in the ledger, exactly as listed: not even opened
    duplicates: int = 0  # same bytes as a file already ingested
    rejected: list[Entry] = field(default_factory=list)
    layouts: dict[str, Layout] = field(default_factory=dict)  # of the text files taken

    @property
    def skipped(self) -> int:
        return self.unchanged + self.duplicates


def load(spark: SparkSession, uri: str) -> Known:
    """The ledger's entries in recording order (one Spark job; a few MB per 10k files)."""
    known = Known()
    if lake.only_created(spark, uri):
        return known
    columns = [f for f in SCHEMA.fieldNames() if f != "recorded_at"]
    table = lake.read_table(spark, uri).orderBy("recorded_at").select(*columns).toArrow()
    for row in table.to_pylist():
        known.add(Entry(**row))
    return known


def plan(
    files: Iterable[SourceFile],
    known: Known,
    inspect: Callable[[list[SourceFile]], list[Inspection]],
    on_changed_file: str,
    run_id: str,
) -> FilePlan:
    """Decide, for each listed file, whether this run reads it; only new paths are opened."""
    result = FilePlan()
    candidates: list[SourceFile] = []
    for source in files:
        prior = known.by_path.get(source.uri)
        unreadable = prior is not None and prior.file_hash is None  # may be readable now
        same = prior and (prior.size, prior.modified_ms) == (source.size, source.modified_ms)
        if same and not unreadable:
            result.unchanged += 1
        elif source.problem:
            result.rejected.append(_entry(source, None, REJECTED, source.problem, run_id))
        else:
            candidates.append(source)
    inspections = {i.uri: i for i in inspect(candidates)} if candidates else {}
    for source in candidates:
        inspection = inspections[source.uri]
        digest = inspection.file_hash
        prior = known.by_path.get(source.uri)
        if inspection.problem:
            result.rejected.append(_entry(source, digest, REJECTED, inspection.problem, run_id))
            continue
        first = known.ingested.get(digest) if digest is not None else None
        if first is not None:
            reason = f"same bytes as {first.path} (ingested by run {first.run_id})"
            result.entries.append(_entry(source, digest, DUPLICATE, reason, run_id))
            result.duplicates += 1
            continue
        if prior and prior.outcome == INGESTED and on_changed_file == "reject":
            reason = (
                f"changed since run {prior.run_id} ingested it "
                "(on_changed_file: reject; set reingest to read it again)"
            )
            result.rejected.append(_entry(source, digest, REJECTED, reason, run_id))
            continue
        entry = _entry(source, digest, INGESTED, None, run_id)
        known.add(entry)  # a second copy later in this listing is a duplicate of this one
        result.entries.append(entry)
        result.take.append(source)
        if inspection.layout is not None:
            result.layouts[source.uri] = inspection.layout
    result.entries.extend(result.rejected)
    return result


def _entry(
    source: SourceFile, digest: bytes | None, outcome: str, reason: str | None, run_id: str
) -> Entry:
    return Entry(source.uri, source.size, source.modified_ms, digest, outcome, reason, run_id)


def append(spark: SparkSession, uri: str, entries: list[Entry], now: datetime) -> None:
    """Record this run's entries in one commit (nothing when there are none)."""
    if not entries:
        return
    rows = [(*vars(e).values(), now) for e in entries]
    frame = spark.createDataFrame(rows, schema=SCHEMA)
    frame.write.format("delta").mode("append").save(uri)
