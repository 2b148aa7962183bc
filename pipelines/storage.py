"""Storage I/O outside Delta: listing source files and checking that the lake is reachable."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from pyspark.sql import SparkSession

from pipelines.errors import ConfigError, StorageError, first_line
from pipelines.settings import normalise_uri

# Files a writer leaves while it is still writing, or markers; never data.
_IGNORED_PREFIXES = (".", "_")


# A source (or glob match) named like a data file must be one: a folder there is rejected.
_PLAIN_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".parquet")
_FILE_SUFFIXES = _PLAIN_SUFFIXES + tuple(
    s + c for s in _PLAIN_SUFFIXES for c in (".gz", ".bz2", ".zst")
)


@dataclass(frozen=True)
class SourceFile:
    uri: str
    size: int
    modified_ms: int
    problem: str | None = None  # set when the path cannot be a source file at all


def list_sources(spark: SparkSession, sources: list[str]) -> list[SourceFile]:
    """Expand files, folders and globs (local or s3a) into files, sorted by URI, no repeats."""
    jvm: Any = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    found: dict[str, SourceFile] = {}
    for source in sources:
        uri = normalise_uri(source)
        path = jvm.org.apache.hadoop.fs.Path(uri)
        try:
            fs = path.getFileSystem(conf)
            matches = fs.globStatus(path)
        except Exception as exc:  # py4j wraps the Java exception
            raise StorageError(f"cannot list source {source}: {first_line(exc)}") from None
        if matches is None or len(matches) == 0:
            raise ConfigError(f"source {source} matches no file")
        for status in matches:
            name = status.getPath().getName()
            if status.isDirectory() and name.lower().endswith(_FILE_SUFFIXES):
                dir_uri = status.getPath().toString()
                problem = "is a directory where a file was expected"
                found[dir_uri] = SourceFile(uri=dir_uri, size=0, modified_ms=0, problem=problem)
                continue
            for file_status in _walk(fs, status):
                name = file_status.getPath().getName()
                if name.startswith(_IGNORED_PREFIXES):
                    continue
                file_uri = file_status.getPath().toString()
                found[file_uri] = SourceFile(
                    uri=file_uri,
                    size=int(file_status.getLen()),
                    modified_ms=int(file_status.getModificationTime()),
                )
    return [found[k] for k in sorted(found)]


def _walk(fs: Any, status: Any) -> Iterator[Any]:
    if not status.isDirectory():
        yield status
        return
    iterator = fs.listFiles(status.getPath(), True)
    while iterator.hasNext():
        yield iterator.next()


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def s3_client() -> Any:
    """A boto3 S3 client from the standard AWS variables, with short timeouts."""
    import boto3
    from botocore.config import Config

    endpoint = _endpoint()
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1",
        config=Config(
            connect_timeout=5,
            read_timeout=10,
            retries={"max_attempts": 2, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint else {},
        ),
    )


def check_lake_reachable(lake: str) -> None:
    """Fail fast (exit 2) when an S3 lake's endpoint, bucket or credentials are wrong.

    S3A would retry for minutes before giving up; one short request says it in a second. The
    message names the endpoint and bucket, never a secret.
    """
    if not lake.startswith("s3a://"):
        return
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket = urlparse(lake).netloc
    endpoint = _endpoint()
    where = f"bucket {bucket!r}" + (f" at {endpoint}" if endpoint else "")
    client = s3_client()
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError:
        raise ConfigError(f"no AWS credentials found for the lake {where}") from None
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status in (401, 403) or code in (
            "403",
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
        ):
            raise ConfigError(
                f"access denied to the lake {where}: check AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY"
            ) from None
        if status == 404 or code in ("404", "NoSuchBucket"):
            raise ConfigError(f"the lake {where} does not exist") from None
        raise ConfigError(f"the lake {where} answered {code or status}") from None
    except (BotoCoreError, OSError) as exc:
        raise ConfigError(f"cannot reach the lake {where}: {type(exc).__name__}") from None
