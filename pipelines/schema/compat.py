"""Schema compatibility between versions of a table, as schema registries define it.

Each change from one schema to the next has a kind (:data:`KINDS`); a mode (:data:`MODES`)
says which kinds are allowed, Confluent-style:

* backward: readers with the new schema can read data written with the old one (fields may
  be dropped, nullable fields added, types widened);
* forward: readers with the old schema can read data written with the new one (fields may be
  added, nullable fields dropped, types narrowed);
* full: both; ``*_transitive`` checks the candidate against every earlier version, the others
  only against the version just before it; ``none`` accepts everything.

Renames are top-level and declared (``renamed_from``): the table keeps old data under the new
name through Delta column mapping. Renames compose along the chain of versions; every other
field pairs with the field of the same name, as in a schema registry, so a column dropped and
later added back with another type is a type change to a transitive check. A column added
under a name that was renamed away in the same version is a new column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import types as T

from pipelines.schema.modes import MODES

KINDS = (
    "add_nullable",
    "add_required",
    "drop_nullable",
    "drop_required",
    "rename",
    "widen",
    "narrow",
    "change_type",
    "make_required",
    "make_nullable",
)

_BACKWARD_OK = frozenset(
    {"add_nullable", "drop_nullable", "drop_required", "rename", "widen", "make_nullable"}
)
_FORWARD_OK = frozenset(
    {"add_nullable", "add_required", "drop_nullable", "narrow", "make_required"}
)
_DIRECTIONS: dict[str, tuple[str, ...]] = {
    "backward": ("backward",),
    "forward": ("forward",),
    "full": ("backward", "forward"),
    "none": (),
}
_INT_RANK = {"tinyint": 1, "smallint": 2, "int": 3, "bigint": 4}
_INT_DIGITS = {"tinyint": 3, "smallint": 5, "int": 10, "bigint": 20}  # decimal digits to hold any


@dataclass(frozen=True)
class Change:
    """One difference between two schemas, at a field path (``address.zip``, ``tags.element``)."""

    kind: str
    path: str
    old: str | None  # old type for type changes and drops, old name for a rename
    new: str | None  # new type for type changes and adds, new name for a rename

    def describe(self) -> str:
        what = {
            "add_nullable": "added (nullable)",
            "add_required": "added (required)",
            "drop_nullable": "dropped (was nullable)",
            "drop_required": "dropped (was required)",
            "rename": f"renamed from {self.old}",
            "widen": f"widened {self.old} -> {self.new}",
            "narrow": f"narrowed {self.old} -> {self.new}",
            "change_type": f"type changed {self.old} -> {self.new}",
            "make_required": "made required (was nullable)",
            "make_nullable": "made nullable (was required)",
        }[self.kind]
        return f"{self.path}: {what}"

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "old": self.old,
            "new": self.new,
            "description": self.describe(),
        }


@dataclass(frozen=True)
class Version:
    """One version of a table's schema; ``renamed_from`` maps new names declared here to old."""

    label: str
    schema: T.StructType
    renamed_from: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """A change that breaks the mode's requirement in one direction."""

    against: str
    change: Change
    direction: str  # "backward" or "forward"

    def describe(self) -> str:
        return f"against {self.against}: {self.change.describe()} (breaks {self.direction})"

    def as_json(self) -> dict[str, Any]:
        return {
            "against": self.against,
            "direction": self.direction,
            "change": self.change.as_json(),
            "description": self.describe(),
        }


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`check` for one candidate version."""

    mode: str
    candidate: str
    compared_with: tuple[str, ...]
    changes: tuple[Change, ...]  # against the version just before the candidate
    findings: tuple[Finding, ...]

    @property
    def compatible(self) -> bool:
        return not self.findings

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "candidate": self.candidate,
            "compared_with": list(self.compared_with),
            "compatible": self.compatible,
            "changes": [change.as_json() for change in self.changes],
            "findings": [finding.as_json() for finding in self.findings],
        }


def backward_ok(change: Change) -> bool:
    """Readers with the new schema can read data written with the old one."""
    return change.kind in _BACKWARD_OK


def forward_ok(change: Change) -> bool:
    """Readers with the old schema can read data written with the new one."""
    return change.kind in _FORWARD_OK


def diff(
    old: T.StructType, new: T.StructType, renamed_from: Mapping[str, str] | None = None
) -> list[Change]:
    """Every change from ``old`` to ``new``: in the new schema's field order, then drops."""
    renaming = _renaming(old, new, renamed_from or {}, "the old schema", "the new schema")
    return _diff(old, new, _present(renaming, old))


def check(mode: str, versions: Sequence[Version]) -> Verdict:
    """Check the last of ``versions`` (oldest first) against the earlier ones under ``mode``."""
    if mode not in MODES:
        raise ValueError(f"unknown compatibility mode {mode!r} (one of {', '.join(MODES)})")
    if not versions:
        raise ValueError("no schema versions to check")
    candidate = versions[-1]
    if len(versions) == 1:
        return Verdict(mode, candidate.label, (), (), ())
    earlier = range(len(versions) - 1) if mode.endswith("_transitive") else [len(versions) - 2]
    wanted = _DIRECTIONS[mode.removesuffix("_transitive")]
    changes: list[Change] = []
    findings: list[Finding] = []
    for index in earlier:
        against = versions[index]
        found = _diff(against.schema, candidate.schema, _lineage(versions, index))
        if index == len(versions) - 2:
            changes = found
        findings.extend(
            Finding(against.label, change, direction)
            for change in found
            for direction in wanted
            if not (backward_ok(change) if direction == "backward" else forward_ok(change))
        )
    return Verdict(
        mode,
        candidate.label,
        tuple(versions[index].label for index in earlier),
        tuple(changes),
        tuple(findings),
    )


# --- pairing top-level columns ------------------------------------------------------------------


def _renaming(
    old: T.StructType,
    new: T.StructType,
    renamed_from: Mapping[str, str],
    old_label: str,
    new_label: str,
) -> dict[str, str | None]:
    """Each new top-level column's name one version earlier: the declared old name, its own
    name, or None for a column that takes the name of one renamed away (a new column)."""
    old_names, new_names = _names(old), _names(new)
    for new_name, old_name in renamed_from.items():
        if new_name not in new_names:
            raise ValueError(
                f"{new_label} declares {new_name!r} renamed_from {old_name!r}, "
                f"but has no column {new_name!r}"
            )
        if old_name not in old_names:
            raise ValueError(
                f"{new_label} declares {new_name!r} renamed_from {old_name!r}, "
                f"but {old_label} has no column {old_name!r}: not a rename"
            )
    claimed = list(renamed_from.values())
    for old_name in set(claimed):
        if claimed.count(old_name) > 1:
            raise ValueError(f"{new_label} declares more than one column renamed_from {old_name!r}")
    return {name: renamed_from.get(name, None if name in claimed else name) for name in new_names}


def _lineage(versions: Sequence[Version], index: int) -> dict[str, str | None]:
    """The candidate's top-level columns paired with ``versions[index]``'s: renames compose
    along the chain; other columns pair by name, as in a schema registry."""
    candidate = versions[-1]
    lineage: dict[str, str | None] = {name: name for name in _names(candidate.schema)}
    for later in range(len(versions) - 1, index, -1):
        before, after = versions[later - 1], versions[later]
        step = _renaming(before.schema, after.schema, after.renamed_from, before.label, after.label)
        lineage = {
            name: step.get(current, current) if current is not None else None
            for name, current in lineage.items()
        }
    return _present(lineage, versions[index].schema)


def _present(pairing: Mapping[str, str | None], old: T.StructType) -> dict[str, str | None]:
    names = set(_names(old))
    return {new: old_name if old_name in names else None for new, old_name in pairing.items()}


def _names(schema: T.StructType) -> list[str]:
    names = [f.name for f in schema.fields]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate field names in {schema.simpleString()}")
    return names


# --- comparing ---------------------------------------------------------------------------------


def _diff(
    old: T.StructType, new: T.StructType, pairing: Mapping[str, str | None], prefix: str = ""
) -> list[Change]:
    """Changes between two structs whose fields are paired by ``pairing`` (new -> old name)."""
    old_fields = {f.name: f for f in old.fields}
    changes: list[Change] = []
    for new_field in new.fields:
        path = prefix + _part(new_field.name)
        old_name = pairing.get(new_field.name)
        if old_name is None:
            kind = "add_nullable" if new_field.nullable else "add_required"
            changes.append(Change(kind, path, None, new_field.dataType.simpleString()))
            continue
        if old_name != new_field.name:
            changes.append(Change("rename", path, old_name, new_field.name))
        old_field = old_fields[old_name]
        changes.extend(
            _compare(
                path, old_field.dataType, new_field.dataType, old_field.nullable, new_field.nullable
            )
        )
    kept = {name for name in pairing.values() if name is not None}
    for old_field in old.fields:
        if old_field.name not in kept:
            kind = "drop_nullable" if old_field.nullable else "drop_required"
            path = prefix + _part(old_field.name)
            changes.append(Change(kind, path, old_field.dataType.simpleString(), None))
    return changes


def _compare(
    path: str, old: T.DataType, new: T.DataType, old_nullable: bool, new_nullable: bool
) -> list[Change]:
    changes: list[Change] = []
    if old_nullable and not new_nullable:
        changes.append(Change("make_required", path, None, None))
    elif new_nullable and not old_nullable:
        changes.append(Change("make_nullable", path, None, None))
    if isinstance(old, T.StructType) and isinstance(new, T.StructType):
        # Nested fields pair by name: renames are declared for top-level columns only.
        old_names = set(_names(old))
        pairing = {name: (name if name in old_names else None) for name in _names(new)}
        changes.extend(_diff(old, new, pairing, prefix=f"{path}."))
    elif isinstance(old, T.ArrayType) and isinstance(new, T.ArrayType):
        changes.extend(
            _compare(
                f"{path}.element",
                old.elementType,
                new.elementType,
                old.containsNull,
                new.containsNull,
            )
        )
    elif isinstance(old, T.MapType) and isinstance(new, T.MapType):
        changes.extend(_compare(f"{path}.key", old.keyType, new.keyType, False, False))
        changes.extend(
            _compare(
                f"{path}.value",
                old.valueType,
                new.valueType,
                old.valueContainsNull,
                new.valueContainsNull,
            )
        )
    elif old.simpleString() != new.simpleString():
        kind = "widen" if _widens(old, new) else "narrow" if _widens(new, old) else "change_type"
        changes.append(Change(kind, path, old.simpleString(), new.simpleString()))
    return changes


def _widens(old: T.DataType, new: T.DataType) -> bool:
    """Every value of ``old`` is a value of ``new`` (a lossless, standard widening)."""
    before, after = old.simpleString(), new.simpleString()
    if before in _INT_RANK and after in _INT_RANK:
        return _INT_RANK[after] > _INT_RANK[before]
    if before in ("tinyint", "smallint", "int", "float") and after == "double":
        return True
    if before == "date" and after in ("timestamp", "timestamp_ntz"):
        return True
    if isinstance(new, T.DecimalType):
        integer_digits = new.precision - new.scale
        if isinstance(old, T.DecimalType):
            return (
                new.scale >= old.scale
                and integer_digits >= old.precision - old.scale
                and (new.precision, new.scale) != (old.precision, old.scale)
            )
        return before in _INT_DIGITS and integer_digits >= _INT_DIGITS[before]
    return False


def _part(name: str) -> str:
    """A field name as one part of a path, quoted only where a dot or backtick would mislead."""
    if "." in name or "`" in name:
        return "`" + name.replace("`", "``") + "`"
    return name
