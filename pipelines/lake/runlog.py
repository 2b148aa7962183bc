"""The run log: one append-only Delta table per dataset; a record when a run starts, one when
it ends."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.lake import deltawrite
from pipelines.lake.delta import ensure_table, has_data, read_table, table_exists

RUNS_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), nullable=False),
        T.StructField("command", T.StringType(), nullable=False),
        T.StructField("dataset", T.StringType(), nullable=False),
        T.StructField("status", T.StringType(), nullable=False),
        T.StructField("started_at", T.TimestampType(), nullable=False),
        T.StructField("ended_at", T.TimestampType(), nullable=True),
        T.StructField("sources", T.ArrayType(T.StringType()), nullable=True),
        T.StructField("schema_version", T.IntegerType(), nullable=True),
        T.StructField("table_version", T.LongType(), nullable=True),
        T.StructField("files_seen", T.LongType(), nullable=True),
        T.StructField("files_skipped", T.LongType(), nullable=True),
        T.StructField("files_rejected", T.LongType(), nullable=True),
        T.StructField("rows_read", T.LongType(), nullable=True),
        T.StructField("rows_written", T.LongType(), nullable=True),
        T.StructField("rows_duplicate", T.LongType(), nullable=True),
        T.StructField("rows_quarantined", T.LongType(), nullable=True),
        T.StructField("rows_dropped", T.LongType(), nullable=True),
        T.StructField("error", T.StringType(), nullable=True),
        T.StructField("lakeshard_version", T.StringType(), nullable=False),
        T.StructField("details", T.StringType(), nullable=True),  # JSON for later additions
    ]
)


def record_run(spark: SparkSession, uri: str, record: dict[str, Any]) -> None:
    """Append one record to a dataset's run log (a small Delta table).

    The log is append-only: a run is recorded as ``running`` when it starts and again with
    its outcome (``succeeded``, ``failed`` or, written by a later run, ``abandoned``) when it
    ends; a run's latest record is its state (:func:`run_states`).

    Written without Spark where the table allows it (:mod:`pipelines.lake.deltawrite`): it is
    most of the fixed cost of a run that finds nothing new; else through Spark, which also
    writes its checkpoints."""
    row = {f.name: record.get(f.name) for f in RUNS_SCHEMA.fields}
    if isinstance(row.get("details"), dict):
        row["details"] = json.dumps(row["details"], sort_keys=True)
    if deltawrite.append_rows(uri, RUNS_SCHEMA, [row]) is not None:
        return
    if not table_exists(spark, uri):
        ensure_table(spark, uri, RUNS_SCHEMA, description="lakeshard run log")
        if deltawrite.append_rows(uri, RUNS_SCHEMA, [row]) is not None:
            return
    frame = spark.createDataFrame([row], schema=RUNS_SCHEMA)
    frame.write.format("delta").mode("append").save(uri)


def unfinished_runs(spark: SparkSession, uri: str) -> list[dict[str, Any]]:
    """The ``running`` records of runs that never recorded an outcome (one Spark job)."""
    if not has_data(spark, uri):
        return []
    runs = read_table(spark, uri)
    ended = runs.filter(F.col("status") != "running").select("run_id")
    open_runs = runs.filter(F.col("status") == "running").join(ended, "run_id", "left_anti")
    return [row.asDict() for row in open_runs.orderBy("started_at").collect()]


def read_runs(
    spark: SparkSession, uri: str, columns: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Every record of a run log (``columns`` of them), in no particular order."""
    if not table_exists(spark, uri) or not has_data(spark, uri):
        return []
    table = read_table(spark, uri)
    if columns is not None:
        table = table.select(*columns)
    return [row.asDict() for row in table.collect()]


def latest_records(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each run's state: its outcome record (the latest one), else its ``running`` record;
    sorted by run id (so by start time)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        key = (record["status"] != "running", str(record["ended_at"] or ""))
        seen = latest.get(record["run_id"])
        if seen is None or key > (seen["status"] != "running", str(seen["ended_at"] or "")):
            latest[record["run_id"]] = dict(record)
    return sorted(latest.values(), key=lambda r: str(r["run_id"]))
