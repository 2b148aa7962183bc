"""The one place that builds a SparkSession: Delta, S3A, zstd Parquet, the cached JARs."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import SparkSession

from pipelines import jvm
from pipelines.config import Config, S3Settings, resolve_config, s3_settings
from pipelines.errors import ConfigError

APP_NAME = "lakeshard"
# pyspark's loggers that print every Spark error it raises as a JSON blob on stderr.
_QUERY_CONTEXT_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")


def s3a_options(s3: S3Settings | None = None) -> dict[str, str]:
    """Hadoop S3A settings (no keys: the default AWS chain); ``s3``: default from the AWS
    variables now. Secrets are revealed into the Hadoop configuration, which Spark redacts in
    its UI and logs (``spark.redaction.regex`` matches ``secret`` and ``token``)."""
    s3 = s3_settings() if s3 is None else s3
    opts: dict[str, str] = {
        "fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",  # s3:// is treated as s3a://
        # The one retry policy (S3Settings): the SDK's tries and S3A's own on top of them;
        # throttling (503 SlowDown) is retried with S3A's throttle backoff, up to its limit.
        "fs.s3a.attempts.maximum": str(s3.attempts),
        "fs.s3a.retry.limit": str(s3.attempts),
        "fs.s3a.retry.throttle.limit": str(4 * s3.attempts),
        "fs.s3a.connection.establish.timeout": f"{s3.connect_timeout_s:g}s",
        "fs.s3a.connection.timeout": f"{s3.request_timeout_s:g}s",
        # Hadoop 3.5's default stream (the analytics accelerator) fetched parts of a source
        # twice: 2.04-2.22x the input bytes per ingest against 2.01x (bench/s3_bytes.py).
        "fs.s3a.input.stream.type": "classic",
    }
    if s3.endpoint:
        opts["fs.s3a.endpoint"] = s3.endpoint
        opts["fs.s3a.path.style.access"] = "true"  # MinIO, SeaweedFS and friends
        opts["fs.s3a.connection.ssl.enabled"] = str(s3.endpoint.startswith("https")).lower()
    if s3.region:
        opts["fs.s3a.endpoint.region"] = s3.region
    elif s3.endpoint:
        opts["fs.s3a.endpoint.region"] = "us-east-1"  # non-AWS endpoints ignore it; S3A wants one
    if s3.access_key is not None and s3.secret_key is not None:
        opts["fs.s3a.access.key"] = s3.access_key.reveal()
        opts["fs.s3a.secret.key"] = s3.secret_key.reveal()
        if s3.session_token is not None:
            opts["fs.s3a.session.token"] = s3.session_token.reveal()
            opts["fs.s3a.aws.credentials.provider"] = (
                "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
            )
        else:
            opts["fs.s3a.aws.credentials.provider"] = (
                "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
            )
    return opts


# On a cluster, executors come and go with the work: dynamic allocation with shuffle tracking
# (no external shuffle service), none kept while idle. The Kubernetes manifests and the
# autoscaling test take these from here (infra/k8s/generate.py writes them into the base).
DYNAMIC_ALLOCATION = {
    "spark.dynamicAllocation.enabled": "true",
    "spark.dynamicAllocation.shuffleTracking.enabled": "true",
    "spark.dynamicAllocation.minExecutors": "0",
    "spark.dynamicAllocation.initialExecutors": "1",
    "spark.dynamicAllocation.maxExecutors": "8",
    "spark.dynamicAllocation.executorIdleTimeout": "60s",
    # An executor holding shuffle files is otherwise kept as long as the driver lives (measured
    # on the standalone cluster: both stayed after the ingest); a finished run's shuffles are
    # not read again.
    "spark.dynamicAllocation.shuffleTracking.timeout": "120s",
    "spark.dynamicAllocation.schedulerBacklogTimeout": "1s",
}
# Executors' size on a cluster (requests equal limits: the scheduler packs what it promised).
EXECUTOR_RESOURCES = {
    "spark.executor.cores": "1",
    "spark.executor.memory": "2g",
    "spark.executor.memoryOverhead": "512m",
    "spark.kubernetes.executor.request.cores": "1",
    "spark.kubernetes.executor.limit.cores": "1",
}
# Settings that name a path on this machine: a cluster's image sets its own.
_LOCAL_PATHS = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")


def cluster_config(config: Config) -> dict[str, str]:
    """spark-submit's settings for a cluster run: the session's own (Delta, lakeshard's
    extensions, S3A timeouts and retries, zstd, ANSI, UTC), none of the local-mode ones, no
    credentials (they come from the environment at run time), plus dynamic allocation and the
    executors' size."""
    submitted = dataclasses.replace(
        config,
        master=None,
        s3=S3Settings(),
        spark=dataclasses.replace(config.spark, under_spark_submit=True, conf=()),
    )
    conf = {k: v for k, v in base_config(submitted).items() if k not in _LOCAL_PATHS}
    return conf | DYNAMIC_ALLOCATION | EXECUTOR_RESOURCES


def base_config(config: Config) -> dict[str, str]:
    """The session's settings for this configuration."""
    conf = {
        "spark.app.name": APP_NAME,
        "spark.sql.extensions": ",".join(jvm.EXTENSIONS),
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
    conf.update({f"spark.hadoop.{k}": v for k, v in s3a_options(config.s3).items()})
    if not config.spark.under_spark_submit:
        # spark-submit's own --master, --jars and --conf settings win there; the JARs come
        # from its --jars or the spark-defaults.conf that `make env` installs.
        if config.master:
            conf["spark.master"] = config.master
        if (config.master or "local").startswith("local"):
            # Local mode needs no network interface: the driver binds to loopback.
            conf["spark.driver.host"] = "127.0.0.1"
            conf["spark.driver.bindAddress"] = "127.0.0.1"
            # Delta rebuilds a table's state in 50 partitions unless told otherwise: on a few
            # local cores, a job of 50 tasks for each table a run reads (measured: a second
            # run into a lake with data took 37 s as a whole process, 24 s with 2 on 2 cores).
            conf["spark.databricks.delta.snapshotPartitions"] = str(local_cores(config.master))
        # Local mode runs every task in the driver's JVM; Spark's 1g default is too small to
        # ingest a 1 GB batch. Cluster drivers keep whatever spark-submit gives them.
        conf["spark.driver.memory"] = config.spark.driver_memory
        conf["spark.jars"] = ",".join(jvm.jar_paths(config))
    conf.update(dict(config.spark.conf))
    return conf


def local_cores(master: str | None) -> int:
    """The task slots of a local master: ``local`` 1, ``local[N]`` (or ``local[N,F]``) N, and
    the machine's cores for ``local[*]`` or anything else."""
    found = re.fullmatch(r"local(?:\[(\d+)(?:,\d+)?\])?", master or "local[*]")
    if found is None:
        return os.cpu_count() or 1
    return int(found.group(1) or 1)


def get_spark(master: str | None = None, config: Config | None = None) -> SparkSession:
    """The SparkSession for a lakeshard command (the active one, when there is one).

    ``config``: default resolved from the environment; ``master`` overrides its master. The
    process environment is left as it is: the workers' Python is set on the context.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    config = resolve_config(master=master) if config is None else config
    if master:
        config = dataclasses.replace(config, master=master)
    builder = SparkSession.builder
    for key, value in base_config(config).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    # Python workers (the Arrow hash UDF) run the interpreter that runs lakeshard unless
    # PYSPARK_PYTHON names another; pyspark reads it once, into the context.
    spark.sparkContext.pythonExec = config.spark.python
    spark.sparkContext.setLogLevel(config.spark.log_level)
    if not str(spark.sparkContext.master).startswith("local"):
        _ship_package(spark)
    return spark


def require_hash_engine(spark: SparkSession, engine: str) -> None:
    """A ConfigError (exit 2) when ``engine`` is ``jvm`` and this session lacks lakeshard's
    function: a Spark started without its jar or its session extension."""
    if engine == "jvm" and not spark.catalog.functionExists(jvm.CONTENT_HASH_FUNCTION):
        raise ConfigError(
            f"this Spark session has no {jvm.CONTENT_HASH_FUNCTION} function: start it with "
            "lakeshard's jars (`make env` writes spark-defaults.conf) and spark.sql.extensions "
            f"{','.join(jvm.EXTENSIONS)}, or set LAKESHARD_HASH_ENGINE=python (slower)"
        )


@contextmanager
def quiet_query_errors(quiet: bool = True) -> Iterator[None]:
    """Silence pyspark's loggers that print each Spark error it raises as a JSON blob: lakeshard
    reports its errors itself, as one line (``--debug`` shows them in full)."""
    from pyspark.logger import PySparkLogger

    # pyspark's own logger class: a plain logging.Logger made first under these names would
    # break pyspark's later calls to them (they pass extra keyword arguments).
    loggers: list[logging.Logger] = [PySparkLogger.getLogger(n) for n in _QUERY_CONTEXT_LOGGERS]
    saved = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = quiet or logger.disabled
    try:
        yield
    finally:
        for logger, was in zip(loggers, saved, strict=True):
            logger.disabled = was


def _ship_package(spark: SparkSession) -> None:
    """Send the ``pipelines`` package to the executors (its hash UDF runs there)."""
    package = Path(__file__).resolve().parent
    archive = Path(tempfile.mkdtemp(prefix="lakeshard-py-")) / "pipelines.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(package.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, Path("pipelines") / path.relative_to(package))
    spark.sparkContext.addPyFile(str(archive))
