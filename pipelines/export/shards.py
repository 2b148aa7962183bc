"""Writing shards on the executors with pyarrow, not Spark's writer: one task per shard writes
``<out>/<split>/shard-00000-of-0000N.parquet`` (zstd, row groups of a fixed row count) to a
temporary file, hashes it while writing and moves or uploads it into place, so names, bytes,
row groups and checksums are deterministic and known in one pass.
"""

from __future__ import annotations

import functools
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.udf import UserDefinedFunction
from pyspark.util import PythonEvalType

from pipelines.config import S3Settings
from pipelines.errors import StorageError
from pipelines.export.ranking import POS_COL, SHARD_COL, SPLIT_COL, TARGET_COL
from pipelines.loader.manifest import (
    Shard,
    file_digest,
)
from pipelines.storage import arrowfs

ZSTD_LEVEL = 3
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
class WritePlan:
    """What an executor needs to write shards (picklable; no Spark objects)."""

    out: str  # the export's folder URI
    s3: S3Settings  # from the driver: executors may lack the AWS variables (repr redacted)
    schema: pa.Schema
    splits: tuple[str, ...]
    shards: int
    row_group_rows: int

    def relative(self, split: int, shard: int) -> str:
        return f"{self.splits[split]}/shard-{shard:05d}-of-{self.shards:05d}.parquet"


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
        F.col("id").cast("int").alias(TARGET_COL)
    )
    return candidates.groupBy(
        F.pmod(F.hash(F.col(TARGET_COL)), F.lit(partitions)).alias(f"{TARGET_COL}_of")
    ).agg(F.min(TARGET_COL).alias(TARGET_COL))


def write_shards(spark: SparkSession, ranked: DataFrame, plan: WritePlan) -> list[dict[str, Any]]:
    """Write every shard that has rows, one task per shard, each in position order; return
    what each task wrote (see ``_RESULT``)."""
    partitions = len(plan.splits) * plan.shards
    shard_of = F.col(SPLIT_COL) * plan.shards + F.col(SHARD_COL)
    placed = (
        ranked.withColumn(f"{TARGET_COL}_of", shard_of.cast("int"))
        .join(F.broadcast(direct_keys(spark, partitions)), on=f"{TARGET_COL}_of", how="left")
        .withColumn(TARGET_COL, F.coalesce(F.col(TARGET_COL), F.col(f"{TARGET_COL}_of")))
        .repartition(partitions, TARGET_COL)
        .sortWithinPartitions(SPLIT_COL, SHARD_COL, POS_COL)
        .select(SPLIT_COL, SHARD_COL, POS_COL, *sorted(_data_columns(ranked), key=_column_number))
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
        self.fs, root = arrowfs.filesystem(plan.out, plan.s3)
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


def placeholder_shard() -> Shard:
    """A shard entry of a planned manifest, filled in once the shard is written."""
    return Shard(path="", rows=0, bytes=0, sha256="", row_groups=())
