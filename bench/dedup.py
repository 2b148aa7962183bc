"""Dedup cost: our content hash vs Spark's built-in hashes, and ingest time as the table grows.

    python bench/dedup.py [--sizes 1,10,30] [--batch-mb 48]

From one run (one SparkSession, local mode), prints:

(a) hashing cost per million rows of the same cached data (the ``events`` columns) for our
    128-bit content hash as ingest computes it (``lakeshard_content_hash``, the JVM expression;
    goal: at most 2x ``xxhash64``) and as the ``python`` engine does (the Arrow UDF), against
    Spark's ``xxhash64`` (64-bit, native) and ``sha2(…, 256)`` over the values joined as text
    (3M rows, ``--hash-rows``; the hashes taken in turn, best of three rounds);
(b) the time to ingest the same ~1M-row batch (generated ``events`` CSV) into tables that
    already hold 1M, 10M and 30M rows, and the ratio of the largest to the smallest (goal
    <= 1.3x). The base tables are generated directly (Spark, not through lakeshard), with
    random 16-byte values in ``_content_hash``: the lookup reads that column only, so its cost
    is the same as for real hashes, and generating 30M real hashes would only slow the bench;
(c) peak memory during each ingest: the JVM's peak resident set (in local mode the driver and
    its executor are one JVM) and peak heap, and the largest Python worker's peak RSS (the
    hash UDF runs there). Peaks are reset before each ingest (Linux /proc clear_refs).

These machines are noisy: compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest_overhead import generated  # noqa: E402
from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from pipelines.config import resolve_config  # noqa: E402
from pipelines.ingest import validate  # noqa: E402
from pipelines.ingest.run import run_ingest  # noqa: E402
from pipelines.lake import delta  # noqa: E402
from pipelines.schema import tables  # noqa: E402
from pipelines.schema.datasets import Dataset  # noqa: E402
from pipelines.schema.declarations import load_dataset  # noqa: E402
from pipelines.spark import get_spark  # noqa: E402

MILLION = 1_000_000


def _events(spark: SparkSession, rows: int, offset: int = 0) -> DataFrame:
    """``rows`` synthetic typed ``events`` rows (declared columns only)."""
    n = F.col("id") + offset
    return spark.range(rows).select(
        (n + 1_000_000_000).alias("event_id"),
        F.date_add(F.lit("2023-01-01").cast("date"), (n % 365).cast("int")).alias("event_date"),
        (n % 100_000).alias("user_id"),
        F.element_at(
            F.array(*[F.lit(k) for k in ("view", "cart", "buy")]), (n % 3 + 1).cast("int")
        ).alias("kind"),
        ((n % 100_000) / 100).cast("decimal(10,2)").alias("amount"),
        F.when(n % 2 == 0, F.array(F.lit("new"))).otherwise(F.array()).alias("tags"),
    )


def hashing_costs(spark: SparkSession, dataset: Dataset, rows: int) -> dict[str, float]:
    """Seconds per million rows for each hash over the same cached rows (best of three
    rounds)."""
    data = _events(spark, rows).cache()
    data.count()
    names = list(dataset.schema.names)
    typed = data.select(*[F.col(n).alias(validate.typed_col(i)) for i, n in enumerate(names)])
    frame = typed.withColumn(validate.REASON, F.lit(None).cast("string")).withColumn(
        validate.BLANK, F.lit(False)
    )

    # Each hash is consumed by a max() over its value: count() of a never-null expression is
    # count(*) to Spark's optimizer, which then skips computing it.
    def ours(engine: str) -> Callable[[], Any]:
        hashed = validate.with_content_hash(frame, dataset.schema, engine)
        return lambda: hashed.agg(F.max(F.octet_length(validate.CONTENT_HASH))).collect()

    joined = F.concat_ws("\u0001", *[F.col(n).cast("string") for n in names])
    hashes: dict[str, Callable[[], Any]] = {
        "lakeshard_xxh3_128": ours("jvm"),
        "lakeshard_xxh3_128_arrow_udf": ours("python"),
        "spark_xxhash64": lambda: data.agg(F.max(F.xxhash64(*names))).collect(),
        "spark_sha2_256": lambda: data.agg(F.max(F.sha2(joined, 256))).collect(),
    }
    # Rounds take the hashes in turn, so that a slow spell of the machine meets them all.
    best = dict.fromkeys(hashes, float("inf"))
    for _ in range(3):
        for name, action in hashes.items():
            best[name] = min(best[name], _timed(action))
    result = {name: round(spent * MILLION / rows, 3) for name, spent in best.items()}
    data.unpersist()
    return result


def _timed(action: Callable[[], Any]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def base_table(spark: SparkSession, dataset: Dataset, uri: str, rows: int) -> None:
    """A table of ``rows`` rows as lakeshard writes them, with random 16-byte hashes."""
    delta.ensure_table(
        spark, uri, tables.table_schema(dataset), dataset.partition_by, "bench base table"
    )
    frame = _events(spark, rows).select(
        "*",
        F.unhex(F.md5(F.col("event_id").cast("string"))).alias("_content_hash"),
        F.lit("bench://base").alias("_source_file"),
        F.lit("bench-base").alias("_run_id"),
        F.current_timestamp().alias("_ingested_at"),
    )
    # One file per partition value, as a real table with daily partitions would have.
    frame.repartition("event_date").write.format("delta").mode("append").save(uri)


class Memory:
    """Peak resident memory of the JVM and the Python workers, from /proc (Linux)."""

    def __init__(self, spark: SparkSession) -> None:
        jvm: Any = spark.sparkContext._jvm
        self.jvm = jvm
        self.pid = int(jvm.java.lang.ProcessHandle.current().pid())

    def reset(self) -> None:
        for pid in [self.pid, *self._workers()]:
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak RSS
        for pool in self.jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans():
            pool.resetPeakUsage()

    def peaks(self) -> dict[str, float]:
        heap = sum(
            pool.getPeakUsage().getUsed()
            for pool in self.jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans()
            if str(pool.getType().toString()) == "Heap memory"
        )
        workers = [_hwm(pid) for pid in self._workers()]
        return {
            "jvm_peak_rss_mib": round(_hwm(self.pid) / 1024, 1),
            "jvm_peak_heap_mib": round(heap / 2**20, 1),
            "python_worker_peak_rss_mib": round(max(workers, default=0) / 1024, 1),
            "python_workers": len(workers),
        }

    def _workers(self) -> list[int]:
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"pyspark.daemon" in cmdline or b"pyspark.worker" in cmdline:
                found.append(int(proc.name))
        return found


def _hwm(pid: int) -> int:
    """Peak resident set size of a process in KiB (VmHWM), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,30", help="table sizes in millions of rows")
    parser.add_argument("--batch-mb", type=int, default=48, help="batch size (~1M rows at 48)")
    parser.add_argument("--hash-rows", type=int, default=3 * MILLION)
    parser.add_argument("--hash-only", action="store_true", help="measure (a) only")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "dedup")
    args = parser.parse_args()
    sizes = [int(float(s) * MILLION) for s in args.sizes.split(",")]

    raw = args.out / f"batch-{args.batch_mb}mb"
    batch_rows = generated(raw, args.batch_mb, 4)
    spark = get_spark("local[*]")
    dataset = load_dataset(ROOT / "schemas", "events")
    memory = Memory(spark)

    costs = hashing_costs(spark, dataset, args.hash_rows)
    print(
        "hashing, s per 1M rows: "
        + ", ".join(f"{k} {v}" for k, v in costs.items())
        + f"\n  content hash (JVM) / xxhash64: "
        f"{costs['lakeshard_xxh3_128'] / costs['spark_xxhash64']:.2f}x (goal <= 2x); "
        f"Arrow UDF / xxhash64: "
        f"{costs['lakeshard_xxh3_128_arrow_udf'] / costs['spark_xxhash64']:.2f}x",
        flush=True,
    )
    if args.hash_only:
        print(json.dumps({"bench": "dedup", "hash_s_per_million": costs}))
        return 0

    # A first ingest warms the JVM (JIT, class loading) so that no measured run pays for it.
    warm = resolve_config(lake=str(args.out / "lake-warmup"), schemas=str(ROOT / "schemas"))
    shutil.rmtree(args.out / "lake-warmup", ignore_errors=True)
    run_ingest(spark, warm, dataset, [str(raw / "*.csv")])
    shutil.rmtree(args.out / "lake-warmup", ignore_errors=True)

    runs = []
    for size in sizes:
        lake_dir = args.out / f"lake-{size // MILLION}m"
        shutil.rmtree(lake_dir, ignore_errors=True)
        settings = resolve_config(lake=str(lake_dir), schemas=str(ROOT / "schemas"))
        started = time.monotonic()
        base_table(spark, dataset, settings.table_uri("events"), size)
        built = time.monotonic() - started
        memory.reset()
        started = time.monotonic()
        summary = run_ingest(spark, settings, dataset, [str(raw / "*.csv")])
        took = time.monotonic() - started
        run = {
            "table_rows": size,
            "base_build_s": round(built, 1),
            "ingest_s": round(took, 1),
            "rows_read": summary.rows_read,
            "rows_written": summary.rows_written,
            "rows_duplicate": summary.rows_duplicate,
            **memory.peaks(),
        }
        runs.append(run)
        print(f"ingest into {size:,} rows: {json.dumps(run)}", flush=True)
        shutil.rmtree(lake_dir, ignore_errors=True)

    ratio = runs[-1]["ingest_s"] / runs[0]["ingest_s"]
    result = {
        "bench": "dedup",
        "batch_rows": batch_rows,
        "hash_s_per_million": costs,
        "ingest": runs,
        "ratio_largest_to_smallest": round(ratio, 2),
        "goal_ratio": 1.3,
        "spark_master": spark.sparkContext.master,
        "cores": spark.sparkContext.defaultParallelism,
    }
    print(
        f"dedup: ingest of {batch_rows:,} rows into {sizes[0]:,} vs {sizes[-1]:,} rows: "
        f"{runs[0]['ingest_s']}s vs {runs[-1]['ingest_s']}s, ratio {ratio:.2f}x (goal <= 1.3x)"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
