"""The one configuration: settings resolved once (flag > environment > default), frozen.

This is the only module that reads environment variables. A command resolves a :class:`Config`
once and passes it down; library entry points that are called without one (the trainer-side
loader, a notebook) resolve the same way on first use. Credentials are :class:`Secret` values:
their ``repr`` and ``str`` are redacted, so no config, plan or error message can print them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit

from pipelines.errors import ConfigError

DEFAULT_LAKE = "./lake"
DEFAULT_SCHEMAS = "./schemas"
DEFAULT_MASTER = "local[*]"
DEFAULT_LEASE_TTL_S = 120.0  # how long a dead run's lease lives on without a heartbeat
DEFAULT_DRIVER_MEMORY = "4g"  # local mode: tasks run in the driver's JVM
DEFAULT_SPARK_LOG_LEVEL = "ERROR"
HASH_ENGINES = ("jvm", "python")  # the first is the default
REDACTED = "********"
DEFAULT_S3_ATTEMPTS = 5  # tries per S3 request, the first included, with backoff between


class Secret:
    """A credential. ``repr`` and ``str`` show it redacted; :meth:`reveal` gives the value to
    the one call that needs it (a client's constructor)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[Any, tuple[str]]:  # picklable: plans travel to executors
        return (Secret, (self._value,))


@dataclass(frozen=True)
class S3Settings:
    """S3-compatible storage from the standard AWS variables (no keys: the default AWS chain)."""

    endpoint: str | None = None  # AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL; None: AWS itself
    region: str | None = None  # AWS_REGION or AWS_DEFAULT_REGION
    access_key: Secret | None = None
    secret_key: Secret | None = None
    session_token: Secret | None = None
    # One retry policy for S3A, pyarrow and boto3 (README "Retries"): tries per request
    # (LAKESHARD_S3_ATTEMPTS), how long to wait for a connection and for an answer.
    attempts: int = DEFAULT_S3_ATTEMPTS
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 60.0

    @property
    def has_keys(self) -> bool:
        return self.access_key is not None and self.secret_key is not None

    @property
    def path_style(self) -> bool:
        """Non-AWS endpoints (MinIO, SeaweedFS, ...) take path-style requests."""
        return self.endpoint is not None


@dataclass(frozen=True)
class SparkSettings:
    """How lakeshard starts Spark (the session itself is built by :mod:`pipelines.spark`)."""

    driver_memory: str = DEFAULT_DRIVER_MEMORY  # LAKESHARD_DRIVER_MEMORY (local mode)
    conf: tuple[tuple[str, str], ...] = ()  # LAKESHARD_SPARK_CONF: "key=value;key=value"
    log_level: str = DEFAULT_SPARK_LOG_LEVEL  # LAKESHARD_SPARK_LOG_LEVEL
    python: str = sys.executable  # PYSPARK_PYTHON: the Python of the workers (hash UDF)
    under_spark_submit: bool = False  # PYSPARK_GATEWAY_PORT set: the JVM is already running
    conf_dir: Path | None = None  # SPARK_CONF_DIR, where `make env` writes spark-defaults.conf
    # LAKESHARD_HASH_ENGINE: "jvm" (lakeshard's Spark expression, from its jar) or "python"
    # (the Arrow UDF, for a Spark without lakeshard's jar); both give the same hashes.
    hash_engine: str = "jvm"


SEVERITIES = ("info", "warning", "critical")  # a monitoring finding's severity, lowest first


@dataclass(frozen=True)
class MonitorTargets:
    """Where run metrics and alerts go (README "Monitoring and alerts"); None: nowhere."""

    pushgateway: Secret | None = None  # LAKESHARD_PUSHGATEWAY: each run's metrics pushed there
    metrics_dir: Path | None = None  # LAKESHARD_METRICS_DIR: node_exporter textfile collector
    webhook: Secret | None = None  # LAKESHARD_ALERT_WEBHOOK: each new/resolved finding as JSON
    alertmanager: Secret | None = None  # LAKESHARD_ALERTMANAGER: base URL, /api/v2/alerts


def url_origin(url: Secret | str) -> str:
    """What of a URL may be printed: scheme, host and port. Webhook URLs often carry their
    secret in the path or the query (and credentials before the host)."""
    parts = urlsplit(url.reveal() if isinstance(url, Secret) else url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{rest}"


@dataclass(frozen=True)
class Config:
    """Everything a command needs to know about where things are and how to reach them."""

    lake: str  # normalised URI: file:///abs/path or s3a://bucket/prefix
    schemas: Path
    master: str | None  # None: leave it to spark-submit / an active session
    s3: S3Settings = field(default_factory=S3Settings)
    spark: SparkSettings = field(default_factory=SparkSettings)
    lease_wait_s: float = 0.0  # LAKESHARD_LEASE_WAIT: wait for another run of the dataset
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S  # LAKESHARD_LEASE_TTL
    cache: Path = field(default_factory=lambda: Path.home() / ".cache" / "lakeshard")
    jars: Path | None = None  # LAKESHARD_JARS: a folder of jars instead of the cache's
    monitoring: MonitorTargets = field(default_factory=MonitorTargets)

    @property
    def on_s3(self) -> bool:
        return self.lake.startswith("s3a://")

    def table_uri(self, dataset: str) -> str:
        return join_uri(self.lake, "tables", dataset)

    def quarantine_uri(self, dataset: str) -> str:
        return join_uri(self.lake, "quarantine", dataset)

    def runs_uri(self, dataset: str) -> str:
        """The dataset's run log. One per dataset: each of a dataset's tables has one writer,
        the run holding the dataset's lease."""
        return join_uri(self.lake, "_lakeshard", "runs", dataset)

    def ledger_uri(self, dataset: str) -> str:
        return join_uri(self.lake, "_lakeshard", "ledger", dataset)

    def lease_uri(self, dataset: str) -> str:
        return join_uri(self.lake, "_lakeshard", "leases", dataset)


def resolve_config(
    lake: str | None = None,
    schemas: str | None = None,
    master: str | None = None,
    lease_wait_s: float | None = None,
    lease_ttl_s: float | None = None,
    env: Mapping[str, str] | None = None,
    targets: Mapping[str, str | None] | None = None,
) -> Config:
    """The configuration: each setting from its flag (the arguments), else the environment
    (``env``, default ``os.environ``), else its default. Bad values are a ConfigError.
    ``targets``: the monitoring flags (``pushgateway``, ``metrics_dir``, ``webhook``,
    ``alertmanager``) where a command has them."""
    env = os.environ if env is None else env
    cache = env.get("LAKESHARD_CACHE")
    return Config(
        lake=normalise_uri(lake or env.get("LAKESHARD_LAKE") or DEFAULT_LAKE),
        schemas=Path(schemas or env.get("LAKESHARD_SCHEMAS") or DEFAULT_SCHEMAS),
        master=master or env.get("LAKESHARD_SPARK_MASTER"),
        s3=s3_settings(env),
        spark=SparkSettings(
            driver_memory=env.get("LAKESHARD_DRIVER_MEMORY") or DEFAULT_DRIVER_MEMORY,
            conf=spark_conf(env.get("LAKESHARD_SPARK_CONF", "")),
            log_level=env.get("LAKESHARD_SPARK_LOG_LEVEL") or DEFAULT_SPARK_LOG_LEVEL,
            python=env.get("PYSPARK_PYTHON") or sys.executable,
            under_spark_submit="PYSPARK_GATEWAY_PORT" in env,
            conf_dir=Path(env["SPARK_CONF_DIR"]) if env.get("SPARK_CONF_DIR") else None,
            hash_engine=_choice(env, "LAKESHARD_HASH_ENGINE", HASH_ENGINES),
        ),
        lease_wait_s=_seconds(lease_wait_s, env, "LAKESHARD_LEASE_WAIT", 0.0),
        lease_ttl_s=_seconds(lease_ttl_s, env, "LAKESHARD_LEASE_TTL", DEFAULT_LEASE_TTL_S),
        cache=Path(cache) if cache else Path.home() / ".cache" / "lakeshard",
        jars=Path(env["LAKESHARD_JARS"]) if env.get("LAKESHARD_JARS") else None,
        monitoring=_monitor_targets(env, targets or {}),
    )


def _monitor_targets(env: Mapping[str, str], flags: Mapping[str, str | None]) -> MonitorTargets:
    def url(flag: str, variable: str) -> Secret | None:
        value = flags.get(flag) or env.get(variable)
        if not value:
            return None
        if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname:
            shown = url_origin(value) if "://" in value else "a value without a scheme"
            where = f"--{flag.replace('_', '-')}" if flags.get(flag) else variable
            raise ConfigError(f"{where}: expected an http(s) URL, got {shown}")
        return Secret(value)

    folder = flags.get("metrics_dir") or env.get("LAKESHARD_METRICS_DIR")
    return MonitorTargets(
        pushgateway=url("pushgateway", "LAKESHARD_PUSHGATEWAY"),
        metrics_dir=Path(folder) if folder else None,
        webhook=url("webhook", "LAKESHARD_ALERT_WEBHOOK"),
        alertmanager=url("alertmanager", "LAKESHARD_ALERTMANAGER"),
    )


def s3_settings(env: Mapping[str, str] | None = None) -> S3Settings:
    """S3 settings from the AWS variables (``env``, default ``os.environ``), read now."""
    env = os.environ if env is None else env

    def secret(name: str) -> Secret | None:
        value = env.get(name)
        return Secret(value) if value else None

    return S3Settings(
        endpoint=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        access_key=secret("AWS_ACCESS_KEY_ID"),
        secret_key=secret("AWS_SECRET_ACCESS_KEY"),
        session_token=secret("AWS_SESSION_TOKEN"),
        attempts=_attempts(env.get("LAKESHARD_S3_ATTEMPTS")),
    )


def _attempts(text: str | None) -> int:
    if not text:
        return DEFAULT_S3_ATTEMPTS
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"LAKESHARD_S3_ATTEMPTS: expected a whole number >= 1, got {text!r}")
    return int(text)


def spark_conf(text: str) -> tuple[tuple[str, str], ...]:
    """``key=value;key=value`` (LAKESHARD_SPARK_CONF) as pairs, in order."""
    pairs: list[tuple[str, str]] = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"LAKESHARD_SPARK_CONF: expected key=value, got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def parse_seconds(text: str) -> float:
    """A number of seconds, 0 or more; ValueError otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise ValueError(f"expected a number of seconds, got {text!r}")
    return value


def _choice(env: Mapping[str, str], variable: str, choices: tuple[str, ...]) -> str:
    text = env.get(variable) or choices[0]
    if text not in choices:
        raise ConfigError(f"{variable}: expected one of {', '.join(choices)}, got {text!r}")
    return text


def _seconds(flag: float | None, env: Mapping[str, str], variable: str, default: float) -> float:
    if flag is not None:
        return flag
    text = env.get(variable)
    if text is None:
        return default
    try:
        return parse_seconds(text)
    except ValueError as exc:
        raise ConfigError(f"{variable}: {exc}") from None


def masked_uri(uri: str) -> str:
    """The URI as it may be printed: anything that looks like credentials before the host
    (``s3a://KEY:SECRET@bucket``) replaced. Up to the last ``@``, because an AWS secret key
    may hold ``/`` and so end the authority early."""
    scheme, sep, rest = uri.partition("://")
    if not sep or not _has_credentials(uri):
        return uri
    return (
        f"{scheme}://{REDACTED}@{rest.rpartition('@')[2]}"
        if "@" in rest
        else f"{scheme}://{REDACTED}"
    )


def _has_credentials(uri: str) -> bool:
    """A user or key in the authority. No bucket or host name holds ``@`` or (for S3) ``:``."""
    netloc = urlsplit(uri).netloc
    return "@" in netloc or (uri.startswith(("s3://", "s3a://")) and ":" in netloc)


def normalise_uri(uri: str) -> str:
    """A local path, ``file://``, ``s3://`` or ``s3a://`` URI as ``file:///abs`` or ``s3a://``.

    Credentials in a URI are refused: they would end up in logs, the run log and error lines.
    """
    if _has_credentials(uri):
        raise ConfigError(
            f"{masked_uri(uri)}: credentials in a URI are not accepted; "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile) instead"
        )
    if uri.startswith("s3://"):
        uri = "s3a://" + uri[len("s3://") :]
    parsed = urlparse(uri)
    if parsed.scheme == "s3a":
        if not parsed.netloc:
            raise ConfigError(f"lake URI {uri!r} names no bucket (expected s3a://bucket/prefix)")
        return uri.rstrip("/")
    if parsed.scheme == "file":
        return "file://" + str(Path(parsed.path).resolve())
    if parsed.scheme in ("",) or len(parsed.scheme) == 1:  # a path (or a Windows drive letter)
        return "file://" + str(Path(uri).expanduser().resolve())
    raise ConfigError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r} (use a path or s3a://)")


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def local_path(uri: str) -> Path | None:
    """The filesystem path of a ``file://`` URI, else None."""
    return Path(urlparse(uri).path) if uri.startswith("file://") else None
