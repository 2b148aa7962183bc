"""Stream an export into training: equal batches on every rank, exactly once per epoch, resumable.

Needs pyarrow and numpy only; PyTorch is optional (``ShardLoader.torch`` / ``.dataloader``).

How an epoch is laid out (all of it follows from the manifest, the seed, the epoch and the layout
fixed at the first start, so every rank and every DataLoader worker computes the same plan alone):

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

Remainder policy: ``drop`` (default) ends the epoch after ``rows // global_batch`` steps, leaving
out fewer than one global batch of rows, a different few each epoch; ``pad`` adds a last step
filled up with rows from the start of the epoch's order, so every row is seen and a few twice.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.loader.manifest import HASH_COLUMN, MANIFEST, Manifest, Shard
from pipelines.storage import arrowfs

STATE_FORMAT = "lakeshard-loader/1"
REMAINDERS = ("drop", "pad")
DEFAULT_WINDOW_ROWS = 65536
Batch: TypeAlias = pa.Table | dict[str, np.ndarray]  # Arrow, or column name -> NumPy array


@dataclass(frozen=True)
class Layout:
    """What decides the epoch's global order, besides the seed and the epoch: kept in the state."""

    global_batch: int
    lanes: int
    block_rows: int
    window_rows: int  # a multiple of block_rows, so a block never straddles two windows


@dataclass(frozen=True)
class _Piece:
    lane: int
    window: int
    start: int  # within the shuffled window
    stop: int


class ShardLoader:
    """Batches of a lakeshard export for one rank: ``dict`` of column name -> NumPy array."""

    def __init__(
        self,
        manifest: str | Manifest,
        batch_size: int,
        rank: int | None = None,
        world_size: int | None = None,
        split: str = "train",
        columns: list[str] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        remainder: str = "drop",
        num_workers: int = 0,
        window_rows: int | None = None,
        prefetch: int = 2,
    ) -> None:
        if isinstance(manifest, Manifest):
            self.manifest, self.root = manifest, ""
        else:
            uri = manifest if manifest.endswith(".json") else f"{manifest.rstrip('/')}/{MANIFEST}"
            self.manifest = Manifest.from_json(arrowfs.read_bytes(uri), where=uri)
            self.root = uri.rsplit("/", 1)[0]
        self.rank, self.world_size = _distributed(rank, world_size)
        _check(batch_size >= 1, f"batch_size must be at least 1, not {batch_size}")
        _check(0 <= self.rank < self.world_size, f"rank {self.rank} is not in [0, world_size)")
        _check(remainder in REMAINDERS, f"remainder must be one of {REMAINDERS}, not {remainder!r}")
        _check(seed >= 0, f"seed must be a non-negative integer, not {seed}")
        _check(prefetch >= 1, f"prefetch must be at least 1, not {prefetch}")
        self.batch_size, self.split_name, self.shuffle, self.seed = batch_size, split, shuffle, seed
        self.remainder, self.prefetch, self.num_workers = remainder, prefetch, num_workers
        self.shards = self.manifest.split(split).shards
        self.rows = sum(shard.rows for shard in self.shards)
        available = [field["name"] for field in self.manifest.schema]
        unknown = [name for name in columns or [] if name not in available]
        _check(not unknown, f"unknown columns {unknown} (the export has: {', '.join(available)})")
        self.columns = list(columns) if columns else available
        lanes = self.world_size * max(num_workers, 1)
        block = batch_size
        window = window_rows or max(DEFAULT_WINDOW_ROWS, 4 * block)
        self.layout = Layout(
            global_batch=batch_size * self.world_size,
            lanes=lanes,
            block_rows=block,
            window_rows=-(-window // block) * block,
        )
        self.epoch, self.position = 0, 0  # position: rows of the epoch's global order consumed
        steps = self._steps()
        _check(
            steps > 0,
            f"split {split!r} has {self.rows} rows, fewer than one global batch "
            f"({self.world_size} ranks x {batch_size}); use remainder='pad' or a smaller batch",
        )

    # -- the public surface --------------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch for this rank: the same on every rank."""
        return self._steps()

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for batch in self._iterate(worker=0, workers=1, numpy=True):
            yield cast(dict[str, np.ndarray], batch)

    def iter_arrow(self) -> Iterator[pa.Table]:
        """The same batches as Arrow tables."""
        for batch in self._iterate(worker=0, workers=1, numpy=False):
            yield cast(pa.Table, batch)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` (its own order); the current epoch keeps its position (a resume)."""
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict[str, Any]:
        """Where training stands: the same on every rank; small and JSON-serialisable."""
        return {
            "format": STATE_FORMAT,
            "table_id": self.manifest.table_id,
            "table_version": self.manifest.table_version,
            "split": self.split_name,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "remainder": self.remainder,
            "epoch": self.epoch,
            "position": self.position,
            "layout": {
                "global_batch": self.layout.global_batch,
                "lanes": self.layout.lanes,
                "block_rows": self.layout.block_rows,
                "window_rows": self.layout.window_rows,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; also with another ``world_size`` for an equal global batch."""
        _check(state.get("format") == STATE_FORMAT, "not a lakeshard loader state")
        ours = (self.manifest.table_id, self.manifest.table_version, self.split_name)
        theirs = (state["table_id"], state["table_version"], state["split"])
        _check(ours == theirs, f"the state is of export {theirs}, this loader reads {ours}")
        for key in ("seed", "shuffle", "remainder"):
            _check(
                state[key] == getattr(self, key),
                f"the state was made with {key}={state[key]!r}, this loader has "
                f"{key}={getattr(self, key)!r}",
            )
        layout = Layout(**state["layout"])
        _check(
            layout.global_batch == self.layout.global_batch,
            f"the state's global batch is {layout.global_batch} rows; this loader's is "
            f"{self.layout.global_batch} ({self.world_size} ranks x {self.batch_size}): keep "
            "batch_size x world_size equal to resume",
        )
        self.layout = layout
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def torch(self) -> Any:
        """A PyTorch ``IterableDataset`` of tensor dicts, split across DataLoader workers.

        Use it with ``DataLoader(dataset, batch_size=None, num_workers=K)``; for a resumable
        position, iterate through :meth:`dataloader` instead, which counts what training took.
        """
        from pipelines.loader.torchdata import ShardDataset

        return ShardDataset(self)

    def dataloader(self, **kwargs: Any) -> Any:
        """A DataLoader over :meth:`torch` whose batches advance this loader's state."""
        from pipelines.loader.torchdata import TrackedDataLoader

        return TrackedDataLoader(self, **kwargs)

    # -- the plan --------------------------------------------------------------------------------

    def _steps(self) -> int:
        steps, extra = divmod(self.rows, self.layout.global_batch)
        return steps + (1 if extra and self.remainder == "pad" else 0)

    def _begin(self) -> int:
        """The first global step to make; a finished epoch rolls over into the next one."""
        if self.position >= self._steps() * self.layout.global_batch:
            self.epoch, self.position = self.epoch + 1, 0
        return self.position // self.layout.global_batch

    def _advance(self) -> None:
        self.position += self.layout.global_batch

    def _iterate(self, worker: int, workers: int, numpy: bool) -> Iterator[Batch]:
        first = self._begin()
        for batch in self._worker_batches(first, worker, workers, numpy):
            if workers == 1:
                self._advance()
            yield batch

    def _worker_batches(
        self, first: int, worker: int, workers: int, numpy: bool = True
    ) -> Iterator[Batch]:
        steps = range(first + worker, self._steps(), workers)
        if not steps:
            return
        epoch = _Epoch(self, numpy)
        order = _dedupe(
            (piece.lane, piece.window) for step in steps for piece in epoch.pieces(step)
        )
        with _Prefetcher(epoch, order, self.prefetch) as windows:
            for step in steps:
                parts = [
                    _cut(windows.get(piece.lane, piece.window), piece.start, piece.stop)
                    for piece in epoch.pieces(step)
                ]
                yield parts[0] if len(parts) == 1 else _join(parts)


class _Epoch:
    """One epoch's order, computed from the loader's settings alone."""

    def __init__(self, loader: ShardLoader, numpy: bool) -> None:
        self.loader, self.numpy = loader, numpy
        self.layout = layout = loader.layout
        units = [
            (shard_index, group, rows)
            for shard_index, shard in enumerate(loader.shards)
            for group, rows in enumerate(shard.row_groups)
            if rows
        ]
        if loader.shuffle:
            order = _permutation(len(units), loader.seed, loader.epoch, 0)
            units = [units[i] for i in order]
        self.units = units
        self.unit_ends = np.cumsum([rows for _, _, rows in units], dtype=np.int64)
        used = loader._steps() * layout.global_batch
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

    def pieces(self, step: int) -> list[_Piece]:
        """Which window slices make this rank's batch at global ``step``."""
        loader, layout = self.loader, self.layout
        start = step * layout.global_batch + loader.rank * loader.batch_size
        out, x, stop = [], start, start + loader.batch_size
        while x < stop:
            block, offset = divmod(x, layout.block_rows)
            lane, lane_block = block % layout.lanes, block // layout.lanes
            y = lane_block * layout.block_rows + offset
            window, s = divmod(y, layout.window_rows)
            n = min(stop - x, layout.block_rows - offset)
            out.append(_Piece(lane, window, s, s + n))
            x += n
        return out

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
        if self.loader.shuffle:
            key = (self.loader.seed, self.loader.epoch, 1, lane, window)
            order = _permutation(table.num_rows, *key)
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
            return [
                (u, file.read_row_group(self.units[u][1], columns=self.loader.columns))
                for u in units
            ]

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
            shard = self.loader.shards[shard_index]
            if self.loader.root:  # one filesystem for the export (an S3 client is not free)
                if self.fs is None:
                    self.fs, self.base = arrowfs.filesystem(self.loader.root)
                uri = f"{self.loader.root}/{shard.path}"
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


def _cut(window: Batch, start: int, stop: int) -> Batch:
    if isinstance(window, pa.Table):
        return window.slice(start, stop - start)
    return {name: values[start:stop] for name, values in window.items()}


def _join(parts: list[Batch]) -> Batch:
    """One batch from pieces of several windows."""
    if isinstance(parts[0], pa.Table):
        return pa.concat_tables(parts).combine_chunks()
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


class _Prefetcher:
    """Loads windows in the order they will be needed, at most ``depth`` ahead, on one thread."""

    def __init__(self, epoch: _Epoch, order: Iterator[tuple[int, int]], depth: int) -> None:
        self.epoch, self.order = epoch, order
        self.ready: queue.Queue[tuple[tuple[int, int], Batch | BaseException]] = queue.Queue(depth)
        self.current: tuple[int, int] | None = None
        self.table: Batch | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lakeshard-prefetch", daemon=True)

    def __enter__(self) -> _Prefetcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        while self.thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self.ready.get(timeout=0.05)
        self.table = None

    def _run(self) -> None:
        # A second thread reads (and decodes) window k + 1 while this one shapes window k.
        with ThreadPoolExecutor(1, thread_name_prefix="lakeshard-read") as reader:
            keys = iter(self.order)
            key = next(keys, None)
            reading = None if key is None else reader.submit(self.epoch.read_window, *key)
            while key is not None and reading is not None:
                following = next(keys, None)
                ahead = None
                if following is not None:
                    ahead = reader.submit(self.epoch.read_window, *following)
                try:
                    item: Batch | BaseException = self.epoch.shape_window(*key, reading.result())
                except BaseException as exc:  # handed to the consumer, which raises it
                    item = exc
                if not self._hand_over(key, item) or isinstance(item, BaseException):
                    if ahead is not None:
                        ahead.cancel()
                    return
                key, reading = following, ahead

    def _hand_over(self, key: tuple[int, int], item: Batch | BaseException) -> bool:
        """Queue a window for the consumer; False once the consumer has gone."""
        while not self.stop.is_set():
            try:
                self.ready.put((key, item), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(self, lane: int, window: int) -> Batch:
        """The window ``(lane, window)``: the current one, or the next in the order."""
        key = (lane, window)
        if key != self.current:
            got, item = self.ready.get()
            if isinstance(item, BaseException):
                raise item
            if got != key:
                raise RuntimeError(f"loader plan out of order: wanted window {key}, next is {got}")
            self.current, self.table = got, item
        return cast(Batch, self.table)


def to_numpy(table: pa.Table) -> dict[str, np.ndarray]:
    """A batch as NumPy arrays; ``_content_hash`` as a ``(rows, 16)`` uint8 array."""
    out: dict[str, np.ndarray] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        fixed = _fixed_width(column) if name == HASH_COLUMN else None
        out[name] = fixed if fixed is not None else column.to_numpy(zero_copy_only=False)
    return out


def _fixed_width(column: pa.ChunkedArray) -> np.ndarray | None:
    """Binary values of one width as a 2-D uint8 array, without a Python loop; else None."""
    array = column.combine_chunks()
    if not pa.types.is_binary(array.type) or array.null_count:
        return None
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[
        array.offset : array.offset + len(array) + 1
    ]
    widths = np.diff(offsets)
    if len(array) == 0 or not np.all(widths == widths[0]):
        return None
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(len(array), int(widths[0]))


def _permutation(n: int, *key: int) -> np.ndarray:
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


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``rank``/``world_size`` as given, else torch.distributed's when it is initialised."""
    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None) if torch is not None else None
    if dist is None or not (dist.is_available() and dist.is_initialized()):
        return (0 if rank is None else rank), (1 if world_size is None else world_size)
    if rank is None:
        rank = int(dist.get_rank())
    if world_size is None:
        world_size = int(dist.get_world_size())
    return rank, world_size


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _changed(uri: str, shard: Shard, info: pafs.FileInfo) -> str:
    if info.type == pafs.FileType.NotFound:
        return f"{uri}: shard missing (the manifest lists it with {shard.rows} rows)"
    return (
        f"{uri}: {info.size} bytes, the manifest says {shard.bytes}: the shard changed since export"
    )


__all__ = ["Layout", "ShardLoader", "to_numpy"]
