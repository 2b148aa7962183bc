"""``lakeshard status --html FILE``: the status report as one self-contained page.

Everything is inline (styles and SVG charts drawn by :mod:`pipelines.ops.charts`): the file can
be mailed, attached to a ticket or opened from a bucket with no network and no script.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError
from pipelines.ops.charts import Series, horizontal_bars, size, stacked_columns

PARTITIONS_SHOWN = 30  # the newest partitions in the file-size chart
REASONS_SHOWN = 15
_OUTCOMES = (  # run-log field, legend, colour
    ("rows_written", "written", "#2e7d32"),
    ("rows_duplicate", "duplicate", "#90a4ae"),
    ("rows_quarantined", "quarantined", "#c62828"),
    ("rows_dropped", "dropped", "#6a1b9a"),
)
_STATUS_COLOURS = {
    "succeeded": "#1565c0",
    "failed": "#c62828",
    "running": "#ef6c00",
    "abandoned": "#6d4c41",
}
_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 980px;
       color: #1c1c1c; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 2px; }
h2 { font-size: 18px; margin-top: 36px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 4px; }
.meta { color: #666; } .facts span { margin-right: 18px; white-space: nowrap; }
.chart { width: 100%; height: auto; display: block; }
.grid { stroke: #e6e6e6; } .tick { font-size: 11px; fill: #555; }
table { border-collapse: collapse; font-size: 12px; width: 100%; }
th, td { padding: 3px 6px; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child, .text { text-align: left; }
.finding { padding: 6px 10px; border-radius: 4px; margin: 4px 0; }
.warning { background: #fff4e5; } .critical { background: #fdecea; } .info { background: #eef4fb; }
"""


def check_writable(path: Path) -> None:
    """Fail before reading the lake where the page could not be written."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ConfigError(f"--html {path}: {folder} is not a folder this user can write to")


def write(path: Path, page: str) -> None:
    """Replace the page in one rename, so a reader never sees half of it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(page, encoding="utf-8")
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"--html {path}: cannot write the page: {error.strerror}") from error


def render(report: dict[str, Any]) -> str:
    """The whole page for a status report (made with ``partition_detail=True``)."""
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = "".join(_dataset(ds) for ds in report["datasets"])
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>lakeshard status</title><style>{_STYLE}</style></head><body>"
        f'<h1>lakeshard status</h1><p class="meta">Made {made} in {report["seconds"]} s, '
        "from the lake's own files.</p>"
        f"{sections}</body></html>\n"
    )


def _dataset(ds: dict[str, Any]) -> str:
    name = escape(ds["dataset"])
    head = f'<section id="dataset-{name}"><h2>{name}</h2>'
    if ds["table_version"] is None and not ds["runs"]:
        return head + "<p>Nothing ingested yet.</p></section>"
    parts = [head, _facts(ds), *(_finding(f) for f in ds["findings"])]
    runs = list(reversed(ds["runs"]))  # oldest first: time runs left to right
    if runs:
        labels = [_when(r["started"]) for r in runs]
        parts.append("<h3>Rows per run</h3>")
        outcomes = [
            Series(legend, colour, [float(r[key] or 0) for r in runs])
            for key, legend, colour in _OUTCOMES
            if key != "rows_dropped" or any(r[key] for r in runs)
        ]
        parts.append(stacked_columns(labels, outcomes, "rows"))
        parts.append("<h3>Run duration</h3>")
        statuses = [
            Series(status, colour, [_seconds(r) if r["status"] == status else 0 for r in runs])
            for status, colour in _STATUS_COLOURS.items()
            if any(r["status"] == status for r in runs)
        ]
        parts.append(stacked_columns(labels, statuses, "seconds"))
    partitions = ds.get("partition_files") or []
    if partitions:
        shown = partitions[:PARTITIONS_SHOWN]
        more = len(partitions) - len(shown)
        parts.append(
            "<h3>File sizes per partition"
            + (f" (newest {len(shown)} of {len(partitions)})" if more else "")
            + "</h3>"
        )
        rows = [
            (
                p["partition"] or "(not partitioned)",
                float(p["bytes"]),
                f"{size(p['bytes'])} in {p['files']:,} file(s), "
                f"{size(p['bytes'] / p['files'])} each",
            )
            for p in shown
        ]
        parts.append(horizontal_bars(rows, "#00838f"))
    backlog = ds["quarantine_backlog"]
    if backlog and backlog["rows"]:
        parts.append(f"<h3>Quarantine waiting for replay: {backlog['rows']:,} record(s)</h3>")
        reasons = list(backlog["reasons"].items())[:REASONS_SHOWN]
        bars = [(reason, float(n), f"{n:,} record(s)") for reason, n in reasons]
        parts.append(horizontal_bars(bars, "#c62828"))
    if runs:
        parts.append(_runs_table(ds["runs"]))
    parts.append("</section>")
    return "".join(parts)


def _facts(ds: dict[str, Any]) -> str:
    facts = [f"version {ds['table_version']}"] if ds["table_version"] is not None else []
    if ds["rows"] is not None:
        facts += [
            f"{ds['rows']:,} rows",
            f"{ds['files']:,} file(s)",
            size(ds["bytes"]),
            f"{ds['partitions']:,} partition(s)",
        ]
    if ds["schema_version"] is not None:
        facts.append(f"schema v{ds['schema_version']}")
    if not ds["spark_free_readable"]:
        why = ", ".join(ds["spark_only_features"]) or "column mapping or deletion vectors"
        facts.append(f"only Spark reads this table ({why})")
    holder = ds["lease"]
    if holder:
        state = "running" if holder["alive"] else "left by a run that died"
        facts.append(f"lease: {holder['run_id']} on {holder['host']} ({state})")
    items = "".join(f"<span>{escape(f)}</span>" for f in facts)
    return f'<p class="facts">{items}</p>'


def _finding(finding: dict[str, Any]) -> str:
    severity = escape(finding["severity"])
    return (
        f'<div class="finding {severity}"><b>{severity}</b> ({escape(finding["kind"])}): '
        f"{escape(finding['message'])}</div>"
    )


def _runs_table(runs: list[dict[str, Any]]) -> str:
    head = (
        "<h3>Runs, newest first</h3><table><tr><th>run</th><th class='text'>command</th>"
        "<th class='text'>status</th><th class='text'>started</th><th>seconds</th><th>files</th>"
        "<th>read</th><th>written</th>"
        "<th>duplicate</th><th>quarantined</th></tr>"
    )
    rows = []
    for r in runs:
        seconds = "" if r["duration_s"] is None else f"{r['duration_s']:.1f}"
        cells = [
            f"{r[k] or 0:,}" for k in ("files_seen", "rows_read", "rows_written", "rows_duplicate")
        ] + [f"{r['rows_quarantined'] or 0:,}"]
        error = r["error"] and f'<tr><td colspan="10" class="text">{escape(r["error"])}</td></tr>'
        rows.append(
            f"<tr><td>{escape(r['run_id'])}</td><td class='text'>{escape(r['command'] or '')}"
            f"</td><td class='text'>{escape(r['status'])}</td><td class='text'>"
            f"{_when(r['started'])}</td><td>{seconds}</td>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + "</tr>"
            + (error or "")
        )
    return head + "".join(rows) + "</table>"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%m-%d %H:%M") if moment else "?"


def _seconds(run: dict[str, Any]) -> float:
    return float(run["duration_s"] or 0)
