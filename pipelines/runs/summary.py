"""What a run did: its summary, the row-accounting identity, and its id."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

# Where a run's rows went: every row read is written, a duplicate, quarantined or dropped.
ROW_OUTCOMES = ("rows_written", "rows_duplicate", "rows_quarantined", "rows_dropped")
ROW_COUNTS = ("rows_read", *ROW_OUTCOMES)
# The counts a run's data commit carries in its metadata (rows_written comes from the commit).
COMMIT_COUNTS = tuple(key for key in ROW_COUNTS if key != "rows_written")
# Summary fields kept in the run log's ``details`` JSON.
DETAILS = (
    "rules",
    "drift",
    "rows_released",
    "rows_updated",
    "phases_s",
    "source_bytes",
    "metrics",
    "uncommitted",  # what a failed run had counted but not committed (see keep_committed)
)
PHASES = "phases_s"  # seconds per phase of the run, in the order they ran


@dataclass
class Summary:
    dataset: str
    run_id: str
    status: str
    table: str
    table_version: int | None
    quarantine: str
    files_seen: int = 0
    files_skipped: int = 0
    rows_read: int = 0
    rows_written: int = 0
    rows_duplicate: int = 0
    rows_quarantined: int = 0
    rows_dropped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # The run's data commit landed, or it had none to make: its counts are final. Until then
    # only its quarantine commit is real (see :func:`keep_committed`).
    counts_final: bool = False

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["counts_final"]
        extra = data.pop("extra")
        data.update(extra)
        return data


def keep_committed(out: Summary) -> None:
    """Make a run that failed before its counts were final count only what it committed, as a
    dead run is closed (``abandoned``): the rows it quarantined, read and quarantined. The rows
    it read and planned but never wrote are read again by the next run, which counts them; what
    this run had counted is kept under ``uncommitted`` in its record's details."""
    if out.counts_final:
        return
    partial = {key: getattr(out, key) for key in ROW_COUNTS}
    if any(partial.values()):
        out.extra["uncommitted"] = partial
    out.rows_read = out.rows_quarantined
    out.rows_written = out.rows_duplicate = out.rows_dropped = 0


@contextmanager
def phase(out: Summary, name: str) -> Iterator[None]:
    """Add the seconds this block takes to ``out``'s phase ``name`` (``phases_s``): where a
    run's time goes, in its summary and run log."""
    start = time.monotonic()
    try:
        yield
    finally:
        phases: dict[str, float] = out.extra.setdefault(PHASES, {})
        phases[name] = round(phases.get(name, 0.0) + time.monotonic() - start, 2)


def accounting_holds(summary: Mapping[str, Any]) -> bool:
    """rows_read = rows_written + rows_duplicate + rows_quarantined + rows_dropped."""
    return bool(summary["rows_read"] == sum(summary[key] for key in ROW_OUTCOMES))


def new_run_id() -> str:
    """Sortable by start time, unique across machines."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
