"""Ingest into a local-folder lake: the embedded default, checked row by row."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from pipelines.config import resolve_config
from pipelines.ingest.validate import schema_fields
from pipelines.schema.declarations import load_dataset
from pipelines.schema.tables import table_schema
from tests.conftest import SCHEMAS
from tests.helpers import accounting_holds, ingest_quietly

HEADER = "event_id,event_date,user_id,kind,amount,tags\n"
A_CSV = (
    HEADER
    + "\n".join(
        [
            '1,2024-01-01,10,view,1.50,"[""new""]"',  # row 1
            "2,2024-01-01,11,buy,abc,",  # row 2: amount is not a decimal
            '1,2024-01-01,10,view,1.50,"[""new""]"',  # row 3: duplicate of row 1
            "3,2024-01-02,NA,view,,",  # row 4: NA and empty are nulls
            "4,2024-01-02,12",  # row 5: too few fields
            ",2024-01-02,13,view,2.00,[]",  # row 6: null in required event_id
            '5,2024-01-03,14,"cart, big",3.25,"[""a"",""b""]"',  # row 7: quoted comma
            "6,2024-01-03,15,view,1.00,[],extra",  # row 8: too many fields
        ]
    )
    + "\n"
)
B_CSV = (
    HEADER
    + "\n".join(
        [
            "3,2024-01-02,NA,view,,",  # duplicate of a.csv row 4, across files
            "7,2024-13-01,16,view,1.00,[]",  # row 2: no such date
            "8,2024-01-04,17,refund,-9.99,[]",
        ]
    )
    + "\n"
)


@pytest.fixture(scope="module")
def two_runs(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Ingest a.csv and b.csv.gz twice into a fresh lake; keep both summaries."""
    root = tmp_path_factory.mktemp("local")
    raw = root / "raw"
    raw.mkdir()
    (raw / "a.csv").write_text(A_CSV)
    (raw / "b.csv.gz").write_bytes(gzip.compress(B_CSV.encode()))
    lake = root / "lake"
    args = ("events", str(raw), "--lake", str(lake), "--schemas", str(SCHEMAS))
    summaries = [ingest_quietly(*args), ingest_quietly(*args)]
    return {"lake": lake, "raw": raw, "first": summaries[0], "second": summaries[1]}


def test_first_run_counts_every_row(two_runs: dict[str, Any]) -> None:
    first = two_runs["first"]
    assert first["status"] == "succeeded"
    assert first["files_seen"] == 2
    assert first["rows_read"] == 11
    assert first["rows_quarantined"] == 5
    assert first["rows_duplicate"] == 2  # one inside a.csv, one across a.csv and b.csv.gz
    assert first["rows_written"] == 4
    assert first["rows_dropped"] == 0
    assert accounting_holds(first)


def test_second_run_of_the_same_files_skips_them_unread(two_runs: dict[str, Any]) -> None:
    first, second = two_runs["first"], two_runs["second"]
    assert second["files_seen"] == second["files_skipped"] == 2
    assert second["files_ingested"] == 0
    assert second["rows_read"] == second["rows_written"] == second["rows_quarantined"] == 0
    assert second["table_version"] == first["table_version"]
    assert accounting_holds(second)


def test_table_holds_each_good_row_once(spark: SparkSession, two_runs: dict[str, Any]) -> None:
    table = spark.read.format("delta").load(two_runs["first"]["table"])
    rows = sorted(
        (r.event_id, str(r.event_date), r.user_id, r.kind, r.amount and str(r.amount), r.tags)
        for r in table.collect()
    )
    assert rows == [
        (1, "2024-01-01", 10, "view", "1.50", ["new"]),
        (3, "2024-01-02", None, "view", None, None),
        (5, "2024-01-03", 14, "cart, big", "3.25", ["a", "b"]),
        (8, "2024-01-04", 17, "refund", "-9.99", []),
    ]
    hashes = [bytes(r["_content_hash"]) for r in table.select("_content_hash").collect()]
    assert len(set(hashes)) == len(hashes) == 4
    assert all(len(h) == 16 for h in hashes)


def test_quarantine_names_file_row_raw_record_and_reason(
    spark: SparkSession, two_runs: dict[str, Any]
) -> None:
    quarantine = spark.read.format("delta").load(two_runs["first"]["quarantine"])
    got = sorted(
        (Path(r._source_file).name, r._source_row, r._raw, r._reason) for r in quarantine.collect()
    )
    assert got == [
        (
            "a.csv",
            2,
            "2,2024-01-01,11,buy,abc,",
            "column amount: cannot read 'abc' as decimal(10,2)",
        ),
        ("a.csv", 5, "4,2024-01-02,12", "malformed CSV record: expected 6 fields"),
        (
            "a.csv",
            6,
            ",2024-01-02,13,view,2.00,[]",
            "column event_id: null in a non-nullable column",
        ),
        (
            "a.csv",
            8,
            "6,2024-01-03,15,view,1.00,[],extra",
            "malformed CSV record: expected 6 fields",
        ),
        (
            "b.csv.gz",
            2,
            "7,2024-13-01,16,view,1.00,[]",
            "column event_date: cannot read '2024-13-01' as date",
        ),
    ]


def test_table_schema_is_the_declared_one_with_bookkeeping(
    spark: SparkSession, two_runs: dict[str, Any]
) -> None:
    events = load_dataset(SCHEMAS, "events")
    table = spark.read.format("delta").load(two_runs["first"]["table"])
    assert schema_fields(table.schema) == schema_fields(table_schema(events))
    assert ("event_id", "bigint", False) in schema_fields(table.schema)


def test_table_is_partitioned_and_zstd_compressed(two_runs: dict[str, Any]) -> None:
    table_dir = Path(two_runs["lake"]) / "tables" / "events"
    partitions = sorted(p.name for p in table_dir.iterdir() if p.name.startswith("event_date="))
    assert partitions == [
        "event_date=2024-01-01",
        "event_date=2024-01-02",
        "event_date=2024-01-03",
        "event_date=2024-01-04",
    ]
    files = list(table_dir.glob("event_date=*/*.parquet"))
    assert files
    for file in files:
        meta = pq.ParquetFile(file).metadata
        codecs = {
            meta.row_group(g).column(c).compression
            for g in range(meta.num_row_groups)
            for c in range(meta.num_columns)
        }
        assert codecs == {"ZSTD"}


def test_another_engine_reads_the_same_rows(spark: SparkSession, two_runs: dict[str, Any]) -> None:
    uri = two_runs["first"]["table"]
    by_spark = sorted(
        (r.event_id, bytes(r._content_hash)) for r in spark.read.format("delta").load(uri).collect()
    )
    arrow: pa.Table = deltalake.DeltaTable(uri).to_pyarrow_table()
    by_delta_rs = sorted(
        zip(arrow["event_id"].to_pylist(), arrow["_content_hash"].to_pylist(), strict=True)
    )
    assert by_delta_rs == by_spark
    assert deltalake.DeltaTable(uri).version() == two_runs["first"]["table_version"]


def test_run_log_records_both_runs(spark: SparkSession, two_runs: dict[str, Any]) -> None:
    settings = resolve_config(lake=str(two_runs["lake"]))
    log = spark.read.format("delta").load(settings.runs_uri("events"))
    runs = log.filter("status != 'running'").orderBy("started_at").collect()
    assert [r.run_id for r in runs] == [two_runs["first"]["run_id"], two_runs["second"]["run_id"]]
    assert [r.status for r in runs] == ["succeeded", "succeeded"]
    started = log.filter("status = 'running'").orderBy("started_at").collect()
    assert [r.run_id for r in started] == [r.run_id for r in runs]
    assert [r.rows_written for r in runs] == [4, 0]
    assert runs[0].ended_at >= runs[0].started_at
    assert runs[0].sources == [str(two_runs["raw"])]
