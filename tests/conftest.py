"""Shared fixtures: one SparkSession per run, a real S3 server, a real standalone cluster.

The S3 server (SeaweedFS by default, MinIO with LAKESHARD_S3_SERVER=minio) and the Spark
cluster are real processes on loopback, started here and stopped at the end of the run.
Tests that start a JVM are marked ``jvm`` here; ``pytest -m "not jvm"`` is the unit tier.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from infra.s3 import server as s3_server
from infra.spark import cluster as spark_cluster
from pipelines import jvm
from pipelines.spark import get_spark, s3a_options
from tests.helpers import CONFORMANCE, REPO

SCHEMAS = REPO / "schemas"

# Small test data: few shuffle partitions, no UI, deterministic time zone.
TEST_SPARK_CONF = ";".join(
    [
        "spark.sql.shuffle.partitions=4",
        "spark.default.parallelism=2",
        "spark.databricks.delta.snapshotPartitions=2",
        "spark.ui.enabled=false",
        "spark.sql.adaptive.coalescePartitions.initialPartitionNum=4",
    ]
)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    saved = os.environ.get("LAKESHARD_SPARK_CONF")
    os.environ["LAKESHARD_SPARK_CONF"] = TEST_SPARK_CONF
    try:
        session = get_spark("local[2]")
    finally:
        if saved is None:
            os.environ.pop("LAKESHARD_SPARK_CONF", None)
        else:
            os.environ["LAKESHARD_SPARK_CONF"] = saved
    yield session
    session.stop()


@pytest.fixture(scope="session")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3 server on loopback with generated credentials and a `raw` and `lake` bucket."""
    state = tmp_path_factory.mktemp("s3")
    kind = os.environ.get("LAKESHARD_S3_SERVER", "seaweedfs")
    info = s3_server.start(state, ["raw", "lake"], kind)
    yield info
    s3_server.stop(state)


@pytest.fixture
def s3(
    s3_env: dict[str, str], spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The S3 server's variables set for this test, and S3A in the shared session pointed at it."""
    for key in ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)  # never the developer's ~/.aws
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in s3a_options().items():
        conf.set(key, value)
    return dict(s3_env, prefix=f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def spark_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    state = tmp_path_factory.mktemp("cluster")
    jvm.write_spark_defaults()  # plain `spark-submit` finds the pinned JARs, as after `make env`
    info = spark_cluster.start(state, workers=2)
    yield info
    spark_cluster.stop(state)


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    """A private copy of the bundled declarations, for tests that edit them."""
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    return target


@pytest.fixture(scope="session")
def conformance() -> Path:
    """The outside bad-input corpora (``LAKESHARD_CONFORMANCE``, default ../shared/conformance)."""
    if not CONFORMANCE.is_dir():
        pytest.skip(
            f"conformance corpora not found at {CONFORMANCE}: set LAKESHARD_CONFORMANCE to a "
            "copy of the shared corpora to run these tests"
        )
    return CONFORMANCE


JVM_FIXTURES = frozenset({"spark", "s3", "s3_env", "spark_cluster_url"})


# The longest files, longest first (measured: `make test PYTEST_ARGS=--durations=60`). With
# `--dist loadfile` each file runs whole on one worker, in collection order: started first, the
# long ones overlap each other instead of leaving one worker busy at the end.
LONGEST_FIRST = (
    "test_image.py",  # a cold build: debootstrap, apt and pip inside the build, minutes
    "test_storage_faults.py",
    "test_autoscaling.py",
    "test_cluster.py",
    "test_chaos.py",
    "test_concurrent_runs.py",
    "test_governance.py",
    "test_export.py",
    "test_hash_properties.py",
    "test_cron.py",
    "test_notebook.py",
    "test_s3_rights.py",
    "test_secrets.py",
    "test_damaged_lake.py",
)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``jvm`` every test whose fixtures start Spark or the S3 server; the unit tier is
    ``-m "not jvm"``. Tests that start Spark through the CLI carry the marker themselves.
    Then the longest files go first (LONGEST_FIRST), the rest keep their order."""
    for item in items:
        if JVM_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.jvm)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def every_table_verifies(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """After each ``jvm`` test, every local table it wrote holds up, read with delta-rs: unique
    content hashes, and the run log's accounting. No Spark job (except a column-mapped table's
    hash column, which delta-rs misreads): tests/test_verify.py recomputes hashes with Spark."""
    yield
    if request.node.get_closest_marker("unverified") or not request.node.get_closest_marker("jvm"):
        return
    from pipelines.errors import ConfigError
    from pipelines.schema.declarations import load_dataset

    for log in sorted(tmp_path.glob("**/tables/*/_delta_log")):
        table = log.parent
        lake_dir = table.parent.parent
        for schemas in (lake_dir.parent / "schemas", tmp_path / "schemas", SCHEMAS):
            if (schemas / table.name / "dataset.yaml").is_file():
                break
        else:
            continue  # a table of a dataset declared elsewhere (none in this suite)
        try:
            load_dataset(schemas, table.name)
        except ConfigError:
            continue  # a test that ends with a broken declaration on purpose
        spark = request.getfixturevalue("spark") if "spark" in request.fixturenames else None
        problems = table_problems(table, lake_dir / "_lakeshard" / "runs" / table.name, spark)
        assert not problems, f"{table}: {'; '.join(problems)}"


def table_problems(table: Path, runs: Path, spark: Any = None) -> list[str]:
    """What is wrong with a local lakeshard table: repeated content hashes, or a run log whose
    accounting does not add up to the table's rows (read with delta-rs and the Delta log)."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from pipelines.columns import CONTENT_HASH
    from pipelines.lake import deltalog, runlog
    from pipelines.lake.commits import data_commit
    from pipelines.runs.summary import ROW_COUNTS
    from pipelines.verify.accounting import check_accounting

    data = DeltaTable(str(table))
    version = data.version()
    snapshot = deltalog.snapshot(table.as_uri())
    config = snapshot.configuration if snapshot is not None else {}
    mapped = config.get("delta.columnMapping.mode", "none") != "none"
    widened = config.get("delta.enableTypeWidening") == "true"
    if (mapped or widened) and spark is not None:
        # delta-rs 1.x reads a column-mapped table's columns as nulls and refuses type
        # widening (evolution: in_place): Spark reads these.
        frame = spark.read.format("delta").option("versionAsOf", version).load(str(table))
        hashes = frame.select(CONTENT_HASH).toArrow().column(CONTENT_HASH)
    else:
        hashes = data.to_pyarrow_table(columns=[CONTENT_HASH]).column(CONTENT_HASH)
    problems: list[str] = []
    if hashes.null_count:
        problems.append(f"{hashes.null_count} row(s) read with a null content hash")
    counts = pc.value_counts(hashes)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated) and not hashes.null_count:
        first = repeated[0].as_py()
        problems.append(
            f"{len(repeated)} content hash(es) appear more than once "
            f"(e.g. {first['values'].hex()} {first['counts']} times)"
        )
    records = []
    if (runs / "_delta_log").is_dir():
        log = DeltaTable(str(runs))
        columns = ["run_id", "command", "status", "ended_at", *ROW_COUNTS, "details"]
        records = log.to_pyarrow_table(columns=columns).to_pylist()
    commits = [
        commit
        for info in deltalog.commits(table.as_uri())
        if info.version <= version
        and (
            commit := data_commit(
                info.version, info.operation, info.operation_metrics, info.user_metadata
            )
        )
    ]
    accounting = check_accounting(runlog.latest_records(records), commits, len(hashes))
    if not accounting["ok"]:
        kept = ("table_rows", "expected_rows", "sum_written", "sum_updated", "unrecorded")
        summary = ", ".join(f"{key} {accounting[key]}" for key in kept)
        problems.append(f"the run log's accounting fails: {summary}; {accounting['bad_runs']}")
    return problems
