"""The export manifest: what ``lakeshard export`` wrote and what ``pipelines.loader`` reads.

One JSON file beside the shards. Shard paths are relative to the manifest's folder, and nothing in
it depends on when or where the export ran, so the same export gives the same bytes. Needs only the
standard library and pyarrow (no Spark).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.errors import ConfigError

FORMAT = "lakeshard-export/1"
MANIFEST = "manifest.json"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Shard:
    path: str  # relative to the manifest's folder
    rows: int
    bytes: int
    sha256: str
    row_groups: tuple[int, ...]  # rows in each row group, in file order

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "row_groups": list(self.row_groups),
        }


@dataclass(frozen=True)
class Split:
    name: str
    fraction: str  # as given, e.g. "0.98": exact, and printed back unchanged
    rows: int
    shards: tuple[Shard, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fraction": self.fraction,
            "rows": self.rows,
            "shards": [shard.as_json() for shard in self.shards],
        }


@dataclass(frozen=True)
class Manifest:
    dataset: str
    table: str
    table_id: str
    table_version: int
    columns: tuple[str, ...]
    where: str | None
    seed: int
    schema: tuple[dict[str, Any], ...]  # {"name", "type" (Spark SQL), "nullable"} per column
    splits: tuple[Split, ...]

    @property
    def rows(self) -> int:
        return sum(split.rows for split in self.splits)

    def split(self, name: str) -> Split:
        for split in self.splits:
            if split.name == name:
                return split
        names = ", ".join(split.name for split in self.splits)
        raise ConfigError(f"the export has no split {name!r} (it has: {names})")

    def arguments(self) -> dict[str, Any]:
        """What decides the export's contents: equal arguments give equal bytes."""
        return {
            "table": self.table,
            "table_id": self.table_id,
            "table_version": self.table_version,
            "columns": list(self.columns),
            "where": self.where,
            "seed": self.seed,
            "split": {split.name: split.fraction for split in self.splits},
            "shards": len(self.splits[0].shards) if self.splits else 0,
        }

    def to_json(self) -> str:
        body = {
            "format": FORMAT,
            "dataset": self.dataset,
            "table": self.table,
            "table_id": self.table_id,
            "table_version": self.table_version,
            "columns": list(self.columns),
            "where": self.where,
            "seed": self.seed,
            "rows": self.rows,
            "schema": list(self.schema),
            "splits": [split.as_json() for split in self.splits],
        }
        return json.dumps(body, indent=1, ensure_ascii=False) + "\n"

    @staticmethod
    def from_json(text: str | bytes, where: str = "manifest") -> Manifest:
        try:
            body = json.loads(text)
            if body.get("format") != FORMAT:
                raise ConfigError(
                    f"{where}: not a lakeshard export manifest "
                    f"(format {body.get('format')!r}, expected {FORMAT!r})"
                )
            return Manifest(
                dataset=body["dataset"],
                table=body["table"],
                table_id=body["table_id"],
                table_version=int(body["table_version"]),
                columns=tuple(body["columns"]),
                where=body["where"],
                seed=int(body["seed"]),
                schema=tuple(body["schema"]),
                splits=tuple(
                    Split(
                        name=split["name"],
                        fraction=split["fraction"],
                        rows=int(split["rows"]),
                        shards=tuple(
                            Shard(
                                path=shard["path"],
                                rows=int(shard["rows"]),
                                bytes=int(shard["bytes"]),
                                sha256=shard["sha256"],
                                row_groups=tuple(int(n) for n in shard["row_groups"]),
                            )
                            for shard in split["shards"]
                        ),
                    )
                    for split in body["splits"]
                ),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{where}: malformed manifest ({type(exc).__name__}: {exc})"
            ) from None


def parse_split(text: str) -> tuple[tuple[str, str], ...]:
    """``train=0.98,val=0.02`` as ((name, fraction), ...); fractions are positive and sum to 1."""
    parts: list[tuple[str, str]] = []
    for item in text.split(","):
        name, sep, fraction = item.strip().partition("=")
        name, fraction = name.strip(), fraction.strip()
        if not sep or not _NAME.match(name):
            raise ConfigError(f"--split: {item.strip()!r} is not NAME=FRACTION (e.g. train=0.98)")
        try:
            value = Fraction(fraction)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(
                f"--split: {fraction!r} is not a number (in {item.strip()!r})"
            ) from None
        if value <= 0:
            raise ConfigError(f"--split: the fraction of {name!r} must be above 0")
        if name in (seen for seen, _ in parts):
            raise ConfigError(f"--split: {name!r} is named twice")
        parts.append((name, fraction))
    total = sum(Fraction(fraction) for _, fraction in parts)
    if total != 1:
        raise ConfigError(f"--split: the fractions sum to {float(total):g}, not 1")
    return tuple(parts)


def split_bounds(split: tuple[tuple[str, str], ...]) -> tuple[int, ...]:
    """Exclusive upper bounds on a record's split key, one per split (the last is 2**64).

    A record's split key is the first 8 bytes of its content hash as an unsigned big-endian
    integer, so a record's split depends on nothing but its content and the fractions.
    """
    bounds, cumulative = [], Fraction(0)
    for _, fraction in split:
        cumulative += Fraction(fraction)
        bounds.append(int(cumulative * 2**64))
    bounds[-1] = 2**64
    return tuple(bounds)


def split_of(content_hash: bytes, bounds: tuple[int, ...]) -> int:
    """The index of the split a record with this content hash belongs to."""
    key = int.from_bytes(content_hash[:8], "big")
    return next(i for i, bound in enumerate(bounds) if key < bound)


def file_digest(stream: Any) -> tuple[str, int]:
    """SHA-256 (hex) and size of what ``stream`` holds, read in 4 MiB chunks."""
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(1 << 22):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def describe_file(fs: pafs.FileSystem, path: str, relative: str) -> Shard:
    """A shard entry for an existing Parquet file: rows, bytes, SHA-256 and row-group sizes."""
    with fs.open_input_stream(path) as stream:
        sha256, size = file_digest(stream)
    with fs.open_input_file(path) as handle:
        meta = pq.ParquetFile(handle).metadata
        groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    return Shard(path=relative, rows=sum(groups), bytes=size, sha256=sha256, row_groups=groups)
