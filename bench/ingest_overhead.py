"""Governed ingest vs two baselines on the same generated input, one run, one SparkSession.

    python bench/ingest_overhead.py [--mb 1024] [--files 8]

Generates ``--mb`` of ``events`` CSV (with the usual mess: ~3% duplicates, ~1% bad rows), then
times:

(a) the bare copy: ``spark.read.csv(schema) -> write.parquet(zstd)``;
(b) the job a user would write by hand instead: read with the schema, parse ``tags``,
    ``dropDuplicates`` over all columns, ``left_anti`` against the table's rows, partitioned
    Delta append (into an empty table made first, as the governed run's is);
(c) a full ``lakeshard ingest`` (inspect + parse + validate + hash + dedup + quarantine + Delta
    commit + ledger + run log) into a fresh lake;

and prints c / a (goal <= 1.5x) and c / b (goal <= 1.0x), with the governed run's own phase
table (``phases_s`` of its summary). These machines are noisy: compare ratios, not times.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.config import resolve_config  # noqa: E402
from pipelines.ingest.run import run_ingest  # noqa: E402
from pipelines.schema.datasets import Dataset  # noqa: E402
from pipelines.schema.declarations import load_dataset  # noqa: E402
from pipelines.spark import get_spark  # noqa: E402

HEADER = "event_id,event_date,user_id,kind,amount,tags\n"
KINDS = np.array(["view", "cart", "buy", "refund"])
TAGS = np.array(["[]", '"[""new""]"', '"[""promo"",""mobile""]"'])


def generate(folder: Path, megabytes: int, files: int, seed: int = 1) -> int:
    """Write ``files`` CSV files totalling about ``megabytes``; return the number of rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bytes_per_row = 48
    rows_per_file = megabytes * 1_000_000 // bytes_per_row // files
    total = 0
    for n in range(files):
        ids = np.arange(total, total + rows_per_file) + 1
        dup = rng.random(rows_per_file) < 0.03
        ids[dup] = rng.integers(1, max(2, total + 1), dup.sum())  # some rows repeat earlier ids
        days = np.char.add(
            "2024-01-", np.char.zfill(rng.integers(1, 29, rows_per_file).astype(str), 2)
        )
        users = rng.integers(1, 100_000, rows_per_file).astype(str)
        bad = rng.random(rows_per_file) < 0.01
        users[bad] = "oops"
        amounts = np.char.mod("%.2f", rng.integers(1, 100_000, rows_per_file) / 100)
        kinds = KINDS[rng.integers(0, len(KINDS), rows_per_file)]
        tags = TAGS[rng.integers(0, len(TAGS), rows_per_file)]
        # A duplicated id carries the same values as its first occurrence would not; make the
        # repeats exact copies of a fixed row so that they are content duplicates.
        users[dup], amounts[dup], kinds[dup], tags[dup] = "7", "1.00", "view", "[]"
        days[dup] = "2024-01-01"
        ids[dup] = 1
        lines = [
            ",".join(cols)
            for cols in zip(ids.astype(str), days, users, kinds, amounts, tags, strict=True)
        ]
        (folder / f"events-{n:03d}.csv").write_text(HEADER + "\n".join(lines) + "\n")
        total += rows_per_file
    return total


def generated(raw: Path, megabytes: int, files: int) -> int:
    """The input in ``raw``, generated once and reused by later runs; its number of rows."""
    ready = raw / "_READY"
    if not ready.exists():
        shutil.rmtree(raw, ignore_errors=True)
        started = time.monotonic()
        rows = generate(raw, megabytes, files)
        ready.write_text(str(rows))
        print(f"generated {rows:,} rows in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return int(ready.read_text())


def hand_written(spark: SparkSession, flat: T.StructType, raw: Path, table: Path) -> None:
    """What a user writes instead of lakeshard: no quarantine, no accounting, no ledger."""
    rows = (
        spark.read.schema(flat)
        .option("header", True)
        .csv(str(raw / "*.csv"))
        .withColumn("tags", F.from_json("tags", "array<string>"))
        .dropDuplicates()
    )
    existing: DataFrame = spark.read.format("delta").load(str(table))
    new = rows.join(existing, on=rows.columns, how="left_anti")
    new.write.format("delta").mode("append").partitionBy("event_date").save(str(table))


def phase_table(phases: dict[str, float], total: float) -> str:
    """The governed run's phases as text lines: seconds and share of the whole run."""
    lines = [f"  {'phase':<12}{'seconds':>9}{'share':>8}"]
    for name, seconds in phases.items():
        lines.append(f"  {name:<12}{seconds:>9.1f}{seconds / total:>8.0%}")
    rest = total - sum(phases.values())
    lines.append(f"  {'(other)':<12}{rest:>9.1f}{rest / total:>8.0%}")
    return "\n".join(lines)


def input_arguments(description: str) -> argparse.Namespace:
    """``--mb``, ``--files`` and ``--out`` of the generated input (shared by bench/read_phase)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "ingest_overhead")
    return parser.parse_args()


def flat_schema(dataset: Dataset) -> T.StructType:
    """What the bare copy reads: the declared scalar types; CSV has no array type, so an array
    column (``tags``) stays text."""
    return T.StructType(
        [
            T.StructField(
                f.name, T.StringType() if isinstance(f.dataType, T.ArrayType) else f.dataType
            )
            for f in dataset.schema.struct().fields
        ]
    )


def main() -> int:
    args = input_arguments(__doc__.splitlines()[0])
    raw = args.out / f"raw-{args.mb}mb"
    rows = generated(raw, args.mb, args.files)
    size = sum(p.stat().st_size for p in raw.glob("*.csv"))

    spark = get_spark("local[*]")
    dataset = load_dataset(ROOT / "schemas", "events")
    for target in ("baseline", "lake", "hand"):
        shutil.rmtree(args.out / target, ignore_errors=True)

    flat = flat_schema(dataset)
    t = time.monotonic()
    (
        spark.read.schema(flat)
        .option("header", True)
        .csv(str(raw / "*.csv"))
        .write.option("compression", "zstd")
        .mode("overwrite")
        .parquet(str(args.out / "baseline"))
    )
    baseline = time.monotonic() - t

    hand_schema = T.StructType(
        [
            T.StructField(f.name, T.ArrayType(T.StringType()) if f.name == "tags" else f.dataType)
            for f in flat.fields
        ]
    )
    spark.createDataFrame([], hand_schema).write.format("delta").partitionBy("event_date").save(
        str(args.out / "hand")
    )
    t = time.monotonic()
    hand_written(spark, flat, raw, args.out / "hand")
    hand = time.monotonic() - t

    settings = resolve_config(lake=str(args.out / "lake"), schemas=str(ROOT / "schemas"))
    t = time.monotonic()
    summary = run_ingest(spark, settings, dataset, [str(raw / "*.csv")])
    governed = time.monotonic() - t

    result = {
        "bench": "ingest_overhead",
        "input_mb": round(size / 1e6, 1),
        "rows": rows,
        "baseline_csv_to_parquet_s": round(baseline, 1),
        "governed_ingest_s": round(governed, 1),
        "hand_written_job_s": round(hand, 1),
        "ratio": round(governed / baseline, 2),
        "goal_ratio": 1.5,
        "ratio_vs_hand_written": round(governed / hand, 2),
        "goal_ratio_vs_hand_written": 1.0,
        "phases_s": summary.extra.get("phases_s", {}),
        "rows_written": summary.rows_written,
        "rows_duplicate": summary.rows_duplicate,
        "rows_quarantined": summary.rows_quarantined,
        "spark_master": spark.sparkContext.master,
        "cores": spark.sparkContext.defaultParallelism,
    }
    print(
        f"ingest_overhead: {result['input_mb']} MB, {rows:,} rows: bare copy {baseline:.1f}s, "
        f"hand-written job {hand:.1f}s, governed {governed:.1f}s\n"
        f"  governed / bare copy: {governed / baseline:.2f}x (goal <= 1.5x)\n"
        f"  governed / hand-written job: {governed / hand:.2f}x (goal <= 1.0x)\n"
        + phase_table(result["phases_s"], governed)
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
