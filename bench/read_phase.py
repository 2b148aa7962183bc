"""Where the governed ingest's read phase goes: the same input taken one step further each pass.

    python bench/read_phase.py [--mb 1024]

Uses the CSV that ``bench/ingest_overhead.py`` generates (and generates it where missing). Each
pass runs its frame to Spark's ``noop`` sink (every column computed, nothing written), except the
last, which is the read phase itself (the frame persisted on local disk, then counted per split):

1. the bare read: ``spark.read.csv`` with the declared scalar types;
2. lakeshard's raw frame: every field as text, the raw record, the file and row locators;
3. + typed values and drift (``validate.with_typed_values``);
4. + the named row rules (``validate.with_rules``);
5. + the content hash (``validate.with_content_hash``);
6. + persisted ``DISK_ONLY`` and counted per split (``write.first_counts``): the read phase.

Each step's cost is its time minus the step before (same run, same session); the ratios to the
bare read are what to compare between machines.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest_overhead import flat_schema, generated, input_arguments  # noqa: E402

from pipelines.config import resolve_config  # noqa: E402
from pipelines.ingest import reading, validate  # noqa: E402
from pipelines.ingest.write import first_counts  # noqa: E402
from pipelines.schema.declarations import load_dataset  # noqa: E402
from pipelines.spark import get_spark  # noqa: E402


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def main() -> int:
    args = input_arguments(__doc__.splitlines()[0])
    raw = args.out / f"raw-{args.mb}mb"
    rows = generated(raw, args.mb, args.files)
    files = sorted(str(p) for p in raw.glob("*.csv"))
    spark = get_spark("local[*]")
    dataset = load_dataset(ROOT / "schemas", "events")
    config = resolve_config(lake=str(args.out / "lake"), schemas=str(ROOT / "schemas"))
    flat = flat_schema(dataset)

    def noop(frame: DataFrame) -> None:
        frame.write.format("noop").mode("overwrite").save()

    raw_frame = reading.read_raw(spark, dataset, files)
    typed = validate.with_typed_values(raw_frame, dataset)
    ruled = validate.with_rules(typed, dataset, None)
    hashed = validate.with_content_hash(ruled, dataset.schema, config.spark.hash_engine)

    def read_phase() -> None:
        persisted = hashed.persist(StorageLevel.DISK_ONLY)
        first_counts(persisted, dataset)
        persisted.unpersist()

    steps: list[tuple[str, Callable[[], object]]] = [
        (
            "bare typed read",
            lambda: noop(spark.read.schema(flat).option("header", True).csv(files)),
        ),
        ("raw frame (text + locators)", lambda: noop(raw_frame)),
        ("+ typed values, drift", lambda: noop(typed)),
        ("+ row rules", lambda: noop(ruled)),
        ("+ content hash", lambda: noop(hashed)),
        ("+ persist DISK_ONLY, counts", read_phase),
    ]
    noop(spark.read.text(files))  # warm the page cache and the JVM before the first timing
    seconds = {name: timed(action) for name, action in steps}
    bare = seconds["bare typed read"]
    print(f"read_phase: {rows:,} rows, {args.mb} MB, {spark.sparkContext.defaultParallelism} cores")
    print(f"  {'step':<30}{'seconds':>9}{'added':>9}{'/ bare':>8}")
    before = 0.0
    for name, spent in seconds.items():
        print(f"  {name:<30}{spent:>9.1f}{spent - before:>9.1f}{spent / bare:>7.2f}x")
        before = spent
    print(json.dumps({"bench": "read_phase", "rows": rows, "mb": args.mb, "seconds": seconds}))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
