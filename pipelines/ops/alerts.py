"""Alerts that reach people: each new finding sent once, each resolved one sent as resolved.

Two targets, either or both: a generic JSON webhook (``LAKESHARD_ALERT_WEBHOOK``) and Prometheus
Alertmanager's v2 API (``LAKESHARD_ALERTMANAGER``). What was sent where is kept in the lake
(``_lakeshard/monitor/<dataset>.json``), so checking again sends nothing new, and a target that
was down gets the alert at the next check. Delivery is retried with backoff and a timeout; a
target that still fails is a warning, never a failed run. URLs are printed as their origin only:
webhook URLs usually carry their secret.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

from pyarrow import fs as pafs

from pipelines import __version__
from pipelines.config import Config, Secret, join_uri, url_origin
from pipelines.ops.detect import Finding
from pipelines.runs.progress import info, warn
from pipelines.storage import arrowfs

ATTEMPTS = 3
TIMEOUT_S = 10.0
# Alertmanager resolves an alert its client stops re-sending after this long; lakeshard sends
# once, so it names an end far ahead, and ends the alert itself when the finding resolves.
HOLD = timedelta(days=30)


def state_uri(settings: Config, dataset: str) -> str:
    return join_uri(settings.lake, "_lakeshard", "monitor", f"{dataset}.json")


def deliver(settings: Config, dataset: str, alerting: list[Finding]) -> dict[str, int]:
    """Send what changed since the last check to every configured target; count what was sent."""
    targets = _targets(settings)
    sent = {"firing": 0, "resolved": 0, "failed": 0}
    if not targets:
        return sent
    uri = state_uri(settings, dataset)
    state = _load(uri, settings)
    current = {f.key: f for f in alerting}
    now = datetime.now(UTC)
    for key, finding in current.items():
        entry = state.setdefault(key, {"finding": finding.as_json(), "since": now.isoformat()})
        entry["finding"] = finding.as_json()
        for name, send in targets.items():
            if name not in entry.setdefault("sent_to", []):
                if send(finding.as_json(), "firing", entry["since"]):
                    entry["sent_to"].append(name)
                    sent["firing"] += 1
                else:
                    sent["failed"] += 1
    for key in [k for k in state if k not in current]:
        entry = state[key]
        for name in list(entry.get("sent_to", [])):
            if name in targets and targets[name](entry["finding"], "resolved", entry["since"]):
                entry["sent_to"].remove(name)
                sent["resolved"] += 1
            elif name in targets:
                sent["failed"] += 1
        if not entry.get("sent_to"):
            del state[key]
    _save(uri, state, settings)
    return sent


def _targets(settings: Config) -> dict[str, Any]:
    found: dict[str, Any] = {}
    webhook, manager = settings.monitoring.webhook, settings.monitoring.alertmanager
    if webhook is not None:
        found["webhook"] = lambda finding, status, since: _webhook(webhook, finding, status, since)
    if manager is not None:
        found["alertmanager"] = lambda finding, status, since: _alertmanager(
            manager, finding, status, since
        )
    return found


def _webhook(url: Secret, finding: dict[str, Any], status: str, since: str) -> bool:
    body = {
        "status": status,
        "since": since,
        "finding": finding,
        "lakeshard_version": __version__,
    }
    return _post(url, "", body, f"{finding['kind']} {status}")


def _alertmanager(base: Secret, finding: dict[str, Any], status: str, since: str) -> bool:
    start = datetime.fromisoformat(since)
    end = datetime.now(UTC) if status == "resolved" else start + HOLD
    alert = {
        "labels": {
            "alertname": f"lakeshard_{finding['kind']}",
            "dataset": finding["dataset"],
            "severity": finding["severity"],
            "metric": finding["metric"],
            "job": "lakeshard",
        },
        "annotations": {
            "summary": finding["message"],
            "observed": str(finding["observed"]),
            "expected": f"{finding['expected'][0]}..{finding['expected'][1]}",
            "runs": ", ".join(finding["runs"][:5]),
        },
        "startsAt": start.isoformat(),
        "endsAt": end.isoformat(),
    }
    return _post(base, "/api/v2/alerts", [alert], f"{finding['kind']} {status}")


def _post(url: Secret, path: str, body: Any, what: str) -> bool:
    target = url.reveal().rstrip("/") + path if path else url.reveal()
    data = json.dumps(body, default=str).encode()
    error = ""
    for attempt in range(ATTEMPTS):
        request = urllib.request.Request(  # noqa: S310 (config admits http(s) URLs only)
            target, data=data, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:  # noqa: S310 (same)
                answer.read()
            info(f"alert sent to {url_origin(url)}: {what}")
            return True
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
            if exc.code < 500 and exc.code != 429:
                break  # the request is wrong: trying again will not help
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            error = type(reason).__name__ if not str(reason) else str(reason)
        if attempt + 1 < ATTEMPTS:
            time.sleep(2**attempt)
    warn(
        f"could not send an alert to {url_origin(url)} ({what}): {error}; retried at the next check"
    )
    return False


def _load(uri: str, settings: Config) -> dict[str, Any]:
    data = arrowfs.read_bytes_if_any(uri)
    try:
        state = json.loads(data) if data else {}
    except ValueError:
        warn(f"{uri}: unreadable alert state, starting afresh (open alerts may be sent again)")
        return {}
    return state if isinstance(state, dict) else {}


def _save(uri: str, state: dict[str, Any], settings: Config) -> None:
    filesystem, path = arrowfs.filesystem(uri, settings.s3)
    if isinstance(filesystem, pafs.LocalFileSystem):
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(json.dumps(state, indent=1, sort_keys=True).encode())
