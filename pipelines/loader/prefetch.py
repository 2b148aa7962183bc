"""Reading ahead: ``Prefetcher`` loads and shapes an epoch's windows on background threads, in
the order the batches will need them, so decoding overlaps training."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from pipelines.loader.arrays import Batch
from pipelines.loader.epoch import Epoch


class Prefetcher:
    """Loads windows in the order they will be needed, at most ``depth`` ahead, on one thread."""

    def __init__(self, epoch: Epoch, order: Iterator[tuple[int, int]], depth: int) -> None:
        self.epoch, self.order = epoch, order
        self.ready: queue.Queue[tuple[tuple[int, int], Batch | BaseException]] = queue.Queue(depth)
        self.current: tuple[int, int] | None = None
        self.table: Batch | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lakeshard-prefetch", daemon=True)

    def __enter__(self) -> Prefetcher:
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


__all__ = ["Prefetcher"]
