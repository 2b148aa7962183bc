"""Anomaly detection on a dataset's run history: a pure function of the runs, no I/O.

The newest successful run that read rows is judged against the ones before it (up to
``monitor.history`` of them, at least ``monitor.min_history``). The rule is robust to the odd
outlier in the baseline: a value is unusual when it lies more than ``threshold`` robust standard
deviations (1.4826 x the median absolute deviation, MAD) from the baseline's median *and* moves
by more than a minimum amount (``min_change``, ``spike`` or ``rate_points``). The MAD adapts to
how noisy a dataset is; the minimum keeps a very steady history from turning a small change into
an alert. A median and MAD need no distribution and ignore a few extreme runs, which a mean and
standard deviation do not (one bad day would widen the band for weeks).

Runs that found nothing new (no rows read) are not judged on volume: an every-five-minutes cron
line mostly finds nothing, and ``freshness_hours`` is the check for a source that stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from statistics import median
from typing import Any

from pipelines.schema.datasets import SEVERITIES, Monitor

MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution is 0.6745 sigma
FINDING_KINDS = (
    "volume",
    "duplicates",
    "quarantine",
    "rule",
    "duration",
    "memory",
    "freshness",
    "abandoned",
    "failed",
)


@dataclass(frozen=True)
class Finding:
    dataset: str
    kind: str  # one of FINDING_KINDS
    severity: str  # one of SEVERITIES
    metric: str
    observed: float
    expected: tuple[float, float]  # the range the metric was expected in
    runs: tuple[str, ...]  # the runs it concerns, then the runs it was compared with
    message: str

    @property
    def key(self) -> str:
        """What identifies the finding across checks: an alert is sent once per key."""
        return f"{self.dataset}/{self.kind}/{self.metric}"

    def at_least(self, severity: str) -> bool:
        return SEVERITIES.index(self.severity) >= SEVERITIES.index(severity)

    def as_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "kind": self.kind,
            "severity": self.severity,
            "metric": self.metric,
            "observed": self.observed,
            "expected": list(self.expected),
            "runs": list(self.runs),
            "message": self.message,
        }


def findings(
    dataset: str,
    runs: Sequence[dict[str, Any]],
    settings: Monitor,
    now: datetime,
    live_run: str | None = None,
) -> list[Finding]:
    """What is wrong with these runs (oldest first; each a run-log record with ``duration_s``
    and ``details`` parsed). ``live_run``: the run that holds the lease now, if alive."""
    found = _lifecycle(dataset, runs, live_run)
    found += _freshness(dataset, runs, settings, now)
    judged = [r for r in runs if r["status"] == "succeeded" and (r.get("rows_read") or 0) > 0]
    if len(judged) <= settings.min_history:
        return found
    latest, baseline = judged[-1], judged[-1 - settings.history : -1]
    compare = _Comparison(dataset, latest, baseline, settings)
    compare.both_ways("volume", "rows_read", _field("rows_read"))
    compare.both_ways("volume", "files_read", _files_read)
    compare.rate("duplicates", "duplicate_rate", _rate("rows_duplicate"))
    compare.rate("quarantine", "quarantine_rate", _rate("rows_quarantined"))
    rules = sorted({name for run in (latest, *baseline) for name in _rules(run)})
    for name in rules:
        compare.rate("rule", f"rule_violation_rate:{name}", _rule_rate(name))
    compare.upward("duration", "duration_seconds", _field("duration_s"))
    compare.upward("memory", "driver_peak_rss_bytes", _metric("driver_peak_rss_bytes"))
    return found + compare.found


class _Comparison:
    def __init__(
        self,
        dataset: str,
        latest: dict[str, Any],
        baseline: list[dict[str, Any]],
        settings: Monitor,
    ) -> None:
        self.dataset, self.latest, self.baseline, self.settings = (
            dataset,
            latest,
            baseline,
            settings,
        )
        self.found: list[Finding] = []

    def both_ways(
        self, kind: str, metric: str, value: Callable[[dict[str, Any]], float | None]
    ) -> None:
        """Rows or files read: far from the usual either way (a drop is critical)."""
        share = self.settings.min_change
        self._compare(kind, metric, value, lambda middle: share * abs(middle), both_ways=True)

    def upward(
        self, kind: str, metric: str, value: Callable[[dict[str, Any]], float | None]
    ) -> None:
        """Duration and memory: unusually high only (a fast run is no alarm)."""
        share = self.settings.spike
        self._compare(kind, metric, value, lambda middle: share * abs(middle))

    def rate(self, kind: str, metric: str, value: Callable[[dict[str, Any]], float | None]) -> None:
        """A share of the rows read (duplicates, quarantined, a rule's violations): upward."""
        points = self.settings.rate_points
        self._compare(kind, metric, value, lambda middle: points, ceiling=1.0)

    def _compare(
        self,
        kind: str,
        metric: str,
        value: Callable[[dict[str, Any]], float | None],
        minimum: Callable[[float], float],
        both_ways: bool = False,
        ceiling: float | None = None,
    ) -> None:
        """A finding where the latest run's value lies beyond the median of the baseline by
        more than the robust spread and more than ``minimum(median)``."""
        sample = self._sample(value)
        if sample is None:
            return
        observed, history = sample
        middle = median(history)
        reach = max(self._spread(history), minimum(middle))
        low = middle - reach if both_ways else 0.0
        high = middle + reach if ceiling is None else min(middle + reach, ceiling)
        if observed > middle + reach:
            self._add(kind, "warning", metric, observed, (low, high), history, "more")
        elif both_ways and observed < low:
            self._add(kind, "critical", metric, observed, (low, high), history, "fewer")

    def _sample(
        self, value: Callable[[dict[str, Any]], float | None]
    ) -> tuple[float, list[float]] | None:
        observed = value(self.latest)
        history = [v for v in map(value, self.baseline) if v is not None]
        if observed is None or len(history) < self.settings.min_history:
            return None
        return observed, history

    def _spread(self, history: list[float]) -> float:
        middle = median(history)
        mad = median(abs(v - middle) for v in history)
        return self.settings.threshold * MAD_TO_SIGMA * mad

    def _add(
        self,
        kind: str,
        severity: str,
        metric: str,
        observed: float,
        expected: tuple[float, float],
        history: list[float],
        direction: str,
    ) -> None:
        compared = tuple(r["run_id"] for r in self.baseline)
        shown = f"{_figure(expected[0])}..{_figure(expected[1])}"
        self.found.append(
            Finding(
                dataset=self.dataset,
                kind=kind,
                severity=severity,
                metric=metric,
                observed=observed,
                expected=expected,
                runs=(self.latest["run_id"], *compared),
                message=(
                    f"{self.dataset}: {metric} {_figure(observed)} in run "
                    f"{self.latest['run_id']}: {direction} than usual (expected {shown}, "
                    f"median {_figure(median(history))} over {len(history)} runs)"
                ),
            )
        )


def _lifecycle(dataset: str, runs: Sequence[dict[str, Any]], live_run: str | None) -> list[Finding]:
    """Runs left ``running`` by a driver that died, and a newest run that failed."""
    found = []
    dead = tuple(r["run_id"] for r in runs if r["status"] == "running" and r["run_id"] != live_run)
    if dead:
        found.append(
            Finding(
                dataset,
                "abandoned",
                "warning",
                "runs_left_running",
                float(len(dead)),
                (0.0, 0.0),
                dead,
                f"{dataset}: {len(dead)} run(s) left running by a driver that died "
                f"({', '.join(dead)}); the next run records them as abandoned",
            )
        )
    finished = [r for r in runs if r["status"] != "running"]
    if finished and finished[-1]["status"] == "failed":
        last = finished[-1]
        found.append(
            Finding(
                dataset,
                "failed",
                "critical",
                "last_run_failed",
                1.0,
                (0.0, 0.0),
                (last["run_id"],),
                f"{dataset}: run {last['run_id']} failed: {last.get('error') or 'no error'}",
            )
        )
    return found


def _freshness(
    dataset: str, runs: Sequence[dict[str, Any]], settings: Monitor, now: datetime
) -> list[Finding]:
    if settings.freshness_hours is None or not runs:
        return []
    limit = settings.freshness_hours * 3600
    found = []

    def succeeded(run: dict[str, Any]) -> bool:
        return bool(run["status"] == "succeeded")

    def wrote(run: dict[str, Any]) -> bool:
        return succeeded(run) and (run.get("rows_written") or 0) > 0

    checks: tuple[tuple[str, Callable[[dict[str, Any]], bool]], ...] = (
        ("seconds_since_success", succeeded),
        ("seconds_since_new_rows", wrote),
    )
    for metric, wanted in checks:
        last = next((r for r in reversed(runs) if wanted(r)), None)
        since = runs[0]["started"] if last is None else (last["ended"] or last["started"])
        age = (now - since).total_seconds()
        if age > limit:
            what = "no successful run" if metric == "seconds_since_success" else "no new rows"
            found.append(
                Finding(
                    dataset,
                    "freshness",
                    "critical",
                    metric,
                    round(age, 1),
                    (0.0, limit),
                    () if last is None else (last["run_id"],),
                    f"{dataset}: {what} for {age / 3600:.1f} h "
                    f"(monitor.freshness_hours: {settings.freshness_hours:g})",
                )
            )
    return found


def _field(name: str) -> Callable[[dict[str, Any]], float | None]:
    def get(run: dict[str, Any]) -> float | None:
        value = run.get(name)
        return None if value is None else float(value)

    return get


def _files_read(run: dict[str, Any]) -> float | None:
    seen = run.get("files_seen")
    if seen is None:
        return None
    return float(seen - (run.get("files_skipped") or 0) - (run.get("files_rejected") or 0))


def _rate(name: str) -> Callable[[dict[str, Any]], float | None]:
    def get(run: dict[str, Any]) -> float | None:
        read = run.get("rows_read") or 0
        return None if read <= 0 or run.get(name) is None else run[name] / read

    return get


def _rules(run: dict[str, Any]) -> dict[str, int]:
    rules = (run.get("details") or {}).get("rules")
    return rules if isinstance(rules, dict) else {}


def _rule_rate(name: str) -> Callable[[dict[str, Any]], float | None]:
    def get(run: dict[str, Any]) -> float | None:
        read = run.get("rows_read") or 0
        rules = _rules(run)
        return None if read <= 0 or name not in rules else rules[name] / read

    return get


def _metric(name: str) -> Callable[[dict[str, Any]], float | None]:
    def get(run: dict[str, Any]) -> float | None:
        value = ((run.get("details") or {}).get("metrics") or {}).get(name)
        return None if value is None else float(value)

    return get


def _figure(value: float) -> str:
    if abs(value) >= 1e6:
        return f"{value:,.0f}"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:.3g}"
