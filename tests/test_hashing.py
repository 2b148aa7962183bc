"""The content hash: its canonical rules, and Spark and plain Python agreeing on it."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.ingest import hashing
from pipelines.ingest.validate import typed_col, with_content_hash
from pipelines.schema.datasets import Column, SchemaVersion

SCHEMA = T.StructType(
    [
        T.StructField("id", T.LongType()),
        T.StructField("name", T.StringType()),
        T.StructField("score", T.DoubleType()),
        T.StructField("price", T.DecimalType(12, 3)),
        T.StructField("day", T.DateType()),
        T.StructField("at", T.TimestampType()),
        T.StructField("ok", T.BooleanType()),
        T.StructField("blob", T.BinaryType()),
        T.StructField("tags", T.ArrayType(T.StringType())),
        T.StructField("attrs", T.MapType(T.StringType(), T.IntegerType())),
        T.StructField(
            "ctx",
            T.StructType([T.StructField("a", T.IntegerType()), T.StructField("b", T.StringType())]),
        ),
    ]
)

UTC = dt.UTC
ROWS: list[dict[str, Any]] = [
    {
        "id": 1,
        "name": "a",
        "score": 1.5,
        "price": Decimal("1.500"),
        "day": dt.date(2024, 1, 1),
        "at": dt.datetime(2024, 1, 1, 12, tzinfo=UTC),
        "ok": True,
        "blob": b"\x00\x01",
        "tags": ["x", None],
        "attrs": {"k": 1, "j": None},
        "ctx": {"a": 1, "b": None},
    },
    {
        "id": None,
        "name": "",
        "score": -0.0,
        "price": Decimal("-0.000"),
        "day": None,
        "at": None,
        "ok": False,
        "blob": b"",
        "tags": [],
        "attrs": {},
        "ctx": None,
    },
    {
        "id": -(2**63),
        "name": "Ω≈ç√ 𝕿𝖍𝖊 \u0000 '; DROP TABLE x;--",
        "score": float("nan"),
        "price": Decimal("123456789.123"),
        "day": dt.date(1, 1, 1),
        "at": dt.datetime(1970, 1, 1, tzinfo=UTC),
        "ok": None,
        "blob": None,
        "tags": None,
        "attrs": None,
        "ctx": {"a": None, "b": "z"},
    },
    {
        "id": 2,
        "name": None,
        "score": float("inf"),
        "price": None,
        "day": dt.date(9999, 12, 31),
        "at": dt.datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC),
        "ok": True,
        "blob": None,
        "tags": [None],
        "attrs": {"z": 3, "a": 4},
        "ctx": {"a": 0, "b": ""},
    },
]


def h(record: dict[str, Any], schema: T.StructType = SCHEMA) -> bytes:
    return hashing.content_hash(record, schema)


def test_spark_and_plain_python_compute_the_same_hash(spark: SparkSession) -> None:
    frame = spark.createDataFrame(ROWS, schema=SCHEMA)
    columns = tuple(Column(f.name, f.dataType) for f in SCHEMA.fields)
    prepared = frame.select(
        F.monotonically_increasing_id().alias("_order"),
        *[F.col(f.name).alias(typed_col(i)) for i, f in enumerate(SCHEMA.fields)],
        F.lit(None).cast("string").alias("_reason"),
        F.lit(False).alias("_blank"),
    )
    hashed = with_content_hash(prepared, SchemaVersion(1, columns, path=None))  # type: ignore[arg-type]
    spark_hashes = [r["_content_hash"] for r in hashed.orderBy("_order").collect()]
    python_hashes = [h(r) for r in ROWS]
    assert [bytes(x) for x in spark_hashes] == python_hashes
    assert len(set(python_hashes)) == len(ROWS)


def test_hash_is_16_bytes_of_xxh3_128_over_the_documented_encoding() -> None:
    schema = T.StructType([T.StructField("b", T.StringType()), T.StructField("a", T.LongType())])
    encoding = hashing.canonical_encoding({"a": 1, "b": "x"}, schema)
    expected = (
        b"("
        + (2).to_bytes(4, "little")
        + b"S"
        + (1).to_bytes(4, "little")
        + b"a"
        + b"I"
        + (1).to_bytes(8, "little")
        + b"S"
        + (1).to_bytes(4, "little")
        + b"b"
        + b"S"
        + (1).to_bytes(4, "little")
        + b"x"
    )
    assert encoding == expected
    import xxhash

    assert h({"a": 1, "b": "x"}, schema) == xxhash.xxh3_128_digest(expected)


def test_null_and_empty_string_differ_but_null_and_absent_agree() -> None:
    with_b = T.StructType([T.StructField("a", T.LongType()), T.StructField("b", T.StringType())])
    only_a = T.StructType([T.StructField("a", T.LongType())])
    assert h({"a": 1, "b": None}, with_b) != h({"a": 1, "b": ""}, with_b)
    assert h({"a": 1, "b": None}, with_b) == h({"a": 1}, only_a)


def test_column_order_does_not_matter() -> None:
    ab = T.StructType([T.StructField("a", T.LongType()), T.StructField("b", T.StringType())])
    ba = T.StructType([T.StructField("b", T.StringType()), T.StructField("a", T.LongType())])
    assert h({"a": 1, "b": "x"}, ab) == h({"a": 1, "b": "x"}, ba)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ((T.DoubleType(), -0.0), (T.DoubleType(), 0.0)),
        ((T.DoubleType(), float("nan")), (T.DoubleType(), -float("nan"))),
        ((T.IntegerType(), 7), (T.LongType(), 7)),
        ((T.FloatType(), 0.5), (T.DoubleType(), 0.5)),
        ((T.DecimalType(10, 2), Decimal("1.50")), (T.DecimalType(20, 5), Decimal("1.50000"))),
        (
            (T.MapType(T.StringType(), T.IntegerType()), {"a": 1, "b": 2}),
            (T.MapType(T.StringType(), T.IntegerType()), {"b": 2, "a": 1}),
        ),
    ],
)
def test_equal_values_hash_equal(
    left: tuple[T.DataType, Any], right: tuple[T.DataType, Any]
) -> None:
    def one(dtype: T.DataType, value: Any) -> bytes:
        return h({"v": value}, T.StructType([T.StructField("v", dtype)]))

    assert one(*left) == one(*right)


@pytest.mark.parametrize("field", [f.name for f in SCHEMA.fields])
def test_changing_any_single_field_changes_the_hash(field: str) -> None:
    base = ROWS[0]
    changed = dict(base)
    replacement = ROWS[3][field] if ROWS[3][field] != base[field] else ROWS[1][field]
    changed[field] = replacement
    assert h(changed) != h(base)


def test_values_that_only_look_alike_hash_differently() -> None:
    arr = T.StructType([T.StructField("v", T.ArrayType(T.StringType()))])
    assert h({"v": ["ab", "c"]}, arr) != h({"v": ["a", "bc"]}, arr)
    assert h({"v": [None]}, arr) != h({"v": []}, arr)
    assert h({"v": [""]}, arr) != h({"v": [None]}, arr)
    two = T.StructType([T.StructField("a", T.StringType()), T.StructField("b", T.StringType())])
    assert h({"a": "x", "b": None}, two) != h({"a": None, "b": "x"}, two)
