"""Dataset declarations: ``<schemas>/<dataset>/dataset.yaml`` plus versioned ``vN.yaml`` schemas.

Loading validates everything up front and names the file and key of any mistake, so a bad
declaration fails in milliseconds, before Spark starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import types as T

from pipelines.errors import ConfigError
from pipelines.schema.compat import MODES
from pipelines.schema.types import TypeParseError, parse_type

NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
FORMATS = ("csv", "json", "parquet")
# Declared text encodings (csv and json): Python codec names, also understood by Java.
ENCODINGS = ("utf-8", "utf-16", "utf-16le", "utf-16be", "latin-1", "cp1252")
ON_CHANGED_FILE = ("reject", "reingest")
# Schema registries' compatibility modes (see pipelines.compat); backward is their default too.
COMPATIBILITY = MODES
# What happens to a record whose fields do not fit the declared schema (unknown fields, values
# of another type): see README "Schema drift". quarantine loses nothing and keeps the table clean.
ON_DRIFT = ("quarantine", "rescue", "ignore", "fail")
ON_VIOLATION = ("quarantine", "drop", "warn", "fail")
DEDUP_SCOPES = ("table", "window", "keys")
_SIZE = re.compile(r"([0-9]+)\s*(|B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)")
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}
_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.ya?ml")


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
    # in one task. Turn it off only for huge single files known to have no quoted newlines.
    multiline: bool = True


@dataclass(frozen=True)
class Limits:
    """Per-file guards checked before any row is read (decompressed bytes, longest line)."""

    # A file that decompresses past this is rejected: a decompression bomb stops here.
    max_file_bytes: int = 16 * 2**30
    # A line (JSON lines) or physical CSV line longer than this is rejected: Spark holds a
    # whole line in memory, so this bounds executor memory per record.
    max_line_bytes: int = 128 * 2**20


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
    on_drift: str = "quarantine"
    rules: tuple[Rule, ...] = ()
    dedup: Dedup = field(default_factory=Dedup)

    @property
    def schema(self) -> SchemaVersion:
        """The current (highest) schema version."""
        return self.versions[-1]

    @property
    def declaration(self) -> Path:
        return self.path / "dataset.yaml"


def list_datasets(schemas_dir: Path) -> list[str]:
    if not schemas_dir.is_dir():
        return []
    return sorted(p.name for p in schemas_dir.iterdir() if (p / "dataset.yaml").is_file())


def load_dataset(schemas_dir: Path, name: str) -> Dataset:
    """Load and validate one dataset declaration; a ConfigError names the file and key."""
    if not NAME.fullmatch(name):
        raise ConfigError(
            f"invalid dataset name {name!r}: use [a-z][a-z0-9_]*, at most 64 characters"
        )
    folder = schemas_dir / name
    decl_path = folder / "dataset.yaml"
    if not decl_path.is_file():
        known = ", ".join(list_datasets(schemas_dir)) or "none"
        raise ConfigError(f"unknown dataset {name!r}: no {decl_path} (known: {known})")
    decl = _Mapping(_read_yaml(decl_path), decl_path, "")
    fmt = decl.choice("format", FORMATS)
    csv = _csv_options(decl.mapping("csv")) if decl.has("csv") else CsvOptions()
    if decl.has("csv") and fmt != "csv":
        raise ConfigError(f"{decl_path}: csv: only applies to format: csv (format is {fmt})")
    partition_by = tuple(decl.str_list("partition_by"))
    encoding = decl.choice("encoding", ENCODINGS, default="utf-8")
    if decl.has("encoding") and fmt == "parquet":
        raise ConfigError(f"{decl_path}: encoding: only applies to csv and json (format is {fmt})")
    on_changed_file = decl.choice("on_changed_file", ON_CHANGED_FILE, default="reject")
    limits = _limits(decl.mapping("limits")) if decl.has("limits") else Limits()
    compatibility = decl.choice("compatibility", COMPATIBILITY, default="backward")
    on_drift = decl.choice("on_drift", ON_DRIFT, default="quarantine")
    rules = _rules(decl)
    dedup = _dedup(decl.mapping("dedup")) if decl.has("dedup") else Dedup()
    decl.reject_unknown()

    versions = _load_versions(folder)
    current = versions[-1]
    _check_dedup(dedup, current, decl_path)
    for index, col in enumerate(partition_by):
        if col not in current.names:
            raise ConfigError(
                f"{decl_path}: partition_by[{index}]: unknown column {col!r} "
                f"(columns of {current.path.name}: {', '.join(current.names)})"
            )
        dtype = next(c.dtype for c in current.columns if c.name == col)
        if isinstance(
            dtype,
            T.ArrayType | T.MapType | T.StructType | T.BinaryType | T.FloatType | T.DoubleType,
        ):
            raise ConfigError(
                f"{decl_path}: partition_by[{index}]: column {col!r} of type "
                f"{dtype.simpleString()} cannot be a partition column"
            )
    return Dataset(
        name=name,
        format=fmt,
        versions=versions,
        path=folder,
        csv=csv,
        partition_by=partition_by,
        encoding=encoding,
        on_changed_file=on_changed_file,
        limits=limits,
        compatibility=compatibility,
        on_drift=on_drift,
        rules=rules,
        dedup=dedup,
    )


def _load_versions(folder: Path) -> tuple[SchemaVersion, ...]:
    found: dict[int, Path] = {}
    for path in folder.iterdir():
        match = _VERSION_FILE.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    if not found:
        raise ConfigError(f"{folder}: no schema version (expected v1.yaml)")
    expected = list(range(1, max(found) + 1))
    if sorted(found) != expected:
        missing = ", ".join(f"v{n}.yaml" for n in expected if n not in found)
        raise ConfigError(f"{folder}: schema versions must be contiguous; missing {missing}")
    versions = tuple(_load_version(n, found[n]) for n in expected)
    for earlier, version in pairwise(versions):
        for index, column in enumerate(version.columns):
            if column.renamed_from is None:
                continue
            if column.renamed_from not in earlier.names:
                raise ConfigError(
                    f"{version.path}: columns[{index}].renamed_from: {earlier.path.name} has no "
                    f"column {column.renamed_from!r}"
                )
            if list(version.renames.values()).count(column.renamed_from) > 1:
                raise ConfigError(
                    f"{version.path}: columns[{index}].renamed_from: two columns are renamed "
                    f"from {column.renamed_from!r}"
                )
    if versions[0].renames:
        raise ConfigError(
            f"{versions[0].path}: renamed_from: the first version has nothing to rename"
        )
    return versions


def _load_version(number: int, path: Path) -> SchemaVersion:
    doc = _Mapping(_read_yaml(path), path, "")
    raw_columns = doc.get("columns")
    if not isinstance(raw_columns, list) or not raw_columns:
        raise ConfigError(f"{path}: columns: expected a non-empty list of columns")
    doc.reject_unknown()
    columns: list[Column] = []
    for index, raw in enumerate(raw_columns):
        where = f"columns[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: {where}: expected a mapping with name and type")
        item = _Mapping(raw, path, where + ".")
        name = item.string("name")
        if not re.fullmatch(r"[^\x00-\x1f]{1,255}", name) or name.startswith("_"):
            raise ConfigError(
                f"{path}: {where}.name: {name!r} is not allowed "
                "(names starting with '_' are reserved for lakeshard's bookkeeping columns)"
            )
        type_text = item.string("type")
        try:
            dtype = parse_type(type_text)
        except TypeParseError as exc:
            raise ConfigError(f"{path}: {where}.type: {exc}") from None
        nullable = item.boolean("nullable", default=True)
        renamed_from = item.string("renamed_from") if item.has("renamed_from") else None
        item.reject_unknown()
        if any(c.name.lower() == name.lower() for c in columns):
            raise ConfigError(f"{path}: {where}.name: duplicate column {name!r}")
        columns.append(Column(name, dtype, nullable, renamed_from))
    return SchemaVersion(version=number, columns=tuple(columns), path=path)


def _rules(decl: _Mapping) -> tuple[Rule, ...]:
    """The ``rules:`` list; expressions are checked against the schema by :mod:`pipelines.rules`."""
    raw = decl.get("rules")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{decl.path}: rules: expected a list of {{name, expr, on_violation}}")
    rules: list[Rule] = []
    for index, item in enumerate(raw):
        key = f"rules[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(
                f"{decl.path}: {key}: expected a mapping with name, expr, on_violation"
            )
        entry = _Mapping(item, decl.path, key + ".")
        name = entry.string("name")
        if not NAME.fullmatch(name):
            raise ConfigError(
                f"{decl.path}: {key}.name: {name!r} is not a rule name ([a-z][a-z0-9_]*)"
            )
        if any(r.name == name for r in rules):
            raise ConfigError(f"{decl.path}: {key}.name: duplicate rule {name!r}")
        expr = entry.string("expr")
        on_violation = entry.choice("on_violation", ON_VIOLATION)
        entry.reject_unknown()
        rules.append(Rule(name, expr, on_violation, key))
    return tuple(rules)


def _dedup(entry: _Mapping) -> Dedup:
    scope = entry.choice("scope", DEDUP_SCOPES, default="table")
    if scope == "window":
        result = Dedup(scope, column=entry.string("column"), days=entry.integer("days"))
    elif scope == "keys":
        keys = tuple(entry.str_list("keys"))
        if not keys:
            raise ConfigError(f"{entry.path}: dedup.keys: expected at least one column")
        result = Dedup(
            scope,
            keys=keys,
            order_by=entry.string("order_by"),
            keep=entry.choice("keep", ("latest",), default="latest"),
        )
    else:
        result = Dedup()
    entry.reject_unknown()
    return result


def _check_dedup(dedup: Dedup, current: SchemaVersion, path: Path) -> None:
    """The columns ``dedup`` names exist, with types and nullability that make sense."""
    columns = {c.name: c for c in current.columns}
    wanted: list[tuple[str, str | None]] = [("column", dedup.column), ("order_by", dedup.order_by)]
    wanted += [(f"keys[{i}]", k) for i, k in enumerate(dedup.keys)]
    for key, name in wanted:
        if name is None:
            continue
        column = columns.get(name)
        if column is None:
            raise ConfigError(
                f"{path}: dedup.{key}: unknown column {name!r} "
                f"(columns of {current.path.name}: {', '.join(current.names)})"
            )
        complex_type = isinstance(column.dtype, T.ArrayType | T.MapType | T.StructType)
        if complex_type or isinstance(column.dtype, T.BinaryType):
            raise ConfigError(
                f"{path}: dedup.{key}: column {name!r} of type {column.dtype.simpleString()} "
                "cannot be compared"
            )
        if key == "column" and not isinstance(
            column.dtype, T.DateType | T.TimestampType | T.TimestampNTZType
        ):
            raise ConfigError(
                f"{path}: dedup.column: {name!r} must be a date or timestamp column, "
                f"not {column.dtype.simpleString()}"
            )
        if key != "order_by" and column.nullable:
            raise ConfigError(
                f"{path}: dedup.{key}: column {name!r} must be declared nullable: false"
            )


def _csv_options(csv: _Mapping) -> CsvOptions:
    defaults = CsvOptions()
    options = CsvOptions(
        header=csv.boolean("header", default=defaults.header),
        delimiter=csv.string("delimiter", default=defaults.delimiter),
        quote=csv.string("quote", default=defaults.quote),
        escape=csv.string("escape", default=defaults.escape),
        null_values=tuple(csv.str_list("null_values", default=list(defaults.null_values))),
        multiline=csv.boolean("multiline", default=defaults.multiline),
    )
    for key in ("delimiter", "quote", "escape"):
        if len(getattr(options, key)) != 1:
            raise ConfigError(f"{csv.path}: csv.{key}: must be exactly one character")
    csv.reject_unknown()
    return options


def _limits(limits: _Mapping) -> Limits:
    defaults = Limits()
    result = Limits(
        max_file_bytes=limits.size("max_file_bytes", defaults.max_file_bytes),
        max_line_bytes=limits.size("max_line_bytes", defaults.max_line_bytes),
    )
    limits.reject_unknown()
    return result


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    return doc


class _Mapping:
    """A YAML mapping read key by key, so that unknown keys and wrong types name file and key."""

    def __init__(self, data: dict[str, Any], path: Path, prefix: str) -> None:
        self.data = data
        self.path = path
        self.prefix = prefix
        self.seen: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str) -> Any:
        self.seen.add(key)
        return self.data.get(key)

    def _fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.prefix}{key}: {problem}")

    def string(self, key: str, default: str | None = None) -> str:
        value = self.get(key)
        if value is None and default is not None:
            return default
        if not isinstance(value, str) or value == "":
            raise self._fail(key, f"expected a non-empty string, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(key, f"expected true or false, got {value!r}")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: str | None = None) -> str:
        value = self.get(key)
        if value is None and default is not None:
            return default
        if isinstance(value, str) and value.lower() in options:
            return value.lower()
        if value not in options:
            raise self._fail(key, f"expected one of {', '.join(options)}, got {value!r}")
        return str(value)

    def integer(self, key: str) -> int:
        """A positive whole number."""
        value = self.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        raise self._fail(key, f"expected a positive whole number, got {value!r}")

    def size(self, key: str, default: int) -> int:
        """A byte count: an integer, or a string such as ``64MiB`` or ``10 GB``."""
        value = self.get(key)
        if value is None:
            return default
        match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        if match and int(match.group(1)) > 0:
            return int(match.group(1)) * _UNITS[match.group(2)]
        raise self._fail(key, f"expected a size such as 1048576, 64MiB or 10GB, got {value!r}")

    def str_list(self, key: str, default: list[str] | None = None) -> list[str]:
        value = self.get(key)
        if value is None:
            return list(default or [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, f"expected a list of strings, got {value!r}")
        return value

    def mapping(self, key: str) -> _Mapping:
        value = self.get(key)
        if not isinstance(value, dict):
            raise self._fail(key, f"expected a mapping, got {value!r}")
        return _Mapping(value, self.path, f"{self.prefix}{key}.")

    def reject_unknown(self) -> None:
        unknown = sorted(str(k) for k in self.data if k not in self.seen)
        if unknown:
            raise self._fail(unknown[0], "unknown key")
