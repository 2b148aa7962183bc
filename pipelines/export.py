"""``lakeshard export``: a pinned table version as N Parquet shards per split, plus a manifest.

What decides the output, and why:

* **Pinned.** One table version (the latest by default) is read with ``versionAsOf``; the
  manifest names it and the table's Delta id, so a re-export reads exactly the same rows.
* **Split by content.** A record's split is decided by the first 8 bytes of its content hash
  (:func:`pipelines.manifest.split_of`), never by the seed: a record stays in its split across
  re-exports, seeds and a growing table, so validation rows never leak into training.
* **Balanced, fair shards.** Within a split, rows are ranked by ``xxhash64(seed,
  _content_hash)`` (ties by the hash): a random order that the seed picks. Rank ``r`` goes to
  shard ``r % N`` at position ``r // N``, so shard sizes differ by at most one row and each shard
  is a uniform sample of the split, already shuffled. The global rank needs no single-partition
  window: the order key's top bits cut the split into ranges, one aggregation counts them, and
  each range is ranked on its own from its offset.
* **Written by pyarrow on the executors**, not by Spark's writer: one task per shard writes
  ``<out>/<split>/shard-00000-of-0000N.parquet`` (zstd, row groups of a fixed row count,
  statistics) to a temporary file, hashes it and moves or uploads it into place, so names,
  bytes, row groups and checksums are deterministic and known in one pass.
* **The manifest is the commit point**, written last by the driver. An export that dies
  leaves no manifest (or the previous, identical one); running it again finishes it.

The same arguments give the same manifest and shard bytes (for the same pyarrow version, which
names itself in each file's footer).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from delta.tables import DeltaTable
from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.udf import UserDefinedFunction
from pyspark.util import PythonEvalType

from pipelines import lake, objectstore
from pipelines.columns import col
from pipelines.errors import ConfigError, PolicyError, StorageError, first_line
from pipelines.ingest import progress
from pipelines.manifest import (
    HASH_COLUMN,
    MANIFEST,
    Manifest,
    Shard,
    Split,
    file_digest,
    parse_split,
    split_bounds,
)
from pipelines.settings import Settings, join_uri, normalise_uri

DEFAULT_SPLIT = "train=1"
MAX_SHARDS = 65_536
GROUP_BYTES = 8 * 2**20  # aim: about this much compressed data per row group
MIN_GROUP_ROWS, MAX_GROUP_ROWS = 1024, 131_072
RANGE_ROWS = 1_000_000  # rows ranked by one window task, about
ZSTD_LEVEL = 3
# Helper columns of the plan; exported columns travel as __c<i> so that no name can clash.
_SPLIT, _KEY, _PART, _OFFSET, _RANK, _SHARD, _POS, _TARGET = (
    "__split",
    "__key",
    "__part",
    "__offset",
    "__rank",
    "__shard",
    "__pos",
    "__target",
)
_RESULT = pa.schema(
    [
        pa.field("split", pa.int32(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("row_groups", pa.list_(pa.int64()), nullable=False),
    ]
)
_RESULT_DDL = "split int, shard int, rows long, bytes long, sha256 string, row_groups array<long>"


@dataclass(frozen=True)
class Options:
    shards: int
    version: int | None = None  # None: the latest
    out: str | None = None  # None: <lake>/exports/<dataset>/v<version>
    columns: tuple[str, ...] | None = None  # None: the declared (non-bookkeeping) columns
    where: str | None = None
    split: str = DEFAULT_SPLIT
    seed: int = 0
    row_group_rows: int | None = None  # None: from the pinned version's bytes per row


@dataclass(frozen=True)
class WritePlan:
    """What an executor needs to write shards (picklable; no Spark objects)."""

    out: str  # the export's folder URI
    s3: Mapping[str, Any]  # S3FileSystem arguments from the driver: executors may lack them
    schema: pa.Schema
    splits: tuple[str, ...]
    shards: int
    row_group_rows: int

    def relative(self, split: int, shard: int) -> str:
        return f"{self.splits[split]}/shard-{shard:05d}-of-{self.shards:05d}.parquet"


# --- the command -------------------------------------------------------------------------------


def export(
    spark: SparkSession, settings: Settings, dataset: str, options: Options
) -> dict[str, Any]:
    """Export the dataset's table; return the summary (``manifest``, ``rows``, ...)."""
    started = time.monotonic()
    split = parse_split(options.split)
    uri = settings.table_uri(dataset)
    version = pin_version(spark, uri, dataset, options.version)
    table = lake.read_table(spark, uri, version)
    columns = choose_columns(table.schema, options.columns)
    where = check_where(table, options.where)
    out = normalise_uri(options.out) if options.out else default_out(settings, dataset, version)
    planned = Manifest(
        dataset=dataset,
        table=uri,
        table_id=table_id(spark, uri),
        table_version=version,
        columns=columns,
        where=where,
        seed=options.seed,
        schema=schema_entries(table.schema, columns),
        splits=tuple(
            Split(name, fraction, 0, tuple(_placeholder() for _ in range(options.shards)))
            for name, fraction in split
        ),
    )
    previous = read_manifest(out)
    refuse_other_export(previous, planned, out)
    stats = table_stats(table)
    progress(f"pinned {dataset} v{version} ({stats.rows:,} rows)")

    rows = table if where is None else table.filter(F.expr(where))
    framed = rows.transform(framed_rows(columns, split_bounds(split), options.seed, stats.rows))
    counts = count_ranges(framed)
    per_split = [sum(n for (s, _), n in counts.items() if s == i) for i in range(len(split))]
    group_rows = options.row_group_rows or row_group_rows(stats)
    expected = {
        (s, shard): shard_rows(per_split[s], options.shards, shard)
        for s in range(len(split))
        for shard in range(options.shards)
    }
    refuse_other_layout(previous, expected, group_rows, out)

    plan = WritePlan(
        out=out,
        s3=objectstore.s3_options(),
        schema=arrow_schema(table.select(*[col(c) for c in columns]).schema, spark),
        splits=tuple(name for name, _ in split),
        shards=options.shards,
        row_group_rows=group_rows,
    )
    offsets = spark.createDataFrame(
        [(s, p, n) for (s, p), n in sorted(range_offsets(counts).items())],
        schema=f"{_SPLIT} int, {_PART} long, {_OFFSET} long",
    )
    hashed = f"__c{columns.index(HASH_COLUMN)}"
    ranked = framed.transform(with_rank(offsets, options.shards, hashed))
    progress(
        f"writing {len(split) * options.shards} shard(s) of {sum(per_split):,} rows "
        f"to {out} (row groups of {group_rows:,} rows)"
    )
    written = write_shards(spark, ranked, plan)
    shards = collect_shards(plan, written, expected)
    manifest = dataclasses.replace(
        planned,
        splits=tuple(
            Split(name, fraction, per_split[s], shards[s])
            for s, (name, fraction) in enumerate(split)
        ),
    )
    manifest_uri = write_manifest(out, manifest)
    progress(f"wrote {manifest_uri}")
    return {
        "dataset": dataset,
        "manifest": manifest_uri,
        "out": out,
        "table": uri,
        "table_version": version,
        "rows": manifest.rows,
        "table_rows": stats.rows,
        "shards": options.shards,
        "splits": {s.name: s.rows for s in manifest.splits},
        "bytes": sum(shard.bytes for s in manifest.splits for shard in s.shards),
        "row_group_rows": group_rows,
        "seconds": round(time.monotonic() - started, 1),
    }


def print_summary(summary: Mapping[str, Any]) -> None:
    splits = ", ".join(f"{name} {rows:,}" for name, rows in summary["splits"].items())
    print(
        f"{summary['dataset']}: exported table version {summary['table_version']} — "
        f"{summary['rows']:,} rows ({splits}) in {summary['shards']} shard(s) per split, "
        f"{summary['bytes']:,} bytes, {summary['seconds']} s"
    )
    print(f"  manifest: {summary['manifest']}")


# --- what is exported --------------------------------------------------------------------------


def pin_version(spark: SparkSession, uri: str, dataset: str, wanted: int | None) -> int:
    """The version to export: ``wanted`` if the table has it, else its latest."""
    latest = lake.current_version(spark, uri)
    if latest is None:
        raise ConfigError(f"{dataset}: no table at {uri} (nothing has been ingested)")
    if wanted is None:
        return latest
    history = DeltaTable.forPath(spark, uri).history().select("version")
    earliest = int(history.agg(F.min("version")).collect()[0][0])
    if not earliest <= wanted <= latest:
        raise ConfigError(
            f"--version {wanted}: {dataset} has no such table version "
            f"(versions {earliest} to {latest} are available)"
        )
    return wanted


def table_id(spark: SparkSession, uri: str) -> str:
    """The table's Delta id (its metaData id, as DESCRIBE DETAIL shows it).

    The id is set when the table is created and changes only if the table is replaced, which
    lakeshard never does; a table deleted and made again at the same place has a new one."""
    row = DeltaTable.forPath(spark, uri).detail().select("id").first()
    return str(row["id"]) if row else ""


def choose_columns(schema: T.StructType, wanted: Sequence[str] | None) -> tuple[str, ...]:
    """The exported columns: ``wanted`` (default: every column not starting with ``_``) in
    that order, then the content hash, which is always exported."""
    names = schema.fieldNames()
    if wanted is None:
        chosen = [n for n in names if not n.startswith("_")]
    else:
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise ConfigError(
                f"--columns: no column {unknown[0]!r} in the table (columns: {', '.join(names)})"
            )
        repeated = sorted({n for n in wanted if list(wanted).count(n) > 1})
        if repeated:
            raise ConfigError(f"--columns: {repeated[0]!r} is named twice")
        chosen = list(wanted)
    if HASH_COLUMN not in chosen:
        chosen.append(HASH_COLUMN)
    return tuple(chosen)


def check_where(table: DataFrame, where: str | None) -> str | None:
    """Analyse ``--where`` against the pinned table before any data is read: it must be a
    deterministic boolean condition on one row (the same rows on every re-export)."""
    if where is None:
        return None
    try:
        frame = table.select(F.expr(where).alias("ok"))
        dtype = frame.schema["ok"].dataType
    except (AnalysisException, ParseException) as exc:
        raise ConfigError(f"--where {where!r}: {first_line(exc)}") from None
    if not isinstance(dtype, T.BooleanType):
        raise ConfigError(
            f"--where {where!r} is of type {dtype.simpleString()}, not a boolean condition"
        )
    root = frame._jdf.queryExecution().analyzed().expressions().apply(0)
    if not root.deterministic() or _has_subquery(root):
        raise ConfigError(
            f"--where {where!r} is not a deterministic condition on one row; a re-export "
            "must select the same rows"
        )
    return where


_SUBQUERIES = {"ScalarSubquery", "Exists", "ListQuery", "InSubquery", "LateralSubquery"}


def _has_subquery(node: Any) -> bool:
    """Whether a Catalyst expression reads another query (whose answer may change)."""
    if str(node.getClass().getSimpleName()) in _SUBQUERIES:
        return True
    children = node.children()
    return any(_has_subquery(children.apply(i)) for i in range(children.size()))


def schema_entries(schema: T.StructType, columns: Sequence[str]) -> tuple[dict[str, Any], ...]:
    """The manifest's schema: name, Spark SQL type and nullability of each exported column."""
    fields = {f.name: f for f in schema.fields}
    return tuple(
        {
            "name": name,
            "type": fields[name].dataType.simpleString(),
            "nullable": fields[name].nullable,
        }
        for name in columns
    )


def default_out(settings: Settings, dataset: str, version: int) -> str:
    return join_uri(settings.lake, "exports", dataset, f"v{version}")


@dataclass(frozen=True)
class TableStats:
    rows: int
    bytes: int  # of the data files of the pinned version


def table_stats(table: DataFrame) -> TableStats:
    """Rows and data-file bytes of the pinned version, from file metadata (Parquet footers
    only: no column is read)."""
    per_file = table.groupBy(F.col("_metadata.file_path").alias("path")).agg(
        F.count(F.lit(1)).alias("rows"), F.max("_metadata.file_size").alias("bytes")
    )
    total = per_file.agg(
        F.coalesce(F.sum("rows"), F.lit(0)).alias("rows"),
        F.coalesce(F.sum("bytes"), F.lit(0)).alias("bytes"),
    ).collect()[0]
    return TableStats(rows=int(total["rows"]), bytes=int(total["bytes"]))


def row_group_rows(stats: TableStats) -> int:
    """Rows per row group: about GROUP_BYTES of compressed data at the table's bytes per row,
    a multiple of 1024 within [MIN_GROUP_ROWS, MAX_GROUP_ROWS]. It depends on the pinned
    version only, so a re-export cuts the same row groups."""
    if stats.rows == 0 or stats.bytes == 0:
        return MAX_GROUP_ROWS
    rows = GROUP_BYTES * stats.rows // stats.bytes
    return max(MIN_GROUP_ROWS, min(MAX_GROUP_ROWS, rows // 1024 * 1024))


def shard_rows(rows: int, shards: int, shard: int) -> int:
    """Rows of one shard when ranks 0..rows-1 go to shard ``rank % shards``."""
    return rows // shards + (1 if shard < rows % shards else 0)


# --- transforms --------------------------------------------------------------------------------


def split_index(bounds: Sequence[int]) -> Column:
    """The split of each row, as :func:`pipelines.manifest.split_of` computes it: the first 8
    bytes of the content hash as an unsigned big-endian number, against the bounds. Fixed-width
    upper-case hex compares as the number does."""
    key = F.hex(F.substring(col(HASH_COLUMN), 1, 8))
    index: Column | None = None
    for i, bound in enumerate(bounds[:-1]):
        below = key < F.lit(f"{bound:016X}")
        index = F.when(below, F.lit(i)) if index is None else index.when(below, F.lit(i))
    last = F.lit(len(bounds) - 1)
    return last if index is None else index.otherwise(last)


def range_bits(rows: int) -> int:
    """log2 of the number of order-key ranges: a power of two ≥ 2 and ≥ rows / RANGE_ROWS."""
    return max(1, math.ceil(math.log2(max(1, math.ceil(rows / RANGE_ROWS)))))


def framed_rows(
    columns: Sequence[str], bounds: Sequence[int], seed: int, rows: int
) -> Callable[[DataFrame], DataFrame]:
    """Rows with their split, order key and order-key range, and the exported columns as
    ``__c<i>``. The range is the key's top bits (an arithmetic shift keeps the key's order;
    at least one bit is kept, since Java ignores a shift by 64)."""
    bits = range_bits(rows)

    def frame(table: DataFrame) -> DataFrame:
        key = F.xxhash64(F.lit(seed).cast("long"), col(HASH_COLUMN))
        return table.select(
            split_index(bounds).cast("int").alias(_SPLIT),
            key.alias(_KEY),
            F.shiftright(key, 64 - bits).cast("long").alias(_PART),
            *[col(name).alias(f"__c{i}") for i, name in enumerate(columns)],
        )

    return frame


def count_ranges(framed: DataFrame) -> dict[tuple[int, int], int]:
    """Rows per (split, key range): one aggregation, read from the content hash (and the
    columns ``--where`` names) only."""
    return {
        (int(row[_SPLIT]), int(row[_PART])): int(row["count"])
        for row in framed.groupBy(_SPLIT, _PART).count().collect()
    }


def range_offsets(counts: Mapping[tuple[int, int], int]) -> dict[tuple[int, int], int]:
    """For each (split, key range): how many rows of the split come before it."""
    offsets: dict[tuple[int, int], int] = {}
    totals: dict[int, int] = {}
    for split, part in sorted(counts):
        offsets[(split, part)] = totals.get(split, 0)
        totals[split] = totals.get(split, 0) + counts[(split, part)]
    return offsets


def with_rank(offsets: DataFrame, shards: int, hashed: str) -> Callable[[DataFrame], DataFrame]:
    """Each row's rank in its split, ordered by (key, content hash ``hashed``), and from it its
    shard and its position in the shard. Each key range is ranked in its own window."""

    def rank(framed: DataFrame) -> DataFrame:
        order = (
            Window.partitionBy(_SPLIT, _PART)
            .orderBy(_KEY, hashed)
            .rowsBetween(Window.unboundedPreceding, Window.currentRow)
        )
        ranked = framed.join(F.broadcast(offsets), on=[_SPLIT, _PART], how="left").withColumn(
            _RANK, F.col(_OFFSET) + F.row_number().over(order) - 1
        )
        shard = (F.col(_RANK) % shards).cast("int")
        return ranked.select(
            F.col(_SPLIT),
            shard.alias(_SHARD),
            # Exact: a multiple of ``shards`` divided by it, below 2**53 rows.
            ((F.col(_RANK) - shard) / shards).cast("long").alias(_POS),
            *[c for c in framed.columns if c.startswith("__c")],
        )

    return rank


# --- writing -----------------------------------------------------------------------------------


def arrow_schema(schema: T.StructType, spark: SparkSession) -> pa.Schema:
    """The shards' Arrow schema: Spark's conversion (plain, not large, strings and binaries;
    timestamps in the session's time zone), with each column's nullability as in the table."""
    zone = spark.conf.get("spark.sql.session.timeZone") or "UTC"
    converted = to_arrow_schema(schema, timezone=zone, prefers_large_types=False)
    return pa.schema(
        [converted.field(i).with_nullable(field.nullable) for i, field in enumerate(schema.fields)]
    )


def direct_keys(spark: SparkSession, partitions: int) -> DataFrame:
    """``(__target_of, __target)``: for each partition number below ``partitions`` an int key
    that hash partitioning sends there (Spark puts a key in ``pmod(hash(key), n)``), so that
    ``repartition(partitions, __target)`` gives each shard a task of its own instead of
    letting shards collide in one task. The keys are the smallest such ints."""
    candidates = spark.range(0, 32 * partitions + 1024).select(
        F.col("id").cast("int").alias(_TARGET)
    )
    return candidates.groupBy(
        F.pmod(F.hash(F.col(_TARGET)), F.lit(partitions)).alias(f"{_TARGET}_of")
    ).agg(F.min(_TARGET).alias(_TARGET))


def write_shards(spark: SparkSession, ranked: DataFrame, plan: WritePlan) -> list[dict[str, Any]]:
    """Write every shard that has rows, one task per shard, each in position order; return
    what each task wrote (see ``_RESULT``)."""
    partitions = len(plan.splits) * plan.shards
    shard_of = F.col(_SPLIT) * plan.shards + F.col(_SHARD)
    placed = (
        ranked.withColumn(f"{_TARGET}_of", shard_of.cast("int"))
        .join(F.broadcast(direct_keys(spark, partitions)), on=f"{_TARGET}_of", how="left")
        .withColumn(_TARGET, F.coalesce(F.col(_TARGET), F.col(f"{_TARGET}_of")))
        .repartition(partitions, _TARGET)
        .sortWithinPartitions(_SPLIT, _SHARD, _POS)
        .select(_SPLIT, _SHARD, _POS, *sorted(_data_columns(ranked), key=_column_number))
    )
    writer = functools.partial(write_partition, plan)
    return [row.asDict() for row in _map_in_arrow(placed, writer, _RESULT_DDL).collect()]


def _data_columns(frame: DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("__c")]


def _column_number(name: str) -> int:
    return int(name[len("__c") :])


def _map_in_arrow(frame: DataFrame, func: Any, schema: str) -> DataFrame:
    """``frame.mapInArrow(func, schema)``. pyspark 4.2 builds it through ``pandas_udf``, which
    insists on pandas although the Arrow path never uses it; lakeshard does not need pandas, so
    this makes the same call without that check."""
    udf = UserDefinedFunction(
        func, returnType=schema, name="write_shards", evalType=PythonEvalType.SQL_MAP_ARROW_ITER_UDF
    )
    call = udf(*[frame[c] for c in frame.columns])
    return DataFrame(frame._jdf.mapInArrow(call._jc, False, None), frame.sparkSession)


def write_partition(plan: WritePlan, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """On an executor: write the shards of one partition, whose rows come sorted by (split,
    shard, position); yield one description per shard."""
    written: list[dict[str, Any]] = []
    current: ShardWriter | None = None
    try:
        for batch in batches:
            splits = batch.column(0).to_numpy()
            shards = batch.column(1).to_numpy()
            runs = np.flatnonzero(np.diff(splits.astype(np.int64) * plan.shards + shards)) + 1
            for start, end in zip([0, *runs], [*runs, batch.num_rows], strict=True):
                key = (int(splits[start]), int(shards[start]))
                if current is None or current.key != key:
                    if current is not None:
                        written.append(current.close())
                    current = ShardWriter(plan, *key)
                current.add(batch.slice(start, end - start))
        if current is not None:
            written.append(current.close())
            current = None
    finally:
        if current is not None:
            current.abort()
    if written:
        yield pa.RecordBatch.from_pylist(written, schema=_RESULT)


class ShardWriter:
    """One shard file: row groups of exactly ``row_group_rows`` rows (the last one may hold
    fewer), written to a temporary file, hashed, then moved (local) or uploaded (S3) into place.
    Batches are gathered into whole row groups before they are written, so the bytes do not
    depend on how Spark happened to cut its batches."""

    def __init__(self, plan: WritePlan, split: int, shard: int) -> None:
        self.plan = plan
        self.key = (split, shard)
        self.fs, root = objectstore.filesystem(plan.out, plan.s3)
        self.final = f"{root}/{plan.relative(split, shard)}"
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        if self.local:  # beside the final file: the move is a rename
            folder, name = os.path.split(self.final)
            os.makedirs(folder, exist_ok=True)
            self.temp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
        else:
            handle, self.temp = tempfile.mkstemp(prefix="lakeshard-shard-", suffix=".parquet")
            os.close(handle)
        self.writer = pq.ParquetWriter(
            self.temp,
            plan.schema,
            compression="zstd",
            compression_level=ZSTD_LEVEL,
            write_statistics=True,
        )
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.rows = 0  # written to row groups
        self.groups: list[int] = []

    def add(self, rows: pa.RecordBatch) -> None:
        """Append rows (split, shard and position first, then the data columns)."""
        positions = rows.column(2).to_numpy()
        start = self.rows + self.pending_rows
        if not np.array_equal(positions, np.arange(start, start + rows.num_rows)):
            raise StorageError(
                f"export: shard {self.plan.relative(*self.key)} received rows out of order "
                f"(positions from {int(positions[0])}, expected {start})"
            )
        data = pa.RecordBatch.from_arrays(rows.columns[3:], names=self.plan.schema.names)
        self.pending.append(data.cast(self.plan.schema))
        self.pending_rows += rows.num_rows
        while self.pending_rows >= self.plan.row_group_rows:
            self._flush(self.plan.row_group_rows)

    def _flush(self, count: int) -> None:
        table = pa.Table.from_batches(self.pending, schema=self.plan.schema).combine_chunks()
        self.writer.write_table(table.slice(0, count), row_group_size=count)
        self.groups.append(count)
        self.rows += count
        rest = table.slice(count)
        self.pending = rest.to_batches()
        self.pending_rows = rest.num_rows

    def close(self) -> dict[str, Any]:
        """Finish the file, put it in place, and describe it."""
        if self.pending_rows:
            self._flush(self.pending_rows)
        self.writer.close()
        with open(self.temp, "rb") as stream:
            sha256, size = file_digest(stream)
        if self.local:
            os.replace(self.temp, self.final)
        else:
            with open(self.temp, "rb") as source, self.fs.open_output_stream(self.final) as target:
                while chunk := source.read(1 << 22):
                    target.write(chunk)
            os.unlink(self.temp)
        return {
            "split": self.key[0],
            "shard": self.key[1],
            "rows": self.rows,
            "bytes": size,
            "sha256": sha256,
            "row_groups": self.groups,
        }

    def abort(self) -> None:
        self.writer.close()
        if os.path.exists(self.temp):
            os.unlink(self.temp)


def planned_groups(rows: int, group_rows: int) -> tuple[int, ...]:
    """The row groups of a shard of ``rows`` rows."""
    whole, rest = divmod(rows, group_rows)
    return (group_rows,) * whole + ((rest,) if rest else ())


def collect_shards(
    plan: WritePlan, written: Sequence[Mapping[str, Any]], expected: Mapping[tuple[int, int], int]
) -> list[tuple[Shard, ...]]:
    """The manifest's shards per split, from what the tasks wrote; shards that got no rows (a
    split smaller than the number of shards) are written empty here, so every split has all
    its files. A shard whose row count is not the planned one is an error."""
    got = {(int(w["split"]), int(w["shard"])): w for w in written}
    shards: list[tuple[Shard, ...]] = []
    for split in range(len(plan.splits)):
        entries: list[Shard] = []
        for number in range(plan.shards):
            found = got.get((split, number))
            if found is None and expected[(split, number)] == 0:
                found = ShardWriter(plan, split, number).close()
            if found is None or int(found["rows"]) != expected[(split, number)]:
                rows = 0 if found is None else int(found["rows"])
                raise StorageError(
                    f"export: {plan.relative(split, number)} holds {rows:,} rows, "
                    f"expected {expected[(split, number)]:,}; no manifest was written"
                )
            entries.append(
                Shard(
                    path=plan.relative(split, number),
                    rows=int(found["rows"]),
                    bytes=int(found["bytes"]),
                    sha256=str(found["sha256"]),
                    row_groups=tuple(int(n) for n in found["row_groups"]),
                )
            )
        shards.append(tuple(entries))
    return shards


# --- the manifest ------------------------------------------------------------------------------


def _placeholder() -> Shard:
    return Shard(path="", rows=0, bytes=0, sha256="", row_groups=())


def read_manifest(out: str) -> Manifest | None:
    """The manifest already in ``out``, if any."""
    uri = join_uri(out, MANIFEST)
    data = objectstore.read_bytes_if_any(uri)
    return None if data is None else Manifest.from_json(data, where=uri)


_FLAGS = {
    "table": "the table",
    "table_id": "the table's id (it was made again since)",
    "table_version": "--version",
    "columns": "--columns",
    "where": "--where",
    "seed": "--seed",
    "split": "--split",
    "shards": "--shards",
}


def refuse_other_export(previous: Manifest | None, planned: Manifest, out: str) -> None:
    """An export into a folder that holds one made with other arguments is refused; with the
    same arguments it is done again, which gives the same bytes."""
    if previous is None:
        return
    before, now = previous.arguments(), planned.arguments()
    for key in now:
        if before.get(key) != now[key]:
            raise PolicyError(
                f"{out} already holds an export with other arguments ({_FLAGS.get(key, key)}: "
                f"{before.get(key)!r} there, {now[key]!r} now); choose another --out"
            )


def refuse_other_layout(
    previous: Manifest | None,
    expected: Mapping[tuple[int, int], int],
    group_rows: int,
    out: str,
) -> None:
    """The same export with other row groups would change the bytes under its readers."""
    if previous is None:
        return
    laid_out = [
        (shard.row_groups, planned_groups(expected[(s, number)], group_rows))
        for s, split in enumerate(previous.splits)
        for number, shard in enumerate(split.shards)
    ]
    if any(there != now for there, now in laid_out):
        before = max((there[0] for there, _ in laid_out if there), default=0)
        raise PolicyError(
            f"{out} already holds this export with other row groups (--row-group-rows: "
            f"{before} there, {group_rows} now); choose another --out"
        )


def write_manifest(out: str, manifest: Manifest) -> str:
    """Write the manifest last, in one step (a rename; one PUT on S3); return its URI."""
    fs, root = objectstore.filesystem(out)
    path = f"{root}/{MANIFEST}"
    data = manifest.to_json().encode("utf-8")
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(root, exist_ok=True)
        temp = f"{root}/.{MANIFEST}.{uuid.uuid4().hex}.tmp"
        with open(temp, "wb") as stream:
            stream.write(data)
        os.replace(temp, path)
    else:
        with fs.open_output_stream(path) as stream:
            stream.write(data)
    return join_uri(out, MANIFEST)
