"""Ingest over s3a into a real S3 server on loopback; read back without Spark (the secret scan:
tests/test_secrets.py)."""

from __future__ import annotations

from pathlib import Path

import deltalake
import pytest
from pyspark.sql import SparkSession

from pipelines import jvm, sample
from tests.conftest import SCHEMAS
from tests.helpers import accounting_holds, boto_client, ingest_quietly

pytestmark = pytest.mark.s3


def upload_folder(s3: dict[str, str], folder: Path, bucket: str, prefix: str) -> None:
    client = boto_client(s3)
    for path in sorted(folder.iterdir()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.name}")


def storage_options(s3: dict[str, str]) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": s3["AWS_ENDPOINT_URL"],
        "AWS_ACCESS_KEY_ID": s3["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": s3["AWS_SECRET_ACCESS_KEY"],
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }


def test_s3a_uses_the_minimal_sdk_modules_not_the_bundle() -> None:
    names = [Path(p).name for p in jvm.jar_paths()]
    assert not [n for n in names if n.startswith("bundle-")]
    assert any(n.startswith("s3-2.") for n in names)
    assert any(n.startswith("hadoop-aws-3.5.0") for n in names)


def test_ingest_from_s3_to_s3_and_read_back_without_spark(
    spark: SparkSession, s3: dict[str, str], tmp_path: Path
) -> None:
    stats = sample.write_events(tmp_path / "raw", seed=5, files=2, rows=150)
    prefix = s3["prefix"]
    upload_folder(s3, tmp_path / "raw", "raw", prefix)
    lake = f"s3a://lake/{prefix}"
    first = ingest_quietly(
        "events", f"s3a://raw/{prefix}/", "--lake", lake, "--schemas", str(SCHEMAS)
    )
    second = ingest_quietly(
        "events", f"s3://raw/{prefix}/*.csv*", "--lake", lake, "--schemas", str(SCHEMAS)
    )
    # The same bytes re-delivered under new names: recognised by their hash, read from S3.
    client = boto_client(s3)
    for item in client.list_objects_v2(Bucket="raw", Prefix=f"{prefix}/")["Contents"]:
        new_key = item["Key"].replace(f"{prefix}/", f"{prefix}-again/renamed-")
        client.copy_object(
            Bucket="raw", Key=new_key, CopySource={"Bucket": "raw", "Key": item["Key"]}
        )
    third = ingest_quietly(
        "events", f"s3a://raw/{prefix}-again/", "--lake", lake, "--schemas", str(SCHEMAS)
    )

    assert first["table"] == f"s3a://lake/{prefix}/tables/events"
    assert first["rows_read"] == stats.lines
    assert first["rows_quarantined"] == stats.bad
    assert first["rows_written"] > 0
    assert first["files_ingested"] == first["files_seen"] > 0
    assert second["files_skipped"] == second["files_seen"] == first["files_seen"]
    assert third["files_skipped"] == third["files_seen"] == first["files_seen"]
    for later in (second, third):
        assert later["rows_read"] == later["rows_written"] == 0
        assert later["table_version"] == first["table_version"]
        assert accounting_holds(later)
    assert accounting_holds(first)

    by_spark = sorted(
        (r.event_id, bytes(r._content_hash))
        for r in spark.read.format("delta").load(first["table"]).collect()
    )
    table_uri = first["table"].replace("s3a://", "s3://")
    arrow = deltalake.DeltaTable(table_uri, storage_options=storage_options(s3)).to_pyarrow_table()
    by_delta_rs = sorted(
        zip(arrow["event_id"].to_pylist(), arrow["_content_hash"].to_pylist(), strict=True)
    )
    assert by_delta_rs == by_spark
    assert len(by_spark) == first["rows_written"]
