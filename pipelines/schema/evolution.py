"""Schema evolution at ingest: bring the live table to the current schema version, or refuse.

When the current version differs from the table, the dataset's ``compatibility`` mode decides
(:mod:`pipelines.schema.compat`): every version step from the one the table holds to the current one
must pass it (``*_transitive``: against every earlier version too), else the run is refused
(exit 3) before anything is written. A compatible change is applied so:

* added columns and widened types: in the run's data commit itself (Delta schema merge; type
  widening needs the table feature ``typeWidening``, switched on once beforehand);
* renames and drops: metadata-only commits just before the data commit, with Delta column
  mapping (switched on once; the old data files stay as they are and keep reading under the
  new name; time travel still shows the old schema);
* nullability: ``DROP NOT NULL`` / ``SET NOT NULL`` (the latter only when no row breaks it;
  else lakeshard keeps refusing nulls in new rows and says so).

That is ``evolution: in_place``. Column mapping and type widening are *reader* features: Spark
reads such a table, delta-rs (and DuckDB and Polars through it) refuse it. So the default,
``evolution: portable``, makes renames, drops and widenings by rewriting the table once instead
(:class:`Rewrite`): one overwrite commit, in the run's lease just before its data commit, that
keeps every row, its content hash and bookkeeping, and the table's history; the protocol stays
what every engine reads. Added columns still come with the data commit (schema merge).

Changes Delta cannot make in place (narrowing, changing a type, a widening Delta does not
support) are refused with what would be needed: a rewrite of the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.errors import ConfigError, PolicyError
from pipelines.schema import compat
from pipelines.schema.datasets import Dataset, SchemaVersion

_INTEGERS = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
# The type timestamp_ntz is a table feature that Delta wants switched on by name.
_TIMESTAMP_NTZ = "SET TBLPROPERTIES ('delta.feature.timestampNtz' = 'supported')"


@dataclass(frozen=True)
class Rewrite:
    """The table rewritten to the current version's columns (``evolution: portable``), in its
    declared order: each as ``(its name in the table, or None where it is new; its name now;
    its type now)``. Bookkeeping columns (``_``) are kept as they are."""

    columns: tuple[tuple[str | None, str, T.DataType], ...]
    partition_by: tuple[str, ...]

    def frame(self, table: DataFrame) -> DataFrame:
        """``table``'s rows under the current names and types (new columns null)."""
        declared = [
            (
                F.lit(None).cast(dtype)
                if old is None
                else _conform(F.col(_name(old)), table.schema[old].dataType, dtype)
            ).alias(new)
            for old, new, dtype in self.columns
        ]
        kept = [F.col(_name(f.name)) for f in table.schema.fields if f.name.startswith("_")]
        return table.select(*declared, *kept)


@dataclass(frozen=True)
class Evolution:
    table_label: str  # the declared version the table holds ("v2"), or "table" if none matches
    changes: tuple[compat.Change, ...]  # from the table to the current version
    statements: tuple[str, ...]  # metadata commits, in order, before the data commit
    try_statements: tuple[str, ...]  # attempted after those; failing ones leave a warning
    merge: bool  # the data commit adds columns or widens types
    rewrite: Rewrite | None = None  # portable mode: the table is rewritten once first

    @property
    def needed(self) -> bool:
        return bool(self.changes)


def declared_part(schema: T.StructType) -> T.StructType:
    """A table's declared columns: all but lakeshard's bookkeeping (names starting with ``_``)."""
    return T.StructType([f for f in schema.fields if not f.name.startswith("_")])


def _shape(schema: T.StructType) -> dict[str, str]:
    # Column order aside (schema merge appends new columns at the end), and nullability aside:
    # a column added by evolution is nullable in the table whatever the declaration says.
    return {f.name: f.dataType.simpleString() for f in schema.fields}


def _exact(schema: T.StructType) -> dict[str, T.StructField]:
    return {f.name: f for f in schema.fields}


def held_version(versions: Sequence[SchemaVersion], table: T.StructType) -> int | None:
    """Index of the latest declared version the table holds exactly, else of the latest whose
    names and types it has (columns added by evolution are nullable there), else None."""
    for index in range(len(versions) - 1, -1, -1):
        if _exact(versions[index].struct()) == _exact(table):
            return index
    for index in range(len(versions) - 1, -1, -1):
        if _shape(versions[index].struct()) == _shape(table):
            return index
    return None


def _versions(versions: Sequence[SchemaVersion]) -> list[compat.Version]:
    return [compat.Version(v.label, v.struct(), v.renames) for v in versions]


def composed_renames(versions: Sequence[SchemaVersion], start: int) -> dict[str, str]:
    """Current name -> name at ``versions[start]``, for columns renamed since that version."""
    origin = {name: name for name in versions[start].names}
    for version in versions[start + 1 :]:
        nxt: dict[str, str] = {}
        for column in version.columns:
            before = column.renamed_from or column.name
            if before in origin:
                nxt[column.name] = origin[before]
        origin = nxt
    return {new: old for new, old in origin.items() if new != old}


def plan(dataset: Dataset, live: T.StructType, properties: Mapping[str, str]) -> Evolution:
    """What it takes to bring a table of schema ``live`` to the current version; PolicyError
    (exit 3, nothing written) when the compatibility mode or Delta refuses it."""
    versions = dataset.versions
    current = dataset.schema
    table = declared_part(live)
    held = held_version(versions, table)
    label = versions[held].label if held is not None else "table"
    if held == len(versions) - 1 and _exact(table) == _exact(current.struct()):
        return Evolution(label, (), (), (), merge=False)
    chain = _versions(versions)
    # The current version against its predecessor(s), as `schema check` judges it, and every
    # step between the version the table holds and the current one.
    findings = list(compat.check(dataset.compatibility, chain).findings)
    if held is not None:
        for end in range(held + 1, len(versions) - 1):
            findings += compat.check(dataset.compatibility, chain[: end + 1]).findings
        renames = composed_renames(versions, held)
    else:
        renames = {
            n: o for n, o in current.renames.items() if o in table.names and n not in table.names
        }
        candidate = compat.Version(current.label, current.struct(), renames)
        findings += compat.check(
            dataset.compatibility, [compat.Version("table", table), candidate]
        ).findings
    if findings:
        shown = "; ".join(f.describe() for f in findings)
        raise PolicyError(
            f"{current.path}: schema {current.label} is not {dataset.compatibility}-compatible "
            f"with the table (which holds {label}): {shown}; nothing was written"
        )
    try:
        changes = compat.diff(table, current.struct(), renames)
        declared = (
            None
            if held is None
            else compat.diff(versions[held].struct(), current.struct(), renames)
        )
    except ValueError as exc:
        raise ConfigError(f"{current.path}: {exc}") from None
    if declared is not None:
        # A column that is nullable in the table only because it was added to rows that had
        # no value (schema merge) is not made NOT NULL on every run: only when a version asks.
        asked = {c.path for c in declared if c.kind == "make_required"}
        changes = [c for c in changes if c.kind != "make_required" or c.path in asked]
    if dataset.evolution == "portable" and any(c.kind in _REWRITTEN for c in changes):
        return _portable(dataset, label, table, changes, renames)
    return _steps(dataset, label, table, changes, properties)


# The changes Delta makes in place only with reader features (column mapping, type widening).
_REWRITTEN = ("rename", "drop_nullable", "drop_required", "widen")


def _portable(
    dataset: Dataset,
    label: str,
    table: T.StructType,
    changes: list[compat.Change],
    renames: Mapping[str, str],
) -> Evolution:
    """Renames, drops, widenings and added columns by one rewrite.

    Delta keeps no NOT NULL through an overwrite that replaces the schema (and cannot set it
    again on a column that holds data), so after a rewrite the table's columns are nullable in
    Delta's schema; lakeshard keeps refusing nulls in required columns at ingest."""
    current = dataset.schema.struct()
    sources = set(renames.values())
    columns: list[tuple[str | None, str, T.DataType]] = []
    for field in current.fields:
        old = renames.get(field.name)
        if old is None and field.name in table.names and field.name not in sources:
            old = field.name  # else: new, or its name was another column's (renamed away)
        columns.append((old, field.name, field.dataType))
    statements: list[str] = []
    for change in changes:
        if change.kind == "widen" and change.new == "timestamp_ntz":
            statements.append(_TIMESTAMP_NTZ)
        elif change.kind in ("narrow", "change_type"):
            raise PolicyError(
                f"{dataset.schema.path}: {change.describe()}: lakeshard does not convert "
                "values to a narrower or other type"
            )
    rewrite = Rewrite(tuple(columns), dataset.partition_by)
    return Evolution(label, tuple(changes), tuple(statements), (), False, rewrite)


def _conform(value: Column, old: T.DataType, new: T.DataType) -> Column:
    """``value`` of type ``old`` as type ``new``: nested fields by name (dropped ones left out,
    added ones null), arrays and map values element by element, other types by a cast (a
    widening, which loses nothing)."""
    if old == new:
        return value
    if isinstance(old, T.StructType) and isinstance(new, T.StructType):
        fields = [
            (
                _conform(value.getField(f.name), old[f.name].dataType, f.dataType)
                if f.name in old.names
                else F.lit(None).cast(f.dataType)
            ).alias(f.name)
            for f in new.fields
        ]
        return F.when(value.isNull(), F.lit(None).cast(new)).otherwise(F.struct(*fields))
    if isinstance(old, T.ArrayType) and isinstance(new, T.ArrayType):
        return F.transform(value, lambda item: _conform(item, old.elementType, new.elementType))
    if isinstance(old, T.MapType) and isinstance(new, T.MapType):
        return F.transform_values(
            value, lambda _, item: _conform(item, old.valueType, new.valueType)
        )
    return value.cast(new)


def _steps(
    dataset: Dataset,
    label: str,
    table: T.StructType,
    changes: list[compat.Change],
    properties: Mapping[str, str],
) -> Evolution:
    statements: list[str] = []
    attempts: list[str] = []
    merge = False
    mapping = properties.get("delta.columnMapping.mode", "none") != "none"
    widening = properties.get("delta.enableTypeWidening") == "true"
    for change in changes:
        where = _quoted(change.path)
        if change.kind in ("add_nullable", "add_required"):
            merge = True
        elif change.kind == "widen":
            _check_widening(dataset, table, change)
            if not widening:
                statements.append("SET TBLPROPERTIES ('delta.enableTypeWidening' = 'true')")
                widening = True
            if change.new == "timestamp_ntz":
                statements.append(_TIMESTAMP_NTZ)
            merge = True
        elif change.kind in ("rename", "drop_nullable", "drop_required"):
            top = change.path.split(".")[0]
            if change.old in dataset.partition_by or top in dataset.partition_by:
                raise PolicyError(
                    f"{dataset.schema.path}: {change.describe()}: a partition column cannot be "
                    "renamed or dropped in place (it needs a rewrite of the table)"
                )
            if not mapping:
                # Delta raises the table's protocol as the feature needs (never lowers it).
                statements.append("SET TBLPROPERTIES ('delta.columnMapping.mode' = 'name')")
                mapping = True
            if change.kind == "rename":
                old = "`" + (change.old or "").replace("`", "``") + "`"
                statements.append(f"RENAME COLUMN {old} TO {where}")
            else:
                statements.append(f"DROP COLUMN {where}")
        elif change.kind == "make_nullable":
            statements.append(f"ALTER COLUMN {where} DROP NOT NULL")
        elif change.kind == "make_required":
            attempts.append(f"ALTER COLUMN {where} SET NOT NULL")
        else:  # narrow, change_type
            raise PolicyError(
                f"{dataset.schema.path}: {change.describe()}: Delta cannot make this change in "
                "place (it needs a rewrite of the table)"
            )
    return Evolution(label, tuple(changes), tuple(statements), tuple(attempts), merge)


def _check_widening(dataset: Dataset, table: T.StructType, change: compat.Change) -> None:
    """Delta widens integers, float to double, decimals, integers to decimal, and date to
    timestamp_ntz; other widenings the checker accepts need a rewrite."""
    old, new = change.old or "", change.new or ""
    ints = ("tinyint", "smallint", "int", "bigint")
    supported = (
        (old in ints and new in ints)
        or (old == "float" and new == "double")
        or (old.startswith("decimal") and new.startswith("decimal"))
        or (old in ints and new.startswith("decimal"))
        or (old == "date" and new == "timestamp_ntz")
    )
    if not supported:
        raise PolicyError(
            f"{dataset.schema.path}: {change.describe()}: Delta type widening cannot change "
            f"{old} to {new} in place (it needs a rewrite of the table)"
        )


def _name(name: str) -> str:
    """A top-level column name in backticks (it may hold dots)."""
    return "`" + name.replace("`", "``") + "`"


def _quoted(path: str) -> str:
    """A column path for ALTER TABLE: each part in backticks."""
    parts = compat_path_parts(path)
    return ".".join("`" + part.replace("`", "``") + "`" for part in parts)


def compat_path_parts(path: str) -> list[str]:
    """Split a :class:`compat.Change` path into names (a part in backticks may hold dots)."""
    parts: list[str] = []
    current = ""
    quoted = False
    index = 0
    while index < len(path):
        char = path[index]
        if char == "`":
            if quoted and path[index + 1 : index + 2] == "`":
                current += "`"
                index += 1
            else:
                quoted = not quoted
        elif char == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
        index += 1
    parts.append(current)
    return parts
