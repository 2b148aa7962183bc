"""``make demo``: generate the seeded sample, ingest it twice, show the tables and how to query,
export one for training and stream a batch of it.

Runs on the embedded default: local Spark, the lake in ./lake, declarations in ./schemas.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pipelines import cli, sample
from pipelines.config import local_path, resolve_config
from pipelines.runs.summary import accounting_holds

RAW = Path("build/demo/raw")


def _run(*args: str) -> dict[str, Any]:
    """Run ``lakeshard ARGS --json`` in this process; return its summary."""
    from contextlib import redirect_stdout
    from io import StringIO

    captured = StringIO()
    with redirect_stdout(captured):
        code = cli.main([*args, "--json"])
    if code != 0:
        raise SystemExit(code)
    summary: dict[str, Any] = json.loads(captured.getvalue().strip().splitlines()[-1])
    return summary


def _ingest(dataset: str, folder: Path) -> dict[str, Any]:
    return _run("ingest", dataset, str(folder))


def _export_and_stream() -> None:
    """Export the events table for training and read a first batch back as a trainer would."""
    from pipelines.loader import ShardLoader

    export = _run("export", "events", "--shards", "4", "--split", "train=0.9,val=0.1")
    splits = ", ".join(f"{name} {rows}" for name, rows in export["splits"].items())
    print(
        f"\nexported events v{export['table_version']} for training: {export['rows']} rows "
        f"({splits}), {export['shards']} shards per split\n  manifest: {export['manifest']}"
    )
    loader = ShardLoader(export["manifest"], batch_size=4, columns=["event_id", "kind"], seed=1)
    batch = next(iter(loader))
    print(
        f"  ShardLoader (pyarrow + NumPy, no Spark): {len(loader)} batches of 4 per epoch; "
        f"the first: event_id {batch['event_id'].tolist()}, kind {batch['kind'].tolist()}"
    )


def main() -> int:
    events = sample.write_events(RAW / "events")
    clicks = sample.write_clicks(RAW / "clicks")
    print(
        f"sample data: {events.files + clicks.files} files in {RAW} "
        f"({events.lines + clicks.lines} records, {events.bad + clicks.bad} planted bad ones)"
    )

    results = {}
    for dataset, folder in (("events", RAW / "events"), ("clicks", RAW / "clicks")):
        first = _ingest(dataset, folder)
        second = _ingest(dataset, folder)
        results[dataset] = (first, second)

    print("\n=== lakeshard demo ===")
    header = f"{'dataset':8} {'run':4} {'read':>6} {'written':>8} {'dup':>5} {'quar':>5} version"
    print(header)
    for dataset, runs in results.items():
        for n, s in enumerate(runs, 1):
            print(
                f"{dataset:8} #{n:<3} {s['rows_read']:>6} {s['rows_written']:>8} "
                f"{s['rows_duplicate']:>5} {s['rows_quarantined']:>5} {s['table_version']}"
            )
        holds = all(accounting_holds(s) for s in runs)
        print(
            f"{'':8} accounting rows_read = written + duplicate + quarantined + dropped: "
            f"{'holds' if holds else 'BROKEN'}"
        )

    settings = resolve_config()
    table = str(results["events"][1]["table"])
    quarantine = str(results["events"][1]["quarantine"])
    _show_with_deltalake(table, quarantine)
    _export_and_stream()
    local = local_path(table)
    print("\nQuery the tables from a notebook:")
    print(f"""
  # Spark (Delta is configured by lakeshard's get_spark):
  from pipelines.spark import get_spark
  spark = get_spark("local[*]")
  spark.read.format("delta").load("{table}").groupBy("event_date").count().show()
  spark.read.format("delta").option("versionAsOf", 1).load("{table}")   # time travel

  # delta-rs + DuckDB (no Spark, no JVM):
  import deltalake, duckdb
  events = deltalake.DeltaTable("{local or table}").to_pyarrow_dataset()
  duckdb.sql("SELECT kind, count(*) FROM events GROUP BY kind").show()

lake root: {settings.lake}""")
    return 0


def _show_with_deltalake(table: str, quarantine: str) -> None:
    """Read the result back with an engine other than Spark (delta-rs + DuckDB)."""
    try:
        import deltalake
        import duckdb
    except ImportError:
        print("\n(install deltalake and duckdb to see the tables read without Spark)")
        return
    events = deltalake.DeltaTable(table).to_pyarrow_dataset()
    refused = deltalake.DeltaTable(quarantine).to_pyarrow_dataset()
    con = duckdb.connect()
    con.register("events", events)
    con.register("refused", refused)
    print(f"\n{table} (read with delta-rs + DuckDB, no Spark):")
    print(
        con.sql(
            "SELECT event_id, event_date, user_id, kind, amount, tags, "
            "hex(_content_hash) AS content_hash FROM events "
            "ORDER BY event_id LIMIT 5"
        )
    )
    print("quarantine, by reason:")
    print(
        con.sql(
            "SELECT _reason, count(*) AS n, min(_source_file || ':' || _source_row) "
            "AS first_seen FROM refused GROUP BY 1 ORDER BY n DESC LIMIT 6"
        )
    )


if __name__ == "__main__":
    sys.exit(main())
