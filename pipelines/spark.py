"""The one place that builds a SparkSession: Delta, S3A, zstd Parquet, the cached JARs."""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from pathlib import Path

from pyspark.sql import SparkSession

from pipelines import jvm
from pipelines.storage import arrowfs

APP_NAME = "lakeshard"


def s3a_options(env: dict[str, str] | None = None) -> dict[str, str]:
    """Hadoop S3A settings from the standard AWS variables (no keys: the default AWS chain)."""
    env = dict(os.environ if env is None else env)
    opts: dict[str, str] = {
        "fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",  # s3:// is treated as s3a://
        # Fail in seconds, not minutes, when the endpoint is down; S3A still retries throttling.
        "fs.s3a.attempts.maximum": "3",
        "fs.s3a.retry.limit": "3",
        "fs.s3a.connection.establish.timeout": "5s",
        "fs.s3a.connection.timeout": "60s",
    }
    endpoint = arrowfs.endpoint(env)
    if endpoint:
        opts["fs.s3a.endpoint"] = endpoint
        opts["fs.s3a.path.style.access"] = "true"  # MinIO, SeaweedFS and friends
        opts["fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https")).lower()
    region = arrowfs.region(env)
    if region:
        opts["fs.s3a.endpoint.region"] = region
    elif endpoint:
        opts["fs.s3a.endpoint.region"] = "us-east-1"  # non-AWS endpoints ignore it; S3A wants one
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        opts["fs.s3a.access.key"] = key
        opts["fs.s3a.secret.key"] = secret
        token = env.get("AWS_SESSION_TOKEN")
        if token:
            opts["fs.s3a.session.token"] = token
            opts["fs.s3a.aws.credentials.provider"] = (
                "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
            )
        else:
            opts["fs.s3a.aws.credentials.provider"] = (
                "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
            )
    return opts


def base_config(master: str | None) -> dict[str, str]:
    conf = {
        "spark.app.name": APP_NAME,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.parquet.compression.codec": "zstd",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.ansi.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # An ingest keeps its parsed batch cached; without this, adaptive execution may not
        # coalesce the shuffles inside it, and a partitioned write makes thousands of tiny files.
        "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true",
        "spark.driver.extraJavaOptions": f"-Dlog4j.configurationFile={jvm.LOG4J}",
        "spark.executor.extraJavaOptions": f"-Dlog4j.configurationFile={jvm.LOG4J}",
    }
    conf.update({f"spark.hadoop.{k}": v for k, v in s3a_options().items()})
    if not under_spark_submit():
        # spark-submit's own --master, --jars and --conf settings win there; the JARs come
        # from its --jars or the spark-defaults.conf that `make env` installs.
        if master:
            conf["spark.master"] = master
        # Local mode runs every task in the driver's JVM; Spark's 1g default is too small to
        # ingest a 1 GB batch. Cluster drivers keep whatever spark-submit gives them.
        conf["spark.driver.memory"] = os.environ.get("LAKESHARD_DRIVER_MEMORY", "4g")
        conf["spark.jars"] = ",".join(jvm.jar_paths())
    extra = os.environ.get("LAKESHARD_SPARK_CONF", "")
    for item in filter(None, (part.strip() for part in extra.split(";"))):
        key, _, value = item.partition("=")
        conf[key.strip()] = value.strip()
    return conf


def under_spark_submit() -> bool:
    """True inside a driver that spark-submit started (its JVM is already running)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(master: str | None = None) -> SparkSession:
    """The SparkSession for a lakeshard command (the active one, when there is one)."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if (master or "local").startswith("local"):
        # Local mode needs no network interface: bind to loopback, and say nothing about it.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers (the Arrow hash UDF) run the interpreter that runs lakeshard, unless the
    # user chose another; pyspark reads this variable, not spark.pyspark.python.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder
    for key, value in base_config(master).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("LAKESHARD_SPARK_LOG_LEVEL", "ERROR"))
    if not str(spark.sparkContext.master).startswith("local"):
        _ship_package(spark)
    return spark


def _ship_package(spark: SparkSession) -> None:
    """Send the ``pipelines`` package to the executors (its hash UDF runs there)."""
    package = Path(__file__).resolve().parent
    archive = Path(tempfile.mkdtemp(prefix="lakeshard-py-")) / "pipelines.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(package.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, Path("pipelines") / path.relative_to(package))
    spark.sparkContext.addPyFile(str(archive))
