"""JSON lines and Parquet, plain and compressed: the same accounting and row numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

from tests.conftest import SCHEMAS
from tests.helpers import accounting_holds, ingest_quietly

CLICK_A = json.dumps(
    {
        "click_id": "a",
        "day": "2024-02-01",
        "ts": "2024-02-01T10:00:00Z",
        "url": "/",
        "position": 1,
        "context": {"device": "ios", "ab_bucket": 2},
    }
)
CLICKS = [
    CLICK_A,
    "",  # line 2: blank, not a record
    '{"click_id": "b", "day": "2024-02-01", "position": "top"}',  # line 3: not an int
    '{"click_id": "c", "day": ',  # line 4: cut off
    "[1, 2]",  # line 5: not an object
    CLICK_A,  # line 6: the same record again
    json.dumps({"click_id": "d", "day": "2024-02-02", "context": {"device": "web"}}),
    '{"day": "2024-02-02"}',  # line 8: click_id is required
]


def test_json_lines_with_zstd_keep_line_numbers(spark: SparkSession, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    text = "\n".join(CLICKS) + "\n"
    (raw / "part.jsonl.zst").write_bytes(pa.compress(text.encode(), codec="zstd", asbytes=True))
    summary = ingest_quietly(
        "clicks", str(raw), "--lake", str(tmp_path / "lake"), "--schemas", str(SCHEMAS)
    )
    assert (
        summary["rows_read"],
        summary["rows_written"],
        summary["rows_duplicate"],
        summary["rows_quarantined"],
    ) == (7, 2, 1, 4)
    assert accounting_holds(summary)
    table = spark.read.format("delta").load(summary["table"])
    got = {r.click_id: (r.position, r.context and r.context.asDict()) for r in table.collect()}
    assert got == {
        "a": (1, {"device": "ios", "ab_bucket": 2}),
        "d": (None, {"device": "web", "ab_bucket": None}),
    }
    quarantine = spark.read.format("delta").load(summary["quarantine"])
    reasons = sorted((r._source_row, r._reason) for r in quarantine.collect())
    assert reasons == [
        (3, "column position: cannot read 'top' as int"),
        (4, "malformed JSON"),
        (5, "not a JSON object"),
        (8, "column click_id: null in a non-nullable column"),
    ]


def test_parquet_rows_that_do_not_fit_are_quarantined_with_their_row_index(
    spark: SparkSession, tmp_path: Path
) -> None:
    schemas = tmp_path / "schemas" / "metrics"
    schemas.mkdir(parents=True)
    (schemas / "dataset.yaml").write_text("format: parquet\n")
    (schemas / "v1.yaml").write_text(
        "columns:\n  - {name: id, type: long, nullable: false}\n  - {name: value, type: double}\n"
    )
    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(
        pa.table({"id": ["1", "2", "x", None], "value": [0.5, 1.5, 2.5, 3.5]}), raw / "m.parquet"
    )
    summary = ingest_quietly(
        "metrics",
        str(raw),
        "--lake",
        str(tmp_path / "lake"),
        "--schemas",
        str(tmp_path / "schemas"),
    )
    assert (summary["rows_read"], summary["rows_written"], summary["rows_quarantined"]) == (4, 2, 2)
    quarantine = spark.read.format("delta").load(summary["quarantine"])
    assert sorted((r._source_row, r._reason) for r in quarantine.collect()) == [
        (3, "column id: cannot read 'x' as bigint"),
        (4, "column id: null in a non-nullable column"),
    ]


def test_sample_data_accounting(spark: SparkSession, tmp_path: Path) -> None:
    from pipelines import sample

    stats = sample.write_events(tmp_path / "raw", seed=3, files=2, rows=120)
    summary = ingest_quietly(
        "events", str(tmp_path / "raw"), "--lake", str(tmp_path / "lake"), "--schemas", str(SCHEMAS)
    )
    assert summary["rows_read"] == stats.lines
    assert summary["rows_quarantined"] == stats.bad
    assert accounting_holds(summary)
    assert spark.read.format("delta").load(summary["table"]).count() == summary["rows_written"]


def test_row_numbers_stay_exact_when_spark_splits_a_file(
    spark: SparkSession, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = []
    for n in range(1, 401):
        if n % 97 == 0:
            lines.append('{"click_id": "broken", ')
        else:
            lines.append(
                json.dumps({"click_id": f"c{n}", "day": "2024-02-01", "url": "/" * (n % 7)})
            )
    (raw / "big.jsonl").write_text("\n".join(lines) + "\n")  # ~20 KB, splittable
    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "2048")
    try:
        summary = ingest_quietly(
            "clicks", str(raw), "--lake", str(tmp_path / "lake"), "--schemas", str(SCHEMAS)
        )
        splits = spark.read.text(str(raw)).select("_metadata.file_block_start").distinct().count()
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)
    assert splits > 1  # the file really was read in several splits
    quarantine = spark.read.format("delta").load(summary["quarantine"])
    assert sorted(r._source_row for r in quarantine.collect()) == [97, 194, 291, 388]
    assert summary["rows_written"] == 396
