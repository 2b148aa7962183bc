"""One big CSV file against the same rows in 16 files, through the governed ingest, one run.

    python bench/csv_split.py [--mb 2048]

Generates ``--mb`` of ``events`` CSV in 16 files (the ``ingest_overhead`` generator) and the same
rows as one file (one header), then ingests each into a fresh lake in one SparkSession (after a
small warm-up ingest) and prints the ratio one file / 16 files (goal <= 1.3x). A file whose
every line is a record is read in parallel splits (README, "Declaring a dataset"); before that,
Spark's multiLine CSV parser read a file in one task, so one big file used one core.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from ingest_overhead import generated  # noqa: E402

from pipelines.config import resolve_config  # noqa: E402
from pipelines.ingest.run import run_ingest  # noqa: E402
from pipelines.schema.declarations import load_dataset  # noqa: E402
from pipelines.spark import get_spark  # noqa: E402


def one_file(parts: Path, target: Path) -> None:
    """The 16 files' rows as one CSV file with one header (made once, then reused)."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for n, part in enumerate(sorted(parts.glob("*.csv"))):
            with part.open("rb") as source:
                header = source.readline()
                if n == 0:
                    out.write(header)
                shutil.copyfileobj(source, out, 2**22)
    partial.rename(target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "csv_split")
    args = parser.parse_args()

    parts = args.out / f"raw-{args.mb}mb-16"
    rows = generated(parts, args.mb, 16)
    single = args.out / f"raw-{args.mb}mb-1" / "events.csv"
    one_file(parts, single)
    warm = args.out / f"raw-{args.mb}mb-1-warm"
    if not warm.exists():
        warm.mkdir(parents=True)
        with single.open("rb") as source, (warm / "warm.csv").open("wb") as out:
            out.write(b"".join(source.readline() for _ in range(20_000)))

    spark = get_spark("local[*]")
    dataset = load_dataset(ROOT / "schemas", "events")
    times: dict[str, float] = {}
    for name, source in (("warm-up", warm), ("16 files", parts), ("one file", single.parent)):
        lake = args.out / "lake"
        shutil.rmtree(lake, ignore_errors=True)
        settings = resolve_config(lake=str(lake), schemas=str(ROOT / "schemas"))
        started = time.monotonic()
        summary = run_ingest(spark, settings, dataset, [str(source / "*.csv")])
        times[name] = time.monotonic() - started
        if name != "warm-up":
            assert summary.rows_read == rows, (name, summary.rows_read, rows)
    ratio = times["one file"] / times["16 files"]
    result = {
        "bench": "csv_split",
        "input_mb": round(single.stat().st_size / 1e6, 1),
        "rows": rows,
        "sixteen_files_s": round(times["16 files"], 1),
        "one_file_s": round(times["one file"], 1),
        "ratio": round(ratio, 2),
        "goal_ratio": 1.3,
        "cores": spark.sparkContext.defaultParallelism,
    }
    print(
        f"csv_split: {result['input_mb']} MB, {rows:,} rows: 16 files {times['16 files']:.1f}s, "
        f"one file {times['one file']:.1f}s, ratio {ratio:.2f}x (goal <= 1.3x)"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
