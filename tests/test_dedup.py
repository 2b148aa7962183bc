"""Declared dedup scopes: the whole table (default), a window by a date column, and keys with
keep-latest upserts — each with accounting that holds and a table that stays sound."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pyspark import StorageLevel
from pyspark.sql import SparkSession
from pyspark.sql.classic.dataframe import DataFrame as ClassicDataFrame

from pipelines import cli
from pipelines.errors import EXIT_USAGE
from tests.helpers import accounting_holds, last_json_line

V1 = """columns:
  - {name: id, type: long, nullable: false}
  - {name: day, type: date, nullable: false}
  - {name: value, type: string}
  - {name: version, type: int}
"""


def _setup(tmp_path: Path, dedup: str) -> list[str]:
    folder = tmp_path / "schemas" / "items"
    folder.mkdir(parents=True)
    (folder / "dataset.yaml").write_text("format: json\n" + dedup)
    (folder / "v1.yaml").write_text(V1)
    return ["--lake", str(tmp_path / "lake"), "--schemas", str(tmp_path / "schemas")]


def _ingest(tmp_path: Path, where: list[str], name: str, *rows: dict[str, Any]) -> dict[str, Any]:
    folder = tmp_path / "raw" / name
    folder.mkdir(parents=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["ingest", "items", str(folder), *where, "--json"])
    assert code == 0, err.getvalue()
    summary = last_json_line(out.getvalue())
    assert accounting_holds(summary)
    return summary


def _table(spark: SparkSession, summary: dict[str, Any], version: int | None = None) -> list[Any]:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    rows = reader.load(summary["table"]).collect()
    return sorted((r["id"], str(r["day"]), r["value"], r["version"]) for r in rows)


def row(id_: int, day: str, value: str, version: int = 1) -> dict[str, Any]:
    return {"id": id_, "day": day, "value": value, "version": version}


def test_table_scope_drops_copies_in_the_batch_and_of_any_earlier_row(
    spark: SparkSession, tmp_path: Path
) -> None:
    where = _setup(tmp_path, "")
    first = _ingest(tmp_path, where, "a", row(1, "2020-01-01", "x"), row(1, "2020-01-01", "x"))
    later = _ingest(tmp_path, where, "b", row(1, "2020-01-01", "x"), row(2, "2024-01-01", "y"))
    assert (first["rows_written"], first["rows_duplicate"]) == (1, 1)
    assert (later["rows_written"], later["rows_duplicate"]) == (1, 1)
    assert len(_table(spark, first)) == 2


def test_window_scope_checks_the_window_and_refuses_older_records(
    spark: SparkSession, tmp_path: Path
) -> None:
    where = _setup(tmp_path, "dedup: {scope: window, column: day, days: 30}\n")
    first = _ingest(
        tmp_path, where, "a", row(1, "2024-01-01", "old"), row(2, "2024-03-01", "recent")
    )
    # The window is 30 days before the newest day in the table (2024-03-01): from 2024-01-31.
    later = _ingest(
        tmp_path,
        where,
        "b",
        row(2, "2024-03-01", "recent"),  # inside the window, already there: duplicate
        row(3, "2024-02-15", "new"),  # inside, new: written
        row(1, "2024-01-01", "old"),  # before the window: cannot be checked, refused
        row(4, "2024-01-30", "late"),  # one day before the window: refused
    )
    assert (first["rows_written"], first["rows_duplicate"]) == (2, 0)
    counts = (later["rows_written"], later["rows_duplicate"], later["rows_quarantined"])
    assert counts == (1, 1, 2)
    assert [r[0] for r in _table(spark, first)] == [1, 2, 3]
    reasons = sorted(
        r["_reason"] for r in spark.read.format("delta").load(later["quarantine"]).collect()
    )
    assert (
        reasons
        == [
            "column day: before the dedup window, which starts at 2024-01-31 (30 days before the "
            "newest day in the table)",
        ]
        * 2
    )


def test_keys_scope_upserts_the_latest_and_keeps_replaced_rows_by_time_travel(
    spark: SparkSession, tmp_path: Path
) -> None:
    where = _setup(tmp_path, "dedup: {scope: keys, keys: [id], order_by: version}\n")
    first = _ingest(
        tmp_path,
        where,
        "a",
        row(1, "2024-01-01", "a1", 1),
        row(1, "2024-01-01", "a2", 2),  # a newer record for key 1 in the same batch wins
        row(2, "2024-01-01", "b1", 1),
    )
    assert (first["rows_written"], first["rows_duplicate"]) == (2, 1)
    later = _ingest(
        tmp_path,
        where,
        "b",
        row(1, "2024-01-02", "a3", 3),  # newer than the table's: replaces it
        row(2, "2024-01-02", "b0", 0),  # older than the table's: superseded, a duplicate
        row(3, "2024-01-02", "c1", 1),  # a new key: inserted
    )
    counts = (later["rows_written"], later["rows_duplicate"], later["rows_updated"])
    assert counts == (2, 1, 1)
    assert _table(spark, later) == [
        (1, "2024-01-02", "a3", 3),
        (2, "2024-01-01", "b1", 1),
        (3, "2024-01-02", "c1", 1),
    ]
    # The replaced row is still there at the first run's version.
    assert _table(spark, first, first["table_version"]) == [
        (1, "2024-01-01", "a2", 2),
        (2, "2024-01-01", "b1", 1),
    ]
    runs = spark.read.format("delta").load(str(tmp_path / "lake" / "_lakeshard" / "runs" / "items"))
    done = [r for r in runs.collect() if r["status"] == "succeeded"]
    written = sum(r["rows_written"] for r in done)
    updated = sum(json.loads(r["details"] or "{}").get("rows_updated", 0) for r in done)
    assert written - updated == len(_table(spark, later)) == 3


@pytest.mark.parametrize(
    ("dedup", "message"),
    [
        ("dedup: {scope: window, column: value, days: 3}", "must be a date or timestamp"),
        ("dedup: {scope: window, column: day, days: 0}", r"dedup\.days: expected a positive"),
        ("dedup: {scope: window, column: nope, days: 3}", r"dedup\.column: unknown column 'nope'"),
        ("dedup: {scope: keys, keys: [value], order_by: version}", "must be declared nullable"),
        ("dedup: {scope: keys, keys: [id]}", r"dedup\.order_by: expected a non-empty string"),
        ("dedup: {scope: everything}", r"dedup\.scope: expected one of table, window, keys"),
    ],
)
def test_dedup_declaration_mistakes_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dedup: str, message: str
) -> None:
    where = _setup(tmp_path, dedup + "\n")
    code = cli.main(["schema", "check", "items", *where])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "dataset.yaml: " in err
    assert re.search(message, err), err


def test_every_set_an_ingest_keeps_for_later_passes_is_kept_on_disk_not_in_the_heap(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parsed batch, its hash counts and the hashes found in the table are each read more
    than once, so an ingest persists them; in the heap (MEMORY_AND_DISK) a batch's 124 M
    distinct hashes ran out of a 4g driver (make large at 6.4 GB), on local disk they pass."""
    levels: list[StorageLevel] = []
    persist = ClassicDataFrame.persist

    def recorded(self: ClassicDataFrame, level: StorageLevel = StorageLevel.MEMORY_AND_DISK):
        levels.append(level)
        return persist(self, level)

    monkeypatch.setattr(ClassicDataFrame, "persist", recorded)
    where = _setup(tmp_path, "")
    _ingest(tmp_path, where, "a", row(1, "2020-01-01", "x"), row(1, "2020-01-01", "x"))
    first = len(levels)
    later = _ingest(tmp_path, where, "b", row(1, "2020-01-01", "x"), row(2, "2024-01-01", "y"))
    assert later["rows_duplicate"] == 1
    # The batch and its hash counts; then again, with the hashes already in the table.
    assert (first, len(levels)) == (2, 5), levels
    assert [lv for lv in levels if lv.useMemory] == []
