"""``lakeshard monitor`` and the check after every run: judge the run history, publish the
metrics, send the alerts. Reads the lake without Spark, like ``status``."""

from __future__ import annotations

import time
from typing import Any

from pipelines.config import Config, url_origin
from pipelines.errors import describe
from pipelines.ops import alerts, detect, prometheus
from pipelines.ops.status import judge, lease_holder, run_history
from pipelines.runs.progress import info, warn
from pipelines.schema.datasets import Dataset


def check(
    settings: Config, dataset: Dataset, severity: str | None = None
) -> tuple[list[detect.Finding], list[detect.Finding], list[dict[str, Any]]]:
    """(every finding, those at or above the alerting severity, the run history newest first)."""
    runs = run_history(settings.runs_uri(dataset.name))
    found = judge(dataset, runs, lease_holder(settings.lease_uri(dataset.name)))
    threshold = severity or dataset.monitor.alert_severity
    return found, [f for f in found if f.at_least(threshold)], runs


def monitor(
    settings: Config, datasets: list[Dataset], severity: str | None = None
) -> dict[str, Any]:
    """Check each dataset, publish, alert; ``--json``: this object."""
    started = time.monotonic()
    report: dict[str, Any] = {"findings": [], "alerting": 0, "alerts": {}}
    for dataset in datasets:
        found, alerting, runs = check(settings, dataset, severity)
        report["findings"] += [f.as_json() | {"alerting": f in alerting} for f in found]
        report["alerting"] += len(alerting)
        _publish(settings, dataset.name, runs, found)
        report["alerts"][dataset.name] = alerts.deliver(settings, dataset.name, alerting)
    report["seconds"] = round(time.monotonic() - started, 2)
    return report


def after_run(settings: Config, dataset: Dataset) -> None:
    """What every run ends with: its metrics published, the history judged, alerts sent.
    Never fails the run: a problem here is a warning."""
    try:
        found, alerting, runs = check(settings, dataset)
        _publish(settings, dataset.name, runs, found)
        alerts.deliver(settings, dataset.name, alerting)
        for finding in alerting:
            warn(f"{finding.severity}: {finding.message}")
    except Exception as exc:
        warn(f"monitoring after the run failed: {describe(exc)}")


def _publish(
    settings: Config, dataset: str, runs: list[dict[str, Any]], found: list[detect.Finding]
) -> None:
    targets = settings.monitoring
    if targets.pushgateway is None and targets.metrics_dir is None:
        return
    registry = prometheus.registry(dataset, runs, found)
    if targets.pushgateway is not None:
        try:
            prometheus.push(targets.pushgateway, dataset, registry)
            info(f"metrics pushed to {url_origin(targets.pushgateway)}")
        except OSError as exc:
            warn(f"could not push metrics to {url_origin(targets.pushgateway)}: {describe(exc)}")
    if targets.metrics_dir is not None:
        path = prometheus.write_textfile(targets.metrics_dir, dataset, registry)
        info(f"metrics written to {path}")


def print_report(report: dict[str, Any]) -> None:
    if not report["findings"]:
        print("no findings")
    for finding in report["findings"]:
        mark = "ALERT" if finding["alerting"] else "note"
        print(f"{mark:5} {finding['severity']:8} {finding['kind']:10} {finding['message']}")
    for dataset, sent in report["alerts"].items():
        if any(sent.values()):
            print(
                f"{dataset}: alerts sent {sent['firing']} firing, {sent['resolved']} resolved"
                + (
                    f", {sent['failed']} failed (retried at the next check)"
                    if sent["failed"]
                    else ""
                )
            )
