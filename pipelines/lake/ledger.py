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

from dataclasses import dataclass, field
from datetime import datetime

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from pipelines.lake import delta, deltafiles

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


def load(spark: SparkSession, uri: str) -> Known:
    """The ledger's entries in recording order: a few MB per 10k files, read from its Parquet
    files straight from the Delta log (no Spark job), or through Delta where the log says plain
    Parquet would not do (see :func:`deltalog.data_files`)."""
    columns = [f for f in SCHEMA.fieldNames() if f != "recorded_at"]
    table = deltafiles.read_columns(uri, [*columns, "recorded_at"])
    if table is not None:
        table = table.sort_by("recorded_at").select(columns)
    elif delta.only_created(spark, uri):
        return Known()
    else:
        table = delta.read_table(spark, uri).orderBy("recorded_at").select(*columns).toArrow()
    known = Known()
    for row in table.to_pylist():
        known.add(Entry(**row))
    return known


def append(spark: SparkSession, uri: str, entries: list[Entry], now: datetime) -> None:
    """Record this run's entries in one commit (nothing when there are none)."""
    if not entries:
        return
    rows = [(*vars(e).values(), now) for e in entries]
    frame = spark.createDataFrame(rows, schema=SCHEMA)
    frame.write.format("delta").mode("append").save(uri)
