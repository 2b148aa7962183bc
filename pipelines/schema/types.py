"""Parse Spark SQL type names (``long``, ``decimal(10,2)``, ``array<struct<a:int>>``) without Spark.

The dataset declarations name types as Spark SQL does; parsing them here keeps schema loading,
checking and hashing free of a JVM.
"""

from __future__ import annotations

import re

from pyspark.sql import types as T

_PRIMITIVES: dict[str, T.DataType] = {
    "string": T.StringType(),
    "binary": T.BinaryType(),
    "boolean": T.BooleanType(),
    "bool": T.BooleanType(),
    "tinyint": T.ByteType(),
    "byte": T.ByteType(),
    "smallint": T.ShortType(),
    "short": T.ShortType(),
    "int": T.IntegerType(),
    "integer": T.IntegerType(),
    "bigint": T.LongType(),
    "long": T.LongType(),
    "float": T.FloatType(),
    "real": T.FloatType(),
    "double": T.DoubleType(),
    "date": T.DateType(),
    "timestamp": T.TimestampType(),
    "timestamp_ltz": T.TimestampType(),
    "timestamp_ntz": T.TimestampNTZType(),
}

_TOKEN = re.compile(r"\s*(`(?:[^`]|``)*`|[A-Za-z_][A-Za-z0-9_]*|\d+|[<>(),:])")


class TypeParseError(ValueError):
    """A type string that is not a Spark SQL type lakeshard supports."""


def parse_type(text: str) -> T.DataType:
    """Parse one Spark SQL type name into a pyspark DataType."""
    parser = _Parser(text)
    result = parser.type()
    parser.expect_end()
    return result


def type_name(dtype: T.DataType) -> str:
    """The canonical Spark SQL name of a type (``bigint``, ``struct<a:int>``)."""
    return str(dtype.simpleString())


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[str] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if match is None:
                raise TypeParseError(f"unexpected character {text[pos:].strip()[:1]!r} in {text!r}")
            self.tokens.append(match.group(1))
            pos = match.end()
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise TypeParseError(f"unexpected end of type {self.text!r}")
        self.pos += 1
        return token

    def expect(self, token: str) -> None:
        got = self.take()
        if got != token:
            raise TypeParseError(f"expected {token!r} but found {got!r} in {self.text!r}")

    def expect_end(self) -> None:
        if self.peek() is not None:
            raise TypeParseError(f"unexpected {self.peek()!r} after the type in {self.text!r}")

    def type(self) -> T.DataType:
        word = self.take()
        name = word.lower()
        if name in _PRIMITIVES:
            return _PRIMITIVES[name]
        if name in ("decimal", "dec", "numeric"):
            return self._decimal()
        if name == "array":
            self.expect("<")
            element = self.type()
            self.expect(">")
            return T.ArrayType(element, containsNull=True)
        if name == "map":
            self.expect("<")
            key = self.type()
            self.expect(",")
            value = self.type()
            self.expect(">")
            return T.MapType(key, value, valueContainsNull=True)
        if name == "struct":
            return self._struct()
        raise TypeParseError(f"unknown type {word!r} in {self.text!r}")

    def _decimal(self) -> T.DataType:
        if self.peek() != "(":
            return T.DecimalType(10, 0)
        self.take()
        precision = self._int()
        scale = 0
        if self.peek() == ",":
            self.take()
            scale = self._int()
        self.expect(")")
        if not 1 <= precision <= 38 or not 0 <= scale <= precision:
            raise TypeParseError(f"decimal({precision},{scale}) is out of range in {self.text!r}")
        return T.DecimalType(precision, scale)

    def _int(self) -> int:
        token = self.take()
        if not token.isdigit():
            raise TypeParseError(f"expected a number but found {token!r} in {self.text!r}")
        return int(token)

    def _struct(self) -> T.DataType:
        self.expect("<")
        fields: list[T.StructField] = []
        while self.peek() != ">":
            if fields:
                self.expect(",")
            raw = self.take()
            name = raw[1:-1].replace("``", "`") if raw.startswith("`") else raw
            if self.peek() == ":":
                self.take()
            fields.append(T.StructField(name, self.type(), nullable=True))
        self.expect(">")
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise TypeParseError(f"duplicate field name in {self.text!r}")
        return T.StructType(fields)
