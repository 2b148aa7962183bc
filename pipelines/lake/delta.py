"""Delta I/O: the dataset table, its quarantine, and the run log, all under the lake root."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.errors import ConfigError
from pipelines.lake import deltalog, deltawrite
from pipelines.lake.commits import Commit, data_commit

# Table properties a user configured for new tables: only Delta applies them.
_DEFAULTS = "spark.databricks.delta.properties.defaults."


def _location(uri: str) -> str:
    """Delta compares table locations as Hadoop paths: ``file:///x`` must be given as ``/x``."""
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _has_commit(spark: SparkSession, uri: str, version: int) -> bool:
    """Whether the table's log holds this commit file (one metadata call, no snapshot)."""
    jvm: Any = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(f"{uri.rstrip('/')}/_delta_log/{version:020d}.json")
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    return bool(path.getFileSystem(conf).exists(path))


def table_exists(spark: SparkSession, uri: str) -> bool:
    if _has_commit(spark, uri, 0):
        return True
    return bool(DeltaTable.isDeltaTable(spark, uri))  # e.g. a log cleaned up to a checkpoint


def only_created(spark: SparkSession, uri: str) -> bool:
    """True for a table that has its creating commit and no other (so no rows), cheaply."""
    return _has_commit(spark, uri, 0) and not _has_commit(spark, uri, 1)


def ensure_table(
    spark: SparkSession,
    uri: str,
    schema: T.StructType,
    partition_by: Sequence[str] = (),
    description: str | None = None,
) -> None:
    """Create the Delta table with exactly this schema (NOT NULL kept) unless it exists.

    Its first commit is written without Spark where that is what Delta would write (see
    :func:`.deltawrite.create_table`) and no default table properties are configured for new
    tables: through Spark, a first run's four tables cost seconds of Delta's start-up."""
    if table_exists(spark, uri):
        return
    defaults = any(key.startswith(_DEFAULTS) for key in spark.conf.getAll)
    if not defaults and deltawrite.create_table(uri, schema, partition_by, description) is not None:
        return
    builder = DeltaTable.createIfNotExists(spark).location(_location(uri)).addColumns(schema)
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    if description:
        builder = builder.comment(description)
    if deltawrite.needs_column_mapping(schema):
        # Parquet cannot name such columns; Delta's column mapping stores them by id instead.
        builder = (
            builder.property("delta.columnMapping.mode", "name")
            .property("delta.minReaderVersion", "2")
            .property("delta.minWriterVersion", "5")
        )
    builder.execute()


def append(
    frame: DataFrame,
    uri: str,
    run_id: str,
    notes: dict[str, Any] | None = None,
    merge_schema: bool = False,
) -> Commit:
    """Append in one commit tagged with the run id (and ``notes``, kept in the same commit's
    userMetadata as JSON); report the version and rows it wrote. ``merge_schema`` lets the
    commit add the frame's new columns and widen types (schema evolution, same commit)."""
    metadata = json.dumps({"run_id": run_id, **(notes or {})}, sort_keys=True)
    writer = (
        frame.write.format("delta")
        .mode("append")
        .option("userMetadata", metadata)
        .option("compression", "zstd")
    )
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    writer.save(uri)
    return commit_of(frame.sparkSession, uri, run_id)


def overwrite(
    frame: DataFrame,
    uri: str,
    run_id: str,
    notes: dict[str, Any],
    partition_by: Sequence[str],
) -> None:
    """Replace the table's rows and schema with ``frame`` in one commit, tagged like
    :func:`append`. The history stays: earlier versions still read as they were."""
    metadata = json.dumps({"run_id": run_id, **notes}, sort_keys=True)
    (
        frame.write.format("delta")
        .mode("overwrite")
        .option("overwriteSchema", "true")
        .option("userMetadata", metadata)
        .option("compression", "zstd")
        .partitionBy(*partition_by)
        .save(uri)
    )


def upsert(
    frame: DataFrame,
    uri: str,
    keys: Sequence[str],
    order_by: str,
    run_id: str,
    notes: dict[str, Any],
    merge_schema: bool = False,
) -> Commit:
    """MERGE ``frame`` into the table by ``keys``: a row replaces the table's row with the same
    keys when its ``order_by`` value is greater (or the table's is null), and is inserted when
    its keys are new. One commit, tagged like :func:`append`; ``rows`` counts inserted plus
    updated rows, ``notes["rows_updated"]`` the updated ones."""
    spark = frame.sparkSession
    metadata = json.dumps({"run_id": run_id, **notes}, sort_keys=True)
    on = " AND ".join(f"t.{_quoted(k)} <=> s.{_quoted(k)}" for k in keys)
    new, old = f"s.{_quoted(order_by)}", f"t.{_quoted(order_by)}"
    newer = f"{new} > {old} OR ({old} IS NULL AND {new} IS NOT NULL)"
    settings = {"spark.databricks.delta.commitInfo.userMetadata": metadata}
    if merge_schema:
        settings["spark.databricks.delta.schema.autoMerge.enabled"] = "true"
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        (
            DeltaTable.forPath(spark, uri)
            .alias("t")
            .merge(frame.alias("s"), on)
            .whenMatchedUpdateAll(condition=newer)
            .whenNotMatchedInsertAll()
            .execute()
        )
    finally:
        for key in settings:
            spark.conf.unset(key)
    return commit_of(spark, uri, run_id)


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def alter(spark: SparkSession, uri: str, statement: str) -> None:
    """``ALTER TABLE <uri> <statement>``: one metadata-only commit."""
    location = _location(uri).replace("`", "``")
    spark.sql(f"ALTER TABLE delta.`{location}` {statement}")


def properties(spark: SparkSession, uri: str) -> dict[str, str]:
    """The table's properties (constraints among them, as ``delta.constraints.<name>``).

    Read from the Delta log without a Spark job (:mod:`.deltalog`): a run asks before and
    after it writes, and each Spark ``DESCRIBE DETAIL`` cost a job."""
    snap = deltalog.snapshot(uri)
    return dict(snap.configuration) if snap else {}


def schema_of(spark: SparkSession, uri: str) -> T.StructType:
    """The table's schema, from its Delta log (:mod:`.deltalog`; no Spark job)."""
    snap = deltalog.snapshot(uri)
    if snap is None:
        raise ConfigError(f"no Delta table at {uri}")
    return snap.schema


def ensure_columns(spark: SparkSession, uri: str, schema: T.StructType) -> None:
    """Add the nullable columns of ``schema`` a table made by an earlier lakeshard lacks."""
    present = set(schema_of(spark, uri).fieldNames())
    missing = [f for f in schema.fields if f.name not in present and f.nullable]
    if missing:
        columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
        alter(spark, uri, f"ADD COLUMNS ({columns})")


def run_commits(
    spark: SparkSession, uri: str, up_to: int | None = None, depth: int | None = None
) -> list[Commit]:
    """The table's data commits made by lakeshard runs, oldest first: those whose userMetadata
    names a run id, except a replay's marking of the quarantine (a MERGE that says ``marks``).
    ``up_to``: no later version; ``depth``: only among the latest ``depth`` commits."""
    table = DeltaTable.forPath(spark, uri)
    history = table.history(depth) if depth else table.history()
    if up_to is not None:
        history = history.filter(F.col("version") <= up_to)
    rows = history.select("version", "operation", "operationMetrics", "userMetadata").collect()
    found = [
        commit
        for row in rows
        if (
            commit := data_commit(
                int(row["version"]), row["operation"], row["operationMetrics"], row["userMetadata"]
            )
        )
        is not None
    ]
    return sorted(found, key=lambda commit: commit.version or 0)


def commit_of(spark: SparkSession, uri: str, run_id: str, depth: int = 50) -> Commit:
    """The latest data commit a run made to a table (among its latest ``depth``), or none."""
    mine = [c for c in run_commits(spark, uri, depth=depth) if c.run_id == run_id]
    return mine[-1] if mine else Commit(version=None, rows=0)


def has_data(spark: SparkSession, uri: str) -> bool:
    """Whether the table holds any data file (from its log; no data is read).

    A table that has only its creating commit (every table in a first run) is answered from
    that commit, without Spark: Delta's snapshot of it is a job of 50 tasks.
    """
    if only_created(spark, uri):
        created = deltalog.data_files(uri)
        if created is not None:
            return bool(created.files)
    detail = DeltaTable.forPath(spark, uri).detail().select("numFiles").first()
    return bool(detail and detail["numFiles"])


def read_if_data(spark: SparkSession, uri: str) -> DataFrame | None:
    """The table's rows, or None when it holds no data file (nothing to compare against)."""
    return read_table(spark, uri) if has_data(spark, uri) else None


def count_where(spark: SparkSession, uri: str, column: str, value: str) -> int:
    """Rows of a table whose ``column`` equals ``value`` (0 for a table without data)."""
    table = read_if_data(spark, uri)
    return 0 if table is None else int(table.filter(F.col(column) == value).count())


def current_version(uri: str) -> int | None:
    """The latest version (None: no table), from a listing of the log: no Spark job."""
    return deltalog.latest_version(uri)


def read_table(spark: SparkSession, uri: str, version: int | None = None) -> DataFrame:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(uri)
