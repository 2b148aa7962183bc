"""pyarrow filesystems for lake and export URIs, without Spark.

The file checks and the exporter on the executors, the Delta log reader and the trainer-side
loader read and write through these. S3 settings come from the standard AWS variables, read here
for S3A (``pipelines.spark.s3a_options``) and boto3 (``pipelines.storage``) too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from pipelines.errors import ConfigError


def endpoint(env: Mapping[str, str] | None = None) -> str | None:
    """The S3 endpoint the AWS variables name (None: AWS itself)."""
    env = os.environ if env is None else env
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")


def region(env: Mapping[str, str] | None = None) -> str | None:
    """The region the AWS variables name, if any."""
    env = os.environ if env is None else env
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")


def s3_options(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``pyarrow.fs.S3FileSystem`` from the AWS variables (picklable:
    the driver computes them for executors that may lack the variables)."""
    env = dict(os.environ) if env is None else env
    opts: dict[str, Any] = {
        "region": region(env) or "us-east-1",
        "connect_timeout": 5,
        "request_timeout": 60,
    }
    url = endpoint(env)
    if url:
        parsed = urlparse(url)
        opts["endpoint_override"] = parsed.netloc or parsed.path
        opts["scheme"] = parsed.scheme or "https"
        opts["force_virtual_addressing"] = False
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        opts["access_key"] = key
        opts["secret_key"] = secret
        if env.get("AWS_SESSION_TOKEN"):
            opts["session_token"] = env["AWS_SESSION_TOKEN"]
    return opts


def filesystem(uri: str, s3: Mapping[str, Any] | None = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path within it for a local path, ``file:``, ``s3://`` or
    ``s3a://`` URI; ``s3``: ``S3FileSystem`` arguments (default: :func:`s3_options`)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "s3a"):
        if not parsed.netloc:
            raise ConfigError(f"{uri!r} names no bucket (expected s3://bucket/key)")
        fs = pafs.S3FileSystem(**(s3_options() if s3 is None else s3))
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
