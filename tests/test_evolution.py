"""Schema evolution at ingest: compatible versions evolve the Delta table, incompatible ones are
refused with exit 3 before anything is written; old rows keep reading, time travel shows each
version; ``schema check`` and ``schema history`` see the same (from the Delta log, no Spark).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from pipelines import cli
from pipelines.errors import EXIT_POLICY
from tests.helpers import accounting_holds, last_json_line
from tests.test_s3 import upload_folder

V1 = """columns:
  - {name: id, type: long, nullable: false}
  - {name: price, type: int}
  - {name: name, type: string}
"""
V2 = V1 + "  - {name: colour, type: string}\n"  # adds a nullable column
V3 = V2.replace("{name: price, type: int}", "{name: price, type: bigint}")  # widens a type
V4 = V3.replace("{name: price, type: bigint}", "{name: price, type: int}")  # narrows it back


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def _ingest(dataset: str, source: str, where: list[str]) -> dict[str, Any]:
    code, out, err = _cli("ingest", dataset, source, *where, "--json")
    assert code == 0, err
    summary = last_json_line(out)
    assert accounting_holds(summary)
    return summary


def _lines(folder: Path, name: str, *lines: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(line + "\n" for line in lines))
    return folder


def _schema(spark: SparkSession, uri: str, version: int | None = None) -> list[tuple[str, str]]:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    fields = reader.load(uri).schema.fields
    return [(f.name, f.dataType.simpleString()) for f in fields if not f.name.startswith("_")]


@pytest.mark.s3
def test_evolution_story_on_s3_v1_v2_v3_then_an_incompatible_v4(
    spark: SparkSession, s3: dict[str, str], tmp_path: Path
) -> None:
    prefix = s3["prefix"]
    schemas = tmp_path / "schemas" / "items"
    schemas.mkdir(parents=True)
    (schemas / "dataset.yaml").write_text("format: json\ncompatibility: backward\n")
    (schemas / "v1.yaml").write_text(V1)
    where = ["--lake", f"s3a://lake/{prefix}", "--schemas", str(tmp_path / "schemas")]

    def deliver(step: str, *lines: str) -> str:
        upload_folder(
            s3, _lines(tmp_path / step, f"{step}.jsonl", *lines), "raw", f"{prefix}/{step}"
        )
        return f"s3a://raw/{prefix}/{step}/"

    one = _ingest("items", deliver("one", '{"id": 1, "price": 10, "name": "a"}'), where)
    (schemas / "v2.yaml").write_text(V2)
    two = _ingest("items", deliver("two", '{"id": 2, "price": 20, "colour": "red"}'), where)
    (schemas / "v3.yaml").write_text(V3)
    three = _ingest("items", deliver("three", '{"id": 3, "price": 5000000000}'), where)

    table = one["table"]
    assert [s["rows_written"] for s in (one, two, three)] == [1, 1, 1]
    assert _schema(spark, table) == [
        ("id", "bigint"),
        ("price", "bigint"),
        ("name", "string"),
        ("colour", "string"),
    ]
    # Old rows read correctly under the latest schema.
    rows = sorted(
        (r["id"], r["price"], r["name"], r["colour"])
        for r in spark.read.format("delta").load(table).collect()
    )
    assert rows == [(1, 10, "a", None), (2, 20, None, "red"), (3, 5_000_000_000, None, None)]
    # Time travel shows each version as it was: the commits that brought v1, v2 and v3.
    assert _schema(spark, table, one["table_version"]) == [
        ("id", "bigint"),
        ("price", "int"),
        ("name", "string"),
    ]
    assert _schema(spark, table, two["table_version"]) == [
        ("id", "bigint"),
        ("price", "int"),
        ("name", "string"),
        ("colour", "string"),
    ]
    assert _schema(spark, table, three["table_version"])[1] == ("price", "bigint")
    old = spark.read.format("delta").option("versionAsOf", one["table_version"]).load(table)
    assert [(r["id"], r["price"]) for r in old.collect()] == [(1, 10)]

    # v4 narrows price back to int: incompatible under backward, refused, nothing written.
    (schemas / "v4.yaml").write_text(V4)
    code, out, err = _cli("ingest", "items", deliver("four", '{"id": 4, "price": 1}'), *where)
    assert code == EXIT_POLICY
    assert out == ""
    (message,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert message == (
        f"error: {schemas}/v4.yaml: schema v4 is not backward-compatible with the table (which "
        "holds v3): against v3: price: narrowed bigint -> int (breaks backward); nothing was "
        "written"
    )
    latest = spark.sql(f"DESCRIBE HISTORY delta.`{table}`").first()
    assert latest is not None
    assert latest["version"] == three["table_version"]

    # The same verdict without Spark, and the history of the versions.
    code, out, err = _cli("schema", "check", "items", *where, "--json")
    assert code == EXIT_POLICY
    report = last_json_line(out)
    assert report["compatible"] is False
    assert report["table"]["version"] == three["table_version"]
    assert [f["change"]["path"] for f in report["versions"]["findings"]] == ["price"]
    code, out, err = _cli("schema", "history", "items", *where, "--json")
    assert code == 0, err
    history = {v["version"]: v for v in last_json_line(out)["versions"]}
    # v1 reached the table when the first run created it (Delta version 0).
    assert [history[v]["table_version"] for v in ("v1", "v2", "v3", "v4")] == [
        0,
        two["table_version"],
        three["table_version"],
        None,
    ]
    assert [c["description"] for c in history["v2"]["changes"]] == ["colour: added (nullable)"]
    assert [c["description"] for c in history["v3"]["changes"]] == ["price: widened int -> bigint"]


def test_renames_and_drops_through_column_mapping_keep_old_rows(
    spark: SparkSession, tmp_path: Path
) -> None:
    schemas = tmp_path / "schemas" / "items"
    schemas.mkdir(parents=True)
    (schemas / "dataset.yaml").write_text("format: json\n")
    (schemas / "v1.yaml").write_text(V1)
    where = ["--lake", str(tmp_path / "lake"), "--schemas", str(tmp_path / "schemas")]
    raw = tmp_path / "raw"
    one = _ingest(
        "items", str(_lines(raw / "1", "a.jsonl", '{"id": 1, "price": 10, "name": "a"}')), where
    )

    # v2 renames name -> title and drops price; both backward-compatible.
    (schemas / "v2.yaml").write_text(
        "columns:\n  - {name: id, type: long, nullable: false}\n"
        "  - {name: title, type: string, renamed_from: name}\n"
    )
    two = _ingest("items", str(_lines(raw / "2", "b.jsonl", '{"id": 2, "title": "b"}')), where)

    table = one["table"]
    assert _schema(spark, table) == [("id", "bigint"), ("title", "string")]
    rows = sorted((r["id"], r["title"]) for r in spark.read.format("delta").load(table).collect())
    assert rows == [(1, "a"), (2, "b")]  # the old row reads under its column's new name
    old = spark.read.format("delta").option("versionAsOf", one["table_version"]).load(table)
    assert [(r["id"], r["price"], r["name"]) for r in old.collect()] == [(1, 10, "a")]
    assert two["rows_written"] == 1

    # A third version that makes title required again cannot be backward-compatible.
    (schemas / "v3.yaml").write_text(
        "columns:\n  - {name: id, type: long, nullable: false}\n"
        "  - {name: title, type: string, nullable: false}\n"
    )
    code, _, err = _cli("ingest", "items", str(raw / "2"), *where)
    assert code == EXIT_POLICY
    assert "title: made required (was nullable) (breaks backward)" in err
