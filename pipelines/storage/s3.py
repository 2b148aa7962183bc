"""Checking that an S3 lake answers, and the boto3 client lakeshard uses for it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from pipelines.errors import ConfigError
from pipelines.storage import arrowfs


def s3_client() -> Any:
    """A boto3 S3 client from the standard AWS variables, with short timeouts."""
    import boto3
    from botocore.config import Config

    endpoint = arrowfs.endpoint()
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=arrowfs.region() or "us-east-1",
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
    endpoint = arrowfs.endpoint()
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
