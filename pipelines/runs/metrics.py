"""What a run cost, measured: Spark's task metrics, the driver's peak memory, its Delta commits.

Spark's task metrics come from Spark's own listener API: ``io.lakeshard.metrics.TaskTotals`` (in
lakeshard's jar) sums the metrics of every task the driver sees end, and a run records the
difference between its start and its end. The driver's peak memory is the kernel's high-water
mark (``VmHWM``) of the Python process and of its JVM, reset at the start of the run where Linux
allows it, so each run reports its own peak even when runs share a process. Nothing here is
estimated; a figure that cannot be measured is left out (None).
"""

from __future__ import annotations

import os
import resource
from typing import Any

from py4j.protocol import Py4JError
from pyspark.sql import SparkSession

from pipelines.lake import deltalog
from pipelines.runs.progress import warn

# TaskTotals' counters -> the run log's names and units.
_SPARK_FIELDS = {
    "tasks": ("tasks", 1),
    "failed_tasks": ("failed_tasks", 1),
    "jobs": ("jobs", 1),
    "executor_run_time_ms": ("executor_run_seconds", 1e-3),
    "executor_cpu_time_ns": ("executor_cpu_seconds", 1e-9),
    "jvm_gc_time_ms": ("jvm_gc_seconds", 1e-3),
    "memory_bytes_spilled": ("memory_spilled_bytes", 1),
    "disk_bytes_spilled": ("disk_spilled_bytes", 1),
    "shuffle_read_bytes": ("shuffle_read_bytes", 1),
    "shuffle_write_bytes": ("shuffle_write_bytes", 1),
    "input_bytes": ("input_bytes", 1),
    "input_records": ("input_records", 1),
    "output_bytes": ("output_bytes", 1),
}


class RunMeter:
    """Reads the counters when a run starts; :meth:`finish` returns what the run added."""

    def __init__(self, spark: SparkSession, tables: list[str]) -> None:
        self._tables = tables
        self._tap = _task_totals(spark)
        self._jvm_pid = _jvm_pid(spark)
        for pid in (os.getpid(), self._jvm_pid):
            _reset_peak(pid)
        if self._tap is not None:
            self._tap.resetPeak()
        self._start = self._totals()
        self._versions = {uri: deltalog.latest_version(uri) for uri in tables}

    def finish(self, own_commits: int) -> dict[str, Any]:
        """This run's metrics; ``own_commits``: run-log commits the tables' versions miss (the
        final record, written after this is measured)."""
        end = self._totals()
        spark: dict[str, Any] | None = None
        if end is not None and self._start is not None:
            spark = {
                name: round((end[key] - self._start[key]) * unit, 3)
                if unit != 1
                else end[key] - self._start[key]
                for key, (name, unit) in _SPARK_FIELDS.items()
            }
            spark["peak_execution_memory_bytes"] = end["peak_execution_memory_bytes"]
        python_peak = _peak_rss(os.getpid())
        jvm_peak = _peak_rss(self._jvm_pid) if self._jvm_pid else None
        commits = own_commits
        for uri, before in self._versions.items():
            after = deltalog.latest_version(uri)
            if after is not None:
                commits += after - (-1 if before is None else before)
        return {
            "spark": spark,
            "driver_python_peak_rss_bytes": python_peak,
            "driver_jvm_peak_rss_bytes": jvm_peak,
            "driver_peak_rss_bytes": (python_peak or 0) + (jvm_peak or 0) or None,
            "delta_commits": commits,
        }

    def _totals(self) -> dict[str, int] | None:
        if self._tap is None:
            return None
        try:
            return {str(k): int(v) for k, v in dict(self._tap.totals()).items()}
        except Py4JError as exc:
            warn(f"Spark task metrics unavailable: {exc}")
            return None


def _task_totals(spark: SparkSession) -> Any:
    """The context's TaskTotals listener, added on first use; None without lakeshard's jar."""
    try:
        context = spark.sparkContext._jsc.sc()
        return spark._jvm.io.lakeshard.metrics.TaskTotals.install(context)  # type: ignore[union-attr]
    except (Py4JError, AttributeError, TypeError):
        warn("Spark task metrics unavailable: lakeshard's jar is not on this session's classpath")
        return None


def _jvm_pid(spark: SparkSession) -> int | None:
    """The driver JVM's process id, where it runs on this machine (it always does in client
    mode: Python talks to it over a local socket)."""
    try:
        pid = int(spark._jvm.java.lang.ProcessHandle.current().pid())  # type: ignore[union-attr]
    except (Py4JError, AttributeError, TypeError):
        return None
    return pid if os.path.exists(f"/proc/{pid}/status") else None


def _reset_peak(pid: int | None) -> None:
    """Start a new high-water mark (Linux: writing 5 to clear_refs resets VmHWM)."""
    if pid is None:
        return
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # not Linux, or not allowed: the peak then covers the process's whole life


def _peak_rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if pid == os.getpid():  # not Linux: getrusage's peak (kilobytes on Linux, bytes on macOS)
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    return None
