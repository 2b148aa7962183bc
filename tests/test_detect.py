"""The anomaly detector (``pipelines.ops.detect``) on synthetic run histories: silent on 60
ordinary runs with noise, a finding on each planted anomaly. A pure function: no JVM, no lake."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipelines.ops.detect import findings
from pipelines.schema.datasets import Monitor

DEFAULTS = Monitor()
START = datetime(2026, 11, 1, tzinfo=UTC)


def ordinary_run(i: int, rng: random.Random) -> dict[str, Any]:
    """One day's run: about 100,000 rows (±10 %), a little of everything, ordinary noise."""
    rows = round(100_000 * rng.uniform(0.9, 1.1))
    duplicate = round(rows * rng.uniform(0.01, 0.03))
    quarantined = round(rows * rng.uniform(0.005, 0.015))
    violations = round(rows * rng.uniform(0.0, 0.01))
    started = START + timedelta(days=i)
    duration = 60 * rng.uniform(0.8, 1.25)
    return {
        "run_id": f"run-{i:03d}",
        "command": "ingest",
        "status": "succeeded",
        "started": started,
        "ended": started + timedelta(seconds=duration),
        "duration_s": round(duration, 1),
        "files_seen": 100 + i * 10,
        "files_skipped": 100 + i * 10 - 10,  # the files earlier runs took
        "files_rejected": 0,
        "rows_read": rows,
        "rows_duplicate": duplicate,
        "rows_quarantined": quarantined,
        "rows_dropped": violations,
        "rows_written": rows - duplicate - quarantined - violations,
        "details": {
            "rules": {"positive_amount": violations},
            "metrics": {"driver_peak_rss_bytes": round(2e9 * rng.uniform(0.95, 1.05))},
        },
    }


def history(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [ordinary_run(i, rng) for i in range(count)]


def check(runs: list[dict[str, Any]], settings: Monitor = DEFAULTS) -> list[Any]:
    return findings("events", runs, settings, now=runs[-1]["ended"] + timedelta(minutes=1))


def volume_drop(run: dict[str, Any]) -> None:  # a source stops sending four files in five
    for key in ("rows_read", "rows_written", "rows_duplicate", "rows_quarantined", "rows_dropped"):
        run[key] //= 5
    run["details"]["rules"]["positive_amount"] = run["rows_dropped"]
    run["files_skipped"] += 8


def duplicates(run: dict[str, Any]) -> None:  # a partner sends the same file twice
    run["rows_duplicate"] = run["rows_read"] // 2


def quarantine(run: dict[str, Any]) -> None:  # a schema change refuses half the rows
    run["rows_quarantined"] = run["rows_read"] // 2


def rule(run: dict[str, Any]) -> None:  # a rule's violations jump
    run["details"]["rules"]["positive_amount"] = run["rows_read"] // 4


def duration(run: dict[str, Any]) -> None:  # a run takes three times as long
    run["duration_s"] *= 3


def memory(run: dict[str, Any]) -> None:  # the driver needs two and a half times the memory
    run["details"]["metrics"]["driver_peak_rss_bytes"] *= 2.5


PLANTED = {
    "volume": volume_drop,
    "duplicates": duplicates,
    "quarantine": quarantine,
    "rule": rule,
    "duration": duration,
    "memory": memory,
}


def test_sixty_ordinary_runs_raise_nothing() -> None:
    runs = history(60)
    judged = 0
    for end in range(1, len(runs) + 1):  # as after every run: the newest judged on its past
        assert check(runs[:end]) == [], runs[end - 1]["run_id"]
        judged += end > DEFAULTS.min_history
    assert judged == 60 - DEFAULTS.min_history  # every run from the 8th on was judged


@pytest.mark.parametrize("kind", PLANTED)
def test_a_planted_anomaly_is_found(kind: str) -> None:
    runs = history(30)
    PLANTED[kind](runs[-1])
    found = check(runs)
    assert {f.kind for f in found} == {kind}, [f.message for f in found]
    assert all(f.at_least(DEFAULTS.alert_severity) for f in found)
    first = found[0]
    assert first.runs[0] == runs[-1]["run_id"]
    assert len(first.runs) == 1 + DEFAULTS.history  # the run, then the runs it was compared with
    low, high = first.expected
    assert not low <= first.observed <= high


def test_the_anomaly_table(capsys: pytest.CaptureFixture[str]) -> None:
    """The table in the notes: each kind, planted and not, detected or not."""
    rows = []
    for kind, plant in PLANTED.items():
        normal = check(history(30, seed=11))
        runs = history(30, seed=11)
        plant(runs[-1])
        planted = check(runs)
        rows.append((kind, bool(normal), any(f.kind == kind for f in planted)))
    with capsys.disabled():
        print("\nkind         ordinary run   planted anomaly")
        for kind, on_normal, on_planted in rows:
            print(
                f"{kind:<12} {'ALERT' if on_normal else 'silent':<14} "
                f"{'detected' if on_planted else 'MISSED'}"
            )
    assert all(not on_normal and on_planted for _, on_normal, on_planted in rows)


def test_a_drop_to_a_fifth_of_the_rows_is_critical() -> None:
    runs = history(10)
    volume_drop(runs[-1])
    rows = next(f for f in check(runs) if f.metric == "rows_read")
    assert rows.severity == "critical"
    assert rows.observed == runs[-1]["rows_read"]


def test_seven_runs_judge_the_eighth_and_not_before() -> None:
    runs = history(8)
    volume_drop(runs[-1])
    assert {f.kind for f in check(runs)} == {"volume"}
    assert check(runs[1:]) == []  # six before it: too little history to judge


def test_runs_that_found_nothing_new_are_not_judged_or_counted() -> None:
    runs = history(12)
    idle = dict(runs[-1], run_id="idle", rows_read=0, rows_written=0, rows_duplicate=0)
    idle.update(rows_quarantined=0, rows_dropped=0, duration_s=5.0)
    assert check([*runs, idle, idle]) == []


def test_a_wider_threshold_tolerates_what_the_default_flags() -> None:
    runs = history(30)
    duration(runs[-1])
    assert check(runs)
    assert check(runs, replace(DEFAULTS, spike=3.0)) == []


def test_lifecycle_findings_need_no_history() -> None:
    dead = {"run_id": "dead", "status": "running", "started": START, "ended": None}
    failed = dict(history(1)[0], run_id="broken", status="failed", error="boom")
    found = findings("events", [dead, failed], DEFAULTS, now=START + timedelta(hours=1))
    assert [(f.kind, f.severity, f.runs) for f in found] == [
        ("abandoned", "warning", ("dead",)),
        ("failed", "critical", ("broken",)),
    ]
    # The run that holds the lease now is running, not abandoned.
    assert findings("events", [dead], DEFAULTS, START, live_run="dead") == []


def test_freshness_is_checked_only_where_declared() -> None:
    runs = history(3)
    late = runs[-1]["ended"] + timedelta(hours=30)
    assert findings("events", runs, DEFAULTS, now=late) == []
    found = findings("events", runs, replace(DEFAULTS, freshness_hours=26), now=late)
    assert {f.metric for f in found} == {"seconds_since_success", "seconds_since_new_rows"}
    assert all(f.severity == "critical" for f in found)
    assert findings("events", runs, replace(DEFAULTS, freshness_hours=31), now=late) == []
