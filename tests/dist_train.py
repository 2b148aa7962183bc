"""One rank of a small DDP training run fed by ShardLoader (gloo, CPU): run by test_loader_torch.

Each rank appends, per step, the content hashes of its batch to ``OUT/rank<r>.jsonl``; rank 0
saves the loader's state after every step. ``--die-after N`` SIGKILLs every rank after its N-th
step of this run, once the state of that step is saved: a crash, with no clean shutdown.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.loader import ShardLoader


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--resume", type=Path)
    parser.add_argument("--die-after", type=int, default=0)
    args = parser.parse_args()

    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    loader = ShardLoader(
        args.manifest, batch_size=args.batch_size, seed=11, num_workers=args.workers
    )
    if args.resume:
        loader.load_state_dict(json.loads(args.resume.read_text()))
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(1, 1))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    log = (args.out / f"rank{rank}.jsonl").open("a")
    steps = 0
    for epoch in range(loader.epoch, args.epochs):
        loader.set_epoch(epoch)
        batches = 0
        for batch in loader.dataloader(num_workers=args.workers):
            loss = model(batch["x"].float().unsqueeze(1)).pow(2).mean()
            loss.backward()  # an all-reduce: a rank with a batch too many would hang here
            optimiser.step()
            optimiser.zero_grad()
            hashes = [bytes(h.tolist()).hex() for h in batch["_content_hash"]]
            log.write(json.dumps({"epoch": epoch, "hashes": hashes}) + "\n")
            log.flush()
            batches += 1
            steps += 1
            if rank == 0:
                state = args.out / "state.json"
                state.with_suffix(".tmp").write_text(json.dumps(loader.state_dict()))
                state.with_suffix(".tmp").replace(state)
            if steps == args.die_after:
                dist.barrier()  # the state of this step is saved
                os.kill(os.getpid(), signal.SIGKILL)
        counts = [torch.zeros(1, dtype=torch.long) for _ in range(dist.get_world_size())]
        dist.all_gather(counts, torch.tensor([batches]))
        if rank == 0:
            (args.out / f"counts-{epoch}.json").write_text(json.dumps([int(c) for c in counts]))
    # Every rank past its last collective before any tears gloo down: a rank that destroyed
    # the group while another still talked to it aborted once ("terminate called without an
    # active exception", exit -6, seen in a suite run).
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
