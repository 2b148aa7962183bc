"""Dynamic allocation on the real standalone cluster: executors rise while tasks queue and fall
back to the minimum once idle, read from Spark's REST API during the run; the result equals a run
with static executors. The settings are pipelines.spark.DYNAMIC_ALLOCATION (what the Kubernetes
CronJobs use), with a shorter idle timeout and the cluster's two cores as the maximum."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import deltalake
import pyspark
import pytest

from pipelines import sample
from pipelines.spark import DYNAMIC_ALLOCATION
from tests.conftest import SCHEMAS
from tests.helpers import REPO, artifacts

# About 6.5 minutes on 2 cores; in `make test`, and alone with its figures in `make autoscaling`.
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.jvm]

IDLE_S = 3  # executorIdleTimeout for the test (the manifests use 60 s)
AFTER_S = 12  # the driver stays up this long after the ingest, its executors idle
EXECUTOR = {"spark.executor.cores": "1", "spark.executor.memory": "512m"}
DYNAMIC = DYNAMIC_ALLOCATION | {
    "spark.dynamicAllocation.executorIdleTimeout": f"{IDLE_S}s",
    "spark.dynamicAllocation.shuffleTracking.timeout": f"{IDLE_S}s",
    "spark.dynamicAllocation.maxExecutors": "2",  # the cluster's two one-core workers
}
STATIC = {"spark.dynamicAllocation.enabled": "false", "spark.cores.max": "2"}
# The job: lakeshard ingest, then the driver idles so the executors' release can be seen.
_INGEST_THEN_IDLE = f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
from pipelines import cli
code = cli.main(sys.argv[2:])
print("ingest finished", file=sys.stderr, flush=True)
time.sleep(float(sys.argv[1]))
sys.exit(code)
"""


class ExecutorWatch:
    """Polls the driver's REST API: active executors over time, then every executor's life."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1/applications"
        self.timeline: list[tuple[float, int]] = []
        self.lives: list[dict[str, Any]] = []
        self.looked = datetime.now(UTC)
        self.started = time.monotonic()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.base}{path}", timeout=2) as answer:
            return json.loads(answer.read())

    def _poll(self) -> None:
        app = None
        while not self.done.is_set():
            try:
                app = app or self._get("")[0]["id"]
                executors = self._get(f"/{app}/executors")
                active = sum(1 for e in executors if e["id"] != "driver" and e["isActive"])
                self.timeline.append((round(time.monotonic() - self.started, 1), active))
                self.lives = self._get(f"/{app}/allexecutors")
                self.looked = datetime.now(UTC)
            except (urllib.error.URLError, OSError, IndexError, KeyError, ValueError):
                pass  # not up yet, or gone
            time.sleep(0.5)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)

    def executor_seconds(self) -> float:
        """Seconds each executor was alive, summed (until its removal, or the last look)."""
        total = 0.0
        for e in self.lives:
            if e["id"] == "driver":
                continue
            added = _when(e["addTime"])
            removed = _when(e["removeTime"]) if e.get("removeTime") else self.looked
            total += (removed - added).total_seconds()
        return round(total, 1)


def _when(text: str) -> datetime:
    return datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(
    cluster: dict[str, object], tmp_path: Path, raw: Path, name: str, conf: dict[str, str]
) -> tuple[dict[str, Any], ExecutorWatch, float]:
    script = tmp_path / "ingest_then_idle.py"
    script.write_text(_INGEST_THEN_IDLE)
    port = _free_port()
    settings = conf | EXECUTOR | {"spark.ui.enabled": "true", "spark.ui.port": str(port)}
    args = [str(Path(pyspark.__file__).parent / "bin" / "spark-submit")]
    args += ["--master", str(cluster["master"])]
    for key, value in settings.items():
        args += ["--conf", f"{key}={value}"]
    lake = tmp_path / name
    args += [str(script), str(AFTER_S), "ingest", "events", str(raw), "--lake", str(lake)]
    args += ["--schemas", str(SCHEMAS), "--json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_"))}
    env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    env.update(SPARK_LOCAL_IP="127.0.0.1", LAKESHARD_SPARK_CONF="")
    started = time.monotonic()
    watch = ExecutorWatch(port)
    done = subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    wall = round(time.monotonic() - started - AFTER_S, 1)
    watch.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no summary on stdout:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary, watch, wall


def changes(timeline: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """The samples where the count changed, and the last one."""
    kept = [p for i, p in enumerate(timeline) if i == 0 or p[1] != timeline[i - 1][1]]
    return kept + timeline[-1:] if timeline and kept[-1] != timeline[-1] else kept


def hashes(summary: dict[str, Any]) -> list[str]:
    table = deltalake.DeltaTable(summary["table"]).to_pyarrow_table(columns=["_content_hash"])
    return sorted(h.hex() for h in table.column("_content_hash").to_pylist())


def test_executors_follow_the_work_and_the_result_equals_a_static_run(
    spark_cluster_url: dict[str, object], tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    sample.write_events(raw, files=8, rows=300)
    dynamic, grown, dynamic_wall = run(spark_cluster_url, tmp_path, raw, "dynamic", DYNAMIC)
    static, fixed, static_wall = run(spark_cluster_url, tmp_path, raw, "static", STATIC)

    counts = [n for _, n in grown.timeline]
    report = [
        f"active executors, dynamic (s, count): {changes(grown.timeline)}",
        f"active executors, static (s, count): {changes(fixed.timeline)}",
        f"dynamic: {dynamic_wall} s, {grown.executor_seconds()} executor-s; "
        f"static: {static_wall} s, {fixed.executor_seconds()} executor-s",
    ]
    (artifacts() / "autoscaling.txt").write_text("\n".join(report) + "\n")  # also under xdist
    print("\n" + "\n".join(report), file=sys.stderr)
    assert max(counts) == 2  # rose to the maximum while tasks queued
    assert counts[-1] == 0  # and fell back to the minimum once idle
    assert max(n for _, n in fixed.timeline) == 2
    assert fixed.timeline[-1][1] == 2  # static: held while idle
    assert hashes(dynamic) == hashes(static)
    assert dynamic["rows_written"] == static["rows_written"] > 0
