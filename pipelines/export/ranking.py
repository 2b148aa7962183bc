"""How an export orders and places rows: splits by content hash, a seeded rank, balanced shards.

* **Split by content.** A record's split is decided by the first 8 bytes of its content hash
  (:func:`pipelines.loader.manifest.split_of`), never by the seed: a record stays in its split
  across re-exports, seeds and a growing table, so validation rows never leak into training.
* **Balanced, fair shards.** Within a split, rows are ranked by ``xxhash64(seed,
  _content_hash)`` (ties by the hash). Rank ``r`` goes to shard ``r % N`` at position ``r // N``:
  shard sizes differ by at most one row and each shard is a uniform, shuffled sample. The rank
  needs no single-partition window: the key's top bits cut the split into ranges of about
  ``RANGE_ROWS``, one aggregation counts them, and each range is ranked from its offset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pipelines.columns import CONTENT_HASH, col

GROUP_BYTES = 8 * 2**20  # aim: about this much compressed data per row group
MIN_GROUP_ROWS = 1024
MAX_GROUP_ROWS = 131_072
RANGE_ROWS = 1_000_000  # rows ranked by one window task, about


# Helper columns of the plan; exported columns travel as __c<i> so that no name can clash.
SPLIT_COL = "__split"
KEY_COL = "__key"
PART_COL = "__part"
OFFSET_COL = "__offset"
RANK_COL = "__rank"
SHARD_COL = "__shard"
POS_COL = "__pos"
TARGET_COL = "__target"


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


def split_index(bounds: Sequence[int]) -> Column:
    """The split of each row, as :func:`pipelines.loader.manifest.split_of` computes it: the first 8
    bytes of the content hash as an unsigned big-endian number, against the bounds. Fixed-width
    upper-case hex compares as the number does."""
    key = F.hex(F.substring(col(CONTENT_HASH), 1, 8))
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
        key = F.xxhash64(F.lit(seed).cast("long"), col(CONTENT_HASH))
        return table.select(
            split_index(bounds).cast("int").alias(SPLIT_COL),
            key.alias(KEY_COL),
            F.shiftright(key, 64 - bits).cast("long").alias(PART_COL),
            *[col(name).alias(f"__c{i}") for i, name in enumerate(columns)],
        )

    return frame


def count_ranges(framed: DataFrame) -> dict[tuple[int, int], int]:
    """Rows per (split, key range): one aggregation, read from the content hash (and the
    columns ``--where`` names) only."""
    return {
        (int(row[SPLIT_COL]), int(row[PART_COL])): int(row["count"])
        for row in framed.groupBy(SPLIT_COL, PART_COL).count().collect()
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
            Window.partitionBy(SPLIT_COL, PART_COL)
            .orderBy(KEY_COL, hashed)
            .rowsBetween(Window.unboundedPreceding, Window.currentRow)
        )
        ranked = framed.join(F.broadcast(offsets), on=[SPLIT_COL, PART_COL], how="left").withColumn(
            RANK_COL, F.col(OFFSET_COL) + F.row_number().over(order) - 1
        )
        shard = (F.col(RANK_COL) % shards).cast("int")
        return ranked.select(
            F.col(SPLIT_COL),
            shard.alias(SHARD_COL),
            # Exact: a multiple of ``shards`` divided by it, below 2**53 rows.
            ((F.col(RANK_COL) - shard) / shards).cast("long").alias(POS_COL),
            *[c for c in framed.columns if c.startswith("__c")],
        )

    return rank
