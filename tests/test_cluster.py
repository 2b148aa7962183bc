"""spark-submit jobs/ingest.py and jobs/export.py to a real standalone cluster (master + 2
workers), writing to S3."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyspark
import pytest
from pyspark.sql import SparkSession

from pipelines import sample
from pipelines.loader import ShardLoader
from tests.helpers import REPO, accounting_holds, last_json_line
from tests.test_s3 import upload_folder

pytestmark = [pytest.mark.s3, pytest.mark.cluster, pytest.mark.slow]


def test_spark_submit_to_the_standalone_cluster_writes_to_s3(
    spark: SparkSession, s3: dict[str, str], spark_cluster_url: dict[str, object], tmp_path: Path
) -> None:
    stats = sample.write_clicks(tmp_path / "raw", seed=2, files=2, rows=100)
    prefix = s3["prefix"]
    upload_folder(s3, tmp_path / "raw", "raw", prefix)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_"))}
    env.update({k: v for k, v in s3.items() if k.startswith("AWS_")})
    env.update(
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        SPARK_LOCAL_IP="127.0.0.1",
    )
    result = submit(
        spark_cluster_url,
        env,
        "jobs/ingest.py",
        "clicks",
        f"s3a://raw/{prefix}/",
        "--lake",
        f"s3a://lake/{prefix}",
        "--schemas",
        "schemas",
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert s3["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr
    summary = last_json_line(result.stdout)
    assert summary["spark"]["master"] == spark_cluster_url["master"]  # type: ignore[index]
    assert summary["rows_read"] == stats.lines
    assert summary["rows_quarantined"] == stats.bad
    assert accounting_holds(summary)

    # The tasks ran in executors that the workers launched for this application.
    app_id = summary["spark"]["app_id"]  # type: ignore[index]
    executor_dirs = [
        d
        for work in spark_cluster_url["work_dirs"]  # type: ignore[attr-defined]
        for d in (Path(work) / app_id).glob("*")
        if d.is_dir()
    ]
    assert len(executor_dirs) >= 2, executor_dirs
    assert any((d / "stderr").exists() for d in executor_dirs)

    table = spark.read.format("delta").load(summary["table"])
    assert table.count() == summary["rows_written"]

    # Export on the cluster: the executors write the shards to S3 with pyarrow themselves.
    exported = submit(
        spark_cluster_url,
        env,
        "jobs/export.py",
        "clicks",
        "--shards",
        "3",
        "--split",
        "train=0.8,val=0.2",
        "--lake",
        f"s3a://lake/{prefix}",
        "--schemas",
        "schemas",
        "--json",
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    export = last_json_line(exported.stdout)
    assert export["rows"] == summary["rows_written"]
    assert export["manifest"].startswith(f"s3a://lake/{prefix}/exports/clicks/")
    for name, rows in export["splits"].items():  # type: ignore[union-attr]
        loader = ShardLoader(export["manifest"], batch_size=1, split=name, shuffle=False)
        assert sum(len(batch["_content_hash"]) for batch in loader) == rows


def submit(
    cluster: dict[str, object], env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """``spark-submit ARGS`` to the standalone cluster, as an operator would run it."""
    spark_submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    return subprocess.run(
        [
            str(spark_submit),
            "--master",
            str(cluster["master"]),
            "--conf",
            "spark.executor.memory=768m",
            "--conf",
            "spark.ui.enabled=false",
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
