"""``array<string>`` columns read from JSON text: the regular-expression fast path
(``validate.plain_string_array``) gives what Spark's ``from_json`` gives, or leaves the text
to it. Texts: JSON arrays of random strings written with random white space, the same texts
cut and spliced at random, hand-picked edge cases, and the naughty strings where present."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.ingest.rawframe import STRICT_JSON
from pipelines.ingest.validate import cast_from_source, plain_string_array
from tests.helpers import naughty_corpus

EDGE_CASES = [
    "[]",
    "[ ]",
    '["a"]',
    '["a",]',
    '[,"a"]',
    '["a""b"]',
    '["a",,"b"]',
    '[,"a""b"]',
    '[,""""]',
    '[ , "x" "y" ]',
    '[,"a","b""c"]',
    '["a"],"b"]',
    '["a,"]',
    '["a\\"b"]',
    '["\\u0041"]',
    '["\\\\"]',
    "[1,2]",
    '["a"\\]',
    ' ["a"]',
    '["a"] ',
    '["a"]x',
    '["a"]["b"]',
    "[null]",
    '["a\tb"]',
    '["\x00"]',
    '["é", "\U0001f600"]',
    '[\n"a" ,\t"b"\r]',
    '["a"\f]',
    '"a"',
    '[["a"]]',
    '[{"a":1}]',
    '{"a":1}',
    "[]]",
    "[[]",
    "",
    "[",
    '["',
    '[""]',
    '["",""]',
]
PIECES = ['"', "\\", "[", "]", ",", " ", "\t", "\n", "\x01", "x", "é", "\U0001f600", "u"]


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 4)))


def _array_text(rng: random.Random, strings: list[str]) -> str:
    space = ["", " ", "\t", "\n", "\r\n", "  "]
    items = [json.dumps(s, ensure_ascii=rng.random() < 0.2) for s in strings]
    inner = "".join(
        (rng.choice(space) + "," if i else "") + rng.choice(space) + item + rng.choice(space)
        for i, item in enumerate(items)
    )
    return "[" + inner + "]"


def _cases(seed: int, count: int) -> tuple[list[str], list[str]]:
    """(texts, the plain ones among them: arrays of strings that need no escape)."""
    rng = random.Random(seed)
    naughty: list[str] = naughty_corpus("blns.json")
    texts: list[str] = list(EDGE_CASES)
    plain: list[str] = []
    for _ in range(count):
        strings = [
            rng.choice(naughty) if naughty and rng.random() < 0.3 else _random_text(rng)
            for _ in range(rng.randint(0, 5))
        ]
        text = _array_text(rng, strings)
        texts.append(text)
        if "\\" not in text:  # json.dumps escaped nothing
            plain.append(text)
        spliced = list(text)
        for _ in range(rng.randint(1, 3)):
            spot = rng.randint(0, len(spliced))
            if rng.random() < 0.5 and spot < len(spliced):
                del spliced[spot]
            else:
                spliced.insert(spot, rng.choice(PIECES))
        texts.append("".join(spliced))
    return texts, plain


def _compare(spark: SparkSession, texts: list[str]) -> list[Any]:
    frame = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "i long, text string")
    text = F.col("text")
    parsed = F.from_json(text, "array<string>", {"mode": "PERMISSIVE", **STRICT_JSON})
    fast = plain_string_array(text).alias("fast")
    return frame.select("i", fast, parsed.alias("parsed")).collect()


def test_plain_arrays_read_as_from_json_reads_them(spark: SparkSession) -> None:
    texts, plain = _cases(seed=20261205, count=1500)
    rows = _compare(spark, texts)
    differing = [
        (texts[r.i], r.fast, r.parsed) for r in rows if r.fast is not None and r.fast != r.parsed
    ]
    assert not differing, f"{len(differing)} text(s) read otherwise than from_json: {differing[:5]}"
    fast = {texts[r.i] for r in rows if r.fast is not None}
    missed = [t for t in plain if t not in fast]
    # The fast path must be taken for plain arrays (else the speed-up is gone unseen).
    assert not missed, f"{len(missed)} plain array(s) left to from_json: {missed[:5]}"
    left = {texts[r.i] for r in rows if r.fast is None}
    assert {'["a\\"b"]', "[1,2]", '["a"]x', "[]]"} <= left, "texts from_json reads leniently"


def test_a_long_array_does_not_overflow_the_stack(spark: SparkSession) -> None:
    text = "[" + ",".join(['"ab"'] * 50_000) + "]"
    (row,) = _compare(spark, [text])
    assert row.fast is not None
    assert len(row.fast) == 50_000
    assert row.fast == row.parsed


@pytest.mark.parametrize("text", ['["a"]', '[ "x" , "y" ]'])
def test_typed_array_values_take_the_fast_path(spark: SparkSession, text: str) -> None:
    """The typed value of an ``array<string>`` column comes from the fast path when plain."""
    frame = spark.createDataFrame([(text,)], "text string")
    value = cast_from_source(F.col("text"), T.StringType(), T.ArrayType(T.StringType()))
    plan = frame.select(value.alias("v"))._jdf.queryExecution().optimizedPlan().toString()
    assert "regexp_extract_all" in plan
    assert frame.select(value.alias("v")).first()[0] == json.loads(text)


def test_a_string_longer_than_the_json_reader_takes_is_left_to_it(spark: SparkSession) -> None:
    """Spark's JSON reader refuses a string of over 20,000,000 characters; so does the fast path."""
    text = '["' + "a" * 20_000_100 + '"]'
    (row,) = _compare(spark, [text])
    assert row.parsed is None
    assert row.fast is None
