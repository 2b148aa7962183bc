"""Spark-free appends to lakeshard's own tables (the run log): the commits read alike in Spark,
delta-rs and lakeshard's log reader; they are made only where Delta's own writer would make the
same commit, the checkpoint versions are left to Spark, and a version taken meanwhile moves the
commit to the next one."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import deltalake
import pyarrow as pa
import pytest
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import types as T

import pipelines
from pipelines.lake import delta, deltafiles, deltalog, deltawrite, runlog
from tests.test_s3 import storage_options

SMALL = T.StructType(
    [
        T.StructField("id", T.LongType(), nullable=False),
        T.StructField("name", T.StringType(), nullable=True),
        T.StructField("at", T.TimestampType(), nullable=True),
        T.StructField("tags", T.ArrayType(T.StringType()), nullable=True),
    ]
)
AT = datetime(2026, 12, 4, 20, 15, 1, 123456, tzinfo=UTC)


def _create(uri: str, schema: T.StructType = SMALL, **options: Any) -> None:
    """An empty table made by delta-rs (protocol 1/2, as Spark makes lakeshard's tables)."""
    fields = [pa.field(f.name, deltawrite.arrow_type(f.dataType), f.nullable) for f in schema]
    deltalake.write_deltalake(uri, pa.schema(fields).empty_table(), **options)


def _engines(uri: str) -> list[str]:
    """Each commit's engineInfo, by version."""
    log = Path(uri) / "_delta_log"
    infos = []
    for path in sorted(log.glob("*.json")):
        first = json.loads(path.read_text().splitlines()[0])
        infos.append(first.get("commitInfo", {}).get("engineInfo", ""))
    return infos


def test_appends_without_spark_read_back_in_delta_rs_and_the_log_reader(tmp_path: Path) -> None:
    uri = str(tmp_path / "small")
    _create(uri)
    first = [{"id": 1, "name": "a", "at": AT, "tags": ["x", "y"]}]
    second = [{"id": 2, "name": None, "at": None, "tags": None}, {"id": 3, "name": "ü\n\u2028"}]
    assert deltawrite.append_rows(uri, SMALL, first) == 1
    assert deltawrite.append_rows(uri, SMALL, second) == 2

    rows = sorted(deltalake.DeltaTable(uri).to_pyarrow_table().to_pylist(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert rows[0]["at"] == AT
    assert rows[0]["tags"] == ["x", "y"]
    assert rows[2]["name"] == "ü\n\u2028"
    assert rows[1]["at"] is None
    files = deltalog.data_files(uri)
    assert files is not None
    assert files.rows == 3
    mine = deltafiles.read_columns(uri, ["id", "at"])
    assert mine is not None
    assert sorted(mine.column("id").to_pylist()) == [1, 2, 3]
    assert [c.operation for c in deltalog.commits(uri)][-2:] == ["WRITE", "WRITE"]
    assert _engines(uri)[1:] == [f"lakeshard/{pipelines.__version__}"] * 2


def test_a_naive_timestamp_is_local_time_as_pyspark_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        uri = str(tmp_path / "naive")
        _create(uri)
        deltawrite.append_rows(uri, SMALL, [{"id": 1, "at": datetime(2026, 12, 4, 15, 15, 1)}])
        (row,) = deltalake.DeltaTable(uri).to_pyarrow_table().to_pylist()
        assert row["at"] == datetime(2026, 12, 4, 20, 15, 1, tzinfo=UTC)
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    "table",
    ["no table", "another schema", "partitioned", "a CHECK constraint", "column mapping"],
)
def test_a_table_it_cannot_append_to_exactly_as_delta_would_is_left_to_spark(
    tmp_path: Path, table: str
) -> None:
    uri = str(tmp_path / "t")
    if table == "another schema":
        _create(uri, T.StructType(SMALL.fields[:2]))
    elif table == "partitioned":
        _create(uri, partition_by=["name"])
    elif table == "a CHECK constraint":
        _create(uri)
        deltalake.DeltaTable(uri).alter.add_constraint({"positive": "id > 0"})
    elif table == "column mapping":
        _create(uri, configuration={"delta.columnMapping.mode": "name"})
    versions = deltalog.latest_version(uri)
    assert deltawrite.append_rows(uri, SMALL, [{"id": 1}]) is None
    assert deltalog.latest_version(uri) == versions  # nothing committed


def test_a_missing_not_null_value_is_refused(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    _create(uri)
    with pytest.raises(ValueError, match="id is NOT NULL"):
        deltawrite.append_rows(uri, SMALL, [{"id": None, "name": "x"}])
    assert deltalog.latest_version(uri) == 0


def test_a_version_taken_meanwhile_moves_the_commit_to_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = str(tmp_path / "raced")
    _create(uri)
    deltawrite.append_rows(uri, SMALL, [{"id": 1}])
    real = deltawrite._next_version
    calls: list[int | None] = []

    def racing(uri: str, schema: T.StructType) -> int | None:
        version = real(uri, schema)
        if not calls:  # another writer commits this version between our read and our commit
            _other_writer_commits(uri)
        calls.append(version)
        return version

    monkeypatch.setattr(deltawrite, "_next_version", racing)
    assert deltawrite.append_rows(uri, SMALL, [{"id": 3}]) == 3
    assert calls == [2, 3]
    ids = deltalake.DeltaTable(uri).to_pyarrow_table().column("id").to_pylist()
    assert sorted(ids) == [1, 2, 3]  # each row once: the losing attempt committed nothing


def _other_writer_commits(uri: str) -> None:
    fields = [pa.field(f.name, deltawrite.arrow_type(f.dataType), f.nullable) for f in SMALL]
    rows = pa.Table.from_pylist([{"id": 2}], schema=pa.schema(fields))
    deltalake.write_deltalake(uri, rows, mode="append")


def test_the_run_log_goes_through_spark_only_at_checkpoints(
    spark: SparkSession, tmp_path: Path
) -> None:
    uri = str(tmp_path / "runs")
    started = datetime.now(UTC)
    for n in range(12):
        record = {"run_id": f"r{n:02d}", "command": "ingest", "dataset": "d", "status": "running"}
        record |= {"started_at": started, "lakeshard_version": "0", "details": {"n": n}}
        record |= {"sources": [f"s3a://raw/{n}.csv", "ü"], "rows_read": n}
        runlog.record_run(spark, uri, record)
    engines = _engines(uri)
    # Created without Spark too (deltawrite.create_table); 10: a checkpoint.
    by_spark = [v for v, engine in enumerate(engines) if engine.startswith("Apache-Spark")]
    assert by_spark == [10], engines
    assert (Path(uri) / "_delta_log" / f"{10:020d}.checkpoint.parquet").exists()
    records = runlog.read_runs(spark, uri)  # Spark reads every record, Spark's and lakeshard's
    assert sorted(r["run_id"] for r in records) == [f"r{n:02d}" for n in range(12)]
    assert {r["started_at"].astimezone(UTC) for r in records} == {started}
    assert sorted(json.loads(r["details"])["n"] for r in records) == list(range(12))
    assert all(r["sources"] == [f"s3a://raw/{r['rows_read']}.csv", "ü"] for r in records)


def test_an_append_on_s3_is_a_conditional_put(s3: dict[str, str]) -> None:
    uri = f"s3a://lake/{s3['prefix']}/small"
    options = storage_options(s3)
    _create(uri.replace("s3a://", "s3://"), storage_options=options)
    assert deltawrite.append_rows(uri, SMALL, [{"id": 1, "at": AT}]) == 1
    assert deltawrite.append_rows(uri, SMALL, [{"id": 2}]) == 2
    table = deltalake.DeltaTable(uri.replace("s3a://", "s3://"), storage_options=options)
    assert sorted(table.to_pyarrow_table().column("id").to_pylist()) == [1, 2]
    # The commit is created only if absent: writing version 2 again is refused.
    assert not deltawrite._create(uri, 2, b"{}\n")


def _crc(uri: str) -> dict[str, Any]:
    """Version 0's checksum, without what differs between any two tables (ids, times)."""
    crc = json.loads((Path(uri) / "_delta_log" / f"{0:020d}.crc").read_text())
    crc.pop("txnId")
    crc.pop("fileSizeHistogram", None)  # optional: an empty table's has only empty bins
    metadata = crc["metadata"]
    metadata.pop("id")
    metadata.pop("createdTime")
    metadata["schemaString"] = T.StructType.fromJson(json.loads(metadata["schemaString"]))
    return crc


def test_a_table_created_without_spark_is_the_table_delta_creates(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Same schema (NOT NULL kept), partitioning, description, protocol and version-0 state as
    Delta's own CREATE TABLE; Spark then appends to it and reads it back."""
    schema = T.StructType([*SMALL.fields, T.StructField("day", T.DateType(), nullable=False)])
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    assert deltawrite.create_table(ours, schema, ["day"], "lakeshard dataset x") is True
    assert deltawrite.create_table(ours, schema, ["day"], "lakeshard dataset x") is False
    builder = DeltaTable.createIfNotExists(spark).location(theirs).addColumns(schema)
    builder.partitionedBy("day").comment("lakeshard dataset x").execute()

    assert _crc(ours) == _crc(theirs)
    described = [
        DeltaTable.forPath(spark, uri)
        .detail()
        .select("format", "description", "partitionColumns", "properties", "minReaderVersion")
        .first()
        for uri in (ours, theirs)
    ]
    assert described[0] == described[1]
    assert deltalog.snapshot(ours).schema == schema  # type: ignore[union-attr]

    row = {"id": 1, "name": "a", "at": AT, "tags": ["x"], "day": AT.date()}
    spark.createDataFrame([row], schema).write.format("delta").mode("append").save(ours)
    assert [r["id"] for r in spark.read.format("delta").load(ours).collect()] == [1]
    # Delta carried the state on from version 0's checksum: one file, its bytes.
    after = json.loads((Path(ours) / "_delta_log" / f"{1:020d}.crc").read_text())
    assert after["numFiles"] == 1
    assert after["tableSizeBytes"] > 0


@pytest.mark.parametrize(
    "field",
    [
        T.StructField("at", T.TimestampNTZType()),  # needs the timestampNtz table feature
        T.StructField("a b", T.LongType()),  # needs column mapping
    ],
)
def test_a_table_only_delta_can_create_is_left_to_spark(
    tmp_path: Path, field: T.StructField
) -> None:
    uri = tmp_path / "t"
    assert deltawrite.create_table(str(uri), T.StructType([field]), [], None) is None
    assert not uri.exists()


def test_an_only_created_table_is_answered_from_its_log_and_a_first_commit_with_data_counts(
    spark: SparkSession, tmp_path: Path
) -> None:
    empty, written = str(tmp_path / "empty"), str(tmp_path / "written")
    assert deltawrite.create_table(empty, SMALL, [], None)
    assert delta.has_data(spark, empty) is False
    # Version 0 can hold data too (a table another writer created with its first rows).
    spark.createDataFrame([{"id": 1}], "id long").write.format("delta").save(written)
    assert delta.only_created(spark, written)
    assert delta.has_data(spark, written) is True
