"""Property tests (hypothesis) of the content hash over random records of every supported type.

One definition, two implementations: Spark (lakeshard's JVM expression, what ingest runs, and the
Arrow UDF, the ``python`` engine) and plain Python/pyarrow hash the same records alike; the
bytes hashed are the encoding that README.md ("The content hash") defines, rebuilt
here from that text alone; records equal in the encoding's sense hash alike; any single change
changes the hash. Strings mix generated text with the naughty-strings corpus when it is present;
without it the properties run on generated text only, and the corpus tests skip and say so.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import random
import re
import struct
import sys
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import xxhash
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.columns import BLANK, CONTENT_HASH, REASON
from pipelines.ingest import hashing
from pipelines.ingest.validate import typed_col, with_content_hash
from pipelines.schema.datasets import Column, SchemaVersion
from tests.helpers import CONFORMANCE, naughty_corpus

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1)
ROW = "_row"  # carried beside the hashed columns to match Spark's rows with the inputs

# No example database: it would leave an untracked .hypothesis/ in the checkout. A failure
# prints the falsifying example and a blob to reproduce it with @reproduce_failure.
SPARK_RUNS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PYTHON_RUNS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- the naughty strings --------------------------------------------------------------------

NAUGHTY_DIR = CONFORMANCE / "naughty_strings"


NAUGHTY_STRINGS: list[str] = naughty_corpus("blns.json")
# The base64 twin also holds byte strings that are not UTF-8: binary values here.
NAUGHTY_BYTES: list[bytes] = [base64.b64decode(s) for s in naughty_corpus("blns.base64.json")]

# NUL, right-to-left mark and override, zero-width joiner and space, BOM, a lone combining
# accent and a combined one, emoji (astral, a ZWJ family, a flag), line and paragraph
# separators, CRLF, the replacement character and the last code point.
TRICKY = [
    "\x00",
    "\u200f",
    "\u202e",
    "\u200d",
    "\u200b",
    "\ufeff",
    "\u0301",
    "e\u0301",
    "\U0001f600",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "\U0001f1fa\U0001f1f8",
    "\u2028",
    "\u2029",
    "\r\n",
    "\ufffd",
    "\U0010ffff",
]

# Surrogates have no UTF-8 form: st.text() leaves them out by default, st.characters() only
# with a codec.
_GENERATED_TEXT = st.one_of(
    st.text(max_size=10),
    st.lists(st.sampled_from(TRICKY) | st.characters(codec="utf-8"), max_size=6).map("".join),
)


def _naughty_string(index: int) -> str:
    return NAUGHTY_STRINGS[index]


def _naughty_bytes(index: int) -> bytes:
    return NAUGHTY_BYTES[index]


# Drawn by index: a sampled_from over the corpus has a repr over hypothesis's 30 kB warning
# limit, and warnings are errors here.
TEXTS = (
    st.one_of(st.integers(0, len(NAUGHTY_STRINGS) - 1).map(_naughty_string), _GENERATED_TEXT)
    if NAUGHTY_STRINGS
    else _GENERATED_TEXT
)
BYTES = (
    st.one_of(st.integers(0, len(NAUGHTY_BYTES) - 1).map(_naughty_bytes), st.binary(max_size=16))
    if NAUGHTY_BYTES
    else st.binary(max_size=16)
)


# --- floats ---------------------------------------------------------------------------------


def _f32(bits: int) -> float:
    value: float = struct.unpack("<f", struct.pack("<I", bits))[0]
    return value


def _f64(bits: int) -> float:
    value: float = struct.unpack("<d", struct.pack("<Q", bits))[0]
    return value


# NaNs with either sign, quiet and signalling, with payloads.
NANS32 = [_f32(b) for b in (0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FFFFFFF, 0xFFA00042)]
NANS64 = [
    _f64(b)
    for b in (
        0x7FF8000000000000,
        0xFFF8000000000000,
        0x7FF0000000000001,
        0x7FFFFFFFFFFFFFFF,
        0xFFF4000000000123,
    )
]
INF = math.inf
# Zeros, infinities, the smallest and largest subnormals, the smallest normal, the largest.
SPECIAL32 = [0.0, -0.0, INF, -INF, _f32(1), _f32(0x007FFFFF), _f32(0x00800000), _f32(0x7F7FFFFF)]
SPECIAL64 = [0.0, -0.0, INF, -INF, 5e-324, _f64(0x000FFFFFFFFFFFFF), 2.2250738585072014e-308]
SPECIAL64.append(sys.float_info.max)


# --- types ----------------------------------------------------------------------------------

# Scales above 6 matter: Arrow writes such decimals under 1e-6 in E notation.
DECIMAL_TYPES = [
    T.DecimalType(1, 0),
    T.DecimalType(9, 2),
    T.DecimalType(18, 9),
    T.DecimalType(38, 0),
    T.DecimalType(38, 10),
    T.DecimalType(38, 38),
]
LEAF_TYPES: list[T.DataType] = [
    T.StringType(),
    T.BinaryType(),
    T.BooleanType(),
    T.ByteType(),
    T.ShortType(),
    T.IntegerType(),
    T.LongType(),
    T.FloatType(),
    T.DoubleType(),
    *DECIMAL_TYPES,
    T.DateType(),
    T.TimestampType(),
    T.TimestampNTZType(),
]


def _struct(*fields: tuple[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(name, dtype) for name, dtype in fields])


NESTED_TYPES: dict[str, T.DataType] = {
    "strings": T.ArrayType(T.StringType()),
    "int_grid": T.ArrayType(T.ArrayType(T.IntegerType())),
    "points": T.ArrayType(_struct(("x", T.DoubleType()), ("at", T.ArrayType(T.TimestampType())))),
    "amounts": T.MapType(T.StringType(), T.DecimalType(38, 10)),
    "labels": T.MapType(T.IntegerType(), T.ArrayType(T.StringType())),
    "by_key": T.MapType(T.StringType(), _struct(("f", T.FloatType()), ("b", T.BinaryType()))),
    "nested_maps": T.MapType(T.IntegerType(), T.MapType(T.StringType(), T.FloatType())),
    "ctx": _struct(
        (
            "inner",
            _struct(("bin", T.BinaryType()), ("days", T.MapType(T.IntegerType(), T.DateType()))),
        ),
        ("local", T.ArrayType(T.TimestampNTZType())),
        ("n", T.LongType()),
        ("Z", T.BooleanType()),
        ("é", T.ShortType()),
    ),
}


def _leaf_name(dtype: T.DataType) -> str:
    return "c_" + re.sub(r"\W+", "_", dtype.simpleString()).strip("_")


# Every supported type, as a column of its own and nested. Random columns are added to it.
WIDE = T.StructType(
    [T.StructField(_leaf_name(t), t) for t in LEAF_TYPES]
    + [T.StructField(name, t) for name, t in NESTED_TYPES.items()]
)

# Names whose UTF-8 order differs from their UTF-16 order (U+FFFD against an emoji) and whose
# case differs only ("a", "A").
FIELD_NAMES = st.text(alphabet="aAbZ_ é\ufffd\U0001f600", min_size=1, max_size=3)


def _containers(children: st.SearchStrategy[T.DataType]) -> st.SearchStrategy[T.DataType]:
    keys = st.sampled_from([T.StringType(), T.IntegerType()])
    fields = st.lists(
        st.tuples(FIELD_NAMES, children), min_size=1, max_size=3, unique_by=lambda f: f[0]
    )
    return st.one_of(
        children.map(T.ArrayType),
        st.tuples(keys, children).map(lambda kv: T.MapType(kv[0], kv[1])),
        fields.map(lambda fs: _struct(*fs)),
    )


DATA_TYPES = st.recursive(st.sampled_from(LEAF_TYPES), _containers, max_leaves=4)


@st.composite
def schemas(draw: st.DrawFn) -> T.StructType:
    """The wide schema and up to three random columns."""
    extra = draw(st.lists(DATA_TYPES, max_size=3))
    return T.StructType([*WIDE.fields, *(T.StructField(f"x{i}", t) for i, t in enumerate(extra))])


# --- values ---------------------------------------------------------------------------------

# Aware timestamps in whole-minute offsets. A day's margin at both ends of Spark's range keeps
# every instant, and its conversion to another offset, inside years 1..9999 (Python's range).
OFFSETS = st.integers(-18 * 60, 18 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
INSTANTS = st.datetimes(dt.datetime(1, 1, 3), dt.datetime(9999, 12, 29), timezones=OFFSETS)

SCALARS: dict[type[T.DataType], st.SearchStrategy[Any]] = {
    T.StringType: TEXTS,
    T.BinaryType: BYTES,
    T.BooleanType: st.booleans(),
    T.ByteType: st.integers(-(2**7), 2**7 - 1),
    T.ShortType: st.integers(-(2**15), 2**15 - 1),
    T.IntegerType: st.integers(-(2**31), 2**31 - 1),
    T.LongType: st.integers(-(2**63), 2**63 - 1),
    T.FloatType: st.floats(width=32) | st.sampled_from(SPECIAL32 + NANS32),
    T.DoubleType: st.floats() | st.sampled_from(SPECIAL64 + NANS64),
    T.DateType: st.dates(),
    T.TimestampType: INSTANTS,
    T.TimestampNTZType: st.datetimes(),
}


def decimals(dtype: T.DecimalType) -> st.SearchStrategy[Decimal]:
    # From the unscaled integer: st.decimals(places=...) overshot decimal(38, 10) by one digit.
    digits = 10**dtype.precision - 1
    exact = Context(prec=dtype.precision + 1)
    return st.integers(-digits, digits).map(lambda n: Decimal(n).scaleb(-dtype.scale, exact))


def values(dtype: T.DataType) -> st.SearchStrategy[Any]:
    """Non-null values of a Spark type, as Python objects that Spark and pyarrow both take."""
    if isinstance(dtype, T.ArrayType):
        return st.lists(nullable(dtype.elementType), max_size=3)
    if isinstance(dtype, T.MapType):
        return st.dictionaries(values(dtype.keyType), nullable(dtype.valueType), max_size=3)
    if isinstance(dtype, T.StructType):
        return st.fixed_dictionaries({f.name: nullable(f.dataType) for f in dtype.fields})
    if isinstance(dtype, T.DecimalType):
        return decimals(dtype)
    return SCALARS[type(dtype)]


def nullable(dtype: T.DataType) -> st.SearchStrategy[Any]:
    return st.none() | values(dtype)


def records(schema: T.StructType) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({f.name: nullable(f.dataType) for f in schema.fields})


def equivalent(value: Any, dtype: T.DataType, rnd: random.Random) -> Any:
    """An equal value in the encoding's sense, written differently: zeros of either sign, other
    NaNs, instants in other offsets, maps and structs built in other orders."""
    if value is None:
        return None
    if isinstance(dtype, T.FloatType | T.DoubleType):
        if math.isnan(value):
            return rnd.choice(NANS32 if isinstance(dtype, T.FloatType) else NANS64)
        return rnd.choice([0.0, -0.0]) if value == 0 else value
    if isinstance(dtype, T.TimestampType):
        return value.astimezone(dt.timezone(dt.timedelta(minutes=rnd.randint(-1080, 1080))))
    if isinstance(dtype, T.ArrayType):
        return [equivalent(e, dtype.elementType, rnd) for e in value]
    if isinstance(dtype, T.MapType):
        entries = [(k, equivalent(v, dtype.valueType, rnd)) for k, v in value.items()]
        rnd.shuffle(entries)
        return dict(entries)
    if isinstance(dtype, T.StructType):
        fields = list(dtype.fields)
        rnd.shuffle(fields)
        return {f.name: equivalent(value[f.name], f.dataType, rnd) for f in fields}
    return value


def canonical(value: Any, dtype: T.DataType) -> Any:
    """A Python value that compares equal exactly when two values encode alike."""
    if value is None:
        return None
    if isinstance(dtype, T.FloatType | T.DoubleType):
        return "NaN" if math.isnan(value) else value + 0.0  # -0.0 + 0.0 is 0.0
    if isinstance(dtype, T.ArrayType):
        return tuple(canonical(e, dtype.elementType) for e in value)
    if isinstance(dtype, T.MapType):
        return frozenset((k, canonical(v, dtype.valueType)) for k, v in value.items())
    if isinstance(dtype, T.StructType):
        return tuple((f.name, canonical(value[f.name], f.dataType)) for f in dtype.fields)
    return value  # decimals compare by value, aware datetimes as instants


# --- the encoding, rebuilt from the hashing module's docstring --------------------------------


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "little")


def _i64(n: int) -> bytes:
    return n.to_bytes(8, "little", signed=True)


def _decimal_text(value: Decimal) -> str:
    text = format(value, "f")  # no exponent, every digit of the value
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("0", "-0") else text


def reference(value: Any, dtype: T.DataType) -> bytes:
    """The documented encoding of one non-null value."""
    if isinstance(dtype, T.StringType):
        raw: bytes = value.encode("utf-8")
        return b"S" + _u32(len(raw)) + raw
    if isinstance(dtype, T.BinaryType):
        return b"B" + _u32(len(value)) + bytes(value)
    if isinstance(dtype, T.BooleanType):
        return b"?" + bytes([value])
    if isinstance(dtype, T.ByteType | T.ShortType | T.IntegerType | T.LongType):
        return b"I" + _i64(value)
    if isinstance(dtype, T.FloatType | T.DoubleType):
        if math.isnan(value):
            return b"F" + (0x7FF8000000000000).to_bytes(8, "little")
        return b"F" + struct.pack("<d", value + 0.0)
    if isinstance(dtype, T.DecimalType):
        text = _decimal_text(value).encode("ascii")
        return b"N" + _u32(len(text)) + text
    if isinstance(dtype, T.DateType):
        return b"D" + _i64((value - EPOCH.date()).days)
    if isinstance(dtype, T.TimestampType):
        return b"T" + _i64((value - EPOCH.replace(tzinfo=UTC)) // dt.timedelta(microseconds=1))
    if isinstance(dtype, T.TimestampNTZType):
        return b"L" + _i64((value - EPOCH) // dt.timedelta(microseconds=1))
    if isinstance(dtype, T.ArrayType):
        elements = [b"\x00" if e is None else reference(e, dtype.elementType) for e in value]
        return b"[" + _u32(len(value)) + b"".join(elements)
    if isinstance(dtype, T.MapType):
        entries = sorted(
            (reference(k, dtype.keyType), b"\x00" if v is None else reference(v, dtype.valueType))
            for k, v in value.items()
        )
        return b"{" + _u32(len(entries)) + b"".join(k + v for k, v in entries)
    if isinstance(dtype, T.StructType):
        present = sorted(
            (f.name.encode("utf-8"), f) for f in dtype.fields if value.get(f.name) is not None
        )
        fields = [
            reference(f.name, T.StringType()) + reference(value[f.name], f.dataType)
            for _, f in present
        ]
        return b"(" + _u32(len(present)) + b"".join(fields)
    raise AssertionError(f"no reference encoding for {dtype.simpleString()}")


# --- helpers --------------------------------------------------------------------------------


def h(record: dict[str, Any], schema: T.StructType) -> bytes:
    return hashing.content_hash(record, schema)


def one(value: Any, dtype: T.DataType) -> bytes:
    """The hash of a record with one column ``v``."""
    return h({"v": value}, _struct(("v", dtype)))


def arrow_table(rows: list[dict[str, Any]], schema: T.StructType) -> pa.Table:
    fields = [pa.field(f.name, hashing.arrow_type(f.dataType)) for f in schema.fields]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


def spark_hashes(
    spark: SparkSession, schema: T.StructType, rows: list[dict[str, Any]], engine: str = "jvm"
) -> list[bytes]:
    """The hashes that ingest's code path (``with_content_hash``) computes in Spark."""
    indexed = T.StructType([T.StructField(ROW, T.LongType()), *schema.fields])
    frame = spark.createDataFrame([{ROW: i, **row} for i, row in enumerate(rows)], schema=indexed)
    prepared = frame.select(
        F.col(ROW),
        *[F.col(f.name).alias(typed_col(i)) for i, f in enumerate(schema.fields)],
        F.lit(None).cast("string").alias(REASON),
        F.lit(False).alias(BLANK),
    )
    version = SchemaVersion(
        1, tuple(Column(f.name, f.dataType) for f in schema.fields), Path("hash_properties.yaml")
    )
    collected = with_content_hash(prepared, version, engine).select(ROW, CONTENT_HASH).collect()
    by_row = {r[ROW]: bytes(r[CONTENT_HASH]) for r in collected}
    return [by_row[i] for i in range(len(rows))]


# --- Spark and plain Python ------------------------------------------------------------------


@SPARK_RUNS
@given(data=st.data())
def test_spark_and_plain_python_hash_random_records_alike(
    spark: SparkSession, data: st.DataObject
) -> None:
    schema = data.draw(schemas(), label="schema")
    rows = data.draw(st.lists(records(schema), min_size=20, max_size=30), label="rows")
    rnd = data.draw(st.randoms(use_true_random=False))

    in_jvm = spark_hashes(spark, schema, rows, "jvm")
    in_udf = spark_hashes(spark, schema, rows, "python")
    in_arrow = [bytes(x) for x in hashing.content_hashes(arrow_table(rows, schema)).to_pylist()]
    # One record at a time, maps built in another insertion order, columns in another order.
    shuffled = T.StructType(rnd.sample(schema.fields, len(schema.fields)))
    one_by_one = [h(equivalent(r, schema, rnd), shuffled) for r in rows]
    documented = [xxhash.xxh3_128_digest(reference(r, schema)) for r in rows]

    for i, row in enumerate(rows):
        assert in_jvm[i] == documented[i], f"row {i} hashes differently in the JVM: {row!r}"
        assert in_udf[i] == in_arrow[i], f"row {i} hashes differently in the Arrow UDF: {row!r}"
    assert in_arrow == documented
    assert one_by_one == in_arrow


def test_spark_and_plain_python_hash_every_naughty_string_alike(
    spark: SparkSession, conformance: Path
) -> None:
    strings = json.loads((conformance / "naughty_strings" / "blns.json").read_text("utf-8"))
    raw = json.loads((conformance / "naughty_strings" / "blns.base64.json").read_text("utf-8"))
    blobs = [base64.b64decode(s) for s in raw]
    schema = _struct(
        ("s", T.StringType()),
        ("b", T.BinaryType()),
        ("m", T.MapType(T.StringType(), T.BinaryType())),
    )
    rows = [
        {"s": s, "b": blobs[i % len(blobs)], "m": {s: blobs[-1 - i % len(blobs)]}}
        for i, s in enumerate(strings)
    ]
    in_arrow = [bytes(x) for x in hashing.content_hashes(arrow_table(rows, schema)).to_pylist()]
    assert spark_hashes(spark, schema, rows, "jvm") == in_arrow
    assert spark_hashes(spark, schema, rows, "python") == in_arrow
    # Distinct strings hash differently, alone and as map keys.
    distinct = sorted(set(strings))
    string_hashes = {one(s, T.StringType()) for s in distinct}
    key_hashes = {one({s: None}, T.MapType(T.StringType(), T.StringType())) for s in distinct}
    assert len(string_hashes) == len(key_hashes) == len(distinct)


def test_naughty_strings_feed_the_properties() -> None:
    if not NAUGHTY_DIR.is_dir():
        pytest.skip(
            f"naughty strings not found at {NAUGHTY_DIR} (set LAKESHARD_CONFORMANCE): the hash "
            "properties ran on generated text and bytes only"
        )
    assert NAUGHTY_STRINGS, f"no strings read from {NAUGHTY_DIR / 'blns.json'}"
    assert NAUGHTY_BYTES, f"no byte strings read from {NAUGHTY_DIR / 'blns.base64.json'}"
    assert any(b.decode("utf-8", "replace").encode() != b for b in NAUGHTY_BYTES)


# --- the documented encoding and its invariants (plain Python) --------------------------------


@settings(PYTHON_RUNS, max_examples=200)
@given(data=st.data())
def test_the_hash_is_xxh3_of_the_documented_encoding(data: st.DataObject) -> None:
    schema = data.draw(schemas(), label="schema")
    record = data.draw(records(schema), label="record")
    expected = reference(record, schema)
    assert hashing.canonical_encoding(record, schema) == expected
    assert h(record, schema) == xxhash.xxh3_128_digest(expected)


@PYTHON_RUNS
@given(data=st.data())
def test_changing_any_single_field_changes_the_hash(data: st.DataObject) -> None:
    schema = data.draw(schemas(), label="schema")
    record = data.draw(records(schema), label="record")
    field = data.draw(st.sampled_from(schema.fields), label="field")
    changed = dict(record, **{field.name: changed_value(data, record[field.name], field.dataType)})
    assume(canonical(changed, schema) != canonical(record, schema))
    assert h(changed, schema) != h(record, schema)


def changed_value(data: st.DataObject, value: Any, dtype: T.DataType) -> Any:
    """The value with one change: replaced, nulled, or one element, entry, key or field
    changed in turn."""
    ways = ["replace"] if value is None else ["replace", "null"]
    if value and isinstance(dtype, T.ArrayType | T.MapType | T.StructType):
        ways.append("inside")
    if value and isinstance(dtype, T.MapType):
        ways.append("rekey")
    way = data.draw(st.sampled_from(ways))
    if way == "replace":
        return data.draw(nullable(dtype))
    if way == "null":
        return None
    if isinstance(dtype, T.ArrayType):
        i = data.draw(st.integers(0, len(value) - 1))
        return [*value[:i], changed_value(data, value[i], dtype.elementType), *value[i + 1 :]]
    key = data.draw(st.sampled_from(list(value)))
    if isinstance(dtype, T.StructType):
        return dict(value, **{key: changed_value(data, value[key], dtype[key].dataType)})
    assert isinstance(dtype, T.MapType)
    if way == "inside":
        return {
            k: changed_value(data, v, dtype.valueType) if k == key else v for k, v in value.items()
        }
    new_key = data.draw(values(dtype.keyType).filter(lambda k: k not in value))
    return {new_key if k == key else k: v for k, v in value.items()}


@settings(PYTHON_RUNS, max_examples=200)
@given(data=st.data())
def test_equal_records_hash_alike(data: st.DataObject) -> None:
    """Column order, map insertion order, the sign of zero, NaN bits, the offset of an instant."""
    schema = data.draw(schemas(), label="schema")
    record = data.draw(records(schema), label="record")
    rnd = data.draw(st.randoms(use_true_random=False))
    shuffled = T.StructType(rnd.sample(schema.fields, len(schema.fields)))
    assert h(equivalent(record, schema, rnd), shuffled) == h(record, schema)


@settings(PYTHON_RUNS, max_examples=100)
@given(data=st.data())
def test_the_hashes_of_a_slice_are_the_slice_of_the_hashes(data: st.DataObject) -> None:
    """Arrays that start at an offset into their buffers (slices, chunks) hash alike."""
    schema = data.draw(schemas(), label="schema")
    rows = data.draw(st.lists(records(schema), min_size=1, max_size=8), label="rows")
    start = data.draw(st.integers(0, len(rows) - 1))
    stop = data.draw(st.integers(start, len(rows)))
    table = arrow_table(rows, schema)
    whole = hashing.content_hashes(table).to_pylist()
    assert hashing.content_hashes(table.slice(start, stop - start)).to_pylist() == whole[start:stop]
    chunked = pa.concat_tables([table.slice(0, start), table.slice(start)])
    assert hashing.content_hashes(chunked).to_pylist() == whole


@settings(PYTHON_RUNS, max_examples=100)
@given(data=st.data())
def test_decimals_hash_by_value_whatever_their_precision_and_scale(data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(DECIMAL_TYPES), label="type")
    value = data.draw(decimals(dtype), label="value")
    more = data.draw(st.integers(0, 38 - dtype.precision), label="more digits")
    wider = T.DecimalType(dtype.precision + more, dtype.scale + more)
    assert one(value, dtype) == one(value, wider)
    assert one(value, dtype) == one(
        value.quantize(Decimal(1).scaleb(-wider.scale), context=Context(prec=80)), wider
    )


def _wrapped(value: float, dtype: T.DataType, how: str) -> tuple[Any, T.DataType]:
    if how == "array":
        return [value], T.ArrayType(dtype)
    if how == "map":
        return {"k": value}, T.MapType(T.StringType(), dtype)
    if how == "struct":
        return {"f": value}, _struct(("f", dtype))
    return value, dtype


@pytest.mark.parametrize("dtype", [T.FloatType(), T.DoubleType()], ids=["float", "double"])
@pytest.mark.parametrize("how", ["plain", "array", "map", "struct"])
def test_both_zeros_hash_alike_and_all_nans_hash_alike(dtype: T.DataType, how: str) -> None:
    def hashes(*floats: float) -> set[bytes]:
        return {one(*_wrapped(v, dtype, how)) for v in floats}

    nans = NANS32 if isinstance(dtype, T.FloatType) else NANS64
    assert len(hashes(0.0, -0.0)) == 1
    assert len(hashes(*nans, math.nan, -math.nan)) == 1
    assert len(hashes(0.0, _f32(1), math.nan, math.inf, -math.inf)) == 5
