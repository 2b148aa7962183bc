"""ShardLoader under PyTorch: DataLoader workers, and real DDP training processes (gloo, CPU)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipelines.loader import ShardLoader
from tests.shards import make_export, row_hash

torch = pytest.importorskip("torch", reason="PyTorch is not installed (make test installs it)")

SIZES = [5, 17, 40, 3, 61, 0, 22]  # uneven shards, 148 rows
ROWS = sum(SIZES)
SCRIPT = Path(__file__).with_name("dist_train.py")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    make_export(root, SIZES)
    return root


def ids_of(batches: list[dict[str, object]]) -> list[int]:
    return [int(i) for batch in batches for i in batch["id"]]  # type: ignore[attr-defined]


def test_dataloader_workers_give_the_plain_order_as_tensors(export: Path) -> None:
    plain = ShardLoader(str(export), batch_size=4, num_workers=2, seed=5)
    tracked = ShardLoader(str(export), batch_size=4, num_workers=2, seed=5)
    batches = list(tracked.dataloader())
    assert ids_of(batches) == ids_of(list(plain))
    assert isinstance(batches[0]["x"], torch.Tensor)
    assert batches[0]["_content_hash"].dtype == torch.uint8
    assert batches[0]["_content_hash"].shape == (4, 16)
    assert isinstance(batches[0]["name"], list)
    assert tracked.state_dict()["position"] == plain.state_dict()["position"] == ROWS // 4 * 4


def test_dataloader_resumes_from_the_state_it_tracked(export: Path) -> None:
    whole = ids_of(list(ShardLoader(str(export), batch_size=4, num_workers=2).dataloader()))
    first = ShardLoader(str(export), batch_size=4, num_workers=2)
    head = []
    for n, batch in enumerate(first.dataloader(), start=1):
        head.append(batch)
        if n == 7:
            break
    state = json.loads(json.dumps(first.state_dict()))
    second = ShardLoader(str(export), batch_size=4, num_workers=2)
    second.load_state_dict(state)
    assert ids_of(head) + ids_of(list(second.dataloader())) == whole


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train(
    export: Path, out: Path, world: int, batch: int, *extra: str, epochs: int = 2
) -> list[int]:
    """Run ``world`` DDP ranks (2 DataLoader workers each) to the end; their exit codes."""
    out.mkdir(parents=True, exist_ok=True)
    port = str(free_port())
    procs = []
    for rank in range(world):
        env = dict(
            os.environ,
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            RANK=str(rank),
            WORLD_SIZE=str(world),
            OMP_NUM_THREADS="1",
        )
        command = [sys.executable, str(SCRIPT), "--manifest", str(export / "manifest.json")]
        command += ["--out", str(out), "--batch-size", str(batch), "--epochs", str(epochs)]
        procs.append(subprocess.Popen([*command, *extra], env=env, start_new_session=True))
    deadline = time.monotonic() + 300
    try:
        return [proc.wait(timeout=max(1, deadline - time.monotonic())) for proc in procs]
    except subprocess.TimeoutExpired:
        pytest.fail(f"training with {world} ranks hung (no exit in 300 s)")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


def steps_of(out: Path, world: int) -> list[tuple[int, list[str]]]:
    """(epoch, the step's rows as training saw them: rank 0's batch, rank 1's, ...)."""
    logs = [
        [json.loads(line) for line in (out / f"rank{r}.jsonl").read_text().splitlines()]
        for r in range(world)
    ]
    assert len({len(log) for log in logs}) == 1, "ranks took different numbers of steps"
    return [
        (records[0]["epoch"], [h for record in records for h in record["hashes"]])
        for records in zip(*logs, strict=True)
    ]


@pytest.mark.slow  # about 30 s alone on two cores, 85 s beside a Spark run: 3 ranks, twice
def test_ddp_ranks_see_each_row_once_per_epoch_and_resume_exactly(
    export: Path, tmp_path: Path
) -> None:
    every_row = {row_hash(i).hex() for i in range(ROWS)}
    steps_per_epoch = ROWS // 12

    # Uninterrupted: 3 ranks x 2 workers x batch 4, two epochs.
    assert train(export, tmp_path / "whole", world=3, batch=4) == [0, 0, 0]
    whole = steps_of(tmp_path / "whole", 3)
    for epoch in (0, 1):
        counts = json.loads((tmp_path / "whole" / f"counts-{epoch}.json").read_text())
        assert counts == [steps_per_epoch] * 3
        seen = Counter(h for e, rows in whole if e == epoch for h in rows)
        assert max(seen.values()) == 1
        assert len(seen) == steps_per_epoch * 12
        assert set(seen) <= every_row
    assert [rows for e, rows in whole if e == 0] != [rows for e, rows in whole if e == 1]

    # Killed after 5 steps, then resumed from the saved state, with 3 ranks and with 2.
    crashed = tmp_path / "crashed"
    codes = train(export, crashed, 3, 4, "--die-after", "5")
    assert codes == [-signal.SIGKILL] * 3
    head = steps_of(crashed, 3)
    assert len(head) == 5
    state = crashed / "state.json"
    assert json.loads(state.read_text())["position"] == 5 * 12

    same = tmp_path / "same-ranks"
    assert train(export, same, 3, 4, "--resume", str(state)) == [0, 0, 0]
    assert head + steps_of(same, 3) == whole

    fewer = tmp_path / "fewer-ranks"
    assert train(export, fewer, 2, 6, "--resume", str(state)) == [0, 0]
    assert head + steps_of(fewer, 2) == whole


def test_a_dataloader_with_other_worker_counts_is_warned_about(export: Path) -> None:
    loader = ShardLoader(str(export), batch_size=4, num_workers=0)
    with pytest.warns(UserWarning, match="built for num_workers=0; with 2 DataLoader workers"):
        loader.dataloader(num_workers=2)
