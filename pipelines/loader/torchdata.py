"""PyTorch adapters for ``pipelines.loader`` (the only lakeshard module that imports torch)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

if TYPE_CHECKING:
    from pipelines.loader import ShardLoader


def to_tensors(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """NumPy columns as tensors; text and other object columns stay Python lists."""
    out: dict[str, Any] = {}
    for name, values in batch.items():
        if values.dtype == object:
            out[name] = values.tolist()
        elif np.issubdtype(values.dtype, np.datetime64):
            out[name] = torch.from_numpy(values.astype("datetime64[us]").view(np.int64))
        else:
            # Arrow hands out read-only memory; a tensor must own writable memory.
            out[name] = torch.from_numpy(np.array(values, copy=not values.flags.writeable))
    return out


class ShardDataset(IterableDataset):  # type: ignore[type-arg]
    """The loader's batches for this rank from where it stands, split across DataLoader workers.

    Worker ``w`` of ``K`` makes the batches ``w, w + K, ...``; DataLoader takes one from each
    worker in turn, so training sees the same order as with no workers.
    """

    def __init__(self, loader: ShardLoader) -> None:
        super().__init__()
        self.first = loader.begin()
        self.loader = copy.copy(loader)  # a snapshot: this pass, whatever the loader does next

    def __len__(self) -> int:
        return len(self.loader) - self.first

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for batch in self.loader.worker_batches(self.first, worker, workers, numpy=True):
            yield to_tensors(cast(dict[str, np.ndarray], batch))


class TrackedDataLoader:
    """``DataLoader(loader.torch(), batch_size=None, **kwargs)`` that advances the loader's state
    by one global step per batch handed to training, so ``loader.state_dict()`` is exact."""

    def __init__(self, loader: ShardLoader, **kwargs: Any) -> None:
        kwargs.setdefault("num_workers", loader.num_workers)
        if "batch_size" in kwargs or "shuffle" in kwargs or "sampler" in kwargs:
            raise ValueError(
                "the loader batches and shuffles itself: drop batch_size/shuffle/sampler"
            )
        workers = max(int(kwargs["num_workers"]), 1)
        if loader.layout.lanes == loader.world_size * max(loader.num_workers, 1) and (
            workers != max(loader.num_workers, 1)
        ):
            warnings.warn(
                f"ShardLoader was built for num_workers={loader.num_workers}; with {workers} "
                "DataLoader workers they share lanes and decode the same rows more than once: "
                "pass the same num_workers to ShardLoader",
                stacklevel=2,
            )
        self.loader, self.kwargs = loader, kwargs

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        dataset = ShardDataset(self.loader)
        for batch in DataLoader(dataset, batch_size=None, **self.kwargs):
            self.loader.advance()
            yield batch
