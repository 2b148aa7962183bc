"""The content hash: 128-bit XXH3 over a canonical encoding of a record's declared columns.

One definition, computed anywhere: the same functions run inside Spark (an Arrow UDF over record
batches) and in plain Python/pyarrow. The encoding is vectorised with pyarrow compute; only the
XXH3 call runs per row. The encoding (version 1) is specified in README.md, "The content hash";
a change to it is a new version, in both places.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pyspark.sql import types as T

from pipelines.lake.deltawrite import arrow_type

HASH_BYTES = 16
_BIN = pa.large_binary()
_EMPTY = pa.scalar(b"", _BIN)
_NULL_ELEMENT = pa.scalar(b"\x00", _BIN)


def content_hashes(records: pa.StructArray | pa.Table | pa.RecordBatch) -> pa.Array:
    """The 16-byte content hash of each record (a ``binary`` array, never null)."""
    if isinstance(records, pa.Table):
        records = records.combine_chunks().to_struct_array()
        records = records.combine_chunks() if isinstance(records, pa.ChunkedArray) else records
    elif isinstance(records, pa.RecordBatch):
        records = records.to_struct_array()
    encoded = _encode_struct_fields(records)
    return _xxh3_128(encoded)


def content_hash(record: Mapping[str, Any], schema: T.StructType) -> bytes:
    """The content hash of one record given as a dict, typed by a Spark schema."""
    arrow_schema = pa.schema([pa.field(f.name, arrow_type(f.dataType)) for f in schema.fields])
    batch = pa.RecordBatch.from_pylist([dict(record)], schema=arrow_schema)
    return bytes(content_hashes(batch)[0].as_py())


def canonical_encoding(record: Mapping[str, Any], schema: T.StructType) -> bytes:
    """The canonical bytes of one record (what is hashed), for audits and debugging."""
    arrow_schema = pa.schema([pa.field(f.name, arrow_type(f.dataType)) for f in schema.fields])
    batch = pa.RecordBatch.from_pylist([dict(record)], schema=arrow_schema)
    return bytes(_encode_struct_fields(batch.to_struct_array())[0].as_py())


# --- encoding ---------------------------------------------------------------------------------


def _join(parts: Sequence[pa.Array | pa.Scalar]) -> pa.Array:
    return pc.binary_join_element_wise(*parts, _EMPTY)


def _fixed(data: np.ndarray, width: int) -> pa.Array:
    """Reinterpret a contiguous numpy array as one ``width``-byte binary value per element."""
    raw = np.ascontiguousarray(data)
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(raw), [None, pa.py_buffer(raw.tobytes())]
    )
    return fixed.cast(_BIN)


def _u32(counts: np.ndarray) -> pa.Array:
    return _fixed(np.asarray(counts, dtype="<u4"), 4)


def _tag(tag: bytes) -> pa.Scalar:
    return pa.scalar(tag, _BIN)


def _with_nulls(encoded: pa.Array, source: pa.Array) -> pa.Array:
    """Null where ``source`` is null, so that callers can drop or mark null values."""
    if source.null_count == 0:
        return encoded
    return pc.if_else(pc.is_valid(source), encoded, pa.scalar(None, _BIN))


def _name_piece(name: str) -> pa.Scalar:
    raw = name.encode("utf-8")
    return pa.scalar(b"S" + len(raw).to_bytes(4, "little") + raw, _BIN)


def _encode_struct_fields(array: pa.StructArray) -> pa.Array:
    """Encode each struct value as a record (see the module docstring)."""
    stype = array.type
    order = sorted(range(stype.num_fields), key=lambda i: stype.field(i).name.encode("utf-8"))
    pieces: list[pa.Array] = []
    present = np.zeros(len(array), dtype=np.uint32)
    for index in order:
        child = array.field(index)  # field() applies the parent's offset, not its validity
        encoded = _encode_value(child)
        pieces.append(pc.fill_null(_join([_name_piece(stype.field(index).name), encoded]), b""))
        present += np.asarray(pc.is_valid(child), dtype=np.uint32)
    return _join([_tag(b"("), _u32(present), *pieces])


def _encode_value(array: pa.Array) -> pa.Array:
    """The canonical encoding of each value (null where the value is null)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    t = array.type
    if pa.types.is_dictionary(t):
        return _encode_value(array.dictionary_decode())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _length_prefixed(b"S", array.cast(_BIN))
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return _length_prefixed(b"B", array.cast(_BIN))
    if pa.types.is_boolean(t):
        data = np.asarray(array.fill_null(False), dtype=np.uint8)
        return _with_nulls(_join([_tag(b"?"), _fixed(data, 1)]), array)
    if pa.types.is_integer(t):
        if pa.types.is_uint64(t):
            raise TypeError("uint64 has no canonical encoding (Spark has no unsigned types)")
        data = np.asarray(array.cast(pa.int64()).fill_null(0), dtype="<i8")
        return _with_nulls(_join([_tag(b"I"), _fixed(data, 8)]), array)
    if pa.types.is_floating(t):
        data = np.array(array.cast(pa.float64()).fill_null(0.0), dtype="<f8")
        canonical = data.view("<u8").copy()
        canonical[data == 0.0] = 0  # -0.0 -> 0.0
        canonical[np.isnan(data)] = 0x7FF8000000000000  # one NaN bit pattern
        return _with_nulls(_join([_tag(b"F"), _fixed(canonical, 8)]), array)
    if pa.types.is_decimal(t):
        return _encode_decimal(array)
    if pa.types.is_date(t):
        days = np.asarray(array.cast(pa.date32()).cast(pa.int32()).fill_null(0), dtype="<i8")
        return _with_nulls(_join([_tag(b"D"), _fixed(days, 8)]), array)
    if pa.types.is_timestamp(t):
        tag = b"T" if t.tz is not None else b"L"
        micros = array.cast(pa.timestamp("us", tz=t.tz), safe=False).cast(pa.int64())
        data = np.asarray(micros.fill_null(0), dtype="<i8")
        return _with_nulls(_join([_tag(tag), _fixed(data, 8)]), array)
    if pa.types.is_map(t):
        return _encode_map(array)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _encode_list(array)
    if pa.types.is_struct(t):
        return _with_nulls(_encode_struct_fields(array), array)
    raise TypeError(f"no canonical encoding for Arrow type {t}")


def _length_prefixed(tag: bytes, values: pa.Array) -> pa.Array:
    lengths = np.asarray(pc.binary_length(values).fill_null(0), dtype="<u4")
    return _join([_tag(tag), _u32(lengths), values])


_TRAILING_ZEROS = r"(\.[0-9]*?)0+$"


def _encode_decimal(array: pa.Array) -> pa.Array:
    text = pc.cast(array, pa.string())  # plain notation, scale digits: "-1.500", "0.00"
    if pc.any(pc.match_substring(text, "E")).as_py():
        # Except below 1e-6 at scale > 6, where Arrow writes "1.0E-7" and "0E-7" (as Java's
        # BigDecimal.toString does); Python's "f" format gives the plain form, "0.00000010".
        plain = [None if s is None else format(Decimal(s), "f") for s in text.to_pylist()]
        text = pa.array(plain, pa.string())
    has_point = pc.match_substring(text, ".")
    trimmed = pc.replace_substring_regex(text, _TRAILING_ZEROS, r"\1")
    trimmed = pc.if_else(has_point, pc.utf8_rtrim(trimmed, "."), text)
    is_zero = pc.match_substring_regex(trimmed, r"^-?0$")
    normalised = pc.if_else(is_zero, pa.scalar("0"), trimmed)
    return _length_prefixed(b"N", normalised.cast(_BIN))


def _list_offsets(array: pa.Array) -> tuple[np.ndarray, pa.Array]:
    if pa.types.is_fixed_size_list(array.type):
        size = array.type.list_size
        offsets = np.arange(len(array) + 1, dtype=np.int64) * size
        values = (
            array.flatten()
            if array.null_count == 0
            else array.values[array.offset * size : (array.offset + len(array)) * size]
        )
        return offsets, values
    offsets = np.asarray(array.offsets, dtype=np.int64)
    values = array.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    return offsets - offsets[0], values


def _encode_list(array: pa.Array) -> pa.Array:
    offsets, values = _list_offsets(array)
    elements = pc.fill_null(_encode_value(values), _NULL_ELEMENT)
    joined = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), elements), _EMPTY)
    lengths = np.diff(offsets)
    return _with_nulls(_join([_tag(b"["), _u32(lengths), joined]), array)


def _encode_map(array: pa.MapArray) -> pa.Array:
    offsets = np.asarray(array.offsets, dtype=np.int64)
    start, stop = int(offsets[0]), int(offsets[-1])
    keys = _encode_value(array.keys.slice(start, stop - start))
    values = pc.fill_null(_encode_value(array.items.slice(start, stop - start)), _NULL_ELEMENT)
    offsets = offsets - start
    lengths = np.diff(offsets)
    parent = np.repeat(np.arange(len(array), dtype=np.int64), lengths)
    order = pc.sort_indices(
        pa.table({"parent": parent, "key": keys}),
        sort_keys=[("parent", "ascending"), ("key", "ascending")],
    )
    entries = pc.take(_join([keys, values]), order)
    joined = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), entries), _EMPTY)
    return _with_nulls(_join([_tag(b"{"), _u32(lengths), joined]), array)


# --- hashing ----------------------------------------------------------------------------------


def _xxh3_128(encoded: pa.Array) -> pa.Array:
    encoded = encoded.cast(_BIN)
    n = len(encoded)
    offsets = np.frombuffer(
        encoded.buffers()[1], dtype=np.int64, count=n + 1, offset=encoded.offset * 8
    )
    data = memoryview(encoded.buffers()[2]) if encoded.buffers()[2] is not None else memoryview(b"")
    digest = xxhash.xxh3_128_digest
    out = b"".join([digest(data[offsets[i] : offsets[i + 1]]) for i in range(n)])
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(HASH_BYTES), n, [None, pa.py_buffer(out)]
    )
    return fixed.cast(pa.binary())
