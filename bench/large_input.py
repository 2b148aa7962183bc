"""A large generated input (3 GB by default) through ``lakeshard ingest``, with its peak memory.

    python bench/large_input.py [--mb 3072] [--files 24]

Generates ``--mb`` of ``events`` CSV (the same generator as ``ingest_overhead``), then runs
``lakeshard ingest`` on it as a separate process, exactly as a user would, with the documented
memory settings (``LAKESHARD_DRIVER_MEMORY``, default 4g) and a small
``spark.driver.maxResultSize`` (64m): any collection of data to the driver would fail the run.
Samples the resident memory of the whole process tree (Python driver + JVM; a child still in its
parent's memory counted once) every half second and prints the peak, the peak proportional set
size, the time and the row accounting; the samples are kept in
``<out>/rss.tsv`` (seconds since the start, MiB by kind and by program).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from ingest_overhead import generated  # noqa: E402

from pipelines.runs.summary import accounting_holds  # noqa: E402

_LIBC = ctypes.CDLL(None, use_errno=True)
_SYS_KCMP, _KCMP_VM = 312, 1  # x86-64


def shares_memory(pid: int, parent: int) -> bool:
    """Whether ``pid`` runs in its parent's memory: a child the JVM spawns (``posix_spawn``,
    vfork-like) before it becomes the command. /proc shows it with the whole JVM's resident
    memory, which summing would count twice (seen as 8 GiB peaks: the JVM forking ``chmod``)."""
    return bool(_LIBC.syscall(_SYS_KCMP, pid, parent, _KCMP_VM, 0, 0) == 0)


def pss(pid: int) -> int:
    """Proportional set size: resident memory with each shared page divided among its sharers."""
    for line in (Path("/proc") / str(pid) / "smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_rss_kinds(pid: int) -> dict[str, int]:
    """Resident memory of ``pid`` and its descendants by kind, from /proc/<pid>/status:
    ``anon`` (heaps, stacks: memory the processes own) and ``file`` (pages of mapped files,
    which the kernel can drop and read again: Spark maps the disk blocks it reads back), the
    whole resident memory by program (``java``, ``python``...), and ``pss``, the proportional
    set size of the tree. A child still running in its parent's memory is not counted again."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    kinds = {"anon": 0, "file": 0, "shmem": 0, "pss": 0}
    todo: list[tuple[int, int | None]] = [(pid, None)]  # a process and its parent in the tree
    while todo:
        current, parent = todo.pop()
        todo.extend((child, current) for child in children.get(current, []))
        with contextlib.suppress(OSError, IndexError, ValueError):  # a process that just ended
            if parent is not None and shares_memory(current, parent):
                continue
            kinds["pss"] += pss(current)
            program = ""
            for line in (Path("/proc") / str(current) / "status").read_text().splitlines():
                name, _, value = line.partition(":")
                kind = name.removeprefix("Rss").lower()
                if name == "Name":
                    program = value.strip()
                elif name.startswith("Rss") and kind in kinds:
                    size = int(value.split()[0]) * 1024
                    kinds[kind] += size
                    kinds[program] = kinds.get(program, 0) + size
    return kinds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=3072)
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "large_input")
    args = parser.parse_args()

    raw = args.out / f"raw-{args.mb}mb"
    generated(raw, args.mb, args.files)
    size = sum(p.stat().st_size for p in raw.glob("*.csv"))
    lake = args.out / "lake"
    shutil.rmtree(lake, ignore_errors=True)

    extra = os.environ.get("LAKESHARD_SPARK_CONF")  # a setting to try, kept
    conf = ";".join(filter(None, ["spark.driver.maxResultSize=64m", extra]))
    env = dict(os.environ, LAKESHARD_SPARK_CONF=conf)
    command = [
        sys.executable,
        "-m",
        "pipelines",
        "ingest",
        "events",
        str(raw / "*.csv"),
        "--lake",
        str(lake),
        "--schemas",
        str(ROOT / "schemas"),
        "--json",
    ]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    peak, peaks = 0, {"anon": 0, "file": 0, "shmem": 0, "pss": 0}
    timeline = (args.out / "rss.tsv").open("w")  # seconds, then MiB by kind and program
    while process.poll() is None:
        kinds = tree_rss_kinds(process.pid)
        shown = " ".join(f"{k}={v // 2**20}" for k, v in sorted(kinds.items()))
        print(f"{time.monotonic() - started:.1f}\t{shown}", file=timeline, flush=True)
        peak = max(peak, sum(kinds[kind] for kind in ("anon", "file", "shmem")))
        peaks = {kind: max(peaks.get(kind, 0), size) for kind, size in kinds.items()} | {
            kind: peaks[kind] for kind in peaks if kind not in kinds
        }
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    timeline.close()
    stdout = process.stdout.read() if process.stdout else ""
    if process.returncode != 0:
        print(f"large_input: ingest exited {process.returncode}", file=sys.stderr)
        return process.returncode
    summary = json.loads(stdout.strip().splitlines()[-1])
    result = {
        "bench": "large_input",
        "input_mb": round(size / 1e6, 1),
        "files": args.files,
        "rows_read": summary["rows_read"],
        "accounting_holds": accounting_holds(summary),
        "ingest_s": round(elapsed, 1),
        "mb_per_s": round(size / 1e6 / elapsed, 2),
        "peak_rss_mb": round(peak / 2**20),
        "peak_anon_mb": round(peaks["anon"] / 2**20),
        "peak_file_mb": round(peaks["file"] / 2**20),
        "peak_pss_mb": round(peaks["pss"] / 2**20),
        "peak_by_program_mb": {
            name: round(size / 2**20)
            for name, size in peaks.items()
            if name not in ("anon", "file", "shmem", "pss")
        },
        "spark_conf": conf,
        "driver_memory": os.environ.get("LAKESHARD_DRIVER_MEMORY", "4g"),
        "max_result_size": "64m",
    }
    print(
        f"large_input: {result['input_mb']} MB, {summary['rows_read']:,} rows in {elapsed:.0f}s "
        f"({result['mb_per_s']} MB/s); peak RSS of driver + JVM {result['peak_rss_mb']} MiB "
        f"(anonymous {result['peak_anon_mb']} MiB, mapped files {result['peak_file_mb']} MiB; "
        f"proportional set size {result['peak_pss_mb']} MiB; "
        f"by program {result['peak_by_program_mb']})"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
