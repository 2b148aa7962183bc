"""What a dataset declaration says, as frozen dataclasses; :mod:`.declarations` reads the YAML.

A declaration is ``<schemas>/<dataset>/dataset.yaml`` plus versioned ``vN.yaml`` schemas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import types as T

from pipelines.config import SEVERITIES as _SEVERITIES
from pipelines.schema.modes import MODES

NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
FORMATS = ("csv", "json", "parquet")
# Declared text encodings (csv and json): Python codec names, also understood by Java.
ENCODINGS = ("utf-8", "utf-16", "utf-16le", "utf-16be", "latin-1", "cp1252")
ON_CHANGED_FILE = ("reject", "reingest")
# How a table takes a schema change that Delta makes in place only with reader features (rename,
# drop, type widening): portable rewrites the table once so every engine still reads it;
# in_place uses column mapping and type widening (no rewrite; Spark-free readers may refuse it).
EVOLUTION = ("portable", "in_place")
# Schema registries' compatibility modes (pipelines.schema.compat); backward is their default.
COMPATIBILITY = MODES
# What happens to a record whose fields do not fit the declared schema (unknown fields, values
# of another type): see README "Schema drift". quarantine loses nothing and keeps the table clean.
ON_DRIFT = ("quarantine", "rescue", "ignore", "fail")
ON_VIOLATION = ("quarantine", "drop", "warn", "fail")
DEDUP_SCOPES = ("table", "window", "keys")


@dataclass(frozen=True)
class Column:
    name: str
    dtype: T.DataType
    nullable: bool = True
    renamed_from: str | None = None  # the column's name in the previous version, if renamed


@dataclass(frozen=True)
class SchemaVersion:
    version: int
    columns: tuple[Column, ...]
    path: Path

    def struct(self) -> T.StructType:
        """The Spark schema, nullability included."""
        return T.StructType([T.StructField(c.name, c.dtype, c.nullable) for c in self.columns])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def label(self) -> str:
        return f"v{self.version}"

    @property
    def renames(self) -> dict[str, str]:
        """New name -> old name, for the columns this version renames."""
        return {c.name: c.renamed_from for c in self.columns if c.renamed_from}


@dataclass(frozen=True)
class CsvOptions:
    header: bool = True
    delimiter: str = ","
    quote: str = '"'
    escape: str = '"'
    null_values: tuple[str, ...] = ("",)
    # Quoted newlines are legal CSV; Spark only parses them with multiLine, which reads each file
    # in one task. A file the per-file checks find without any (inspection.LineRecords) is read
    # line by line, in splits, anyway; false reads every file so.
    multiline: bool = True


@dataclass(frozen=True)
class Limits:
    """Per-file guards checked before any row is read (decompressed bytes, longest line)."""

    # A file that decompresses past this is rejected: a decompression bomb stops here.
    max_file_bytes: int = 16 * 2**30
    # A line (JSON lines) or physical CSV line longer than this is rejected: Spark holds a
    # whole line in memory, so this bounds executor memory per record.
    max_line_bytes: int = 128 * 2**20


# Delta's own safety default for VACUUM's retention (7 days): shorter must be asked for by name.
SAFE_RETAIN_HOURS = 168


@dataclass(frozen=True)
class Maintenance:
    """What ``lakeshard maintain`` aims for (README "Maintenance")."""

    # Compaction packs each partition's small files into files of about this size.
    target_file_bytes: int = 256 * 2**20
    # VACUUM keeps the files any version of the last this many hours reads, so time travel
    # within them keeps working. Delta's safety default is 7 days (168 hours).
    retain_hours: int = SAFE_RETAIN_HOURS
    # A retention below 168 hours must be asked for by name: it can break time travel and a
    # reader still scanning an older version.
    allow_short_retention: bool = False


SEVERITIES = _SEVERITIES  # a finding's severity, lowest first (defined pyspark-free in config)


@dataclass(frozen=True)
class Monitor:
    """How ``lakeshard monitor`` judges a dataset's runs (README "Monitoring and alerts")."""

    # The newest this many earlier successful runs that read rows are the baseline.
    history: int = 20
    # Below this many such runs nothing is judged on volume, rates, duration or memory.
    min_history: int = 7
    # A value is unusual when it is more than this many robust standard deviations
    # (1.4826 x the median absolute deviation) from the baseline's median ...
    threshold: float = 5.0
    # ... and also this far from it: rows and files read, either way, as a share of the median;
    min_change: float = 0.5
    # duration and driver memory, upward only, as a share of the median (1.0: twice as much);
    spike: float = 1.0
    # duplicate, quarantine and rule-violation rates, upward only, in points (0.05: 5 %).
    rate_points: float = 0.05
    # No successful run that wrote rows for longer than this: a critical finding (None: off).
    freshness_hours: float | None = None
    # Findings at or above this severity are alerts: sent, and `monitor` exits 3.
    alert_severity: str = "warning"


@dataclass(frozen=True)
class Dedup:
    """Which earlier rows a new record is compared with (see README "Deduplication").

    ``table``: every row of the table, by content hash. ``window``: rows whose ``column`` is at
    most ``days`` days before the newest value seen (batch and table); an older record is
    refused, never written unchecked. ``keys``: one row per ``keys``; a newer record by
    ``order_by`` replaces the row (an upsert; the replaced row stays reachable by time travel).
    """

    scope: str = "table"
    column: str | None = None
    days: int = 0
    keys: tuple[str, ...] = ()
    order_by: str | None = None
    keep: str = "latest"


@dataclass(frozen=True)
class Rule:
    """A named row rule: ``expr`` (Spark SQL, true for a good row) and what a violation does."""

    name: str
    expr: str
    on_violation: str
    key: str  # where it is declared, e.g. "rules[1]", for error messages

    @property
    def constraint(self) -> str:
        """The name of the Delta CHECK constraint that guards the table with this rule."""
        return f"lakeshard_rule_{self.name}"


@dataclass(frozen=True)
class Dataset:
    name: str
    format: str
    versions: tuple[SchemaVersion, ...]
    path: Path
    csv: CsvOptions = field(default_factory=CsvOptions)
    partition_by: tuple[str, ...] = ()
    encoding: str = "utf-8"
    on_changed_file: str = "reject"
    limits: Limits = field(default_factory=Limits)
    compatibility: str = "backward"
    evolution: str = "portable"
    on_drift: str = "quarantine"
    rules: tuple[Rule, ...] = ()
    dedup: Dedup = field(default_factory=Dedup)
    maintenance: Maintenance = field(default_factory=Maintenance)
    monitor: Monitor = field(default_factory=Monitor)

    @property
    def schema(self) -> SchemaVersion:
        """The current (highest) schema version."""
        return self.versions[-1]

    @property
    def declaration(self) -> Path:
        return self.path / "dataset.yaml"
