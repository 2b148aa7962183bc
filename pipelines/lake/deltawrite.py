"""Small appends to lakeshard's own Delta tables without Spark: one Parquet file and one commit;
and the creating commit of a table (:func:`create_table`).

A run writes two records to its run log (``running``, then its outcome). Through Spark each one
is a Delta transaction and a Spark job; in a process that has not used Delta yet, the first costs
seconds of class loading and code generation, the largest part of a rerun that finds nothing new.
:func:`append_rows` writes the same commit directly: the rows as one zstd Parquet file with
pyarrow, then ``_delta_log/<version>.json`` (commitInfo and one ``add``) created only if absent:
``os.link`` on a local folder, ``PUT`` with ``If-None-Match: *`` on S3, the same primitives the
lease stands on. A version taken meanwhile sends it to the next one (an append never conflicts).

It does so only where the result is exactly what Delta's own writer would commit, and says no
(the caller then appends through Spark) otherwise:

* the table exists with exactly the expected schema, unpartitioned;
* its protocol asks nothing of a writer beyond NOT NULL (reader version 1; writer version 2, or
  7 with no writer features but ``appendOnly`` and ``invariants``);
* the version to write is not one at which Delta writes a checkpoint (every
  ``delta.checkpointInterval``, 10 by default): that commit goes through Spark, which writes the
  checkpoint with it, so the log stays as short to replay as Spark alone would keep it.

Stats carry ``numRecords`` only; readers then skip no file of it (the run log is read whole).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import types as T

import pipelines
from pipelines.errors import StorageError, first_line
from pipelines.lake import deltalog
from pipelines.storage import arrowfs
from pipelines.storage.exclusive import create_local, put_if_absent

_SAFE_WRITER_FEATURES = {"appendOnly", "invariants"}
_NEEDS_COLUMN_MAPPING = set(" ,;{}()\n\t=")  # Parquet cannot name such a column
_CHECKPOINT_INTERVAL = 10  # Delta's default for delta.checkpointInterval
_TRIES = 5  # versions taken by another writer before giving the commit to Spark


def arrow_type(dtype: T.DataType) -> pa.DataType:
    """The Arrow type Spark uses for a Spark SQL type."""
    simple: dict[type[T.DataType], pa.DataType] = {
        T.StringType: pa.string(),
        T.BinaryType: pa.binary(),
        T.BooleanType: pa.bool_(),
        T.ByteType: pa.int8(),
        T.ShortType: pa.int16(),
        T.IntegerType: pa.int32(),
        T.LongType: pa.int64(),
        T.FloatType: pa.float32(),
        T.DoubleType: pa.float64(),
        T.DateType: pa.date32(),
        T.TimestampType: pa.timestamp("us", tz="UTC"),
        T.TimestampNTZType: pa.timestamp("us"),
    }
    for spark_type, arrow in simple.items():
        if isinstance(dtype, spark_type):
            return arrow
    if isinstance(dtype, T.DecimalType):
        return pa.decimal128(dtype.precision, dtype.scale)
    if isinstance(dtype, T.ArrayType):
        return pa.list_(arrow_type(dtype.elementType))
    if isinstance(dtype, T.MapType):
        return pa.map_(arrow_type(dtype.keyType), arrow_type(dtype.valueType))
    if isinstance(dtype, T.StructType):
        return pa.struct([pa.field(f.name, arrow_type(f.dataType)) for f in dtype.fields])
    raise TypeError(f"no Arrow type for {dtype.simpleString()}")


def append_rows(uri: str, schema: T.StructType, rows: Sequence[Mapping[str, Any]]) -> int | None:
    """Append ``rows`` to the table at ``uri`` in one commit without Spark; the version written,
    or None where this table is not one to write so (see the module's notes): then nothing was
    committed and the caller appends through Spark."""
    arrow_schema = pa.schema(
        [pa.field(f.name, arrow_type(f.dataType), f.nullable) for f in schema.fields]
    )
    stamps = [f.name for f in schema.fields if isinstance(f.dataType, T.TimestampType)]
    table = pa.Table.from_pylist([_aware(r, stamps) for r in rows], schema=arrow_schema)
    for field in schema.fields:
        if not field.nullable and table.column(field.name).null_count:
            raise ValueError(f"{field.name} is NOT NULL in {uri}, but a row has no value")
    written: _Written | None = None
    for _ in range(_TRIES):
        version = _next_version(uri, schema)
        if version is None:
            return None
        if written is None:
            written = _write_parquet(uri, table)
        if _create(uri, version, _commit(version, written, table.num_rows)):
            return version
    return None  # busy: Spark's own transaction retries on its terms


def create_table(
    uri: str, schema: T.StructType, partition_by: Sequence[str], description: str | None
) -> bool | None:
    """Create the table at ``uri`` without Spark, as Delta's ``CREATE TABLE`` would: version 0
    with its schema, partition columns, description and protocol 1/2 (NOT NULL is writer
    version 2). True once created, False where another writer created it first, None where
    only Delta itself should (a type or name that needs a table feature): then nothing was
    written."""
    if not all(_plain(f.dataType) for f in schema.fields):
        return None
    if needs_column_mapping(schema):
        return None
    now = int(time.time() * 1000)
    parameters = {
        "partitionBy": json.dumps(list(partition_by)),
        "clusterBy": "[]",
        "description": description,
        "isManaged": "false",
        "properties": "{}",
    }
    info = {
        "timestamp": now,
        "operation": "CREATE TABLE",
        "operationParameters": {k: v for k, v in parameters.items() if v is not None},
        "isolationLevel": "Serializable",
        "isBlindAppend": True,
        "operationMetrics": {},
        "engineInfo": f"lakeshard/{pipelines.__version__}",
        "txnId": str(uuid.uuid4()),
    }
    metadata = {
        "id": str(uuid.uuid4()),
        "description": description,
        "format": {"provider": "parquet", "options": {}},
        "schemaString": schema.json(),
        "partitionColumns": list(partition_by),
        "configuration": {},
        "createdTime": now,
    }
    if description is None:
        del metadata["description"]
    protocol = {"minReaderVersion": 1, "minWriterVersion": 2}
    actions = [{"commitInfo": info}, {"metaData": metadata}, {"protocol": protocol}]
    if not _create(uri, 0, ("\n".join(json.dumps(a) for a in actions) + "\n").encode()):
        return False
    # The state of version 0 (no files), as Delta keeps it beside the commit: its next commit
    # then adds to it, where without it Delta rebuilds the state in a job of 50 tasks.
    checksum = {
        "txnId": info["txnId"],
        "tableSizeBytes": 0,
        "numFiles": 0,
        "numMetadata": 1,
        "numProtocol": 1,
        "setTransactions": [],
        "domainMetadata": [],
        "metadata": metadata,
        "protocol": protocol,
        "allFiles": [],
    }
    _create(uri, 0, json.dumps(checksum).encode(), suffix="crc")
    return True


def needs_column_mapping(schema: T.StructType) -> bool:
    """Whether a column's name is one Parquet cannot hold, so Delta must map it by id."""
    return any(ch in _NEEDS_COLUMN_MAPPING for f in schema.fields for ch in f.name)


def _plain(dtype: T.DataType) -> bool:
    """A type any Delta reader and writer knows without a table feature (not TIMESTAMP_NTZ,
    whose column needs the ``timestampNtz`` feature; not VARIANT)."""
    if isinstance(dtype, T.ArrayType):
        return _plain(dtype.elementType)
    if isinstance(dtype, T.MapType):
        return _plain(dtype.keyType) and _plain(dtype.valueType)
    if isinstance(dtype, T.StructType):
        return all(_plain(f.dataType) for f in dtype.fields)
    try:
        arrow_type(dtype)
    except TypeError:
        return False
    return not isinstance(dtype, T.TimestampNTZType)


def _aware(row: Mapping[str, Any], stamps: Sequence[str]) -> dict[str, Any]:
    """A naive datetime means local time, as PySpark takes it (Arrow would take it for UTC)."""
    aware = dict(row)
    for name in stamps:
        value = aware.get(name)
        if isinstance(value, datetime) and value.tzinfo is None:
            aware[name] = value.astimezone(UTC)
    return aware


class _Written:
    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.modified_ms = int(time.time() * 1000)


def _next_version(uri: str, schema: T.StructType) -> int | None:
    snap = deltalog.snapshot(uri)
    if snap is None or snap.schema != schema or snap.partition_columns:
        return None
    protocol = snap.protocol
    reader, writer = protocol.get("minReaderVersion"), protocol.get("minWriterVersion")
    features = set(protocol.get("writerFeatures") or ())
    if reader != 1 or not (writer in (1, 2) or (writer == 7 and features <= _SAFE_WRITER_FEATURES)):
        return None
    interval = int(snap.configuration.get("delta.checkpointInterval", _CHECKPOINT_INTERVAL))
    version = snap.version + 1
    return None if version % interval == 0 else version


def _write_parquet(uri: str, table: pa.Table) -> _Written:
    fs, root = arrowfs.filesystem(uri)
    name = f"part-00000-{uuid.uuid4()}-c000.zstd.parquet"
    path = f"{root.rstrip('/')}/{name}"
    try:
        pq.write_table(table, path, filesystem=fs, compression="zstd")
        size = fs.get_file_info(path).size
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"storage failed writing {uri}/{name}: {first_line(exc)}") from None
    assert size is not None
    return _Written(name, size)


def _commit(version: int, written: _Written, rows: int) -> bytes:
    info = {
        "timestamp": int(time.time() * 1000),
        "operation": "WRITE",
        "operationParameters": {"mode": "Append", "partitionBy": "[]"},
        "readVersion": version - 1,
        "isolationLevel": "Serializable",
        "isBlindAppend": True,
        "operationMetrics": {
            "numFiles": "1",
            "numOutputRows": str(rows),
            "numOutputBytes": str(written.size),
        },
        "engineInfo": f"lakeshard/{pipelines.__version__}",
        "txnId": str(uuid.uuid4()),
    }
    add = {
        "path": written.name,
        "partitionValues": {},
        "size": written.size,
        "modificationTime": written.modified_ms,
        "dataChange": True,
        "stats": json.dumps({"numRecords": rows}),
    }
    lines = [json.dumps({"commitInfo": info}), json.dumps({"add": add})]
    return ("\n".join(lines) + "\n").encode()


def _create(uri: str, version: int, body: bytes, suffix: str = "json") -> bool:
    """Create ``_delta_log/<version>.<suffix>`` unless it exists; False if it does."""
    name = f"_delta_log/{version:020d}.{suffix}"
    parsed = urlparse(uri)
    if parsed.scheme not in ("s3a", "s3"):
        # The folder _write_parquet writes into: one reading of a local URI for both.
        path = Path(arrowfs.filesystem(uri)[1]) / name
        path.parent.mkdir(parents=True, exist_ok=True)  # a table being created has no log yet
        return create_local(path, body)
    from botocore.exceptions import BotoCoreError, ClientError

    from pipelines.storage.s3 import s3_client

    key = f"{parsed.path.strip('/')}/{name}"
    try:
        return put_if_absent(s3_client(), parsed.netloc, key, body)
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(f"storage failed committing to {uri}: {first_line(exc)}") from None
