"""A full scan of a table of many small files, before and after ``lakeshard maintain``.

    python bench/maintain.py [--files 200] [--rows 200000]

Ingests ``--rows`` generated ``events`` rows once, then rewrites the table's rows as ``--files``
small files (one Delta overwrite: the shape many small runs leave), and times a full scan (Spark:
``count`` over every column; delta-rs: ``to_pyarrow_table``) before and after ``maintain``, in the
same process. Prints the file counts and the scan-time ratios (after / before; lower is better).
These machines are noisy: compare ratios, not times.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import deltalake
from pyspark.sql import functions as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ledger import median_time  # noqa: E402
from pipelines import sample  # noqa: E402
from pipelines.config import resolve_config  # noqa: E402
from pipelines.ingest.run import run_ingest  # noqa: E402
from pipelines.lake import deltalog  # noqa: E402
from pipelines.ops import maintain  # noqa: E402
from pipelines.schema.declarations import load_dataset  # noqa: E402
from pipelines.spark import get_spark  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="maintain-"))
    sample.write_events(work / "raw", files=4, rows=args.rows // 4)
    spark = get_spark("local[*]")
    settings = resolve_config(lake=str(work / "lake"), schemas=str(ROOT / "schemas"))
    dataset = load_dataset(settings.schemas, "events")
    run_ingest(spark, settings, dataset, [str(work / "raw")])
    uri = settings.table_uri(dataset.name)
    rows = spark.read.format("delta").load(uri)
    days = rows.select(*dataset.partition_by).distinct().count()
    salted = rows.withColumn("_salt", F.floor(F.rand(seed=1) * max(1, args.files // days)))
    # The rows again, in about --files small files: one per (partition, salt) pair.
    salted.repartition(args.files, *dataset.partition_by, "_salt").drop("_salt").write.format(
        "delta"
    ).mode("overwrite").partitionBy(*dataset.partition_by).save(uri)

    def spark_scan() -> int:
        table = spark.read.format("delta").load(uri)
        found = table.select(F.sum(F.xxhash64(*table.columns) % 1000)).first()  # every column
        return 0 if found is None else int(found[0] or 0)

    def rust_scan() -> int:
        return int(deltalake.DeltaTable(uri).to_pyarrow_table().num_rows)

    before = deltalog.data_files(uri)
    assert before is not None
    spark_scan()  # warm
    spark_before, rust_before = median_time(spark_scan), median_time(rust_scan)
    report = maintain.maintain(spark, settings, dataset, wait_s=0, ttl_s=300)
    after = deltalog.data_files(uri)
    assert after is not None
    spark_after, rust_after = median_time(spark_scan), median_time(rust_scan)
    result = {
        "bench": "maintain",
        "rows": rust_scan(),
        "files_before": len(before.files),
        "files_after": len(after.files),
        "maintain_s": report["seconds"],
        "spark_scan_ratio": round(spark_after / spark_before, 2),
        "deltars_scan_ratio": round(rust_after / rust_before, 2),
    }
    print(
        f"maintain: {result['rows']:,} rows in {result['files_before']} files -> "
        f"{result['files_after']} files in {report['seconds']:.1f}s; full scan after / before: "
        f"Spark {result['spark_scan_ratio']}x ({spark_before:.2f}s -> {spark_after:.2f}s), "
        f"delta-rs {result['deltars_scan_ratio']}x ({rust_before:.2f}s -> {rust_after:.2f}s)"
    )
    print(json.dumps(result))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
