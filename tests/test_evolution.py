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
def test_in_place_evolution_story_on_s3_v1_v2_v3_then_an_incompatible_v4(
    spark: SparkSession, s3: dict[str, str], tmp_path: Path
) -> None:
    prefix = s3["prefix"]
    schemas = tmp_path / "schemas" / "items"
    schemas.mkdir(parents=True)
    # A rule on price guards the table as a CHECK constraint; widening price must still work.
    (schemas / "dataset.yaml").write_text(
        "format: json\ncompatibility: backward\nevolution: in_place\n"
        'rules:\n  - {name: priced, expr: "price >= 0", on_violation: quarantine}\n'
    )
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
    commits = spark.sql(f"DESCRIBE HISTORY delta.`{table}`").orderBy("version").collect()
    # Nothing since v3's run; that run ended by putting back the rule's CHECK constraint
    # (dropped while price was widened: Delta refuses to widen a column a constraint names).
    assert commits[-1]["version"] == three["table_version"]
    assert commits[-1]["operation"] == "ADD CONSTRAINT"
    writes = [c["version"] for c in commits if c["operation"] == "WRITE"]
    assert len(writes) == 3

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
        writes[1],
        writes[2],
        None,
    ]
    assert [c["description"] for c in history["v2"]["changes"]] == ["colour: added (nullable)"]
    assert [c["description"] for c in history["v3"]["changes"]] == ["price: widened int -> bigint"]


def test_in_place_renames_and_drops_through_column_mapping_keep_old_rows(
    spark: SparkSession, tmp_path: Path
) -> None:
    schemas = tmp_path / "schemas" / "items"
    schemas.mkdir(parents=True)
    rule = 'rules:\n  - {name: priced, expr: "price >= 0", on_violation: quarantine}\n'
    (schemas / "dataset.yaml").write_text("format: json\nevolution: in_place\n" + rule)
    (schemas / "v1.yaml").write_text(V1)
    where = ["--lake", str(tmp_path / "lake"), "--schemas", str(tmp_path / "schemas")]
    raw = tmp_path / "raw"
    first = '{"id": 1, "price": 10, "name": "a"}'
    one = _ingest("items", str(_lines(raw / "1", "a.jsonl", first)), where)

    # v2 adds sku between columns (schema merge appends it at the end of the table).
    (schemas / "v2.yaml").write_text(
        V1.replace("  - {name: price", "  - {name: sku, type: string}\n  - {name: price")
    )
    _ingest("items", str(_lines(raw / "2", "b.jsonl", '{"id": 2, "price": 20, "sku": "s"}')), where)
    # v3 renames name -> title and drops price, v4 adds x; one run takes both. The rule on
    # price goes with the column (its CHECK constraint would block the drop).
    (schemas / "dataset.yaml").write_text("format: json\nevolution: in_place\n")
    (schemas / "v3.yaml").write_text(
        "columns:\n  - {name: id, type: long, nullable: false}\n  - {name: sku, type: string}\n"
        "  - {name: title, type: string, renamed_from: name}\n"
    )
    (schemas / "v4.yaml").write_text(
        (schemas / "v3.yaml").read_text().replace(", renamed_from: name", "")
        + "  - {name: x, type: int}\n"
    )
    four = _ingest(
        "items", str(_lines(raw / "3", "c.jsonl", '{"id": 3, "title": "c", "x": 1}')), where
    )

    table = one["table"]
    assert _schema(spark, table) == [
        ("id", "bigint"),
        ("title", "string"),
        ("sku", "string"),
        ("x", "int"),
    ]
    rows = sorted(
        (r["id"], r["title"], r["sku"], r["x"])
        for r in spark.read.format("delta").load(table).collect()
    )
    # The old rows read under the column's new name: nothing was dropped but price.
    assert rows == [(1, "a", None, None), (2, None, "s", None), (3, "c", None, 1)]
    old = spark.read.format("delta").option("versionAsOf", one["table_version"]).load(table)
    assert [(r["id"], r["price"], r["name"]) for r in old.collect()] == [(1, 10, "a")]
    assert four["rows_written"] == 1

    # A fifth version that makes title required cannot be backward-compatible.
    (schemas / "v5.yaml").write_text(
        (schemas / "v4.yaml")
        .read_text()
        .replace("{name: title, type: string}", "{name: title, type: string, nullable: false}")
    )
    code, _, err = _cli("ingest", "items", str(raw / "3"), *where)
    assert code == EXIT_POLICY
    assert "title: made required (was nullable) (breaks backward)" in err
