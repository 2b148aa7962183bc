"""Storage faults between lakeshard and the S3 server: every run succeeds through retries or
fails with exit 1 and one line naming the storage failure, and a clean rerun then leaves the lake
equal to one clean run.

The ingest runs as its own process (S3A in its JVM, pyarrow and boto3 in Python) with its
endpoint pointed at the fault proxies on loopback: ``SlowDownProxy`` (HTTP: 503 SlowDown and
500 for a share of requests) in front of Toxiproxy (TCP: latency, bandwidth, resets, stalls, the
server gone) in front of the S3 server. Faults of a whole run are on from start to end; the TCP
faults of a moment are switched on for a short burst at the start of every phase the run
reaches (the lease at a short TTL, so that its heartbeat beats inside each burst). The matrix
(fault x phase -> outcome) is printed.

``make test`` runs three of the six faults (503 SlowDown for a whole run; a connection reset and
the server gone at each phase), about a third of the matrix's time; ``make faults`` runs all six,
each phase's burst in a run of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from infra.s3.faults import SlowDownProxy, Toxiproxy
from pipelines import sample
from tests.conftest import SCHEMAS, TEST_SPARK_CONF
from tests.helpers import REPO, artifacts, ingest_quietly
from tests.test_chaos import PHASES, _run_log_problems, _snapshot
from tests.test_s3 import upload_folder

pytestmark = [pytest.mark.s3, pytest.mark.slow]

WHOLE_MATRIX = os.environ.get("LAKESHARD_FAULTS_EACH_PHASE") == "1"  # make faults
BURST_S = 4.0  # how long a fault of a moment lasts: two heartbeats of the lease below
LEASE_TTL = "8"  # heartbeat every 2 s


@dataclass
class Outcome:
    code: int
    error: str  # the one error line (empty when it succeeded)
    phases: list[str] = field(default_factory=list)  # the phases the run reached
    armed: list[str] = field(default_factory=list)  # the phases a burst started in
    refused: int = 0  # requests the HTTP proxy answered with an error itself


@pytest.fixture(scope="module")
def proxies(s3_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    folder = tmp_path_factory.mktemp("faults")
    upstream = s3_env["AWS_ENDPOINT_URL"].removeprefix("http://")
    with Toxiproxy(folder) as toxi:
        tcp = toxi.proxy("s3", upstream).removeprefix("http://")
        http = SlowDownProxy(tcp)
        yield toxi, http
        http.close()


def _run(
    raw: str, lake: str, endpoint: str, on_phase: Callable[[str], None] | None = None
) -> Outcome:
    """``lakeshard ingest`` as its own process against ``endpoint``; ``on_phase`` is called
    (in the thread reading its progress) as each phase starts."""
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, PYTHONUNBUFFERED="1")
    env["LAKESHARD_SPARK_CONF"] = TEST_SPARK_CONF
    args = ["ingest", "events", raw, "--lake", lake, "--schemas", str(SCHEMAS)]
    args += ["--master", "local[2]", "--lease-ttl", LEASE_TTL, "--json"]
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    outcome = Outcome(0, "")
    errors: list[str] = []
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("error: "):
            errors.append(line.strip())
        if not line.startswith("lakeshard: "):
            continue
        phase = next((p for p in PHASES if p in line), None)
        if phase and phase not in outcome.phases:
            outcome.phases.append(phase)
            if on_phase:
                on_phase(phase)
    process.wait(timeout=600)
    outcome.code = process.returncode
    assert len(errors) <= 1, errors
    outcome.error = errors[0] if errors else ""
    return outcome


def _burst(toxi: Toxiproxy, fault: str) -> None:
    """Switch a TCP fault on for BURST_S seconds."""
    if fault == "server gone":
        toxi.enable("s3", False)
    elif fault == "connection reset":
        toxi.add("s3", "reset_peer", timeout=200)
    else:
        assert fault == "connection stalls"
        toxi.add("s3", "timeout", timeout=0)
    time.sleep(BURST_S)
    toxi.clear("s3")


def _slow_network(toxi: Toxiproxy, http: SlowDownProxy) -> None:
    toxi.add("s3", "latency", latency=100, jitter=30)
    toxi.add("s3", "bandwidth", stream="upstream", rate=512)


WHOLE_RUN = {  # fault -> how to switch it on (toxiproxy, http proxy); one run each
    "latency 100 ms ± 30 + 512 KB/s up": _slow_network,
    "503 SlowDown, 20 %": lambda t, h: h.fail(0.2, 503),
    "500 InternalError, 10 %": lambda t, h: h.fail(0.1, 500),
}
MOMENT = ("connection reset", "connection stalls", "server gone")
# make test's share: the faults that found defects (exit codes, a file rejected for an outage,
# a stuck heartbeat). The others have passed in every run of the whole matrix so far.
IN_MAKE_TEST = {"503 SlowDown, 20 %", "connection reset", "server gone"}


def _chosen(faults: Iterable[str]) -> list[str]:
    return [f for f in faults if WHOLE_MATRIX or f in IN_MAKE_TEST]


def test_each_storage_fault_is_retried_or_named_and_a_rerun_repairs(
    spark: SparkSession,
    s3: dict[str, str],
    proxies: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    toxi, http = proxies
    sample.write_events(tmp_path / "raw", seed=17, files=2, rows=60)
    upload_folder(s3, tmp_path / "raw", "raw", s3["prefix"])
    raw = f"s3a://raw/{s3['prefix']}"
    lakes = f"s3a://lake/{s3['prefix']}"
    where = ["--schemas", str(SCHEMAS)]
    ingest_quietly("events", raw, "--lake", f"{lakes}/reference", *where)
    expected = _snapshot(f"{lakes}/reference")

    rows: list[tuple[str, str, str]] = []  # (fault, phases, outcome)
    failures: list[str] = []

    def judge(fault: str, lake: str, outcome: Outcome, phases: list[str]) -> None:
        if outcome.code == 0:
            shown = "succeeded" + (
                f", {outcome.refused} refused and retried" if outcome.refused else ""
            )
        elif outcome.code == 1 and ("storage" in outcome.error or "S3" in outcome.error):
            shown = f"exit 1: {outcome.error[:110]}"
        else:
            shown = f"DEFECT exit {outcome.code}: {outcome.error[:200]}"
            failures.append(f"{fault} in {phases}: {shown}")
        ingest_quietly("events", raw, "--lake", lake, *where)  # the fault removed
        got = _snapshot(lake)
        problems = [k for k in expected if got[k] != expected[k]]
        problems += _run_log_problems(lake, got)
        if problems:
            failures.append(f"{fault} in {phases}: after a clean rerun {problems}")
        rows.append((fault, ", ".join(phases), shown + ("" if not problems else " NOT REPAIRED")))

    for n, fault in enumerate(_chosen(WHOLE_RUN)):
        WHOLE_RUN[fault](toxi, http)
        before = http.seen["refused"]
        try:
            outcome = _run(raw, f"{lakes}/whole-{n}", http.endpoint)
        finally:
            toxi.clear("s3")
            http.fail(0.0)
        outcome.refused = http.seen["refused"] - before
        judge(fault, f"{lakes}/whole-{n}", outcome, outcome.phases)

    for n, fault in enumerate(_chosen(MOMENT)):
        # make test: one run with a burst at each phase; a run that fails in a phase leaves
        # the later ones to the next run. make faults: one run per phase.
        plans = [[p] for p in PHASES] if WHOLE_MATRIX else [list(PHASES)]
        attempt = 0
        while plans:
            todo = plans.pop(0)
            lake = f"{lakes}/moment-{n}-{attempt}"
            armed: list[str] = []

            def arm(
                phase: str, todo: list[str] = todo, armed: list[str] = armed, fault: str = fault
            ) -> None:
                if phase in todo:
                    armed.append(phase)
                    _burst(toxi, fault)  # progress is read on after it: the next phase's burst

            outcome = _run(raw, lake, http.endpoint, arm)
            toxi.clear("s3")
            judge(fault, lake, outcome, armed)
            # The phases it never reached (a failed run still reaches "recording run").
            later = [p for p in todo if p not in armed]
            if outcome.code != 0 and later and not WHOLE_MATRIX:
                plans.append(later)
            attempt += 1

    table = ["storage fault matrix (fault | phases the fault met | outcome):"]
    table += [f"  {fault:34} | {phases:90} | {shown}" for fault, phases, shown in rows]
    (artifacts() / "storage-faults.txt").write_text("\n".join(table) + "\n")  # also under xdist
    with capsys.disabled():
        print("\n" + "\n".join(table))
    assert failures == []
