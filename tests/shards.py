"""Hand-made exports for loader tests: shards of chosen, uneven sizes, without Spark.

Rows are numbered 0..n-1 across the shards; ``x`` is ``id / 2``; the content hash is xxh3-128 of
the id, so a test can tell every row apart by hash as the trainer would.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import xxhash

from pipelines.loader.manifest import Manifest, Shard, Split, describe_file

COLUMNS = (("id", "bigint"), ("x", "double"), ("name", "string"), ("_content_hash", "binary"))


def row_hash(row_id: int) -> bytes:
    return xxhash.xxh3_128_digest(str(row_id).encode())


def make_export(
    root: Path, sizes: list[int], row_group_rows: int = 7, split: str = "train"
) -> Manifest:
    """Shards of ``sizes`` rows (in row groups of ``row_group_rows``) and their manifest."""
    (root / split).mkdir(parents=True, exist_ok=True)
    shards: list[Shard] = []
    first = 0
    for index, size in enumerate(sizes):
        ids = list(range(first, first + size))
        first += size
        table = pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "x": pa.array([i / 2 for i in ids], pa.float64()),
                "name": pa.array([f"row {i}" for i in ids]),
                "_content_hash": pa.array([row_hash(i) for i in ids], pa.binary()),
            }
        )
        relative = f"{split}/shard-{index:05d}.parquet"
        pq.write_table(table, root / relative, row_group_size=row_group_rows, compression="zstd")
        shards.append(describe_file(pafs.LocalFileSystem(), str(root / relative), relative))
    manifest = Manifest(
        dataset="handmade",
        table=f"file://{root}/table",
        table_id="00000000-0000-0000-0000-000000000000",
        table_version=1,
        columns=tuple(name for name, _ in COLUMNS),
        where=None,
        seed=0,
        schema=tuple({"name": n, "type": t, "nullable": False} for n, t in COLUMNS),
        splits=(Split(name=split, fraction="1", rows=first, shards=tuple(shards)),),
    )
    (root / "manifest.json").write_text(manifest.to_json())
    return manifest
