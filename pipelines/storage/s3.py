"""Checking that an S3 lake answers, and the boto3 client lakeshard uses for it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from pipelines.config import S3Settings, Secret, s3_settings
from pipelines.errors import ConfigError, StorageError


def s3_client(s3: S3Settings | None = None, *, probe: bool = False) -> Any:
    """A boto3 S3 client with the one retry policy (S3Settings), or, to ``probe`` the lake before
    a run, two tries and short timeouts; ``s3``: default from the AWS variables now (no keys
    there: boto3's own credential chain)."""
    import boto3
    from botocore.config import Config as BotoConfig

    s3 = s3_settings() if s3 is None else s3
    keys = s3.access_key is not None and s3.secret_key is not None

    def revealed(secret: Secret | None) -> str | None:
        return secret.reveal() if keys and secret is not None else None

    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        region_name=s3.region or "us-east-1",
        aws_access_key_id=revealed(s3.access_key),
        aws_secret_access_key=revealed(s3.secret_key),
        aws_session_token=revealed(s3.session_token),
        config=BotoConfig(
            connect_timeout=s3.connect_timeout_s,
            read_timeout=10 if probe else s3.request_timeout_s,
            retries={"total_max_attempts": 2 if probe else s3.attempts, "mode": "standard"},
            s3={"addressing_style": "path"} if s3.path_style else {},
        ),
    )


RIGHTS = "infra/iam/lakeshard-run.json"  # the S3 rights a run needs, as an IAM policy


def check_lake_reachable(lake: str, s3: S3Settings | None = None, *, writes: bool = False) -> None:
    """Fail fast (exit 2) when an S3 lake's endpoint, bucket or credentials are wrong, or, for
    a command that ``writes``, when the keys may not write and delete under the lake's prefix.

    S3A would retry for minutes before giving up; one short request says it in a second. The
    message names the endpoint and bucket, never a secret.
    """
    if not lake.startswith("s3a://"):
        return
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    s3 = s3_settings() if s3 is None else s3
    bucket = urlparse(lake).netloc
    endpoint = s3.endpoint
    where = f"bucket {bucket!r}" + (f" at {endpoint}" if endpoint else "")
    client = s3_client(s3, probe=True)
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
    if writes:
        _check_writable(s3_client(s3), lake)  # the full retry policy: a 503 is tried again


def _check_writable(client: Any, lake: str) -> None:
    """Write and delete one small object under the lake's prefix (two requests), so a run
    with read-only keys stops before it reads any data rather than at its first commit."""
    from botocore.exceptions import ClientError

    parsed = urlparse(lake)
    key = "/".join(
        p for p in (parsed.path.strip("/"), "_lakeshard", f".probe-{uuid.uuid4().hex}") if p
    )
    requests: list[tuple[str, Callable[[], object]]] = [
        ("s3:PutObject", lambda: client.put_object(Bucket=parsed.netloc, Key=key, Body=b"")),
        ("s3:DeleteObject", lambda: client.delete_object(Bucket=parsed.netloc, Key=key)),
    ]
    for right, request in requests:
        try:
            request()
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code", status)
            where = f"{parsed.netloc}/{key.rsplit('/', 1)[0]}/"
            if status != 403 and code != "AccessDenied":  # the store failing, not a right missing
                raise StorageError(
                    f"cannot write to the lake {lake} ({right} on {where}: {code})"
                ) from None
            raise ConfigError(
                f"the lake {lake} refused {right} on {where} ({code}): a run needs the rights "
                f"in {RIGHTS}"
            ) from None
