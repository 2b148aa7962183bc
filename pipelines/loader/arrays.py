"""Batches as data: the ``Batch`` type (Arrow table or NumPy columns), cutting and joining
batches, and the NumPy conversion (``to_numpy``) with the content hash as a fixed-width array."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import pyarrow as pa

from pipelines.columns import CONTENT_HASH

Batch: TypeAlias = pa.Table | dict[str, np.ndarray]  # Arrow, or column name -> NumPy array


def cut(batch: Batch, start: int, stop: int) -> Batch:
    """Rows ``[start, stop)`` of ``batch``, without a copy."""
    if isinstance(batch, pa.Table):
        return batch.slice(start, stop - start)
    return {name: values[start:stop] for name, values in batch.items()}


def join(parts: list[Batch]) -> Batch:
    """One batch from pieces of several windows."""
    if isinstance(parts[0], pa.Table):
        return pa.concat_tables(parts).combine_chunks()
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def to_numpy(table: pa.Table) -> dict[str, np.ndarray]:
    """A batch as NumPy arrays; ``_content_hash`` as a ``(rows, 16)`` uint8 array."""
    out: dict[str, np.ndarray] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        fixed = _fixed_width(column) if name == CONTENT_HASH else None
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


__all__ = ["Batch", "cut", "join", "to_numpy"]
