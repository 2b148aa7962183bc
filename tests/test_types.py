import pytest
from pyspark.sql import types as T

from pipelines.schema.types import TypeParseError, parse_type


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("string", T.StringType()),
        ("LONG", T.LongType()),
        ("bigint", T.LongType()),
        ("int", T.IntegerType()),
        ("double", T.DoubleType()),
        ("boolean", T.BooleanType()),
        ("date", T.DateType()),
        ("timestamp", T.TimestampType()),
        ("timestamp_ntz", T.TimestampNTZType()),
        ("decimal(10,2)", T.DecimalType(10, 2)),
        ("decimal", T.DecimalType(10, 0)),
        ("array<string>", T.ArrayType(T.StringType())),
        ("map<string, int>", T.MapType(T.StringType(), T.IntegerType())),
        (
            "struct<a:int, `b c`: array<date>>",
            T.StructType(
                [
                    T.StructField("a", T.IntegerType()),
                    T.StructField("b c", T.ArrayType(T.DateType())),
                ]
            ),
        ),
    ],
)
def test_parses_spark_sql_type_names(text: str, expected: T.DataType) -> None:
    assert parse_type(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("lng", "unknown type 'lng'"),
        ("array<string", "unexpected end"),
        ("decimal(40,2)", "out of range"),
        ("map<string>", "expected ','"),
        ("struct<a:int,a:int>", "duplicate field"),
        ("int extra", "unexpected 'extra'"),
    ],
)
def test_rejects_bad_type_names_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(TypeParseError, match=problem):
        parse_type(text)
