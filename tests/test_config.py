"""The one configuration: precedence, validation, and credentials that never print."""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.config import (
    DEFAULT_LEASE_TTL_S,
    Config,
    S3Settings,
    Secret,
    resolve_config,
    s3_settings,
    url_origin,
)
from pipelines.errors import ConfigError
from pipelines.spark import base_config, cluster_config

KEY, SECRET, TOKEN = "AKIAEXAMPLEKEY123", "wJalrXUtnFEMI-very-secret", "FwoGZXIvYXdzE-token"
AWS = {
    "AWS_ACCESS_KEY_ID": KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_SESSION_TOKEN": TOKEN,
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
    "AWS_REGION": "eu-west-1",
}
REPO = Path(__file__).resolve().parent.parent
# Set by pyspark itself in os.environ when its context starts (not by lakeshard).
PYSPARKS_OWN = {"SPARK_AUTH_SOCKET_TIMEOUT", "SPARK_BUFFER_SIZE"}


def _shows_no_secret(text: str) -> None:
    for value in (KEY, SECRET, TOKEN):
        assert value not in text, f"{value!r} printed in {text!r}"


def test_a_secret_prints_redacted_but_keeps_its_value() -> None:
    secret = Secret(SECRET)
    assert SECRET not in repr(secret)
    assert SECRET not in str(secret)
    assert SECRET not in f"{secret}"
    assert secret.reveal() == SECRET
    assert pickle.loads(pickle.dumps(secret)) == secret  # plans travel to executors
    assert Secret("a") != Secret("b")


def test_config_and_everything_carrying_credentials_print_them_redacted() -> None:
    from pipelines.export.shards import WritePlan

    config = resolve_config(lake="s3a://lake/prod", env=AWS)
    plan = WritePlan(
        out="s3a://lake/exports",
        s3=config.s3,
        schema=pa.schema([("a", pa.int64())]),
        splits=("train",),
        shards=2,
        row_group_rows=1024,
    )
    for shown in (config, config.s3, plan):
        _shows_no_secret(repr(shown))
        _shows_no_secret(str(shown))
    assert config.s3.secret_key is not None
    assert config.s3.secret_key.reveal() == SECRET
    assert pickle.loads(pickle.dumps(plan)).s3 == config.s3


def test_clients_are_made_from_the_config_with_the_secrets_revealed() -> None:
    from pipelines.spark import s3a_options
    from pipelines.storage.arrowfs import s3_options

    s3 = s3_settings(AWS)
    hadoop = s3a_options(s3)
    assert (hadoop["fs.s3a.access.key"], hadoop["fs.s3a.secret.key"]) == (KEY, SECRET)
    assert hadoop["fs.s3a.session.token"] == TOKEN
    assert hadoop["fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert hadoop["fs.s3a.endpoint.region"] == "eu-west-1"
    # The classic stream reads each source once; bench/s3_bytes.py measures the difference.
    assert hadoop["fs.s3a.input.stream.type"] == "classic"
    arrow = s3_options(s3)
    assert (arrow["access_key"], arrow["secret_key"], arrow["session_token"]) == (
        KEY,
        SECRET,
        TOKEN,
    )
    assert (arrow["endpoint_override"], arrow["scheme"]) == ("127.0.0.1:9000", "http")
    none = s3a_options(S3Settings())
    assert "fs.s3a.access.key" not in none  # no keys: the default AWS chain


def test_one_retry_policy_reaches_s3a_pyarrow_and_boto3() -> None:
    from pipelines.spark import s3a_options
    from pipelines.storage.s3 import s3_client

    s3 = s3_settings({**AWS, "LAKESHARD_S3_ATTEMPTS": "7"})
    assert s3.attempts == 7
    hadoop = s3a_options(s3)
    assert (hadoop["fs.s3a.attempts.maximum"], hadoop["fs.s3a.retry.limit"]) == ("7", "7")
    assert hadoop["fs.s3a.connection.timeout"] == "60s"
    assert s3_client(s3).meta.config.retries == {"total_max_attempts": 7, "mode": "standard"}
    # The check before a run fails fast instead.
    assert s3_client(s3, probe=True).meta.config.retries["total_max_attempts"] == 2
    assert s3_settings({}).attempts == 5


def test_flag_beats_environment_beats_default(tmp_path: Path) -> None:
    env = {
        "LAKESHARD_LAKE": str(tmp_path / "env-lake"),
        "LAKESHARD_SCHEMAS": "env-schemas",
        "LAKESHARD_LEASE_WAIT": "7",
        "LAKESHARD_SPARK_CONF": "spark.a=1; spark.b = x=y ;",
    }
    from_env = resolve_config(env=env)
    assert from_env.lake == f"file://{tmp_path / 'env-lake'}"
    assert (from_env.schemas, from_env.lease_wait_s) == (Path("env-schemas"), 7.0)
    assert from_env.lease_ttl_s == DEFAULT_LEASE_TTL_S
    assert from_env.spark.conf == (("spark.a", "1"), ("spark.b", "x=y"))
    flagged = resolve_config(lake="s3://b/p", schemas="s", lease_wait_s=0.0, env=env)
    assert (flagged.lake, flagged.schemas, flagged.lease_wait_s) == ("s3a://b/p", Path("s"), 0.0)
    default = resolve_config(env={})
    assert default.lake == "file://" + str(Path("./lake").resolve())
    assert (default.master, default.s3) == (None, S3Settings())
    assert default.spark.hash_engine == "jvm"
    assert resolve_config(env={"LAKESHARD_HASH_ENGINE": "python"}).spark.hash_engine == "python"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LAKESHARD_LEASE_TTL": "soon"}, "LAKESHARD_LEASE_TTL: expected a number of seconds"),
        ({"LAKESHARD_LEASE_WAIT": "-1"}, "LAKESHARD_LEASE_WAIT: expected a number of seconds"),
        ({"LAKESHARD_SPARK_CONF": "novalue"}, "LAKESHARD_SPARK_CONF: expected key=value"),
        ({"LAKESHARD_LAKE": "ftp://x/y"}, "unsupported URI scheme 'ftp'"),
        ({"LAKESHARD_HASH_ENGINE": "rust"}, "LAKESHARD_HASH_ENGINE: expected one of jvm, python"),
        ({"LAKESHARD_S3_ATTEMPTS": "0"}, "LAKESHARD_S3_ATTEMPTS: expected a whole number >= 1"),
    ],
)
def test_bad_settings_are_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(env=env)


def test_the_config_is_frozen() -> None:
    config = resolve_config(env={})
    with pytest.raises(AttributeError):
        config.lake = "elsewhere"  # type: ignore[misc]
    assert isinstance(config, Config)


def test_only_the_config_module_reads_the_environment() -> None:
    readers = []
    for path in sorted((REPO / "pipelines").rglob("*.py")):
        text = path.read_text()
        if path.name != "config.py" and ("os.environ" in text or "getenv" in text):
            readers.append(str(path.relative_to(REPO)))
    assert readers == []


@pytest.mark.jvm
def test_get_spark_leaves_the_environment_alone_and_runs_python_workers(tmp_path: Path) -> None:
    """A fresh process: the session starts, Python workers run this interpreter although
    PYSPARK_PYTHON is not set, and os.environ holds no lakeshard change (pyspark itself sets
    two variables of its own when its context starts)."""
    script = textwrap.dedent(
        """
        import os, sys
        before = dict(os.environ)
        from pipelines.spark import get_spark
        spark = get_spark("local[1]")
        from pyspark.sql import functions as F
        from pyspark.sql.types import StringType
        where = F.udf(lambda _: sys.executable, StringType())
        assert spark.range(1).select(where("id")).first()[0] == sys.executable
        spark.stop()
        changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}
        print("changed:", sorted(changed))
        """
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYSPARK") and k not in {"SPARK_LOCAL_IP", *PYSPARKS_OWN}
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    changed = done.stdout.split("changed:", 1)[1].strip()
    assert set(ast.literal_eval(changed)) <= PYSPARKS_OWN, changed


def test_monitoring_targets_come_from_flags_or_the_environment_and_never_print() -> None:
    hook = "https://hooks.example.com/services/T000/B000/XXXXSECRET?token=abc"
    env = {"LAKESHARD_ALERT_WEBHOOK": hook, "LAKESHARD_METRICS_DIR": "/var/lib/node"}
    settings = resolve_config(env=env, targets={"pushgateway": "http://pg:9091"})
    targets = settings.monitoring
    assert targets.webhook is not None
    assert targets.webhook.reveal() == hook
    assert targets.pushgateway is not None
    assert targets.pushgateway.reveal() == "http://pg:9091"
    assert targets.metrics_dir == Path("/var/lib/node")
    assert targets.alertmanager is None
    assert "XXXXSECRET" not in repr(settings)
    assert url_origin(targets.webhook) == "https://hooks.example.com/…"
    assert url_origin("http://user:pw@127.0.0.1:9093") == "http://127.0.0.1:9093"
    with pytest.raises(ConfigError, match="LAKESHARD_ALERTMANAGER: expected an http"):
        resolve_config(env={"LAKESHARD_ALERTMANAGER": "alertmanager:9093"})


@pytest.mark.parametrize(
    ("master", "cores"),
    [("local", 1), ("local[3]", 3), ("local[4,2]", 4), ("local[*]", os.cpu_count())],
)
def test_a_local_session_rebuilds_delta_state_in_as_many_partitions_as_it_has_cores(
    master: str, cores: int
) -> None:
    """Delta's default, 50, made each table read a job of 50 tasks on two cores."""
    conf = base_config(resolve_config(env={"LAKESHARD_SPARK_MASTER": master}))
    assert conf["spark.databricks.delta.snapshotPartitions"] == str(cores)
    # A cluster's driver keeps Delta's default: its executors have the cores.
    assert "spark.databricks.delta.snapshotPartitions" not in cluster_config(resolve_config(env={}))
