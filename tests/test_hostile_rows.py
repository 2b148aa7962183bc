"""Hostile rows: encodings, line endings, BOMs, odd structure, huge and deep values, odd names.

Each case ends with the right rows in the table, the rest quarantined with a reason, and the
row accounting intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from tests.helpers import accounting_holds, declare, ingest_quietly

LINE_ENDINGS = {"lf": "\n", "crlf": "\r\n", "cr": "\r"}
# Values each encoding can hold, non-ASCII included.
VALUES = {
    "utf-8": "é€𝄞 日本",
    "utf-16": "é€𝄞 日本",
    "utf-16le": "ü€ 한국어",
    "latin-1": "éüß ÿ",
    "cp1252": "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ é",
}
# (file name suffix, Python codec that writes it) per declared encoding: BOMs and both byte
# orders where the declaration allows them.
FILES = {
    "utf-8": [("plain", "utf-8"), ("bom", "utf-8-sig")],
    "utf-16": [("le", "utf-16-le"), ("be", "utf-16-be")],
    "utf-16le": [("plain", "utf-16-le")],
    "latin-1": [("plain", "latin-1")],
    "cp1252": [("plain", "cp1252")],
}
BOMS = {"utf-16-le": "\ufeff", "utf-16-be": "\ufeff"}


def _ingest(tmp_path: Path, dataset: str, raw: Path) -> dict[str, Any]:
    summary = ingest_quietly(
        dataset, str(raw), "--lake", str(tmp_path / "lake"), "--schemas", str(tmp_path / "schemas")
    )
    assert accounting_holds(summary)
    return summary


def _rows(spark: SparkSession, uri: str, *columns: str) -> list[tuple[Any, ...]]:
    return sorted(
        tuple(r[c] for c in columns) for r in spark.read.format("delta").load(uri).collect()
    )


def _reasons(spark: SparkSession, summary: dict[str, Any]) -> list[tuple[str, int, str]]:
    quarantine = spark.read.format("delta").load(summary["quarantine"])
    return sorted(
        (Path(r["_source_file"]).name, r["_source_row"], r["_reason"]) for r in quarantine.collect()
    )


def _records(encoding: str, ending: str) -> list[tuple[str, str]]:
    return [("1", "plain"), ("2", VALUES[encoding]), ("3", f"two{ending}lines")]


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("encoding", sorted(FILES))
def test_declared_encodings_with_every_line_ending_and_bom(
    spark: SparkSession, tmp_path: Path, fmt: str, encoding: str
) -> None:
    declare(
        tmp_path / "schemas",
        "enc",
        fmt,
        [("id", "long"), ("value", "string")],
        extra=f"encoding: {encoding}\n",
    )
    raw = tmp_path / "raw"
    raw.mkdir()
    expected = []
    for suffix, codec in FILES[encoding]:
        for name, ending in LINE_ENDINGS.items():
            if fmt == "json" and ending == "\r" and codec.startswith("utf-16"):
                continue  # UTF-16 JSON lines break on LF (README: input policies)
            records = _records(encoding, ending)
            if fmt == "csv":
                lines = ["id,value", *(f'{i},"{v}"' for i, v in records)]
            else:
                lines = [
                    json.dumps({"id": int(i), "value": v}, ensure_ascii=False) for i, v in records
                ]
            text = BOMS.get(codec, "") + ending.join(lines) + ending
            (raw / f"{suffix}_{name}.{fmt}").write_bytes(text.encode(codec))
            expected += [(int(i), v) for i, v in records]

    summary = _ingest(tmp_path, "enc", raw)

    assert summary["rows_quarantined"] == 0, _reasons(spark, summary)
    assert summary["rows_read"] == summary["rows_written"] + summary["rows_duplicate"]
    assert _rows(spark, summary["table"], "id", "value") == sorted(set(expected))


def test_empty_header_only_ragged_and_huge_csv(spark: SparkSession, tmp_path: Path) -> None:
    declare(tmp_path / "schemas", "shapes", "csv", [("id", "long"), ("text", "string")])
    raw = tmp_path / "raw"
    raw.mkdir()
    huge = "x" * 5_000_000
    (raw / "empty.csv").write_bytes(b"")
    (raw / "header_only.csv").write_text("id,text\n")
    (raw / "ragged.csv").write_text(f'id,text\n1\n2,b,extra\n3,"quoted\nnewline"\n4,{huge}\n')

    summary = _ingest(tmp_path, "shapes", raw)

    assert (summary["rows_read"], summary["rows_written"], summary["rows_quarantined"]) == (4, 2, 2)
    assert _rows(spark, summary["table"], "id", "text") == [(3, "quoted\nnewline"), (4, huge)]
    assert _reasons(spark, summary) == [
        ("ragged.csv", 1, "malformed CSV record: expected 2 fields"),
        ("ragged.csv", 2, "malformed CSV record: expected 2 fields"),
    ]


DEEP = '{"id": 9, "doc": ' + "[" * 10_000 + "]" * 10_000 + "}"
JSON_LINES = [
    '{"id": 1, "doc": "ok", "x": NaN}',  # 1: NaN is not JSON
    '{"id": 2, "doc": Infinity}',  # 2
    '{"id": 3, "doc": -Infinity}',  # 3
    '{"id": 4, "doc": "first", "doc": "second"}',  # 4: which one? refused
    '{"id": 5, "doc": "a"}{"id": 6, "doc": "b"}',  # 5: two records glued together
    '{"id": 7, "doc": "a"} trailing',  # 6
    "{'id': 8, 'doc': 'single quotes'}",  # 7
    DEEP,  # 8: deeper than Jackson's 1000 levels
    '{"id": 10, "doc": "' + "y" * 5_000_000 + '"}',  # 9: a 5 MB field
    '{"id": 11, "doc": {"k": [1, 2.5, "NaN"]}, "Id": 12}',  # 10: "Id" is another, undeclared key
    '{"id": 13, "doc": "NaN"}',  # 11: a string is a string
]


def test_hostile_json_lines(spark: SparkSession, tmp_path: Path) -> None:
    declare(tmp_path / "schemas", "hostile", "json", [("id", "long"), ("doc", "string")])
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "lines.jsonl").write_text("\n".join(JSON_LINES) + "\n", encoding="utf-8")

    summary = _ingest(tmp_path, "hostile", raw)

    assert (summary["rows_read"], summary["rows_written"], summary["rows_quarantined"]) == (
        11,
        2,
        9,
    )
    assert _rows(spark, summary["table"], "id", "doc") == [(10, "y" * 5_000_000), (13, "NaN")]
    assert [(row, reason) for _, row, reason in _reasons(spark, summary)] == [
        (1, "malformed JSON"),
        (2, "malformed JSON"),
        (3, "malformed JSON"),
        (4, "malformed JSON: duplicate key 'doc'"),
        (5, "malformed JSON: text after the object"),
        (6, "malformed JSON: text after the object"),
        (7, "malformed JSON"),
        (8, "malformed JSON"),
        (10, "undeclared field(s): Id"),
    ]


ODD_NAMES = [("id", "long"), ("unit price (EUR)", "double"), ("a/b", "string"), ("c.d", "string")]


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_column_names_with_spaces_parentheses_slashes_and_dots(
    spark: SparkSession, tmp_path: Path, fmt: str
) -> None:
    declare(tmp_path / "schemas", "odd", fmt, ODD_NAMES, extra="partition_by: [a/b]\n")
    raw = tmp_path / "raw"
    raw.mkdir()
    names = [n for n, _ in ODD_NAMES]
    rows = [(1, 9.5, "x/y", "p q"), (2, 0.25, "=%", "(r)"), (3, 1.0, "bad\u0000", "s")]
    if fmt == "csv":
        lines = [",".join(f'"{n}"' for n in names), *(",".join(f'"{v}"' for v in r) for r in rows)]
        (raw / "odd.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif fmt == "json":
        text = "".join(json.dumps(dict(zip(names, r, strict=True))) + "\n" for r in rows)
        (raw / "odd.jsonl").write_text(text, encoding="utf-8")
    else:
        table = pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows])
        pq.write_table(table, raw / "odd.parquet")

    summary = _ingest(tmp_path, "odd", raw)

    assert (summary["rows_written"], summary["rows_quarantined"]) == (2, 1)
    stored = spark.read.format("delta").load(summary["table"])
    assert stored.columns[:4] == names
    assert _rows(spark, summary["table"], *names) == rows[:2]
    assert [reason for *_, reason in _reasons(spark, summary)] == [
        "column a/b: U+0000 in a partition value"
    ]
