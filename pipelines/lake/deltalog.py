"""Read a Delta table's log without Spark: its current schema and its commit history.

The log (``_delta_log/``) holds one JSON file of actions per commit and, now and then, a
checkpoint: Parquet with the whole table state as of one version, in one file
(``<v>.checkpoint.parquet``), in parts (``<v>.checkpoint.<i>.<n>.parquet``) or as a V2
checkpoint (``<v>.checkpoint.<uuid>.parquet|json``, whose top-level file holds the metadata).
JSON commits older than the log retention are deleted, so the state is the newest complete
checkpoint plus every JSON commit after it. The log is listed (pyarrow cannot list from a key,
as Delta's own readers do), and ``_last_checkpoint`` is treated as those readers treat it: a
hint that may lag behind a newer checkpoint, but a floor: a log that lists nothing as recent as
the version it names has lost files. A missing commit is an error, never a stale schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import types as T

from pipelines.errors import ConfigError, DamagedLake, StorageError, first_line
from pipelines.storage import arrowfs

CONSTRAINT_PREFIX = "delta.constraints."
_STATE = ("metaData", "protocol")  # the actions a snapshot takes from the newest that has one
_COMMIT = re.compile(r"(\d{20})\.json")
_CHECKPOINT = re.compile(
    r"(?P<version>\d{20})\.checkpoint"
    r"(?:\.(?P<part>\d{10})\.(?P<parts>\d{10})|\.(?P<uuid>[0-9a-fA-F-]{36}))?"
    r"\.(?P<ext>parquet|json)"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_READ_THREADS = 8  # commit files are small: on object storage, latency dominates


@dataclass(frozen=True)
class Snapshot:
    """The table's metadata as of its latest version."""

    version: int
    schema: T.StructType
    partition_columns: tuple[str, ...]
    configuration: Mapping[str, str]  # table properties
    protocol: Mapping[str, Any]  # the protocol action: reader/writer versions and features

    @property
    def constraints(self) -> dict[str, str]:
        """CHECK constraints, name -> SQL expression."""
        return {
            key.removeprefix(CONSTRAINT_PREFIX): value
            for key, value in self.configuration.items()
            if key.startswith(CONSTRAINT_PREFIX)
        }


@dataclass(frozen=True)
class CommitInfo:
    """One commit still in the log."""

    version: int
    timestamp: datetime  # UTC
    operation: str | None
    user_metadata: Mapping[str, Any]  # commitInfo.userMetadata as a JSON object, else {}
    schema: T.StructType | None  # set when the commit changed the metadata (or created the table)
    operation_metrics: Mapping[str, str]


def snapshot(uri: str) -> Snapshot | None:
    """The table's latest schema and properties; None where there is no table."""
    return _snapshot(_Log.open(uri))


def _snapshot(log: _Log) -> Snapshot | None:
    if log.hint is not None and (log.latest is None or log.hint > log.latest):
        ends = "holds no commits" if log.latest is None else f"ends at {log.latest}"
        log.fail(f"_last_checkpoint names version {log.hint}, but the log {ends}")
    if log.latest is None:
        return None
    base = max((c.version for c in log.checkpoints), default=None)
    first = 0 if base is None else base + 1
    missing = [v for v in range(first, log.latest + 1) if v not in log.commits]
    if missing:
        covered = "no checkpoint covers it" if base is None else f"the checkpoint is at {base}"
        log.fail(f"commit {missing[0]} is missing and {covered}")
    found = log.latest_actions(list(range(log.latest, first - 1, -1)))
    if len(found) < len(_STATE) and base is not None:
        found = log.read_checkpoint(base) | found
    for kind in _STATE:
        if kind not in found:
            log.fail(f"no {kind} action up to version {log.latest}")
    schema, partition_columns, configuration = log.parse_metadata(found["metaData"])
    return Snapshot(log.latest, schema, partition_columns, configuration, found["protocol"])


def check_log(uri: str) -> int | None:
    """The latest version after checking that a reader can replay the log: the commits from the
    newest checkpoint on are all there, the newest commit parses, the newest checkpoint's
    files are readable Parquet (or JSON). None where there is no table. Raises DamagedLake."""
    log = _Log.open(uri)
    snap = _snapshot(log)
    if snap is None:
        return None
    if snap.version in log.commits:
        log.read_commits([snap.version])
    base = max(log.checkpoints, key=lambda c: c.version, default=None)
    for info in base.files if base else ():
        if info.base_name.endswith(".json"):
            log.read_commits_at(info.path)
            continue
        try:
            with log.fs.open_input_file(info.path) as handle:
                pq.ParquetFile(handle).metadata  # noqa: B018 (reading the footer is the check)
        except (OSError, pa.ArrowException) as exc:
            log.fail(f"cannot read the checkpoint {info.base_name}: {first_line(exc)}")
    return snap.version


def latest_version(uri: str) -> int | None:
    """The table's latest version from one listing of its log; None where there is no table."""
    return _Log.open(uri).latest


@dataclass(frozen=True)
class DataFile:
    path: str  # within DataFiles.fs
    size: int  # bytes
    partition: tuple[tuple[str, str | None], ...]  # (column, value) pairs, sorted
    rows: int | None = None  # numRecords from the file's statistics, when the writer kept them


@dataclass(frozen=True)
class DataFiles:
    """The data files of a table's latest version, sorted by path."""

    version: int
    fs: pafs.FileSystem
    files: tuple[DataFile, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def rows(self) -> int | None:
        """Rows in the version from the files' statistics (None: a file has none)."""
        counts = [f.rows for f in self.files]
        return None if None in counts else sum(c for c in counts if c is not None)


def data_files(uri: str) -> DataFiles | None:
    """The files a reader of the latest version reads, replayed from the log without Spark.

    None where plain Parquet files would not give the rows back: no table, column mapping
    (physical names differ), deletion vectors, or a V2 checkpoint (sidecars). Callers then read
    through Delta itself. For the small, append-only tables lakeshard keeps beside a dataset
    (its ledger), this skips a Spark job and Delta's first-use cost in every run.
    """
    log = _Log.open(uri)
    snap = _snapshot(log)
    if snap is None or snap.configuration.get("delta.columnMapping.mode", "none") != "none":
        return None
    base = max(log.checkpoints, key=lambda c: c.version, default=None)
    live: dict[str, dict[str, Any]] = {}
    if base is not None:
        if base.v2:
            return None
        for info in base.files:
            live.update((a["path"], a) for a in log.checkpoint_adds(info.path))
    # From the checkpoint's own commit on, not the one after: replaying it again changes
    # nothing (the checkpoint holds its result), and reading it finds a truncated newest commit.
    first = 0 if base is None else base.version
    versions = [v for v in range(first, snap.version + 1) if v in log.commits]
    for actions in log.read_commits(versions):
        for action in actions:
            if "add" in action:
                live[action["add"]["path"]] = action["add"]
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    if any(add.get("deletionVector") for add in live.values()):
        return None
    root = log.path.removesuffix("/_delta_log")
    files = [
        DataFile(
            _data_path(log, root, path),
            int(add.get("size") or 0),
            tuple(sorted(_pairs(add.get("partitionValues")))),
            _num_records(add.get("stats")),
        )
        for path, add in live.items()
    ]
    return DataFiles(snap.version, log.fs, tuple(sorted(files, key=lambda f: f.path)))


def _num_records(stats: Any) -> int | None:
    try:
        value = json.loads(stats).get("numRecords") if isinstance(stats, str) else None
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _pairs(values: Any) -> list[tuple[str, str | None]]:
    """partitionValues: a JSON object in a commit, (key, value) pairs in a checkpoint."""
    items = values.items() if isinstance(values, dict) else (values or [])
    return [(str(k), None if v is None else str(v)) for k, v in items]


def _data_path(log: _Log, root: str, path: str) -> str:
    """An add action's path (a URI-encoded path relative to the table, or an absolute URI)."""
    if "://" in path:
        fs, within = arrowfs.filesystem(path)
        if type(fs) is not type(log.fs):
            log.fail(f"a data file lives on another filesystem: {path}")
        return within
    return f"{root}/{unquote(path)}"


def commits(uri: str) -> list[CommitInfo]:
    """Every commit whose JSON file is still in the log, oldest first ([] where no table)."""
    log = _Log.open(uri)
    versions = sorted(log.commits)
    return [
        log.commit_info(version, actions)
        for version, actions in zip(versions, log.read_commits(versions), strict=True)
    ]


@dataclass(frozen=True)
class _Checkpoint:
    version: int
    files: tuple[pafs.FileInfo, ...]  # every part, or the top-level file of a V2 checkpoint
    v2: bool = False  # a V2 checkpoint: its adds may live in sidecar files


class _Log:
    """One listing of ``_delta_log``; every problem is a ConfigError that names the table."""

    def __init__(self, uri: str, fs: pafs.FileSystem, path: str) -> None:
        self.uri = uri
        self.fs = fs
        self.path = path
        self.commits: dict[int, pafs.FileInfo] = {}
        self.checkpoints: list[_Checkpoint] = []  # complete ones only
        self.hint: int | None = None  # the version _last_checkpoint names

    @classmethod
    def open(cls, uri: str) -> _Log:
        try:
            fs, root = arrowfs.filesystem(uri)
        except ConfigError as exc:
            raise ConfigError(f"cannot read the Delta log of {uri}: {first_line(exc)}") from None
        log = cls(uri, fs, root.rstrip("/") + "/_delta_log")
        try:
            infos = fs.get_file_info(pafs.FileSelector(log.path, allow_not_found=True))
        except (OSError, pa.ArrowException) as exc:
            log.fail(f"cannot list it: {first_line(exc)}", damaged=False)
        log._index(infos)
        return log

    def _index(self, infos: list[pafs.FileInfo]) -> None:
        parts: dict[tuple[int, str], dict[int, pafs.FileInfo]] = {}
        totals: dict[tuple[int, str], int] = {}
        named_by_uuid: set[str] = set()
        for info in infos:
            name = info.base_name
            if match := _COMMIT.fullmatch(name):
                self.commits[int(match.group(1))] = info
            elif match := _CHECKPOINT.fullmatch(name):
                version = int(match["version"])
                if match["ext"] == "json" and match["uuid"] is None:
                    continue  # not a checkpoint name the protocol defines
                key = (version, match["parts"] or match["uuid"] or "")
                if match["uuid"]:
                    named_by_uuid.add(key[1])
                parts.setdefault(key, {})[int(match["part"] or 1)] = info
                totals[key] = int(match["parts"] or 1)
            elif name == "_last_checkpoint":
                self.hint = self._read_hint(info)
        for key, found in parts.items():
            if sorted(found) == list(range(1, totals[key] + 1)):  # a part may still be uploading
                files = tuple(found[i] for i in sorted(found))
                v2 = key[1] in named_by_uuid
                self.checkpoints.append(_Checkpoint(key[0], files, v2))

    def _read_hint(self, info: pafs.FileInfo) -> int | None:
        try:
            hint = json.loads(self._read(info.path))
            return int(hint["version"])
        except (ValueError, KeyError, TypeError):
            return None  # a hint only: the listing still finds every checkpoint

    @property
    def latest(self) -> int | None:
        versions = [*self.commits, *(c.version for c in self.checkpoints)]
        return max(versions) if versions else None

    def read_checkpoint(self, version: int) -> dict[str, dict[str, Any]]:
        """The metaData and protocol actions of the checkpoint at ``version``."""
        checkpoint = next(c for c in self.checkpoints if c.version == version)
        found: dict[str, list[dict[str, Any]]] = {kind: [] for kind in _STATE}
        for info in checkpoint.files:
            try:
                if info.base_name.endswith(".json"):
                    actions = self._parse_actions(info.path, self._read(info.path))
                    for kind in _STATE:
                        found[kind].extend(a[kind] for a in actions if kind in a)
                else:
                    for kind, actions in self._parquet_actions(info.path).items():
                        found[kind].extend(actions)
            except (OSError, pa.ArrowException) as exc:
                self.fail(f"cannot read the checkpoint {info.base_name}: {first_line(exc)}")
        for kind, actions in found.items():
            if len(actions) != 1:
                held = f"holds {len(actions)} {kind} actions"
                self.fail(f"the checkpoint at version {version} {held}")
        return {kind: actions[0] for kind, actions in found.items()}

    def checkpoint_adds(self, path: str) -> list[dict[str, Any]]:
        """The add actions of one classic checkpoint part (the fields data_files needs)."""
        try:
            with self.fs.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                if "add" not in parquet.schema_arrow.names:
                    return []
                column = parquet.read(columns=["add"]).column("add")
        except (OSError, pa.ArrowException) as exc:
            self.fail(f"cannot read the checkpoint {path.rsplit('/', 1)[-1]}: {first_line(exc)}")
        adds = column.filter(pc.is_valid(column))
        wanted = ("path", "size", "partitionValues", "stats", "deletionVector")
        fields = [f for f in wanted if adds.type.get_field_index(f) >= 0]
        found: list[dict[str, Any]] = pa.Table.from_arrays(
            [pc.struct_field(adds, f) for f in fields], names=fields
        ).to_pylist()
        return found

    def _parquet_actions(self, path: str) -> dict[str, list[dict[str, Any]]]:
        """The metaData and protocol actions of one Parquet checkpoint part."""
        with self.fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            kinds = [kind for kind in _STATE if kind in parquet.schema_arrow.names]
            table = parquet.read(columns=kinds)
        found: dict[str, list[dict[str, Any]]] = {}
        for kind in kinds:
            column = table.column(kind)
            found[kind] = column.filter(pc.is_valid(column)).to_pylist()
        for row in found.get("metaData", []):  # Parquet maps come back as (key, value) pairs
            row["configuration"] = dict(row.get("configuration") or [])
        return found

    def latest_actions(self, newest_first: list[int]) -> dict[str, dict[str, Any]]:
        """The newest metaData and protocol actions among these commits (either may be
        missing: then it is in the checkpoint)."""
        latest: dict[str, dict[str, Any]] = {}
        for start in range(0, len(newest_first), _READ_THREADS):
            batch = newest_first[start : start + _READ_THREADS]
            for version, actions in zip(batch, self.read_commits(batch), strict=True):
                for kind in _STATE:
                    found: list[dict[str, Any]] = [a[kind] for a in actions if kind in a]
                    if len(found) > 1:
                        self.fail(f"commit {version} holds more than one {kind} action")
                    if found and kind not in latest:
                        latest[kind] = found[0]
                if len(latest) == len(_STATE):
                    return latest
        return latest

    def read_commits(self, versions: list[int]) -> list[list[dict[str, Any]]]:
        """The actions of each commit, read a few at a time."""
        infos = [self.commits[v] for v in versions]
        if not infos:
            return []
        with ThreadPoolExecutor(max_workers=min(_READ_THREADS, len(infos))) as pool:
            texts = list(pool.map(lambda info: self._read(info.path), infos))
        return [
            self._parse_actions(info.path, text) for info, text in zip(infos, texts, strict=True)
        ]

    def read_commits_at(self, path: str) -> list[dict[str, Any]]:
        """The actions of one JSON log file named by its path (a V2 checkpoint's top file)."""
        return self._parse_actions(path, self._read(path))

    def commit_info(self, version: int, actions: list[dict[str, Any]]) -> CommitInfo:
        info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        metadata = next((a["metaData"] for a in actions if "metaData" in a), None)
        millis = info.get("inCommitTimestamp", info.get("timestamp"))
        if isinstance(millis, int):
            timestamp = _EPOCH + timedelta(milliseconds=millis)
        else:
            mtime = self.commits[version].mtime
            if mtime is None:
                self.fail(f"commit {version} has no timestamp")
            timestamp = mtime.astimezone(UTC)
        metrics = info.get("operationMetrics") or {}
        operation = info.get("operation")
        return CommitInfo(
            version=version,
            timestamp=timestamp,
            operation=operation if isinstance(operation, str) else None,
            user_metadata=_json_object(info.get("userMetadata")),
            schema=self.parse_metadata(metadata)[0] if metadata is not None else None,
            operation_metrics={
                str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metrics.items()
            },
        )

    def parse_metadata(
        self, metadata: dict[str, Any]
    ) -> tuple[T.StructType, tuple[str, ...], dict[str, str]]:
        try:
            schema = T.StructType.fromJson(json.loads(metadata["schemaString"]))
            partition_columns = tuple(str(c) for c in metadata.get("partitionColumns") or ())
            configuration = {
                str(k): str(v) for k, v in (metadata.get("configuration") or {}).items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.fail(f"unreadable metaData: {type(exc).__name__}: {first_line(exc)}")
        return schema, partition_columns, configuration

    def _read(self, path: str) -> str:
        try:
            with self.fs.open_input_stream(path, compression=None) as stream:
                data: bytes = stream.read()
            return data.decode("utf-8")
        except (OSError, pa.ArrowException) as exc:
            self.fail(f"cannot read {path.rsplit('/', 1)[-1]}: {first_line(exc)}", damaged=False)
        except UnicodeDecodeError as exc:
            self.fail(f"{path.rsplit('/', 1)[-1]} is not UTF-8 text: {first_line(exc)}")

    def _parse_actions(self, path: str, text: str) -> list[dict[str, Any]]:
        actions: list[dict[str, Any]] = []
        # One action per "\n"-ended line. Not str.splitlines(): a JSON string may hold U+2028,
        # U+0085 or other characters that Python also takes for line breaks.
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                action = json.loads(line)
            except ValueError as exc:
                self.fail(f"{path.rsplit('/', 1)[-1]} line {number} is not JSON: {exc}")
            if not isinstance(action, dict):
                self.fail(f"{path.rsplit('/', 1)[-1]} line {number} is not a Delta action")
            actions.append(action)
        return actions

    def fail(self, problem: str, *, damaged: bool = True) -> NoReturn:
        if not damaged:  # the storage did not answer (after retries): the log may be whole
            raise StorageError(f"storage failed reading the Delta log of {self.uri}: {problem}")
        raise DamagedLake(
            f"damaged Delta log of {self.uri}: {problem}; restore it from a backup or an earlier "
            f"object version (Delta never rewrites a log file), then check the table with "
            f"`lakeshard verify --full`"
        )


def _json_object(value: Any) -> dict[str, Any]:
    """userMetadata is free text; lakeshard writes a JSON object there."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}
