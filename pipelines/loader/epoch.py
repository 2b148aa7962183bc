"""The epoch plan: which rows make each batch of an epoch (``EpochLayout``, ``Epoch``), and the
reading of those rows from the shards a window at a time.

Everything follows from the manifest, the seed, the epoch and the layout fixed at the first start,
so every rank and every DataLoader worker computes the same plan alone:

1. The split's row groups are put in a seeded order (new each epoch) and read as one sequence of
   rows. Export already put every shard in random order, so each row group is a fair sample.
2. The sequence is cut into ``lanes`` contiguous stretches, and each lane is shuffled within
   windows of ``window_rows`` rows (a seeded permutation per window: the shuffle buffer, bounded).
3. The epoch's global order takes ``block_rows`` rows from lane 0, then lane 1, ... round-robin.
4. Global step ``i`` is the next ``batch_size * world_size`` rows of that order; rank ``r`` takes
   the ``r``-th ``batch_size`` of them; DataLoader worker ``w`` of ``K`` makes the rank's batches
   ``w, w + K, ...``, counted from where the iteration starts (the order DataLoader takes them in).

With the default layout (``lanes = world_size * workers``, ``block_rows = batch_size``) every
worker reads a lane of its own, so no two processes decode the same rows. The global order does not
depend on the number of ranks, so a run resumed with another ``world_size`` (same global batch)
takes up exactly the rows that are left; only the reading is then less local.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.loader.arrays import Batch, to_numpy
from pipelines.loader.manifest import Shard
from pipelines.storage import arrowfs


@dataclass(frozen=True)
class EpochLayout:
    """What decides the epoch's global order, besides the seed and the epoch: kept in the state."""

    global_batch: int
    lanes: int
    block_rows: int
    window_rows: int  # a multiple of block_rows, so a block never straddles two windows


@dataclass(frozen=True)
class Piece:
    """A slice of one shuffled window that goes into a batch."""

    lane: int
    window: int
    start: int  # within the shuffled window
    stop: int


class Epoch:
    """One epoch's order for one rank, and the reading of its windows."""

    def __init__(
        self,
        *,
        shards: Sequence[Shard],
        root: str,
        columns: list[str],
        layout: EpochLayout,
        steps: int,
        rank: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        epoch: int,
        numpy: bool,
    ) -> None:
        """``root``: the manifest's folder, the base of the shard paths ("" when they are URIs);
        ``steps``: global steps in the epoch; ``numpy``: shape windows as NumPy, else Arrow."""
        self.shards, self.root, self.columns, self.layout = shards, root, columns, layout
        self.rank, self.batch_size = rank, batch_size
        self.shuffle, self.seed, self.epoch, self.numpy = shuffle, seed, epoch, numpy
        units = [
            (shard_index, group, rows)
            for shard_index, shard in enumerate(shards)
            for group, rows in enumerate(shard.row_groups)
            if rows
        ]
        if shuffle:
            order = permutation(len(units), seed, epoch, 0)
            units = [units[i] for i in order]
        self.units = units
        self.unit_ends = np.cumsum([rows for _, _, rows in units], dtype=np.int64)
        used = steps * layout.global_batch
        blocks = used // layout.block_rows
        per_lane, extra = divmod(blocks, layout.lanes)
        lane_rows = np.array(
            [
                (per_lane + (1 if lane < extra else 0)) * layout.block_rows
                for lane in range(layout.lanes)
            ],
            dtype=np.int64,
        )
        self.lane_rows = lane_rows
        self.lane_starts = np.concatenate([[0], np.cumsum(lane_rows)[:-1]]).astype(np.int64)
        self.files: dict[int, pq.ParquetFile] = {}
        self.last: tuple[int, pa.Table] | None = None  # the last row group read, by unit
        self.fs: pafs.FileSystem | None = None  # the export's, made on first use
        self.base = ""

    def pieces(self, step: int) -> list[Piece]:
        """Which window slices make this rank's batch at global ``step``."""
        layout = self.layout
        start = step * layout.global_batch + self.rank * self.batch_size
        out, x, stop = [], start, start + self.batch_size
        while x < stop:
            block, offset = divmod(x, layout.block_rows)
            lane, lane_block = block % layout.lanes, block // layout.lanes
            y = lane_block * layout.block_rows + offset
            window, s = divmod(y, layout.window_rows)
            n = min(stop - x, layout.block_rows - offset)
            out.append(Piece(lane, window, s, s + n))
            x += n
        return out

    def window_order(self, steps: Iterable[int]) -> Iterator[tuple[int, int]]:
        """The ``(lane, window)`` keys these steps use, in order, each run of repeats once."""
        return _dedupe((piece.lane, piece.window) for step in steps for piece in self.pieces(step))

    def window_size(self, lane: int, window: int) -> int:
        return int(
            min(self.layout.window_rows, self.lane_rows[lane] - window * self.layout.window_rows)
        )

    def read_window(self, lane: int, window: int) -> pa.Table:
        """A lane's window in sequence order, read from its row groups (one thread at a time:
        it keeps the last row group read)."""
        size = self.window_size(lane, window)
        begin = int(self.lane_starts[lane]) + window * self.layout.window_rows
        return pa.concat_tables(list(self._rows(begin, begin + size)))

    def shape_window(self, lane: int, window: int, table: pa.Table) -> Batch:
        """The window shuffled, as Arrow or as NumPy.

        For NumPy batches the window is converted once and shuffled with NumPy (which moves
        pointers for text, not the text), so that each batch is a set of views: the same work
        per row as converting a plain scan's row groups, plus one gather.
        """
        order = None
        if self.shuffle:
            order = permutation(table.num_rows, self.seed, self.epoch, 1, lane, window)
        if not self.numpy:
            return table if order is None else table.take(order)
        columns = to_numpy(table)
        return columns if order is None else {name: v[order] for name, v in columns.items()}

    def _rows(self, begin: int, end: int) -> Iterator[pa.Table]:
        """Rows ``[begin, end)`` of the epoch's sequence (past its end: from its start again)."""
        total = int(self.unit_ends[-1])
        while begin < end:
            wrapped = begin % total
            n = min(end - begin, total - wrapped)
            first = int(np.searchsorted(self.unit_ends, wrapped, side="right"))
            last = int(np.searchsorted(self.unit_ends, wrapped + n - 1, side="right"))
            spans = []
            for u in range(first, last + 1):
                unit_start = int(self.unit_ends[u]) - self.units[u][2]
                lo = max(wrapped, unit_start) - unit_start
                hi = min(wrapped + n, int(self.unit_ends[u])) - unit_start
                spans.append((u, lo, hi))
            yield from self._read(spans)
            begin += n

    def _read(self, spans: list[tuple[int, int, int]]) -> Iterator[pa.Table]:
        """Row-group slices, one thread per shard file (a ParquetFile is not thread-safe), so
        the reads of different shards overlap (ranged reads when the shards are on S3)."""
        groups: dict[int, pa.Table] = {}
        if self.last is not None:
            groups[self.last[0]] = self.last[1]  # a row group that straddles two windows
        by_shard: dict[int, list[int]] = {}
        for u, _, _ in spans:
            if u not in groups:
                by_shard.setdefault(self.units[u][0], []).append(u)

        def read(units: list[int]) -> list[tuple[int, pa.Table]]:
            file = self._file(self.units[units[0]][0])
            return [(u, file.read_row_group(self.units[u][1], columns=self.columns)) for u in units]

        if len(by_shard) <= 1:
            done = [read(units) for units in by_shard.values()]
        else:
            with ThreadPoolExecutor(max_workers=min(8, len(by_shard))) as pool:
                done = list(pool.map(read, by_shard.values()))
        groups.update(pair for pairs in done for pair in pairs)
        last = spans[-1][0]
        self.last = (last, groups[last])
        for u, lo, hi in spans:
            yield groups[u].slice(lo, hi - lo)

    def _file(self, shard_index: int) -> pq.ParquetFile:
        if shard_index not in self.files:
            shard = self.shards[shard_index]
            if self.root:  # one filesystem for the export (an S3 client is not free)
                if self.fs is None:
                    self.fs, self.base = arrowfs.filesystem(self.root)
                uri = f"{self.root}/{shard.path}"
                fs, path = self.fs, f"{self.base}/{shard.path}"
            else:
                uri = shard.path
                fs, path = arrowfs.filesystem(uri)
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound or info.size != shard.bytes:
                raise ValueError(_changed(uri, shard, info))
            self.files[shard_index] = pq.ParquetFile(
                fs.open_input_file(path), pre_buffer=True, memory_map=False
            )
        return self.files[shard_index]


def permutation(n: int, *key: int) -> np.ndarray:
    """A permutation of ``range(n)`` from a seeded PCG64 stream (stable across NumPy versions)."""
    if n <= 1:
        return np.arange(n)
    bits = np.random.PCG64(np.random.SeedSequence(list(key))).random_raw(n)
    return np.argsort(bits, kind="stable")


def _dedupe(keys: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """The keys without consecutive repeats, lazily (an epoch can have millions of steps)."""
    last = None
    for key in keys:
        if key != last:
            yield key
            last = key


def _changed(uri: str, shard: Shard, info: pafs.FileInfo) -> str:
    if info.type == pafs.FileType.NotFound:
        return f"{uri}: shard missing (the manifest lists it with {shard.rows} rows)"
    return (
        f"{uri}: {info.size} bytes, the manifest says {shard.bytes}: the shard changed since export"
    )


__all__ = ["Epoch", "EpochLayout", "Piece", "permutation"]
