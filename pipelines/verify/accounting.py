"""The run log against the table: each run balances its rows, and the runs add up to the
table's rows."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.lake.commits import Commit
from pipelines.runs.summary import ROW_COUNTS, accounting_holds

FINISHED = ("succeeded", "abandoned")
WRITERS = ("ingest", "replay")  # the commands whose rows_written land in the table


def check_accounting(
    runs: Sequence[Mapping[str, Any]], commits: Sequence[Commit], table_rows: int
) -> dict[str, Any]:
    """Each finished run balances its rows; the runs' rows add up to the table's.

    ``runs``: each run's latest run-log record. A failed run counts what it committed (its
    record's ``rows_written``, set from its data commit; 0 when it failed before): its other
    counts may be partial, so it is not held to the identity. Rows of a data commit whose run
    the log does not show ended (still running, or started after the log was read) are taken
    from the commit (``unrecorded``)."""
    committed: dict[str, int] = {}
    for commit in commits:
        run_id = str(commit.run_id)
        committed[run_id] = committed.get(run_id, 0) + commit.inserted
    ended: set[str] = set()
    bad: list[dict[str, Any]] = []
    written = updated = finished = 0
    for run in runs:
        if run["status"] == "running":
            continue
        ended.add(run["run_id"])
        if run["command"] not in WRITERS:
            continue
        counts = {key: int(run.get(key) or 0) for key in ROW_COUNTS}
        updated += _rows_updated(run.get("details"))
        if run["status"] not in FINISHED:
            # Failed: it may have died after its commit landed and before recording it.
            written += max(counts["rows_written"], committed.get(run["run_id"], 0))
            continue
        written += counts["rows_written"]
        finished += 1
        if not accounting_holds(counts):
            accounted = counts["rows_written"] + counts["rows_duplicate"]
            accounted += counts["rows_quarantined"] + counts["rows_dropped"]
            bad.append(
                {
                    "run_id": run["run_id"],
                    "command": run["command"],
                    "status": run["status"],
                    **counts,
                    "accounted": accounted,
                }
            )
    unrecorded = {run: rows for run, rows in committed.items() if run not in ended}
    expected = written - updated + sum(unrecorded.values())
    return {
        "ok": not bad and expected == table_rows,
        "table_rows": table_rows,
        "sum_written": written,
        "sum_updated": updated,
        "unrecorded": sum(unrecorded.values()),
        "unrecorded_runs": sorted(unrecorded),
        "expected_rows": expected,
        "runs": finished,
        "bad_runs": bad,
    }


def _rows_updated(details: Any) -> int:
    if not details:
        return 0
    try:
        parsed = json.loads(details) if isinstance(details, str) else details
    except ValueError:
        return 0
    value = parsed.get("rows_updated") if isinstance(parsed, dict) else None
    return int(value) if isinstance(value, int | float) else 0
