"""Where things are: lake root, dataset declarations, Spark master (flag > environment > default).

Resolved once per command into a frozen dataclass; nothing else reads these variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pipelines.errors import ConfigError

DEFAULT_LAKE = "./lake"
DEFAULT_SCHEMAS = "./schemas"
DEFAULT_MASTER = "local[*]"


@dataclass(frozen=True)
class Config:
    lake: str  # normalised URI: file:///abs/path or s3a://bucket/prefix
    schemas: Path
    master: str | None  # None: leave it to spark-submit / an active session

    @property
    def on_s3(self) -> bool:
        return self.lake.startswith("s3a://")

    def table_uri(self, dataset: str) -> str:
        return join_uri(self.lake, "tables", dataset)

    def quarantine_uri(self, dataset: str) -> str:
        return join_uri(self.lake, "quarantine", dataset)

    def runs_uri(self, dataset: str) -> str:
        """The dataset's run log. One per dataset: each of a dataset's tables has one writer,
        the run holding the dataset's lease."""
        return join_uri(self.lake, "_lakeshard", "runs", dataset)

    def ledger_uri(self, dataset: str) -> str:
        return join_uri(self.lake, "_lakeshard", "ledger", dataset)

    def lease_uri(self, dataset: str) -> str:
        return join_uri(self.lake, "_lakeshard", "leases", dataset)


def resolve_config(
    lake: str | None = None, schemas: str | None = None, master: str | None = None
) -> Config:
    env = os.environ
    lake_uri = normalise_uri(lake or env.get("LAKESHARD_LAKE") or DEFAULT_LAKE)
    schemas_dir = Path(schemas or env.get("LAKESHARD_SCHEMAS") or DEFAULT_SCHEMAS)
    return Config(
        lake=lake_uri, schemas=schemas_dir, master=master or env.get("LAKESHARD_SPARK_MASTER")
    )


def normalise_uri(uri: str) -> str:
    """A local path, ``file://``, ``s3://`` or ``s3a://`` URI as ``file:///abs`` or ``s3a://``."""
    if uri.startswith("s3://"):
        uri = "s3a://" + uri[len("s3://") :]
    parsed = urlparse(uri)
    if parsed.scheme == "s3a":
        if not parsed.netloc:
            raise ConfigError(f"lake URI {uri!r} names no bucket (expected s3a://bucket/prefix)")
        return uri.rstrip("/")
    if parsed.scheme == "file":
        return "file://" + str(Path(parsed.path).resolve())
    if parsed.scheme in ("",) or len(parsed.scheme) == 1:  # a path (or a Windows drive letter)
        return "file://" + str(Path(uri).expanduser().resolve())
    raise ConfigError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r} (use a path or s3a://)")


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def local_path(uri: str) -> Path | None:
    """The filesystem path of a ``file://`` URI, else None."""
    return Path(urlparse(uri).path) if uri.startswith("file://") else None
