"""Schema governance at ingest: drift modes, row rules, table constraints, quarantine replay.

Every test ingests real files into a local lake with the shared SparkSession and checks the
table, the quarantine and the run log — and that row accounting holds for every run.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from pipelines import cli
from pipelines.errors import EXIT_POLICY, EXIT_USAGE
from pipelines.schema import rules
from tests.helpers import accounting_holds, declare, last_json_line, run_cli

COLUMNS = [("id", "long"), ("price", "int"), ("name", "string")]


def _lake(tmp_path: Path) -> list[str]:
    return ["--lake", str(tmp_path / "lake"), "--schemas", str(tmp_path / "schemas")]


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    """Run a lakeshard command in this process: (exit code, JSON result or None, stderr)."""
    capsys.readouterr()
    code = cli.main([*args, *_lake(tmp_path), "--json"])
    out, err = capsys.readouterr()
    result = last_json_line(out) if out.strip() else None
    if result is not None and "rows_read" in result:
        assert accounting_holds(result), result
    return code, result, err


def _write(folder: Path, name: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _rows(spark: SparkSession, uri: str, *columns: str) -> list[tuple[Any, ...]]:
    frame = spark.read.format("delta").load(uri)
    return sorted(tuple(row[c] for c in columns) for row in frame.collect())


def _quarantine(spark: SparkSession, summary: dict[str, Any]) -> list[dict[str, Any]]:
    frame = spark.read.format("delta").load(summary["quarantine"])
    return sorted((row.asDict() for row in frame.collect()), key=lambda r: r["_source_row"])


def _runs(spark: SparkSession, tmp_path: Path, dataset: str) -> list[dict[str, Any]]:
    frame = spark.read.format("delta").load(
        str(tmp_path / "lake" / "_lakeshard" / "runs" / dataset)
    )
    done = [r.asDict() for r in frame.collect() if r["status"] != "running"]
    return sorted(done, key=lambda r: r["started_at"])


JSON_ROWS = [
    '{"id": 1, "price": 10, "name": "a"}',
    '{"id": 2, "price": 20, "name": "b", "colour": "red", "size": {"w": 3}}',  # undeclared
    '{"id": 3, "price": "cheap", "name": "c"}',  # a value of another type
    '{"id": 4, "price": 40}',  # a missing nullable field is no drift
]


# --- on_drift -----------------------------------------------------------------------------


def test_drift_quarantine_is_the_default(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS)
    raw = _write(tmp_path / "raw", "a.jsonl", JSON_ROWS)

    code, summary, _ = _run(tmp_path, capsys, "ingest", "items", str(raw))

    assert code == 0
    assert (summary["rows_written"], summary["rows_quarantined"]) == (2, 2)
    assert summary["drift"] == {"mode": "quarantine", "rows": 2, "ignored_fields_rows": 0}
    reasons = [(r["_source_row"], r["_reason"]) for r in _quarantine(spark, summary)]
    assert reasons == [
        (2, "undeclared field(s): colour, size"),
        (3, "column price: cannot read 'cheap' as int"),
    ]


def test_drift_rescue_keeps_what_does_not_fit_and_round_trips(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS, extra="on_drift: rescue\n")
    raw = _write(tmp_path / "raw", "a.jsonl", JSON_ROWS)

    code, summary, _ = _run(tmp_path, capsys, "ingest", "items", str(raw))

    assert code == 0
    assert (summary["rows_written"], summary["rows_quarantined"]) == (4, 0)
    # Records that differ only in what was rescued are different records, both written.
    again = _write(
        tmp_path / "raw2", "b.jsonl", ['{"id": 2, "price": 20, "name": "b", "colour": "blue"}']
    )
    code, second, _ = _run(tmp_path, capsys, "ingest", "items", str(again))
    assert (code, second["rows_written"], second["rows_duplicate"]) == (0, 1, 0)
    table = (
        spark.read.format("delta").load(summary["table"]).filter(f"_run_id = '{summary['run_id']}'")
    )
    rows = {r["id"]: r.asDict() for r in table.collect()}
    assert rows[1]["_rescued"] is None
    assert rows[4]["_rescued"] is None
    assert rows[3]["price"] is None
    # Round trip: the table's columns plus the rescued fields give back the original record.
    for line in JSON_ROWS:
        original = json.loads(line)
        row = rows[original["id"]]
        rebuilt = {k: row[k] for k, _ in COLUMNS if row[k] is not None}
        if row["_rescued"] is not None:
            rescued = json.loads(row["_rescued"])
            assert rescued["file"].endswith("/raw/a.jsonl")
            rebuilt.update(rescued.get("fields") or {})
            rebuilt.update(rescued.get("values") or {})
        assert rebuilt == original


def test_drift_rescue_in_csv_keeps_undeclared_columns_by_header(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "csv", COLUMNS, extra="on_drift: rescue\n")
    raw = tmp_path / "raw"
    _write(raw, "old.csv", ["id,price,name", "1,10,a"])
    # Another column order, one undeclared column, one value of another type.
    # (A header name that differs in case only matches its column, as Spark matches headers.)
    _write(raw, "new.csv", ["Name,id,colour,price", "b,2,red,20", "c,3,blue,x"])

    code, summary, _ = _run(tmp_path, capsys, "ingest", "items", str(raw))

    assert code == 0
    assert summary["rows_written"] == 3
    got = _rows(spark, summary["table"], "id", "price", "name", "_rescued")
    assert [g[:3] for g in got] == [(1, 10, "a"), (2, 20, "b"), (3, None, "c")]
    assert got[0][3] is None
    assert json.loads(got[1][3])["fields"] == {"colour": "red"}
    assert {k: v for k, v in json.loads(got[2][3]).items() if k != "file"} == {
        "fields": {"colour": "blue"},
        "values": {"price": "x"},
    }


def test_drift_ignore_drops_undeclared_fields_and_counts_them(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS, extra="on_drift: ignore\n")
    raw = _write(tmp_path / "raw", "a.jsonl", JSON_ROWS)

    code, summary, _ = _run(tmp_path, capsys, "ingest", "items", str(raw))

    assert code == 0
    assert summary["drift"] == {"mode": "ignore", "rows": 2, "ignored_fields_rows": 1}
    assert _rows(spark, summary["table"], "id", "price") == [(1, 10), (2, 20), (4, 40)]
    # A value of another type cannot be ignored without losing it: still quarantined.
    assert [r["_source_row"] for r in _quarantine(spark, summary)] == [3]


def test_drift_fail_stops_the_run_and_writes_nothing(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS, extra="on_drift: fail\n")
    raw = _write(tmp_path / "raw", "a.jsonl", JSON_ROWS)

    code, summary, err = _run(tmp_path, capsys, "ingest", "items", str(raw))

    assert code == EXIT_POLICY
    assert summary is None
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: schema drift (on_drift: fail) in 2 row(s), first in ")
    assert "a.jsonl row 2 (undeclared field(s): colour, size)" in message
    table = spark.read.format("delta").load(str(tmp_path / "lake" / "tables" / "items"))
    assert table.count() == 0
    runs = _runs(spark, tmp_path, "items")
    assert [r["status"] for r in runs] == ["failed"]


# --- row rules ----------------------------------------------------------------------------

RULES = """rules:
  - {name: positive_price, expr: "price > 0", on_violation: quarantine}
  - {name: named, expr: "name IS NOT NULL", on_violation: drop}
  - {name: small, expr: "price < 1000", on_violation: warn}
"""
RULE_ROWS = [
    '{"id": 1, "price": 10, "name": "a"}',
    '{"id": 2, "price": -5, "name": "b"}',  # positive_price: quarantined
    '{"id": 3, "price": 30}',  # named: dropped
    '{"id": 4, "price": 5000, "name": "d"}',  # small: warned, written
    '{"id": 5, "price": -1}',  # positive_price and named: quarantine wins
    '{"id": 6, "name": "f"}',  # price null: "price > 0" is null, which fails the rule
]


def test_rules_quarantine_drop_and_warn_with_counts_in_the_run_log(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS, extra=RULES)
    raw = _write(tmp_path / "raw", "a.jsonl", RULE_ROWS)

    code, summary, _ = _run(tmp_path, capsys, "ingest", "items", str(raw))

    assert code == 0
    # "small" (price < 1000) is null for id 6 too: a warning, like a false.
    assert summary["rules"] == {"positive_price": 3, "named": 2, "small": 2}
    counts = (summary["rows_written"], summary["rows_quarantined"], summary["rows_dropped"])
    assert counts == (2, 3, 1)
    assert _rows(spark, summary["table"], "id") == [(1,), (4,)]
    quarantined = _quarantine(spark, summary)
    assert [(r["_source_row"], r["_reason"], r["_rules"]) for r in quarantined] == [
        (2, "failed rule(s): positive_price", ["positive_price"]),
        (5, "failed rule(s): positive_price", ["positive_price", "named"]),
        (6, "failed rule(s): positive_price", ["positive_price", "small"]),
    ]
    first = quarantined[0]
    assert first["_schema_version"] == 1
    assert first["_run_id"] == summary["run_id"]
    assert first["_source_file"].endswith("/raw/a.jsonl")
    (run,) = _runs(spark, tmp_path, "items")
    assert json.loads(run["details"])["rules"] == summary["rules"]
    # The list counts records once, and each in the group of every rule it failed.
    code, listing, _ = _run(tmp_path, capsys, "quarantine", "list", "items")
    assert code == 0
    assert listing["rows"] == 3
    groups = {(g["rule"], g["rows"]) for g in listing["groups"]}
    assert groups == {("positive_price", 3), ("named", 1), ("small", 1)}


def test_a_fail_rule_stops_the_run_naming_rule_file_and_row(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = 'rules:\n  - {name: positive_price, expr: "price > 0", on_violation: fail}\n'
    declare(tmp_path / "schemas", "items", "json", COLUMNS, extra=rules)
    raw = _write(tmp_path / "raw", "a.jsonl", RULE_ROWS)

    code, _, err = _run(tmp_path, capsys, "ingest", "items", str(raw))

    assert code == EXIT_POLICY
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "dataset.yaml: rules[0]: rule positive_price (on_violation: fail) failed for 3 " in line
    assert "a.jsonl row 2" in line
    assert line.endswith("nothing was written")
    assert spark.read.format("delta").load(str(tmp_path / "lake" / "tables" / "items")).count() == 0
    quarantine = tmp_path / "lake" / "quarantine" / "items"
    assert not quarantine.exists() or spark.read.format("delta").load(str(quarantine)).count() == 0


def test_refusing_rules_guard_the_table_as_check_constraints(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS, extra=RULES)
    raw = _write(tmp_path / "raw", "a.jsonl", RULE_ROWS[:1])
    code, summary, _ = _run(tmp_path, capsys, "ingest", "items", str(raw))
    assert code == 0

    detail = spark.sql(f"DESCRIBE DETAIL delta.`{summary['table']}`").first()
    assert detail is not None
    constraints = {k: v for k, v in detail["properties"].items() if "constraints" in k}
    # quarantine and fail rules become constraints; drop and warn rules do not.
    assert list(constraints) == ["delta.constraints.lakeshard_rule_positive_price"]
    assert constraints["delta.constraints.lakeshard_rule_positive_price"].replace(" ", "") == (
        "coalesce((price>0),false)"
    )
    # A writer that bypasses lakeshard cannot add a row that breaks the rule, nor a null id.
    table = spark.read.format("delta").load(summary["table"])
    bad = table.limit(1).selectExpr("*").withColumn("price", table["price"] * -1)
    with pytest.raises(Exception, match="lakeshard_rule_positive_price"):
        bad.write.format("delta").mode("append").save(summary["table"])
    assert table.count() == 1


# --- quarantine list and replay --------------------------------------------------------------


def test_replay_moves_fixed_rows_once_and_accounting_sums_across_runs(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    strict = 'rules:\n  - {name: cheap, expr: "price < 100", on_violation: quarantine}\n'
    declare(tmp_path / "schemas", "items", "json", COLUMNS, extra=strict)
    raw = _write(
        tmp_path / "raw",
        "a.jsonl",
        [
            '{"id": 1, "price": 10, "name": "a"}',
            '{"id": 2, "price": 200, "name": "b"}',
            '{"id": 3, "price": 300, "name": "c"}',
            '{"id": 4, "price": 5000, "name": "d"}',
            '{"id": 5, "price": "x", "name": "e"}',
        ],
    )
    code, first, _ = _run(tmp_path, capsys, "ingest", "items", str(raw))
    assert code == 0
    assert (first["rows_written"], first["rows_quarantined"]) == (1, 4)

    code, listing, _ = _run(tmp_path, capsys, "quarantine", "list", "items")
    assert code == 0
    assert listing["rows"] == 4
    assert {(g["rule"], g["reason"], g["rows"]) for g in listing["groups"]} == {
        ("cheap", "failed rule(s): cheap", 3),
        (None, "column price: cannot read 'x' as int", 1),
    }

    # The rule was too strict: loosen it, replay the rows it refused.
    (tmp_path / "schemas" / "items" / "dataset.yaml").write_text(
        'format: json\nrules:\n  - {name: cheap, expr: "price < 1000", on_violation: quarantine}\n'
    )
    code, replay, err = _run(tmp_path, capsys, "quarantine", "replay", "items", "--rule", "cheap")
    assert code == 0, err
    assert (replay["rows_read"], replay["rows_written"], replay["rows_quarantined"]) == (3, 2, 1)
    assert replay["rows_released"] == 2
    moved_rows = _rows(spark, first["table"], "id", "_source_file")
    assert [r[0] for r in moved_rows] == [1, 2, 3]
    assert all(r[1].endswith("/raw/a.jsonl") for r in moved_rows)

    code, again, _ = _run(tmp_path, capsys, "quarantine", "replay", "items")
    assert code == 0
    assert again["rows_written"] == 0
    assert again["rows_released"] == 0
    assert again["rows_read"] == again["rows_quarantined"] == 2  # id 4 and 5 still fail

    # Across all runs: table rows = sum written; unreplayed quarantine = quarantined - released.
    runs = _runs(spark, tmp_path, "items")
    assert [r["command"] for r in runs] == ["ingest", "replay", "replay"]
    table_rows = spark.read.format("delta").load(first["table"]).count()
    assert table_rows == sum(r["rows_written"] for r in runs) == 3
    quarantine = spark.read.format("delta").load(first["quarantine"])
    left = quarantine.filter("_replayed_by IS NULL").count()
    assert left == first["rows_quarantined"] - replay["rows_released"] - again["rows_released"]
    assert left == 2
    moved = quarantine.filter("_replayed_by IS NOT NULL").collect()
    assert {r["_replayed_by"] for r in moved} == {replay["run_id"]}
    assert len(moved) == 2


def test_replay_of_csv_rows_parses_them_by_their_file_header(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "csv", COLUMNS)
    raw = tmp_path / "raw"
    _write(raw, "a.csv", ["name,price,id,colour name", "a,10,1,red", "b,20,2,blue"])
    code, first, _ = _run(tmp_path, capsys, "ingest", "items", str(raw))
    assert code == 0
    assert first["rows_quarantined"] == 2

    folder = tmp_path / "schemas" / "items"
    (folder / "dataset.yaml").write_text(
        (folder / "dataset.yaml").read_text() + "on_drift: rescue\n"
    )
    code, replay, _ = _run(tmp_path, capsys, "quarantine", "replay", "items")

    assert code == 0
    assert replay["rows_written"] == 2
    got = _rows(spark, first["table"], "id", "price", "name", "_rescued")
    assert [g[:3] for g in got] == [(1, 10, "a"), (2, 20, "b")]
    assert [json.loads(g[3])["fields"] for g in got] == [
        {"colour name": "red"},
        {"colour name": "blue"},
    ]


# --- declarations with mistakes -------------------------------------------------------------

DECLARATION_MISTAKES = [
    ("partition_by: [nope]\n", r"dataset\.yaml: partition_by\[0\]: unknown column 'nope'"),
    ("compatibility: sideways\n", r"dataset\.yaml: compatibility: expected one of backward"),
    ("on_drift: shrug\n", r"dataset\.yaml: on_drift: expected one of quarantine, rescue"),
    (
        "rules:\n  - {name: r, expr: 'id > 0', on_violation: explode}\n",
        r"dataset\.yaml: rules\[0\]\.on_violation: expected one of quarantine, drop, warn, fail",
    ),
    (
        "rules:\n  - {name: r, expr: 'id > 0', on_violation: warn}\n"
        "  - {name: r, expr: 'id > 1', on_violation: warn}\n",
        r"dataset\.yaml: rules\[1\]\.name: duplicate rule 'r'",
    ),
    (
        "rules:\n  - {name: r, expr: 'id > 0'}\n",
        r"dataset\.yaml: rules\[0\]\.on_violation: expected one of",
    ),
    # Rule expressions are analysed by Spark before any data is read.
    (
        "rules:\n  - {name: r, expr: 'nope > 1', on_violation: warn}\n",
        r"dataset\.yaml: rules\[0\]\.expr: 'nope > 1': .*`nope` cannot be resolved.*columns: id",
    ),
    (
        "rules:\n  - {name: r, expr: 'id + 1', on_violation: warn}\n",
        r"dataset\.yaml: rules\[0\]\.expr: 'id \+ 1' is of type bigint, not a boolean",
    ),
    (
        "rules:\n  - {name: r, expr: 'id IN (SELECT 1)', on_violation: warn}\n",
        r"dataset\.yaml: rules\[0\]\.expr: .* uses a subquery",
    ),
    (
        "rules:\n  - {name: r, expr: 'rand() > 0.5', on_violation: warn}\n",
        r"dataset\.yaml: rules\[0\]\.expr: .* is not deterministic",
    ),
    (
        "rules:\n  - {name: r, expr: 'sum(id) > 0', on_violation: warn}\n",
        r"dataset\.yaml: rules\[0\]\.expr: .* (uses an aggregate|is not a condition on one row)",
    ),
    (
        "rules:\n  - {name: r, expr: 'id >', on_violation: warn}\n",
        r"dataset\.yaml: rules\[0\]\.expr: 'id >': .*(PARSE_SYNTAX_ERROR|Syntax error)",
    ),
]


@pytest.mark.parametrize(("extra", "message"), DECLARATION_MISTAKES)
def test_declaration_mistakes_fail_fast_with_exit_2_naming_file_and_key(
    spark: SparkSession,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: str,
    message: str,
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS, extra=extra)
    raw = _write(tmp_path / "raw", "a.jsonl", RULE_ROWS[:1])

    code, summary, err = _run(tmp_path, capsys, "ingest", "items", str(raw))

    assert code == EXIT_USAGE
    assert summary is None
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    assert re.search(message, errors[0]), errors[0]
    assert not (tmp_path / "lake" / "tables" / "items").exists()  # nothing was created


def test_a_bad_type_name_in_a_later_version_names_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS)
    (tmp_path / "schemas" / "items" / "v2.yaml").write_text(
        "columns:\n  - {name: id, type: long}\n  - {name: price, type: integr}\n"
    )
    code, _, err = _run(tmp_path, capsys, "schema", "check", "items")
    assert code == EXIT_USAGE
    assert err.strip() == (
        f"error: {tmp_path}/schemas/items/v2.yaml: columns[1].type: unknown type 'integr' "
        "in 'integr'"
    )


def test_schema_check_needs_no_spark(tmp_path: Path) -> None:
    """`schema check` reads YAML and the Delta log only: it runs without Java at all."""
    declare(tmp_path / "schemas", "items", "json", COLUMNS)
    (tmp_path / "schemas" / "items" / "v2.yaml").write_text(
        "columns:\n  - {name: id, type: long}\n  - {name: price, type: int}\n"
        "  - {name: name, type: string}\n  - {name: sku, type: string, nullable: false}\n"
    )  # adds a required column: forward-compatible, not backward-compatible
    env = dict(os.environ, JAVA_HOME="/nonexistent", PATH="/usr/bin:/bin")
    bad = run_cli("schema", "check", "items", *_lake(tmp_path), env=env)
    assert bad.returncode == EXIT_POLICY, bad.stderr
    assert bad.stderr.strip() == (
        "error: items v2 is not backward-compatible: against v1: sku: added (required) "
        "(breaks backward)"
    )
    ok = run_cli(
        "schema", "check", "items", "--mode", "forward", *_lake(tmp_path), "--json", env=env
    )
    assert ok.returncode == 0, ok.stderr
    report = last_json_line(ok.stdout)
    assert report["compatible"] is True
    assert report["table"]["exists"] is False
    assert [c["kind"] for c in report["versions"]["changes"]] == ["add_required"]


def test_constraint_text_respaced_by_delta_is_recognised() -> None:
    present = {
        "delta.constraints.lakeshard_rule_a": "coalesce ( ( price > 0 ) , false )",
        "delta.constraints.lakeshard_rule_gone": "coalesce ( ( id > 0 ) , false )",
        "delta.constraints.theirs": "id > 0",
    }
    wanted = {
        "lakeshard_rule_a": "coalesce((price > 0), false)",
        "lakeshard_rule_b": "coalesce((name = 'a  b'), false)",
    }
    assert rules.constraint_changes(present, wanted) == (
        ["lakeshard_rule_gone"],
        {"lakeshard_rule_b": "coalesce((name = 'a  b'), false)"},
    )
    # A literal's spaces matter: a changed literal is a changed rule.
    respaced = {"delta.constraints.lakeshard_rule_b": "coalesce ( ( name = 'a b' ) , false )"}
    assert rules.constraint_changes(respaced, wanted)[0] == ["lakeshard_rule_b"]
