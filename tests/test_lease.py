"""The dataset lease on a local folder and on a real S3 server: exclusive, expiring, taken over."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from infra.s3 import server as s3_server
from pipelines import cli, sample
from pipelines.errors import PolicyError, StorageError
from pipelines.lake import lease, runlog
from tests.conftest import SCHEMAS
from tests.helpers import ingest_quietly


@pytest.fixture(params=["local", pytest.param("s3", marks=[pytest.mark.s3, pytest.mark.jvm])])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return f"file://{tmp_path}/leases/events"
    s3 = request.getfixturevalue("s3")
    return f"s3a://lake/{s3['prefix']}/_lakeshard/leases/events"


def _in_threads(run: Callable[[str], None], count: int) -> None:
    """Run ``run("run-0")`` .. ``run("run-<count-1>")`` in threads at once; wait for all."""
    threads = [threading.Thread(target=run, args=(f"run-{i}",)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout)


def test_a_second_run_is_refused_while_the_first_holds_the_lease(where: str) -> None:
    first = lease.acquire(where, "run-a", ttl_s=30, wait_s=0)
    try:
        with pytest.raises(
            PolicyError, match=r"being written by run run-a on .* \(pid \d+\)"
        ) as info:
            lease.acquire(where, "run-b", ttl_s=30, wait_s=0)
        assert info.value.exit_code == 3
        assert "--wait" in info.value.message
    finally:
        first.release()
    second = lease.acquire(where, "run-b", ttl_s=30, wait_s=0)  # free again once released
    second.release()


def test_a_waiting_run_gets_the_lease_when_the_holder_releases_it(where: str) -> None:
    first = lease.acquire(where, "run-a", ttl_s=30, wait_s=0)
    threading.Timer(1.0, first.release).start()
    started = time.monotonic()
    second = lease.acquire(where, "run-b", ttl_s=30, wait_s=60)
    waited = time.monotonic() - started
    second.release()
    assert 0.5 < waited < 60


def test_a_released_claim_stays_the_highest_so_generations_never_go_back(where: str) -> None:
    """Deleting a released claim let a run that had just listed it claim the generation above
    while another, listing after the delete, claimed generation 1: two holders (seen once on
    S3 in 8 racing threads). A released claim now stays until the next run replaces it."""
    first = lease.acquire(where, "run-a", ttl_s=30, wait_s=0)
    first.release()
    store = lease.store_for(where)
    assert store.generations() == [first.generation]
    assert (store.read(first.generation) or {})["released"] is True
    second = lease.acquire(where, "run-b", ttl_s=30, wait_s=0)
    try:
        assert second.generation == first.generation + 1
        assert store.generations() == [second.generation]
        assert second.previous is None  # a clean end: no records left to close
    finally:
        second.release()


def test_a_claim_kept_on_release_is_taken_over_as_a_dead_run_s(tmp_path: Path) -> None:
    where = f"file://{tmp_path / 'leases'}"
    first = lease.acquire(where, "run-a", ttl_s=1, wait_s=0)
    first.keep_on_release = True  # as a run does that could not record its outcome
    first.release()
    second = lease.acquire(where, "run-b", ttl_s=30, wait_s=10)  # after the claim expires
    try:
        assert second.previous is not None
        assert second.previous.run_id == "run-a"
    finally:
        second.release()


def test_only_one_of_many_racing_runs_holds_the_lease_at_a_time(where: str) -> None:
    inside, most, errors = [0], [0], []
    guard = threading.Lock()

    def run(name: str) -> None:
        try:
            with lease.held(where, name, ttl_s=30, wait_s=120):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.05)
                with guard:
                    inside[0] -= 1
        except Exception as exc:  # reported below: a thread cannot fail the test itself
            errors.append(exc)

    _in_threads(run, 8)
    assert errors == []
    assert most[0] == 1


def test_a_lease_left_by_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "leases"
    folder.mkdir()
    now = time.time()
    dead = {
        "run_id": "run-dead",
        "host": socket.gethostname(),
        "pid": _dead_pid(),
        "acquired_at": now,
        "expires_at": now + 3600,
    }
    (folder / f"{1:012d}.json").write_text(json.dumps(dead))
    taken = lease.acquire(f"file://{folder}", "run-new", ttl_s=30, wait_s=0)
    try:
        assert taken.previous is not None
        assert taken.previous.run_id == "run-dead"
        assert sorted(p.name for p in folder.iterdir()) == [f"{2:012d}.json"]
    finally:
        taken.release()


def test_a_lease_from_another_host_is_taken_over_only_after_it_expires(where: str) -> None:
    store = lease.store_for(where)
    now = time.time()
    claim = {
        "run_id": "run-far",
        "host": "elsewhere",
        "pid": 1,
        "acquired_at": now,
        "expires_at": now + 2,
    }
    assert store.create(1, claim)
    with pytest.raises(PolicyError, match="run-far on elsewhere"):
        lease.acquire(where, "run-new", ttl_s=30, wait_s=0)
    taken = lease.acquire(where, "run-new", ttl_s=30, wait_s=10)
    try:
        assert taken.previous is not None
        assert taken.previous.run_id == "run-far"
        assert taken.generation == 2
    finally:
        taken.release()


def test_a_lease_that_storage_failed_to_renew_is_a_storage_error(tmp_path: Path) -> None:
    """A heartbeat whose writes fail must not extend the claim it holds in memory: the stored
    claim expires, another run may take it, and this run must stop, naming the failure."""
    holder = lease.acquire(f"file://{tmp_path}", "run-faulty", ttl_s=1.0, wait_s=0)

    def refuse(generation: int, claim: dict[str, Any]) -> None:
        raise OSError("Connection reset by peer")

    holder.store.write = refuse  # type: ignore[method-assign]
    stored = holder.claim.expires_at
    time.sleep(1.6)
    assert holder.claim.expires_at == stored  # not extended by the failed beats
    with pytest.raises(StorageError, match=r"storage failed while renewing it \(Connection reset"):
        holder.check()
    holder.release()


def test_a_lease_that_expires_while_storage_has_not_answered_is_a_storage_error(
    tmp_path: Path,
) -> None:
    """A heartbeat stuck in its listing (a client retrying against storage that resets every
    connection) outlives the claim: the run stops naming storage, not another run."""
    holder = lease.acquire(f"file://{tmp_path}", "run-stuck", ttl_s=1.0, wait_s=0)
    listed = holder.store.generations

    def hangs() -> list[int]:
        time.sleep(2.0)
        return listed()

    holder.store.generations = hangs  # type: ignore[method-assign]
    time.sleep(1.6)
    with pytest.raises(StorageError, match=r"storage failed while renewing it \(no answer yet\)"):
        holder.check()
    holder.release()


def test_the_heartbeat_keeps_a_long_run_s_lease_and_a_stalled_run_loses_it(where: str) -> None:
    ttl = 2.0
    holder = lease.acquire(where, "run-long", ttl_s=ttl, wait_s=0)
    time.sleep(2.5 * ttl)  # longer than the lease lives without its heartbeat
    holder.check()
    with pytest.raises(PolicyError):
        lease.acquire(where, "run-other", ttl_s=ttl, wait_s=0)

    holder._stop.set()  # the heartbeat stalls, as in a frozen process
    holder._thread.join()
    other = lease.acquire(where, "run-other", ttl_s=ttl, wait_s=3 * ttl)
    try:
        with pytest.raises(PolicyError, match="lost the lease"):
            holder.check()
    finally:
        other.release()
        holder.release()  # lost: writes nothing
    store = lease.store_for(where)
    assert store.generations() == [other.generation]
    assert (store.read(other.generation) or {})["run_id"] == "run-other"


@pytest.mark.s3
def test_the_s3_server_enforces_conditional_writes(s3: dict[str, str]) -> None:
    store = lease.store_for(f"s3a://lake/{s3['prefix']}/probe")
    assert store.enforces_create_only()


@pytest.fixture
def unguarded_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A real S3 emulator (moto 4.2) that accepts If-None-Match on PUT and ignores it."""
    info = s3_server.start(tmp_path / "moto", ["lake"], "moto")
    for key, value in info.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    yield info
    s3_server.stop(tmp_path / "moto")


@pytest.mark.s3
def test_a_store_that_ignores_conditional_writes_is_refused(
    unguarded_s3: dict[str, str],
    spark: SparkSession,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert not lease.store_for("s3a://lake/probe").enforces_create_only()
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.csv").write_text("event_id,event_date,user_id,kind,amount,tags\n")
    code = cli.main(
        [
            "ingest",
            "events",
            str(tmp_path / "raw"),
            "--lake",
            "s3a://lake/x",
            "--schemas",
            str(SCHEMAS),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0
    assert "does not enforce it" in err
    assert "refuses to run unguarded" in err


def test_ingest_exits_3_naming_the_run_that_holds_the_dataset(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake_dir = tmp_path / "lake"
    holder = lease.acquire(f"file://{lake_dir}/_lakeshard/leases/events", "run-cron-1", 60, 0)
    try:
        code = cli.main(
            ["ingest", "events", str(tmp_path), "--lake", str(lake_dir), "--schemas", str(SCHEMAS)]
        )
    finally:
        holder.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert len(err) == 1
    assert err[0].startswith("error: dataset is being written by run run-cron-1 on ")
    assert not (lake_dir / "tables").exists()  # refused before anything was written


def test_a_claim_is_created_only_if_absent(where: str) -> None:
    store = lease.store_for(where)
    first = {"run_id": "a", "host": "h", "pid": 1, "acquired_at": 0.0, "expires_at": 9e9}
    assert store.create(7, first)
    assert not store.create(7, dict(first, run_id="b"))
    assert store.read(7) == first
    store.delete(7)


def test_of_runs_starting_at_the_same_instant_exactly_one_wins(where: str) -> None:
    start = threading.Barrier(6)
    won: list[lease.Lease] = []
    refused: list[PolicyError] = []

    def run(name: str) -> None:
        start.wait()
        try:
            won.append(lease.acquire(where, name, ttl_s=30, wait_s=0))
        except PolicyError as exc:
            refused.append(exc)

    _in_threads(run, 6)
    for held in won:
        held.release()
    assert (len(won), len(refused)) == (1, 5)


def test_a_run_that_cannot_record_its_outcome_is_closed_by_the_next(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clean end releases the claim, so the next run skips the search for dead runs; a run
    whose final record fails keeps its claim, so the next run still closes that record."""
    sample.write_events(tmp_path / "raw")
    lake_dir = tmp_path / "lake"
    args = ["events", str(tmp_path / "raw"), "--lake", str(lake_dir), "--schemas", str(SCHEMAS)]
    record = runlog.record_run

    def final_record_fails(spark: SparkSession, uri: str, rec: dict[str, Any]) -> None:
        if rec["status"] != "running":
            raise OSError("injected: the run log is unreachable")
        record(spark, uri, rec)

    monkeypatch.setattr(runlog, "record_run", final_record_fails)
    first = ingest_quietly(*args, "--lease-ttl", "2")
    monkeypatch.setattr(runlog, "record_run", record)
    log = str(lake_dir / "_lakeshard/runs/events")
    assert [r["run_id"] for r in runlog.unfinished_runs(spark, log)] == [first["run_id"]]

    second = ingest_quietly(*args, "--wait", "30")  # takes over once the claim expires
    states = {r["run_id"]: r for r in runlog.latest_records(runlog.read_runs(spark, log))}
    assert states[first["run_id"]]["status"] == "abandoned"
    assert states[first["run_id"]]["rows_written"] == first["rows_written"]
    assert states[second["run_id"]]["status"] == "succeeded"
    assert runlog.unfinished_runs(spark, log) == []


def test_a_run_failing_after_its_quarantine_commit_counts_only_what_it_committed(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storage failure between the quarantine commit and the table commit (a lease lost to
    an outage, say): the failed run's record balances with the rows it quarantined, and the
    rerun's records add up to the tables."""
    from pipelines.ingest import write
    from tests.test_chaos import _run_log_problems, _snapshot

    sample.write_events(tmp_path / "raw")
    lake_dir = tmp_path / "lake"
    args = ["events", str(tmp_path / "raw"), "--lake", str(lake_dir), "--schemas", str(SCHEMAS)]

    def outage(*_: Any) -> bool:
        raise StorageError("injected: the lake stopped answering")

    monkeypatch.setattr(write, "prepare_table", outage)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["ingest", *args]) == 1
    monkeypatch.undo()
    log = str(lake_dir / "_lakeshard/runs/events")
    (failed,) = [r for r in runlog.read_runs(spark, log) if r["status"] == "failed"]
    assert failed["rows_quarantined"] > 0
    counts = {k: failed[k] for k in ("rows_read", "rows_written", "rows_duplicate")}
    assert counts == {
        "rows_read": failed["rows_quarantined"],
        "rows_written": 0,
        "rows_duplicate": 0,
    }
    uncommitted = json.loads(failed["details"])["uncommitted"]
    assert uncommitted["rows_read"] > failed["rows_read"]  # what it had read is not lost

    rerun = ingest_quietly(*args)
    assert rerun["rows_quarantined"] == 0  # already there: counted as duplicates
    assert _run_log_problems(lake_dir, _snapshot(lake_dir)) == []
