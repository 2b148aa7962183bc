"""Shared fixtures: one SparkSession per run, a real S3 server, a real standalone cluster.

The S3 server (SeaweedFS by default, MinIO with LAKESHARD_S3_SERVER=minio) and the Spark
cluster are real processes on loopback, started here and stopped at the end of the run.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from infra.s3 import server as s3_server
from infra.spark import cluster as spark_cluster
from pipelines import jvm
from pipelines.spark import get_spark, s3a_options

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "schemas"
CONFORMANCE = Path(
    os.environ.get("LAKESHARD_CONFORMANCE", str(REPO.parent / "shared" / "conformance"))
)

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
    for key, value in s3a_options(dict(os.environ)).items():
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


@pytest.fixture(autouse=True)
def every_table_verifies(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """After each test, `lakeshard verify` passes on every local table the test wrote (unique
    content hashes, a sample of them recomputed, the run log's accounting)."""
    yield
    if request.node.get_closest_marker("unverified") or "spark" not in request.fixturenames:
        return
    from pipelines import verify as verifying
    from pipelines.config import resolve_config
    from pipelines.errors import ConfigError
    from pipelines.schema.datasets import load_dataset

    spark = request.getfixturevalue("spark")
    for log in sorted(tmp_path.glob("**/tables/*/_delta_log")):
        table = log.parent
        lake_dir = table.parent.parent
        for schemas in (lake_dir.parent / "schemas", tmp_path / "schemas", SCHEMAS):
            if (schemas / table.name / "dataset.yaml").is_file():
                break
        else:
            continue  # a table of a dataset declared elsewhere (none in this suite)
        try:
            dataset = load_dataset(schemas, table.name)
        except ConfigError:
            continue  # a test that ends with a broken declaration on purpose
        settings = resolve_config(lake=str(lake_dir), schemas=str(schemas))
        report = verifying.verify(spark, settings, dataset, verifying.Options(sample=500))
        assert report["ok"], f"verify {table}: {verifying.problems(report)}"
