"""GPU feed: how much of a training loop's wall time the GPU waits for ShardLoader's batches.

    python bench/gpu_feed.py [--manifest URI] [--workers 4] [--steps 300] [--batch-size 1024]
                             [--hidden 1024] [--layers 3] [--amp] [--all-columns]
    python bench/gpu_feed.py --device cpu --steps 20 --workers 1   # a dry run without a GPU

Trains an MLP on the export's float features (``f00``-``f15`` -> ``label``, as built by
``bench/loader.py``; ``--manifest`` names another export with those columns) for ``--warmup``
then ``--steps`` measured steps, fed by ``ShardLoader(...).dataloader(num_workers=K,
pin_memory=True)``, and prints, over the measured steps:

* **blocked in next()**: host time spent waiting for the DataLoader's next batch;
* **GPU busy**: the sum over steps of CUDA-event time from the step's first host-to-device copy
  to the end of its optimizer step (the stream's time on the step, including any gaps while the
  host launches its kernels: a launch-bound small model shows as busy);
* **GPU waited for data**: for each step, the GPU's idle gap before the step's first copy (CUDA
  events: the end of the previous step to the start of this one), counted up to the time the
  host was blocked in ``next()`` for that step; the rest of a gap is host overhead (moving and
  stacking the columns, launching kernels), shown as ``GPU idle, other``.

Shares are of the measured wall time (``torch.cuda.synchronize()`` before and after). With no CUDA
GPU the script says so in one line and exits 0. ``--device cpu`` runs the same loop on the CPU
(no pinning; host clocks instead of CUDA events) to check the script; its numbers say nothing about
a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from loader import COLUMNS, FEATURES, exported  # noqa: E402

from pipelines.loader import ShardLoader  # noqa: E402

NO_GPU = "no CUDA GPU here: nothing measured; run it on a machine with one"
CLASSES = 10


class Clock:
    """Marks on the device's timeline: CUDA events on a GPU, the host clock on the CPU (where
    work runs synchronously, so the host clock is the device's)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        event.record()
        return event

    def seconds(self, start: Any, end: Any) -> float:
        """Time between two marks (CUDA: call after synchronizing)."""
        if not self.cuda:
            return float(end - start)
        return float(start.elapsed_time(end)) / 1000

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def mlp(features: int, hidden: int, layers: int) -> nn.Module:
    blocks: list[nn.Module] = []
    width = features
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.GELU()]
        width = hidden
    blocks.append(nn.Linear(width, CLASSES))
    return nn.Sequential(*blocks)


def endless(feed: Any) -> Iterator[dict[str, Any]]:
    """Batches across epochs: each pass over the feed starts the loader's next epoch."""
    while True:
        yield from feed


def train(args: argparse.Namespace, manifest: str, device: torch.device) -> dict[str, Any]:
    """The measured loop; what it measured."""
    columns = COLUMNS if args.all_columns else [*FEATURES, "label"]
    loader = ShardLoader(
        manifest,
        args.batch_size,
        columns=columns,
        shuffle=True,
        seed=0,
        num_workers=args.workers,
    )
    options: dict[str, Any] = {"pin_memory": device.type == "cuda"}
    if args.workers:
        options["prefetch_factor"] = args.prefetch_factor
    batches = endless(loader.dataloader(**options))
    torch.manual_seed(0)
    model = mlp(len(FEATURES), args.hidden, args.layers).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    clock = Clock(device)

    waits: list[float] = []
    spans: list[tuple[Any, Any]] = []
    origin: Any = None
    started = 0.0
    loss = torch.zeros(())
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            clock.synchronize()
            started, origin = time.perf_counter(), clock.mark()
        asked = time.perf_counter()
        batch = next(batches)
        waited = time.perf_counter() - asked
        begin = clock.mark()
        x = torch.stack([batch[name].to(device, non_blocking=True) for name in FEATURES], dim=1)
        y = batch["label"].to(device, non_blocking=True).long()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        if step >= args.warmup:
            waits.append(waited)
            spans.append((begin, clock.mark()))
    clock.synchronize()
    wall = time.perf_counter() - started

    busy = sum(clock.seconds(begin, end) for begin, end in spans)
    ends = [origin, *[end for _, end in spans[:-1]]]
    gaps = [clock.seconds(end, begin) for end, (begin, _) in zip(ends, spans, strict=True)]
    starved = sum(min(gap, wait) for gap, wait in zip(gaps, waits, strict=True))
    return {
        "bench": "gpu_feed",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "manifest": manifest,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "columns": len(columns),
        "workers": args.workers,
        "amp_bf16": args.amp,
        "model": f"MLP {len(FEATURES)}-{args.hidden}x{args.layers}-{CLASSES}",
        "wall_s": round(wall, 3),
        "samples_per_s": round(args.steps * args.batch_size / wall),
        "blocked_in_next_share": round(sum(waits) / wall, 3),
        "gpu_busy_share": round(busy / wall, 3),
        "gpu_waited_for_data_share": round(starved / wall, 3),
        "gpu_idle_other_share": round(max(0.0, wall - busy - starved) / wall, 3),
        "final_loss": round(float(loss.item()), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", help="an export's folder or manifest.json (local or s3://)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the built export")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "loader")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for a dry run")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers")
    parser.add_argument("--prefetch-factor", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=300, help="measured steps")
    parser.add_argument("--warmup", type=int, default=20, help="steps before measuring")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument(
        "--all-columns",
        action="store_true",
        help="read every column (text and hash too), as a model with text input would",
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.workers < 0:
        parser.error("--steps must be at least 1; --warmup and --workers at least 0")

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    manifest = args.manifest or str(exported(args.out / f"rows-{args.rows}", args.rows, 8))
    result = train(args, manifest, device)
    what = "GPU" if device.type == "cuda" else "device (CPU dry run, not a GPU figure)"
    print(
        f"gpu_feed: {result['steps']} steps x {result['batch_size']} rows, {result['model']}"
        f"{' bf16' if args.amp else ''} on {result['device']}, {args.workers} DataLoader "
        f"workers: {result['samples_per_s']:,} samples/s; blocked in next() "
        f"{result['blocked_in_next_share']:.1%} of wall; {what} busy "
        f"{result['gpu_busy_share']:.1%}, waited for data {result['gpu_waited_for_data_share']:.1%}"
        f", idle otherwise {result['gpu_idle_other_share']:.1%}"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
