"""Storage I/O outside Delta: listing source files and checking that the lake is reachable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession

from pipelines.config import normalise_uri
from pipelines.errors import ConfigError, StorageError, first_line

# Files a writer leaves while it is still writing, or markers; never data.
_IGNORED_PREFIXES = (".", "_")


# A source (or glob match) named like a data file must be one: a folder there is rejected.
_PLAIN_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".parquet")
_FILE_SUFFIXES = _PLAIN_SUFFIXES + tuple(
    s + c for s in _PLAIN_SUFFIXES for c in (".gz", ".bz2", ".zst")
)


@dataclass(frozen=True)
class SourceFile:
    uri: str
    size: int
    modified_ms: int
    problem: str | None = None  # set when the path cannot be a source file at all


def list_sources(spark: SparkSession, sources: list[str]) -> list[SourceFile]:
    """Expand files, folders and globs (local or s3a) into files, sorted by URI, no repeats.

    Each source is matched once through Hadoop (to check it names something); the files are
    listed in bulk by Spark's own file index, so tens of thousands of files cost one small
    Spark job per source, not a round trip from Python per file. A folder where a file was
    expected (a path or glob match named like a data file, such as ``x.csv/``) is rejected.
    """
    jvm: Any = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    found: dict[str, SourceFile] = {}
    for source in sources:
        uri = normalise_uri(source)
        path = jvm.org.apache.hadoop.fs.Path(uri)
        try:
            matches = path.getFileSystem(conf).globStatus(path)
        except Exception as exc:  # py4j wraps the Java exception
            raise StorageError(
                f"storage failed listing source {source}: {first_line(exc)}"
            ) from None
        if matches is None or len(matches) == 0:
            raise ConfigError(f"source {source} matches no file")
        # The entry a listed file was matched through is its ancestor at the pattern's depth
        # (Hadoop globs match one path component per pattern component).
        depth = len(matches[0].getPath().toString().rstrip("/").split("/"))
        for listed in _bulk_list(spark, uri):
            parts = listed.uri.split("/")
            entry = "/".join(parts[:depth])
            entry_name = parts[depth - 1]
            if entry_name.startswith(_IGNORED_PREFIXES) or parts[-1].startswith(_IGNORED_PREFIXES):
                continue
            if len(parts) > depth and entry_name.lower().endswith(_FILE_SUFFIXES):
                problem = "is a directory where a file was expected"
                found[entry] = SourceFile(uri=entry, size=0, modified_ms=0, problem=problem)
                continue
            found[listed.uri] = listed
    return [found[k] for k in sorted(found)]


@contextmanager
def session_settings(spark: SparkSession, values: dict[str, str]) -> Iterator[None]:
    """Set Spark session settings for one operation, then put back what was there."""
    saved: dict[str, str | None] = {key: spark.conf.get(key, None) for key in values}
    for key, value in values.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, old)


def _bulk_list(spark: SparkSession, root: str) -> list[SourceFile]:
    """Every file under ``root`` (a path or glob) with size and modification time, by Spark.

    ``binaryFile`` without its ``content`` column reads no file; with the open cost at one
    byte the listing is packed into a task or two instead of one per few files.
    """
    # One task or two for the listing itself, and (for a glob of many files) a listing job
    # with a few tasks rather than one per matched path.
    tuned = {
        "spark.sql.files.openCostInBytes": "1",
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(
            max(2, 4 * spark.sparkContext.defaultParallelism)
        ),
    }
    try:
        with session_settings(spark, tuned):
            table = (
                spark.read.format("binaryFile")
                .option("recursiveFileLookup", "true")
                .load(root)
                .select("path", "length", "modificationTime")
                .toArrow()
            )
    except Exception as exc:
        raise StorageError(f"storage failed listing {root}: {first_line(exc)}") from None
    modified_ms = pc.divide(table["modificationTime"].cast(pa.int64()), 1000)
    return [
        SourceFile(uri=path, size=size, modified_ms=ms)
        for path, size, ms in zip(
            table["path"].to_pylist(),
            table["length"].to_pylist(),
            modified_ms.to_pylist(),
            strict=True,
        )
    ]
