"""The cost of governance, one table from one run: every measure of issue 13 with its goal.

    python bench/report.py [--scale 1.0]

Runs the benchmarks (each against a baseline measured in the same run) as separate processes
and prints one row per measure: what was measured, the ratio (or figure), its goal, and whether
it is met. ``--scale`` shrinks every generated input (0.25: a quarter) for a quicker look; the
goals are stated for scale 1. Each script's own output is kept in ``bench/out/report.log``.

| measure | script |
| --- | --- |
| governed ingest / bare CSV->Parquet copy; / hand-written job (1 GB) | ingest_overhead.py |
| content hash / Spark's xxhash64, per 1M rows | dedup.py --hash-only |
| 3.2 GB at the default driver memory: peak RSS, and the peak at twice the input | large_input.py |
| one 2 GB CSV file / the same rows in 16 files | csv_split.py |
| first events run of the demo (1,200 rows), the run's own time | here |
| a rerun with nothing new / starting and stopping a bare SparkSession (whole processes) | here |
| rerun over 10,000 known files on S3 / Spark's listing alone | ledger.py --where s3 |
| 2.0 M rows in 6 CSV files: whole ingest process / whole bare-copy process | here |
| bytes fetched from the S3 server / input bytes, for an ingest on S3 | s3_bytes.py |
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines import sample  # noqa: E402

LOG = ROOT / "bench" / "out" / "report.log"
Row = tuple[str, str, str, bool | None]  # measure, measured, goal, met (None: not measured)
DETAILS: list[str] = []  # what the parts found about where the time goes, printed after the table


def run(*args: str, env: dict[str, str] | None = None) -> tuple[float, dict[str, Any]]:
    """Run a command (Python, from the repository root); its wall time and last JSON line."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("a") as log:
        log.write(f"$ {' '.join(args)} ({elapsed:.1f}s, exit {done.returncode})\n")
        log.write(done.stdout + done.stderr + "\n")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode} (see {LOG})")
    last = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return elapsed, json.loads(last[-1]) if last else {}


def row(measure: str, value: float, goal: float, unit: str = "x", at_most: bool = True) -> Row:
    met = value <= goal if at_most else value >= goal
    sign = "<=" if at_most else ">="
    return measure, f"{value:.2f}{unit}", f"{sign} {goal:g}{unit}", met


def ingest_overhead(scale: float) -> list[Row]:
    _, out = run("bench/ingest_overhead.py", "--mb", str(max(16, int(1024 * scale))))
    size = f"{out['input_mb']:,.0f} MB CSV"
    governed = out["governed_ingest_s"]
    DETAILS.append(
        f"governed ingest of {size}: {governed:.1f} s (bare copy {out['baseline_csv_to_parquet_s']}"
        f" s, hand-written job {out['hand_written_job_s']} s); its phases:"
    )
    for phase, seconds in out["phases_s"].items():
        DETAILS.append(f"  {phase:<12}{seconds:>8.1f} s{seconds / governed:>6.0%}")
    return [
        row(f"governed ingest / bare CSV->Parquet copy ({size})", out["ratio"], 1.5),
        row(f"governed ingest / hand-written job ({size})", out["ratio_vs_hand_written"], 1.0),
    ]


def hashing(scale: float) -> list[Row]:
    # 3M rows: at 1M a query's fixed cost (planning, the job) was half of xxhash64's time.
    rows = str(int(3e6 * max(scale, 0.5)))
    _, out = run("bench/dedup.py", "--hash-only", "--hash-rows", rows)
    costs = out["hash_s_per_million"]
    ratio = costs["lakeshard_xxh3_128"] / costs["spark_xxhash64"]
    return [row("content hash (JVM) / Spark's xxhash64, per 1M rows", ratio, 2.0)]


def large(scale: float) -> list[Row]:
    env = {k: v for k, v in os.environ.items() if k != "LAKESHARD_DRIVER_MEMORY"}
    mb = max(64, int(3072 * scale))
    rows: list[Row] = []
    peaks = []
    for size in (mb, 2 * mb):
        try:
            _, out = run("bench/large_input.py", "--mb", str(size), env=env)
        except RuntimeError as exc:
            return [
                (f"{size:,} MB CSV at the default driver memory (4g)", str(exc), "passes", False)
            ]
        peaks.append(out["peak_rss_mb"] / 1024)
        DETAILS.append(
            f"{out['input_mb']:,.0f} MB at 4g: {out['mb_per_s']} MB/s, peak PSS "
            f"{out['peak_pss_mb']} MiB, peak by program "
            f"{out['peak_by_program_mb']} MiB, mapped files {out['peak_file_mb']} MiB"
        )
        rows.append(
            row(
                f"{out['input_mb']:,.0f} MB CSV at 4g: peak RSS of the process tree",
                peaks[-1],
                8.0,
                " GiB",
            )
        )
    rows.append(row("peak RSS at twice the input / at the input", peaks[1] / peaks[0], 1.1))
    return rows


def csv_split(scale: float) -> list[Row]:
    _, out = run("bench/csv_split.py", "--mb", str(max(32, int(2048 * scale))))
    return [row(f"one {out['input_mb']:,.0f} MB CSV file / 16 files", out["ratio"], 1.3)]


def fixed_costs(scale: float) -> list[Row]:
    work = Path(tempfile.mkdtemp(prefix="report-"))
    try:
        stats = sample.write_events(work / "raw")
        ingest = [
            "-m",
            "pipelines",
            "ingest",
            "events",
            str(work / "raw"),
            "--lake",
            str(work / "lake"),
            "--schemas",
            str(ROOT / "schemas"),
            "--json",
        ]
        _, first = run(*ingest)
        own = sum(first["phases_s"].values())
        rerun_s, again = run(*ingest)
        assert again["rows_read"] == 0, again
        bare = "from pipelines.spark import get_spark; get_spark('local[*]').stop()"
        bare_s, _ = run("-c", bare)
        return [
            row(
                f"demo's first events run ({stats.lines:,} rows): the run's own time", own, 10, " s"
            ),
            row("rerun with nothing new / bare SparkSession start+stop", rerun_s / bare_s, 1.5),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ledger(scale: float) -> list[Row]:
    files = max(500, int(10_000 * scale))
    _, out = run("bench/ledger.py", "--where", "s3", "--files", str(files))
    s3 = next(r for r in out["results"] if r["where"] == "s3")
    return [row(f"rerun over {files:,} known files on S3 / Spark's listing", s3["ratio"], 5.0)]


def whole_process(scale: float) -> list[Row]:
    """Whole processes, as a user times them: ``lakeshard ingest`` vs a script that starts
    Spark, copies the same CSV files to Parquet (all columns as strings) and stops."""
    work = Path(tempfile.mkdtemp(prefix="report-"))
    try:
        stats = sample.write_events(work / "raw", files=6, rows=int(2_000_000 * scale) // 6)
        megabytes = sum(p.stat().st_size for p in (work / "raw").iterdir()) / 1e6
        ingest_s, out = run(
            "-m", "pipelines", "ingest", "events", str(work / "raw"), "--lake",
            str(work / "lake"), "--schemas", str(ROOT / "schemas"), "--json",
        )  # fmt: skip
        assert out["rows_read"] == stats.lines, out
        bare = (
            "from pipelines.spark import get_spark; s = get_spark('local[*]'); "
            f"s.read.csv({str(work / 'raw')!r}, header=True).write"
            f".option('compression', 'zstd').parquet({str(work / 'bare')!r}); s.stop()"
        )
        bare_s, _ = run("-c", bare)
        measure = f"{stats.lines / 1e6:.1f} M rows ({megabytes:,.0f} MB CSV, 6 files)"
        return [row(f"{measure}: whole ingest / whole bare copy", ingest_s / bare_s, 2.0)]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def s3_bytes(scale: float) -> list[Row]:
    _, out = run("bench/s3_bytes.py", "--rows", str(int(250_000 * scale)), "--files", "4")
    size = f"{out['input_bytes'] / 1e6:,.0f} MB"
    return [
        row(
            f"bytes fetched from S3 / input bytes ({size} on S3)",
            out["fetched_per_input_byte"],
            2.0,
        )
    ]


PARTS: dict[str, Callable[[float], list[Row]]] = {
    "ingest_overhead": ingest_overhead,
    "hashing": hashing,
    "csv_split": csv_split,
    "fixed_costs": fixed_costs,
    "ledger": ledger,
    "whole_process": whole_process,
    "s3_bytes": s3_bytes,
    "large": large,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="input sizes x this (default 1)")
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    args = parser.parse_args()
    LOG.unlink(missing_ok=True)
    rows: list[Row] = []
    for name in args.only.split(","):
        started = time.monotonic()
        try:
            rows += PARTS[name](args.scale)
        except Exception as exc:  # one failing part still leaves the others' rows
            rows.append((name, f"failed: {exc}", "", False))
        print(f"report: {name} took {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'measured':>12}  {'goal':>10}  met")
    for measure, measured, goal, met in rows:
        verdict = "-" if met is None else ("yes" if met else "NO")
        print(f"{measure:<{width}}  {measured:>12}  {goal:>10}  {verdict}")
    if DETAILS:
        print("\n" + "\n".join(DETAILS))
    print(json.dumps({"bench": "report", "scale": args.scale, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
