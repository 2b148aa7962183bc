"""pyarrow filesystems for lake and export URIs, without Spark.

The exporter's executors and the trainer-side loader read and write through these. S3 settings come
from the same standard AWS variables that S3A uses (``pipelines.spark.s3a_options``).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from pipelines.errors import ConfigError


def s3_options(env: dict[str, str] | None = None) -> dict[str, object]:
    """Keyword arguments for ``pyarrow.fs.S3FileSystem`` from the AWS variables."""
    env = dict(os.environ) if env is None else env
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    opts: dict[str, object] = {
        "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        "connect_timeout": 5,
        "request_timeout": 60,
    }
    if endpoint:
        parsed = urlparse(endpoint)
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


def filesystem(uri: str, env: dict[str, str] | None = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path within it for a local path, ``file://``, ``s3://`` or
    ``s3a://`` URI."""
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "s3a"):
        if not parsed.netloc:
            raise ConfigError(f"{uri!r} names no bucket (expected s3://bucket/key)")
        fs = pafs.S3FileSystem(**s3_options(env))
        return fs, f"{parsed.netloc}/{parsed.path.lstrip('/')}".rstrip("/")
    if parsed.scheme == "file":
        return pafs.LocalFileSystem(), str(Path(parsed.path).resolve())
    if parsed.scheme == "" or len(parsed.scheme) == 1:
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    raise ConfigError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r} (use a path or s3://)")


def read_bytes(uri: str) -> bytes:
    """The whole object at ``uri`` (for small files: manifests)."""
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return bytes(stream.read())
    except FileNotFoundError:
        raise ConfigError(f"{uri}: no such file") from None
