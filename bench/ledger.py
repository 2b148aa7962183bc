"""Re-running ingest over many small files already ingested: the ledger's cost per file.

    python bench/ledger.py [--files 10000] [--where local,s3]

For each place (a local folder, and a real S3 server on loopback started here), writes
``--files`` small JSON-lines files, ingests them once, then times, in the same SparkSession:
(a) listing the same files with Spark alone (the file index a ``spark.read`` builds), and
(b) a full re-run of ``lakeshard ingest`` over them, every file already in the ledger (lease,
listing, one batch ledger lookup, run log). Prints the time per file and the ratio b / a.
These machines are noisy: compare ratios, not times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pyspark.sql import SparkSession

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.s3 import server as s3_server  # noqa: E402
from pipelines.config import resolve_config  # noqa: E402
from pipelines.ingest.run import run_ingest  # noqa: E402
from pipelines.schema.declarations import load_dataset  # noqa: E402
from pipelines.spark import get_spark, s3a_options  # noqa: E402
from pipelines.storage.s3 import s3_client  # noqa: E402


def write_files(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        lines = "".join(
            json.dumps({"click_id": f"c{n}-{k}", "day": "2024-05-01", "position": k}) + "\n"
            for k in range(2)
        )
        (folder / f"part-{n:06d}.jsonl").write_text(lines)


def upload(folder: Path, bucket: str, prefix: str) -> None:
    client = s3_client()
    paths = sorted(folder.iterdir())
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: client.upload_file(str(p), bucket, f"{prefix}/{p.name}"), paths))


def median_time(action: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.monotonic()
        action()
        times.append(time.monotonic() - start)
    return statistics.median(times)


def measure(spark: SparkSession, where: str, raw: str, lake: str, files: int) -> dict[str, object]:
    settings = resolve_config(lake=lake, schemas=str(ROOT / "schemas"))
    dataset = load_dataset(settings.schemas, "clicks")
    start = time.monotonic()
    first = run_ingest(spark, settings, dataset, [raw])
    first_s = time.monotonic() - start
    if first.extra["files_ingested"] != files:
        raise SystemExit(f"expected {files} files ingested, got {first.as_json()}")

    def listing() -> int:
        return len(spark.read.format("text").load(raw).inputFiles())

    phases: dict[str, float] = {}

    def rerun() -> None:
        summary = run_ingest(spark, settings, dataset, [raw])
        if summary.files_skipped != files or summary.rows_read:
            raise SystemExit(f"expected every file skipped, got {summary.as_json()}")
        phases.update(summary.extra.get("phases_s", {}))  # the last rerun's

    rerun()  # warm: the same caches a cron rerun would find
    listing_s = median_time(listing)
    rerun_s = median_time(rerun)
    result = {
        "where": where,
        "files": files,
        "first_ingest_s": round(first_s, 1),
        "spark_listing_s": round(listing_s, 2),
        "rerun_s": round(rerun_s, 2),
        "rerun_ms_per_file": round(1000 * rerun_s / files, 3),
        "listing_ms_per_file": round(1000 * listing_s / files, 3),
        "ratio": round(rerun_s / listing_s, 2),
        "rerun_phases_s": phases,
    }
    print(
        f"ledger[{where}]: {files:,} files already ingested: rerun {rerun_s:.2f}s "
        f"({result['rerun_ms_per_file']} ms/file) vs Spark listing {listing_s:.2f}s "
        f"({result['listing_ms_per_file']} ms/file): ratio {rerun_s / listing_s:.2f}x "
        f"(first ingest {first_s:.1f}s); the rerun's phases: {phases}",
        flush=True,
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--where", default="local,s3", help="local, s3 or both (comma-separated)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "ledger")
    args = parser.parse_args()
    places = args.where.split(",")
    work = Path(
        tempfile.mkdtemp(
            prefix="ledger-", dir=args.out.parent if args.out.parent.exists() else None
        )
    )
    raw = work / "raw"
    write_files(raw, args.files)
    spark = get_spark("local[2]")
    results = []
    if "local" in places:
        results.append(measure(spark, "local", str(raw), str(work / "lake"), args.files))
    if "s3" in places:
        state = work / "s3"
        info = s3_server.start(
            state, ["raw", "lake"], os.environ.get("LAKESHARD_S3_SERVER", "seaweedfs")
        )
        try:
            os.environ.update(info)
            conf = spark.sparkContext._jsc.hadoopConfiguration()
            for key, value in s3a_options().items():
                conf.set(key, value)
            upload(raw, "raw", "bench")
            results.append(measure(spark, "s3", "s3a://raw/bench/", "s3a://lake/bench", args.files))
        finally:
            s3_server.stop(state)
    print(json.dumps({"bench": "ledger", "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
