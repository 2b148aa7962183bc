"""A run's data commit, as read from a Delta table's history (by Spark or from the log alone).

Every commit lakeshard makes for a run carries ``{"run_id": ..., <counts>}`` as its Delta
userMetadata; this module turns one history entry into a :class:`Commit`, whichever engine read
it, so the ingest, verify and the Spark-free readers count a MERGE alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Commit:
    """A run's data commit: its version, the rows it wrote, and its userMetadata (``notes``)."""

    version: int | None  # None: nothing was committed
    rows: int  # appended, or inserted plus updated by a MERGE
    notes: dict[str, Any] = field(default_factory=dict)
    updated: int = 0  # rows a MERGE replaced in place (also ``notes["rows_updated"]``)

    @property
    def inserted(self) -> int:
        """The rows the commit added to the table."""
        return self.rows - self.updated

    @property
    def run_id(self) -> str | None:
        run = self.notes.get("run_id")
        return str(run) if run is not None else None


def data_commit(
    version: int,
    operation: str | None,
    metrics: Mapping[str, Any] | None,
    user_metadata: str | Mapping[str, Any] | None,
) -> Commit | None:
    """The run's data commit this history entry is, or None: entries whose userMetadata names
    no run id, a replay's marking of the quarantine (``marks``), a rewrite of the table under a new
    schema (``rewrite``: it moves rows, adds none), and metadata-only commits."""
    notes: Any = user_metadata or {}
    if isinstance(notes, str):
        try:
            notes = json.loads(notes)
        except ValueError:
            return None
    if not isinstance(notes, Mapping) or "run_id" not in notes:
        return None
    if "marks" in notes or "rewrite" in notes:  # a replay's marks; a portable schema rewrite
        return None
    metrics = metrics or {}
    if operation == "MERGE":  # an upsert: it rewrites files, so count its changes
        updated = int(metrics.get("numTargetRowsUpdated", 0))
        inserted = int(metrics.get("numTargetRowsInserted", 0))
        return Commit(version, inserted + updated, {**notes, "rows_updated": updated}, updated)
    if operation == "WRITE":
        return Commit(version, int(metrics.get("numOutputRows", 0)), dict(notes))
    return None
