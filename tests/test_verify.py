"""``lakeshard verify``: a sound table passes; a duplicated row, a tampered value and a deleted
row each fail with exit 3 naming the problem. Tables are made by real ingests into local lakes
with the shared SparkSession, and broken behind lakeshard's back with Delta itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs import verify as verify_job
from pipelines import cli, verify
from pipelines.errors import EXIT_POLICY, EXIT_USAGE
from pipelines.lake.commits import Commit
from pipelines.runs.summary import ROW_COUNTS
from pipelines.schema.datasets import Column, SchemaVersion
from tests.helpers import declare, ingest_quietly, last_json_line

# These tests break tables on purpose and check verify's verdicts themselves.
pytestmark = pytest.mark.unverified

COLUMNS = [("id", "long"), ("price", "int"), ("name", "string")]
ROWS = [
    '{"id": 1, "price": 10, "name": "a"}',
    '{"id": 2, "price": 20, "name": "b"}',
    '{"id": 2, "price": 20, "name": "b"}',  # a duplicate: counted, not written
    '{"id": 3, "price": "cheap", "name": "c"}',  # quarantined
    '{"id": 4, "price": 40}',
]


def _write(folder: Path, name: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _where(root: Path) -> list[str]:
    return ["--lake", str(root / "lake"), "--schemas", str(root / "schemas")]


def _ingest(root: Path, dataset: str, source: Path) -> dict[str, Any]:
    return ingest_quietly(dataset, str(source), *_where(root))


def _verify(
    root: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, Any], str]:
    """``lakeshard verify ARGS --json`` in this process: (exit code, report, stderr)."""
    capsys.readouterr()
    code = cli.main(["verify", *args, *_where(root), "--json"])
    out, err = capsys.readouterr()
    return code, last_json_line(out), err


def _table(root: Path, dataset: str = "items") -> str:
    return str(root / "lake" / "tables" / dataset)


@pytest.fixture(scope="module")
def sound(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake with two ingests of ``items``: 5 table rows, 1 duplicate, 1 quarantined."""
    root = tmp_path_factory.mktemp("verify")
    declare(root / "schemas", "items", "json", COLUMNS)
    _ingest(root, "items", _write(root / "raw" / "1", "a.jsonl", ROWS))
    more = ['{"id": 5, "price": 50, "name": "e"}', '{"id": 6, "name": "f"}']
    _ingest(root, "items", _write(root / "raw" / "2", "b.jsonl", [*more, ROWS[0]]))
    return root


@pytest.fixture
def lake_copy(sound: Path, tmp_path: Path) -> Path:
    """A private copy of the sound lake, for a test that breaks it."""
    shutil.copytree(sound / "lake", tmp_path / "lake")
    shutil.copytree(sound / "schemas", tmp_path / "schemas")
    return tmp_path


# --- sound tables pass ------------------------------------------------------------------------


def test_a_sound_table_passes_with_its_numbers(
    sound: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report, err = _verify(sound, capsys, "items")

    assert code == 0, err
    assert report["ok"] is True
    assert report["rows"] == 5
    assert report["checks"]["unique"] == {
        "ok": True,
        "duplicates": 0,
        "extra_rows": 0,
        "examples": [],
    }
    hashes = report["checks"]["hashes"]
    # The default sample (10,000) covers this table: every row is recomputed.
    assert (hashes["ok"], hashes["full"], hashes["checked"], hashes["mismatches"]) == (
        True,
        True,
        5,
        0,
    )
    accounting = report["checks"]["accounting"]
    assert accounting["ok"] is True
    assert (accounting["runs"], accounting["bad_runs"]) == (2, [])
    assert (accounting["table_rows"], accounting["sum_written"], accounting["expected_rows"]) == (
        5,
        5,
        5,
    )
    assert "lakeshard: verifying items at table version" in err


def test_human_output_and_the_spark_submit_job(
    sound: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = verify_job.main(["items", "--sample", "3", *_where(sound)])
    out, _ = capsys.readouterr()

    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("items: OK — 5 rows at table version")
    assert lines[2] == "  content hashes: ok (3 recomputed, 0 mismatched)"
    assert len(lines) == 4


def test_a_sample_recomputes_that_many_rows(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS)
    lines = [f'{{"id": {i}, "price": {i % 7}, "name": "n{i}"}}' for i in range(300)]
    _ingest(tmp_path, "items", _write(tmp_path / "raw", "a.jsonl", lines))

    code, report, _ = _verify(tmp_path, capsys, "items", "--sample", "40")

    hashes = report["checks"]["hashes"]
    assert (code, hashes["full"], hashes["checked"], hashes["mismatches"]) == (0, False, 40, 0)
    assert isinstance(hashes["seed"], int)


def test_rescued_rows_are_hashed_with_their_rescued_content(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS, extra="on_drift: rescue\n")
    rows = [
        '{"id": 1, "price": 10, "name": "a"}',
        # undeclared fields, one named "file" like the member verify strips, one nested
        '{"id": 2, "price": 20, "name": "b", "file": "x\\",\\"file\\":\\"y", "size": {"w": 3}}',
        '{"id": 3, "price": "cheap", "name": "c"}',  # a value of another type, rescued
    ]
    _ingest(tmp_path, "items", _write(tmp_path / "raw", 'we,"ird".jsonl', rows))

    code, report, err = _verify(tmp_path, capsys, "items", "--full")
    assert code == 0, err
    assert report["checks"]["hashes"]["checked"] == 3

    # The rescued content is part of the hash: changing it is caught.
    table = DeltaTable.forPath(spark, _table(tmp_path))
    table.update("id = 3", {"_rescued": F.regexp_replace("_rescued", "cheap", "dear")})
    code, report, err = _verify(tmp_path, capsys, "items", "--full")
    assert code == EXIT_POLICY
    assert report["checks"]["hashes"]["mismatches"] == 1


@pytest.mark.parametrize("mode", ["portable", "in_place"])
def test_renamed_and_widened_columns_hash_under_their_old_definition(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    """Either way of evolving the table (a rewrite, or column mapping and type widening)."""
    folder = tmp_path / "schemas" / "items"
    declare(
        tmp_path / "schemas",
        "items",
        "json",
        [("id", "long"), ("name", "string")],
        extra=f"evolution: {mode}\n",
    )
    (folder / "v1.yaml").write_text(
        "columns:\n  - {name: id, type: long}\n  - {name: name, type: string}\n"
        "  - {name: price, type: int}\n  - {name: day, type: date}\n"
    )
    _ingest(
        tmp_path,
        "items",
        _write(tmp_path / "raw" / "1", "a.jsonl", ['{"id": 1, "name": "a", "day": "2024-01-02"}']),
    )
    # v2 renames name -> title and widens day to timestamp_ntz (and price to bigint).
    (folder / "v2.yaml").write_text(
        "columns:\n  - {name: id, type: long}\n"
        "  - {name: title, type: string, renamed_from: name}\n"
        "  - {name: price, type: bigint}\n  - {name: day, type: timestamp_ntz}\n"
    )
    _ingest(
        tmp_path,
        "items",
        _write(tmp_path / "raw" / "2", "b.jsonl", ['{"id": 2, "title": "b", "price": 2}']),
    )

    code, report, err = _verify(tmp_path, capsys, "items", "--full")

    assert code == 0, err
    hashes = report["checks"]["hashes"]
    assert (hashes["checked"], hashes["not_recomputable"]) == (2, 0)

    # v3 drops price: rows written under v1 and v2 held it, so they cannot be recomputed.
    (folder / "v3.yaml").write_text(
        (folder / "v2.yaml")
        .read_text()
        .replace("  - {name: price, type: bigint}\n", "")
        .replace(", renamed_from: name", "")
    )
    _ingest(tmp_path, "items", _write(tmp_path / "raw" / "3", "c.jsonl", ['{"id": 3}']))
    code, report, err = _verify(tmp_path, capsys, "items", "--full")

    assert code == 0, err
    hashes = report["checks"]["hashes"]
    assert (hashes["checked"], hashes["not_recomputable"]) == (1, 2)
    assert hashes["not_recomputable_reasons"] == {
        "not recomputable (column price dropped since)": 2
    }


# --- broken tables fail -----------------------------------------------------------------------


def test_a_duplicated_row_fails_naming_the_hash(
    spark: SparkSession, lake_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = _table(lake_copy)
    row = spark.read.format("delta").load(uri).filter("id = 4")
    stored = row.first()
    assert stored is not None
    row.write.format("delta").mode("append").save(uri)

    code, report, err = _verify(lake_copy, capsys, "items")

    assert code == EXIT_POLICY
    unique = report["checks"]["unique"]
    hex_hash = bytes(stored["_content_hash"]).hex()
    assert (unique["ok"], unique["duplicates"], unique["extra_rows"]) == (False, 1, 1)
    assert unique["examples"] == [
        {"hash": hex_hash, "copies": 2, "source_files": [stored["_source_file"]]}
    ]
    assert report["checks"]["hashes"]["ok"] is True
    assert report["checks"]["accounting"]["ok"] is False  # 6 rows, the runs wrote 5
    assert report["ok"] is False
    (line,) = err.strip().splitlines()[-1:]
    assert line.startswith("error: items: the table fails verification: 1 content hash(es)")
    assert hex_hash in line


def test_a_tampered_value_fails_the_full_hash_check(
    spark: SparkSession, lake_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = _table(lake_copy)
    DeltaTable.forPath(spark, uri).update("id = 2", {"price": F.lit(21)})
    stored = spark.read.format("delta").load(uri).filter("id = 2").first()
    assert stored is not None

    code, report, err = _verify(lake_copy, capsys, "items", "--full")

    assert code == EXIT_POLICY
    hashes = report["checks"]["hashes"]
    assert (hashes["ok"], hashes["checked"], hashes["mismatches"]) == (False, 5, 1)
    (example,) = hashes["examples"]
    assert example["hash"] == bytes(stored["_content_hash"]).hex()
    assert (example["source_file"], example["run_id"]) == (
        stored["_source_file"],
        stored["_run_id"],
    )
    assert report["checks"]["unique"]["ok"] is True
    assert report["checks"]["accounting"]["ok"] is True
    assert "1 of 5 recomputed content hash(es) differ" in err


def test_a_deleted_row_fails_the_accounting(
    spark: SparkSession, lake_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    DeltaTable.forPath(spark, _table(lake_copy)).delete("id = 1")

    code, report, err = _verify(lake_copy, capsys, "items", "--full")

    assert code == EXIT_POLICY
    accounting = report["checks"]["accounting"]
    assert (accounting["ok"], accounting["table_rows"], accounting["expected_rows"]) == (
        False,
        4,
        5,
    )
    assert accounting["bad_runs"] == []
    assert report["checks"]["unique"]["ok"]
    assert report["checks"]["hashes"]["ok"]
    assert "the table has 4 rows but the run log accounts for 5" in err


def test_usage_errors_exit_2(
    sound: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (["--full", "--sample", "3"], ["--sample", "0"]):
        assert cli.main(["verify", "items", *args, *_where(sound)]) == EXIT_USAGE
    # A dataset never ingested is the empty case, an ordinary success (tests/test_empty.py).
    declare(tmp_path, "empty", "json", COLUMNS)
    capsys.readouterr()
    lake = ["--lake", str(sound / "lake"), "--schemas", str(tmp_path)]
    assert cli.main(["verify", "empty", *lake]) == 0
    assert "nothing has been ingested yet" in capsys.readouterr().out


# --- the parts, without Spark -----------------------------------------------------------------


def _run(run_id: str, status: str = "succeeded", **counts: Any) -> dict[str, Any]:
    record = {key: 0 for key in ROW_COUNTS}
    return {"run_id": run_id, "command": "ingest", "status": status, **record, **counts}


def test_accounting_sums_runs_updates_and_commits_of_unfinished_runs() -> None:
    runs = [
        _run("a", rows_read=10, rows_written=7, rows_duplicate=2, rows_quarantined=1),
        # an upsert: 3 written, 2 of them replacing rows in place
        _run("b", rows_read=3, rows_written=3, details='{"rows_updated": 2}'),
        # failed after its commit landed, before recording it
        _run("c", status="failed", rows_read=4),
        _run("d", status="failed", rows_read=9),  # failed before writing anything
        {**_run("e", status="succeeded", rows_read=1, rows_written=1), "command": "maintain"},
        _run("f", status="running"),
    ]
    commits = [
        Commit(1, 7, {"run_id": "a"}),
        Commit(1, 1, {"run_id": "b"}),
        Commit(1, 4, {"run_id": "c"}),
        Commit(1, 5, {"run_id": "f"}),  # still running (or started after the log was read)
    ]

    result = verify.check_accounting(runs, commits, table_rows=7 + 3 - 2 + 4 + 5)

    assert result["ok"] is True, result
    assert (result["sum_written"], result["sum_updated"], result["unrecorded"]) == (14, 2, 5)
    assert (result["runs"], result["unrecorded_runs"]) == (2, ["f"])


def test_accounting_names_a_run_that_does_not_balance() -> None:
    runs = [_run("a", rows_read=10, rows_written=7), _run("b", status="abandoned", rows_read=0)]

    result = verify.check_accounting(runs, [], table_rows=7)

    assert result["ok"] is False
    (bad,) = result["bad_runs"]
    assert (bad["run_id"], bad["rows_read"], bad["accounted"]) == ("a", 10, 7)


def _version(number: int, *columns: Column) -> SchemaVersion:
    return SchemaVersion(number, columns, Path(f"v{number}.yaml"))


def test_hash_plans_follow_renames_widenings_and_drops() -> None:
    long, date = T.LongType(), T.DateType()
    v1 = _version(1, Column("id", T.IntegerType()), Column("name", T.StringType()))
    v2 = _version(2, Column("id", long), Column("title", T.StringType(), renamed_from="name"))
    v3 = _version(3, Column("id", long), Column("label", T.StringType(), renamed_from="title"))
    kept = (Column("id", long), Column("label", T.StringType()))
    v4 = _version(4, *kept, Column("day", date))
    v5 = _version(5, *kept, Column("day", T.TimestampNTZType()))
    v6 = _version(6, Column("id", long), Column("day", T.TimestampNTZType()))
    table = T.StructType(
        [
            T.StructField("id", long),
            T.StructField("label", T.StringType()),
            T.StructField("day", T.TimestampNTZType()),
            T.StructField("_content_hash", T.BinaryType()),
        ]
    )

    plans, unknown = verify.hash_plans([v1, v2, v3, v4, v5], table)

    # Positions: __c0 id, __c1 label, __c2 day (as a date: __d2).
    assert plans[1].fields == (("__c0", "id"), ("__c1", "name"), ("__c2", "day"))
    assert plans[2].fields == (("__c0", "id"), ("__c1", "title"), ("__c2", "day"))
    assert plans[4].fields == (("__c0", "id"), ("__c1", "label"), ("__d2", "day"))
    assert plans[5].fields == (("__c0", "id"), ("__c1", "label"), ("__c2", "day"))
    assert unknown.why_not is not None
    assert unknown.why_not.startswith("schema version unknown")

    dropped = T.StructType([table.fields[0], table.fields[2]])
    plans, _ = verify.hash_plans([v1, v2, v3, v4, v5, v6], dropped)
    assert plans[5].why_not == "not recomputable (column label dropped since)"
    assert plans[6].why_not is None
