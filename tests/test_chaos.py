"""Crash safety and overlapping runs, with real processes killed by SIGKILL.

Each kill trial starts ``lakeshard ingest`` as its own process group (Python driver and its
JVM), waits for a chosen phase to begin, lets it run a random moment longer, kills the whole
group with SIGKILL, reruns the ingest, and compares the lake with one clean run: the table's
content hashes, the quarantine's keys, the ledger's files and outcomes, and a run log that
accounts for every row. ``make test`` runs 4 trials, at the phases that commit; ``make chaos
TRIALS=100`` runs the long version over every phase and prints the tally. Overlapping runs and
SIGTERM: tests/test_concurrent_runs.py.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import deltalake
import pytest
from pyspark.sql import SparkSession

from pipelines import cli, sample
from pipelines.config import resolve_config
from pipelines.lake import deltalog, runlog
from pipelines.runs.summary import ROW_OUTCOMES
from tests.conftest import SCHEMAS, TEST_SPARK_CONF
from tests.helpers import REPO, ingest_quietly, last_json_line

TRIALS = int(os.environ.get("LAKESHARD_CHAOS_TRIALS", "4"))
S3_TRIALS = int(os.environ.get("LAKESHARD_CHAOS_S3_TRIALS", "2"))
S3_ONLY = os.environ.get("LAKESHARD_CHAOS_S3") == "1"  # make chaos S3=1: TRIALS of them on S3
SEED = int(os.environ.get("LAKESHARD_CHAOS_SEED", "20261129"))
# Progress lines that open each phase of a run, in order (see pipelines.ingest.run).
PHASES = (
    "holds the lease",
    "listing:",
    "inspecting",
    "reading",
    "quarantining",
    "writing",
    "ledger:",
    "recording run",
)
# With fewer trials than phases (make test runs 4), the phases around the commits come first.
COMMIT_PHASES = ("writing", "ledger:", "recording run", "quarantining")


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("chaos") / "raw"
    sample.write_events(folder, seed=11, files=3, rows=120)
    return folder


# A `lakeshard ingest` whose SparkSession starts at once and whose run starts when the file
# named first appears: the next trial's JVM warms up while this trial's rerun runs.
_WARM_THEN_INGEST = """
import sys, time
from pathlib import Path
from pipelines import cli
from pipelines.spark import get_spark
get_spark("local[2]")
while not Path(sys.argv[1]).exists():
    time.sleep(0.02)
sys.exit(cli.main(sys.argv[2:]))
"""


def _ingest_process(
    raw: Path | str, lake_dir: Path | str, *extra: str, go: Path | None = None
) -> subprocess.Popen[str]:
    env = dict(os.environ, LAKESHARD_SPARK_CONF=TEST_SPARK_CONF, PYTHONUNBUFFERED="1")
    args = ["ingest", "events", str(raw), "--lake", str(lake_dir), "--schemas", str(SCHEMAS)]
    args += ["--master", "local[2]", "--json", *extra]
    start = ["-c", _WARM_THEN_INGEST, str(go)] if go else ["-m", "pipelines"]
    return subprocess.Popen(
        [sys.executable, *start, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the JVM dies with the driver
    )


def _read(uri: str) -> list[dict[str, Any]]:
    """A small Delta table's rows, read with delta-rs (no Spark job); on S3 with the keys the
    ``s3`` fixture put in the environment."""
    options = None
    if uri.startswith("s3a://"):
        options = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        options.update(AWS_ENDPOINT_URL=os.environ["AWS_ENDPOINT_URL"], AWS_REGION="us-east-1")
        options.update(AWS_ALLOW_HTTP="true", AWS_S3_ALLOW_UNSAFE_RENAME="true")
    table = deltalake.DeltaTable(uri, storage_options=options)
    rows: list[dict[str, Any]] = table.to_pyarrow_table().to_pylist()
    return rows


def _snapshot(lake_dir: Path | str) -> dict[str, Any]:
    """What must match a clean run: content hashes, quarantine keys, ledger entries."""
    settings = resolve_config(lake=str(lake_dir))
    table = [r["_content_hash"].hex() for r in _read(settings.table_uri("events"))]
    quarantine = [r["_quarantine_key"] for r in _read(settings.quarantine_uri("events"))]
    ledger = [
        (Path(r["path"]).name, r["file_hash"].hex() if r["file_hash"] else "", r["outcome"])
        for r in _read(settings.ledger_uri("events"))
    ]
    return {"table": sorted(table), "quarantine": sorted(quarantine), "ledger": sorted(ledger)}


def _run_log_problems(lake_dir: Path | str, snapshot: dict[str, Any]) -> list[str]:
    """The run log must close every run and sum to what the tables hold."""
    records = _read(resolve_config(lake=str(lake_dir)).runs_uri("events"))
    ended = [r for r in records if r["status"] != "running"]
    problems = []
    if {r["run_id"] for r in records} != {r["run_id"] for r in ended}:
        problems.append("a run is still recorded as running")
    written = sum(r["rows_written"] or 0 for r in ended)
    quarantined = sum(r["rows_quarantined"] or 0 for r in ended)
    if written != len(snapshot["table"]):
        problems.append(
            f"run log says {written} rows written, table holds {len(snapshot['table'])}"
        )
    if quarantined != len(snapshot["quarantine"]):
        held = len(snapshot["quarantine"])
        problems.append(f"run log says {quarantined} quarantined, quarantine holds {held}")
    for r in ended:
        parts = ROW_OUTCOMES
        if (r["rows_read"] or 0) != sum(r[k] or 0 for k in parts):
            problems.append(f"run {r['run_id']} ({r['status']}) does not account for its rows")
    return problems


def _left_running(lake_dir: Path | str) -> list[str]:
    """Runs whose latest run-log record is ``running`` (a kill after that record)."""
    uri = resolve_config(lake=str(lake_dir)).runs_uri("events")
    if deltalog.latest_version(uri) is None:
        return []
    return [r["run_id"] for r in runlog.latest_records(_read(uri)) if r["status"] == "running"]


def _abandoned_findings(lake_dir: Path | str) -> list[str]:
    """The runs ``lakeshard monitor`` reports as left running by a driver that died."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(
            ["monitor", "events", "--lake", str(lake_dir), "--schemas", str(SCHEMAS), "--json"]
        )
    report = last_json_line(out.getvalue())
    runs = [run for f in report["findings"] if f["kind"] == "abandoned" for run in f["runs"]]
    assert code == (3 if report["alerting"] else 0)
    return runs


def _kill_during(process: subprocess.Popen[str], phase: str, delay: float) -> str:
    """SIGKILL the process group ``delay`` s after ``phase`` starts; return the last phase seen."""
    seen: list[str] = []
    started = threading.Event()

    def follow() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if line.startswith("lakeshard: "):
                seen.append(line[len("lakeshard: ") :].strip())
                if phase in line:
                    started.set()
        started.set()  # the run ended before reaching the phase

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    started.wait(timeout=300)
    time.sleep(delay)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        outcome = "killed"
    else:
        outcome = "finished"
    process.wait()
    reader.join(timeout=10)
    last = "start"
    for line in seen:
        last = next((p for p in PHASES if p in line), last)
    return f"{outcome} in '{last}'"


@pytest.mark.slow  # a Spark process per trial (LAKESHARD_CHAOS_TRIALS, 4 by default)
@pytest.mark.skipif(S3_ONLY, reason="make chaos S3=1: the trials on S3 only")
def test_a_kill_at_any_moment_then_a_rerun_equals_one_clean_run(
    spark: SparkSession, raw: Path, tmp_path: Path
) -> None:
    _kill_trials(str(raw), str(tmp_path), TRIALS, tmp_path)


@pytest.mark.slow  # LAKESHARD_CHAOS_S3_TRIALS (2 by default): a Spark process and a rerun each
@pytest.mark.s3
def test_a_kill_on_s3_then_a_rerun_equals_one_clean_run(
    spark: SparkSession, s3: dict[str, str], raw: Path, tmp_path: Path
) -> None:
    """The same trials with the sources and the lake on the S3 server."""
    from tests.test_s3 import upload_folder

    upload_folder(s3, raw, "raw", s3["prefix"])
    trials = TRIALS if S3_ONLY else S3_TRIALS
    _kill_trials(f"s3a://raw/{s3['prefix']}", f"s3a://lake/{s3['prefix']}", trials, tmp_path)


def _kill_trials(raw: str, lakes: str, trials: int, tmp_path: Path) -> None:
    """Kill ``trials`` ingests of ``raw`` into lakes under ``lakes``; compare each, after a
    rerun, with one clean run; print the tally by phase."""
    reference = f"{lakes}/reference"
    clean = ingest_quietly("events", raw, "--lake", reference, "--schemas", str(SCHEMAS))
    expected = _snapshot(reference)
    assert clean["rows_written"] == len(expected["table"]) > 0
    assert len(expected["quarantine"]) > 0

    rng = random.Random(SEED)
    tally: Counter[str] = Counter()
    failures = []

    def warm(trial: int) -> tuple[subprocess.Popen[str], Path]:
        go = tmp_path / f"go-{trial}"
        return _ingest_process(raw, f"{lakes}/trial-{trial}", go=go), go

    upcoming = warm(0)
    for trial in range(trials):
        if len(PHASES) > trials:
            phase = COMMIT_PHASES[trial % len(COMMIT_PHASES)]
        else:
            phase = PHASES[trial] if trial < len(PHASES) else rng.choice(PHASES)
        delay = rng.choice([0.0, rng.uniform(0.0, 0.3), rng.uniform(0.0, 1.5)])
        lake = f"{lakes}/trial-{trial}"
        process, go = upcoming
        go.touch()
        where = _kill_during(process, phase, delay)
        if trial + 1 < trials:
            upcoming = warm(trial + 1)
        left_running = _left_running(lake)
        found = _abandoned_findings(lake)
        if found != left_running:
            failures.append(
                f"trial {trial} ({where}): monitor found {found}, runs left running {left_running}"
            )
        rerun = ingest_quietly("events", raw, "--lake", lake, "--schemas", str(SCHEMAS))
        got = _snapshot(lake)
        problems = [k for k in expected if got[k] != expected[k]]
        problems += _run_log_problems(lake, got)
        if rerun["status"] != "succeeded":
            problems.append(f"rerun {rerun['status']}")
        tally[f"{where}: {'equal' if not problems else 'DIFFERENT'}"] += 1
        if problems:
            failures.append(f"trial {trial} ({phase} +{delay:.2f}s, {where}): {problems}")
        print(f"chaos trial {trial}: {where}: {problems or 'equal'}", file=sys.stderr, flush=True)
    print(f"\nchaos tally over {trials} trial(s) in {lakes}, seed {SEED}:", file=sys.stderr)
    for line, count in sorted(tally.items()):
        print(f"  {count:4d}  {line}", file=sys.stderr)
    assert failures == []
