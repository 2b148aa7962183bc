"""The cost of ``evolution: portable``: rewriting a table once under a new schema version.

    python bench/evolution.py [--rows 1000000]

Ingests ``--rows`` generated ``events`` rows, then declares a ``v2`` that renames ``kind`` to
``event_kind`` and widens ``amount`` from decimal(10,2) to decimal(18,2), and runs the rewrite
that an ingest under ``v2`` would make (the same plan and the same Delta overwrite), in the same
process as its baseline: a plain Spark copy of the table (read it, write it as a partitioned,
zstd Delta table elsewhere). Prints rows/s of the rewrite and the ratio rewrite / plain copy
(lower is better; 1.0 would mean the rewrite costs no more than copying the table). These
machines are noisy: compare ratios, not times.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines import sample  # noqa: E402
from pipelines.config import resolve_config  # noqa: E402
from pipelines.ingest.run import run_ingest  # noqa: E402
from pipelines.lake import delta, deltalog  # noqa: E402
from pipelines.schema import evolution  # noqa: E402
from pipelines.schema.declarations import load_dataset  # noqa: E402
from pipelines.spark import get_spark  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evolution-"))
    schemas = work / "schemas"
    shutil.copytree(ROOT / "schemas" / "events", schemas / "events")
    sample.write_events(work / "raw", files=4, rows=args.rows // 4)
    spark = get_spark("local[*]")
    settings = resolve_config(lake=str(work / "lake"), schemas=str(schemas))
    v1 = load_dataset(settings.schemas, "events")
    run_ingest(spark, settings, v1, [str(work / "raw")])
    uri = settings.table_uri(v1.name)

    v2 = (schemas / "events" / "v1.yaml").read_text()
    v2 = v2.replace("  - name: kind\n", "  - name: event_kind\n    renamed_from: kind\n")
    v2 = v2.replace("type: decimal(10,2)", "type: decimal(18,2)")
    (schemas / "events" / "v2.yaml").write_text(v2)
    dataset = load_dataset(settings.schemas, "events")
    snap = deltalog.snapshot(uri)
    assert snap is not None
    plan = evolution.plan(dataset, snap.schema, dict(snap.configuration))
    assert plan.rewrite is not None, "v2 must need a rewrite"
    rows = spark.read.format("delta").load(uri).count()

    def plain_copy(to: str) -> float:
        start = time.monotonic()
        table = spark.read.format("delta").load(uri)
        table.write.format("delta").mode("overwrite").option("compression", "zstd").partitionBy(
            *dataset.partition_by
        ).save(str(work / to))
        return time.monotonic() - start

    plain_copy("warm-up")  # the first write of the process pays for JIT and class loading
    start = time.monotonic()
    rewritten = plan.rewrite.frame(delta.read_table(spark, uri))
    notes = {"rewrite": f"{plan.table_label} -> {dataset.schema.label}"}
    delta.overwrite(rewritten, uri, "bench", notes, plan.rewrite.partition_by)
    rewrite_s = time.monotonic() - start
    copy_s = plain_copy("copy")  # the rewritten table: the same rows, the same size
    names = spark.read.format("delta").load(uri).columns
    assert "event_kind" in names, names
    assert "kind" not in names, names

    result = {
        "bench": "evolution",
        "rows": rows,
        "rewrite_s": round(rewrite_s, 2),
        "plain_copy_s": round(copy_s, 2),
        "rewrite_rows_per_s": round(rows / rewrite_s),
        "rewrite_over_copy": round(rewrite_s / copy_s, 2),
    }
    print(
        f"evolution (portable rewrite): {rows:,} rows at {result['rewrite_rows_per_s']:,} rows/s; "
        f"rewrite / plain Spark copy of the table: {result['rewrite_over_copy']}x "
        f"({rewrite_s:.1f}s vs {copy_s:.1f}s; goal: about 1x, the rewrite is a copy)"
    )
    print(json.dumps(result))
    spark.stop()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
