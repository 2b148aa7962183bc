"""pyarrow filesystems for lake and export URIs, without Spark.

The file checks and the exporter on the executors, the Delta log reader and the trainer-side
loader read and write through these, with S3 settings from :mod:`pipelines.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from pipelines.config import S3Settings, s3_settings
from pipelines.errors import ConfigError


def s3_options(s3: S3Settings | None = None) -> dict[str, Any]:
    """Keyword arguments for ``pyarrow.fs.S3FileSystem`` (secrets revealed: pass them straight
    to the constructor, never print them). ``s3``: default from the AWS variables now."""
    s3 = s3_settings() if s3 is None else s3
    opts: dict[str, Any] = {
        "region": s3.region or "us-east-1",
        "connect_timeout": s3.connect_timeout_s,
        "request_timeout": s3.request_timeout_s,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=s3.attempts),
    }
    if s3.endpoint:
        parsed = urlparse(s3.endpoint)
        opts["endpoint_override"] = parsed.netloc or parsed.path
        opts["scheme"] = parsed.scheme or "https"
        opts["force_virtual_addressing"] = False
    if s3.access_key is not None and s3.secret_key is not None:
        opts["access_key"] = s3.access_key.reveal()
        opts["secret_key"] = s3.secret_key.reveal()
        if s3.session_token is not None:
            opts["session_token"] = s3.session_token.reveal()
    return opts


def filesystem(uri: str, s3: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path within it for a local path, ``file:``, ``s3://`` or
    ``s3a://`` URI; ``s3``: the S3 settings (default: from the AWS variables now)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "s3a"):
        if not parsed.netloc:
            raise ConfigError(f"{uri!r} names no bucket (expected s3://bucket/key)")
        fs = pafs.S3FileSystem(**s3_options(s3))
        return fs, f"{parsed.netloc}/{parsed.path.lstrip('/')}".rstrip("/")
    if parsed.scheme == "file":
        return pafs.LocalFileSystem(), str(Path(parsed.path).resolve())
    if parsed.scheme == "" or len(parsed.scheme) == 1:
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    raise ConfigError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r} (use a path or s3://)")


def read_bytes(uri: str) -> bytes:
    """The whole object at ``uri`` (for small files: manifests)."""
    data = read_bytes_if_any(uri)
    if data is None:
        raise ConfigError(f"{uri}: no such file")
    return data


def read_bytes_if_any(uri: str) -> bytes | None:
    """The whole object at ``uri``, or None where there is none."""
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return bytes(stream.read())
    except FileNotFoundError:
        return None
