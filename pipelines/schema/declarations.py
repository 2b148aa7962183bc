"""Reading a dataset's declaration: dataset.yaml and its versioned schemas, checked key by key.

Every mistake is a ConfigError (exit 2) naming the file, the key and what was expected.
"""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import types as T

from pipelines.errors import ConfigError
from pipelines.schema.datasets import (
    COMPATIBILITY,
    DEDUP_SCOPES,
    ENCODINGS,
    EVOLUTION,
    FORMATS,
    NAME,
    ON_CHANGED_FILE,
    ON_DRIFT,
    ON_VIOLATION,
    SAFE_RETAIN_HOURS,
    SEVERITIES,
    Column,
    CsvOptions,
    Dataset,
    Dedup,
    Limits,
    Maintenance,
    Monitor,
    Rule,
    SchemaVersion,
)
from pipelines.schema.types import TypeParseError, parse_type

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
    evolution_mode = decl.choice("evolution", EVOLUTION, default="portable")
    on_drift = decl.choice("on_drift", ON_DRIFT, default="quarantine")
    rules = _rules(decl)
    dedup = _dedup(decl.mapping("dedup")) if decl.has("dedup") else Dedup()
    upkeep = _maintenance(decl.mapping("maintenance")) if decl.has("maintenance") else Maintenance()
    watch = _monitor(decl.mapping("monitor")) if decl.has("monitor") else Monitor()
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
        evolution=evolution_mode,
        on_drift=on_drift,
        rules=rules,
        dedup=dedup,
        maintenance=upkeep,
        monitor=watch,
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
    """The ``rules:`` list (expressions are checked against the schema by :mod:`.rules`)."""
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


def _maintenance(section: _Mapping) -> Maintenance:
    defaults = Maintenance()
    retain = section.get("retain_hours")
    if retain is None:
        retain = defaults.retain_hours
    elif isinstance(retain, bool) or not isinstance(retain, int) or retain < 0:
        raise ConfigError(
            f"{section.path}: maintenance.retain_hours: expected a whole number of hours "
            f"(0 or more), got {retain!r}"
        )
    result = Maintenance(
        target_file_bytes=section.size("target_file_size", defaults.target_file_bytes),
        retain_hours=retain,
        allow_short_retention=section.boolean(
            "allow_short_retention", defaults.allow_short_retention
        ),
    )
    section.reject_unknown()
    if result.retain_hours < SAFE_RETAIN_HOURS and not result.allow_short_retention:
        raise ConfigError(
            f"{section.path}: maintenance.retain_hours: {result.retain_hours} is below Delta's "
            f"safety default of {SAFE_RETAIN_HOURS} hours: VACUUM would delete files that "
            "time travel and running readers may still need; set "
            "maintenance.allow_short_retention: true to accept that"
        )
    return result


def _monitor(section: _Mapping) -> Monitor:
    defaults = Monitor()

    def number(key: str, default: float, low: float, whole: bool = False) -> float:
        value = section.get(key)
        if value is None:
            return default
        wrong = isinstance(value, bool) or not isinstance(value, (int, float))
        if wrong or value < low or (whole and value != int(value)):
            kind = "a whole number" if whole else "a number"
            raise ConfigError(
                f"{section.path}: monitor.{key}: expected {kind} of at least {low}, got {value!r}"
            )
        return float(value)

    freshness = section.get("freshness_hours")
    result = Monitor(
        history=int(number("history", defaults.history, 1, whole=True)),
        min_history=int(number("min_history", defaults.min_history, 1, whole=True)),
        threshold=float(number("threshold", defaults.threshold, 0)),
        min_change=float(number("min_change", defaults.min_change, 0)),
        spike=float(number("spike", defaults.spike, 0)),
        rate_points=float(number("rate_points", defaults.rate_points, 0)),
        freshness_hours=(None if freshness is None else float(number("freshness_hours", 0, 0.001))),
        alert_severity=section.choice("alert_severity", SEVERITIES, defaults.alert_severity),
    )
    section.reject_unknown()
    if result.min_history > result.history:
        raise ConfigError(
            f"{section.path}: monitor.min_history ({result.min_history}) is more than "
            f"monitor.history ({result.history}): nothing would ever be judged"
        )
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
