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

Changes Delta cannot make in place (narrowing, changing a type, a widening Delta does not
support) are refused with what would be needed: a rewrite of the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyspark.sql import types as T

from pipelines.errors import ConfigError, PolicyError
from pipelines.schema import compat
from pipelines.schema.datasets import Dataset, SchemaVersion

_INTEGERS = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)


@dataclass(frozen=True)
class Evolution:
    table_label: str  # the declared version the table holds ("v2"), or "table" if none matches
    changes: tuple[compat.Change, ...]  # from the table to the current version
    statements: tuple[str, ...]  # metadata commits, in order, before the data commit
    try_statements: tuple[str, ...]  # attempted after those; failing ones leave a warning
    merge: bool  # the data commit adds columns or widens types

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
    return _steps(dataset, label, table, changes, properties)


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
                statements.append("SET TBLPROPERTIES ('delta.feature.timestampNtz' = 'supported')")
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
