"""``ShardLoader``: a lakeshard export streamed into training, equal batches on every rank,
exactly once per epoch, resumable. It owns the public API (iteration, ``state_dict``, the hooks
the PyTorch adapters use); the plan is :mod:`.epoch`, reading ahead :mod:`.prefetch`, the NumPy
conversion :mod:`.arrays`.

Needs pyarrow and numpy only; PyTorch is optional (``ShardLoader.torch`` / ``.dataloader``).

Remainder policy: ``drop`` (default) ends the epoch after ``rows // global_batch`` steps, leaving
out fewer than one global batch of rows, a different few each epoch; ``pad`` adds a last step
filled up with rows from the start of the epoch's order, so every row is seen and a few twice.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import pyarrow as pa

from pipelines.loader.arrays import Batch, cut, join
from pipelines.loader.epoch import Epoch, EpochLayout
from pipelines.loader.manifest import MANIFEST, Manifest
from pipelines.loader.prefetch import Prefetcher
from pipelines.storage import arrowfs

STATE_FORMAT = "lakeshard-loader/1"
REMAINDERS = ("drop", "pad")
DEFAULT_WINDOW_ROWS = 65536


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
        self.layout = EpochLayout(
            global_batch=batch_size * self.world_size,
            lanes=lanes,
            block_rows=block,
            window_rows=-(-window // block) * block,
        )
        self.epoch, self.position = 0, 0  # position: rows of the epoch's global order consumed
        steps = self._steps()
        _check(  # an empty split is an ordinary, empty epoch; a few rows would be all dropped
            steps > 0 or self.rows == 0,
            f"split {split!r} has {self.rows} rows, fewer than one global batch "
            f"({self.world_size} ranks x {batch_size}); use remainder='pad' or a smaller batch",
        )

    # -- the public surface --------------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch for this rank: the same on every rank."""
        return self._steps()

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for batch in self._iterate(numpy=True):
            yield cast(dict[str, np.ndarray], batch)

    def iter_arrow(self) -> Iterator[pa.Table]:
        """The same batches as Arrow tables."""
        for batch in self._iterate(numpy=False):
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
        layout = EpochLayout(**state["layout"])
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

    # -- for the PyTorch adapters (pipelines.loader.torchdata) ---------------------------------

    def begin(self) -> int:
        """The first global step of the next pass; a finished epoch rolls over into the next
        one here (the state moves to its start)."""
        if self.position >= self._steps() * self.layout.global_batch:
            self.epoch, self.position = self.epoch + 1, 0
        return self.position // self.layout.global_batch

    def worker_batches(
        self, first: int, worker: int, workers: int, numpy: bool = True
    ) -> Iterator[Batch]:
        """This rank's batches at global steps ``first + worker``, ``first + worker + workers``,
        ... to the epoch's end: DataLoader worker ``worker`` of ``workers``'s share, as NumPy
        (else Arrow). The state does not move; :meth:`advance` counts what training took."""
        steps = range(first + worker, self._steps(), workers)
        if not steps:
            return
        epoch = self._epoch(numpy)
        with Prefetcher(epoch, epoch.window_order(steps), self.prefetch) as windows:
            for step in steps:
                parts = [
                    cut(windows.get(piece.lane, piece.window), piece.start, piece.stop)
                    for piece in epoch.pieces(step)
                ]
                yield parts[0] if len(parts) == 1 else join(parts)

    def advance(self) -> None:
        """Count one global step as taken by training (moves :meth:`state_dict`'s position)."""
        self.position += self.layout.global_batch

    # -- the plan --------------------------------------------------------------------------------

    def _steps(self) -> int:
        steps, extra = divmod(self.rows, self.layout.global_batch)
        return steps + (1 if extra and self.remainder == "pad" else 0)

    def _iterate(self, numpy: bool) -> Iterator[Batch]:
        for batch in self.worker_batches(self.begin(), 0, 1, numpy):
            self.advance()
            yield batch

    def _epoch(self, numpy: bool) -> Epoch:
        return Epoch(
            shards=self.shards,
            root=self.root,
            columns=self.columns,
            layout=self.layout,
            steps=self._steps(),
            rank=self.rank,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self.epoch,
            numpy=numpy,
        )


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


__all__ = ["ShardLoader"]
