"""``lakeshard export``: a pinned table version as N balanced Parquet shards per split.

:mod:`.command` pins the version and writes the manifest (the commit point); :mod:`.ranking`
splits rows by content hash and ranks them into shards; :mod:`.shards` writes each shard with
pyarrow on the executors.
"""

from pipelines.export.command import (
    DEFAULT_SPLIT,
    MAX_SHARDS,
    ExportOptions,
    export,
    print_summary,
)

__all__ = ["DEFAULT_SPLIT", "MAX_SHARDS", "ExportOptions", "export", "print_summary"]
