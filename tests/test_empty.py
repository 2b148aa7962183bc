"""The empty case of every command is an ordinary success (issue #12): exit 0 with a summary of
zeros or a one-line message, never a traceback or a run recorded as failed.

Each command runs through ``cli.main`` in this process, on the shared SparkSession, against a
fresh local lake under ``tmp_path`` (so the suite's after-test check verifies what it wrote).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from pipelines import cli
from pipelines.config import resolve_config
from pipelines.errors import EXIT_POLICY, EXIT_USAGE
from pipelines.loader import ShardLoader
from pipelines.loader.manifest import Manifest, describe_file
from pipelines.runs.summary import ROW_COUNTS
from tests.helpers import accounting_holds, declare, last_json_line

COLUMNS = [("id", "long"), ("price", "int"), ("name", "string")]
STRICT = 'rules:\n  - {name: cheap, expr: "price < 100", on_violation: quarantine}\n'
ROWS = [(1, 10, "a"), (2, 200, "b")]  # the second breaks the strict rule
NOTHING = dict.fromkeys(ROW_COUNTS, 0)


def _cli(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``lakeshard ARGS`` on the lake and schemas under ``root``: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main([*args, "--lake", str(root / "lake"), "--schemas", str(root / "schemas")])
    out, err = capsys.readouterr()
    return code, out, err


def _ok(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict[str, Any], str]:
    """``lakeshard ARGS --json``, which must exit 0: (its JSON summary, stderr)."""
    code, out, err = _cli(root, capsys, *args, "--json")
    assert code == 0, err
    assert "Traceback" not in err
    result = last_json_line(out)
    if "rows_read" in result:
        assert accounting_holds(result), result
    return result, err


def _counts(summary: dict[str, Any]) -> dict[str, int]:
    return {key: summary[key] for key in ROW_COUNTS}


def _write_rows(folder: Path, fmt: str, rows: list[tuple[int, int, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        path = folder / "items.csv"
        path.write_text("id,price,name\n" + "".join(f"{i},{p},{n}\n" for i, p, n in rows))
    elif fmt == "json":
        path = folder / "items.jsonl"
        lines = [json.dumps({"id": i, "price": p, "name": n}) for i, p, n in rows]
        path.write_text("".join(line + "\n" for line in lines))
    else:
        path = folder / "items.parquet"
        pq.write_table(_arrow(rows), path)
    return path


def _arrow(rows: list[tuple[int, int, str]]) -> pa.Table:
    return pa.table(
        {
            "id": pa.array([r[0] for r in rows], pa.int64()),
            "price": pa.array([r[1] for r in rows], pa.int32()),
            "name": pa.array([r[2] for r in rows], pa.string()),
        }
    )


def _runs(spark: SparkSession, root: Path) -> list[dict[str, Any]]:
    """The run log's outcome records, oldest first."""
    uri = resolve_config(lake=str(root / "lake")).runs_uri("items")
    done = [r.asDict() for r in spark.read.format("delta").load(uri).collect()]
    return sorted((r for r in done if r["status"] != "running"), key=lambda r: r["started_at"])


def _empty_table(root: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``items`` ingested from an empty folder: its table exists and holds no row."""
    declare(root / "schemas", "items", "json", COLUMNS)
    (root / "raw").mkdir()
    summary, _ = _ok(root, capsys, "ingest", "items", str(root / "raw"))
    return summary


# --- quarantine replay and list -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_a_replay_with_nothing_left_moves_nothing_and_succeeds(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    declare(tmp_path / "schemas", "items", fmt, COLUMNS, extra=STRICT)
    raw = _write_rows(tmp_path / "raw", fmt, ROWS)
    first, _ = _ok(tmp_path, capsys, "ingest", "items", str(raw))
    assert (first["rows_written"], first["rows_quarantined"]) == (1, 1)
    declaration = tmp_path / "schemas" / "items" / "dataset.yaml"
    declaration.write_text(declaration.read_text().replace("price < 100", "price < 1000"))
    moved, _ = _ok(tmp_path, capsys, "quarantine", "replay", "items")
    assert (moved["rows_read"], moved["rows_written"], moved["rows_released"]) == (1, 1, 1)
    assert moved["table_version"] > first["table_version"]  # the replay's own commit

    again, _ = _ok(tmp_path, capsys, "quarantine", "replay", "items")

    assert again["status"] == "succeeded"
    assert again["table_version"] == moved["table_version"]
    assert _counts(again) == NOTHING
    assert again["rows_released"] == 0
    runs = _runs(spark, tmp_path)
    assert [(r["command"], r["status"]) for r in runs] == [
        ("ingest", "succeeded"),
        ("replay", "succeeded"),
        ("replay", "succeeded"),
    ]
    assert _counts(runs[-1]) == NOTHING
    table = spark.read.format("delta").load(first["table"])
    assert sorted(r["id"] for r in table.collect()) == [1, 2]


def test_list_and_replay_of_an_empty_quarantine(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS)
    _ok(tmp_path, capsys, "ingest", "items", str(_write_rows(tmp_path / "raw", "json", ROWS)))

    listing, _ = _ok(tmp_path, capsys, "quarantine", "list", "items")
    assert listing == {"dataset": "items", "rows": 0, "groups": []}
    code, out, _ = _cli(tmp_path, capsys, "quarantine", "list", "items")
    assert (code, out) == (0, "items: 0 quarantined record(s) not yet replayed\n")

    replayed, err = _ok(tmp_path, capsys, "quarantine", "replay", "items")
    assert replayed["status"] == "succeeded"
    assert _counts(replayed) == NOTHING
    assert replayed["rows_released"] == 0
    assert "nothing to replay" in err


def test_list_and_replay_of_a_dataset_never_ingested(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "csv", COLUMNS)

    listing, _ = _ok(tmp_path, capsys, "quarantine", "list", "items")
    assert listing == {"dataset": "items", "rows": 0, "groups": []}
    replayed, _ = _ok(tmp_path, capsys, "quarantine", "replay", "items")
    assert replayed["status"] == "succeeded"
    assert _counts(replayed) == NOTHING
    assert [r["status"] for r in _runs(spark, tmp_path)] == ["succeeded"]


# --- ingest -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_ingest_of_an_empty_folder(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    declare(tmp_path / "schemas", "items", fmt, COLUMNS)
    (tmp_path / "raw").mkdir()

    summary, _ = _ok(tmp_path, capsys, "ingest", "items", str(tmp_path / "raw"))

    assert summary["status"] == "succeeded"
    assert (summary["files_seen"], summary["files_skipped"], summary["files_rejected"]) == (0, 0, 0)
    assert _counts(summary) == NOTHING
    assert summary["table_version"] == 0  # created, with no rows
    assert spark.read.format("delta").load(summary["table"]).count() == 0


# A file of no bytes is not listed at all (the listing is a Spark binaryFile scan, which gives
# no row for it): it is not seen, so not in the ledger either.
@pytest.mark.parametrize(
    ("fmt", "name", "content", "seen"),
    [
        ("csv", "items.csv", b"", 0),
        ("csv", "items.csv", b"id,price,name\n", 1),
        ("json", "items.jsonl", b"", 0),
        ("json", "items.jsonl", b"\n\n", 1),
        ("parquet", "items.parquet", None, 1),  # a Parquet file of no rows
    ],
    ids=["csv-no-bytes", "csv-header-only", "json-no-bytes", "json-blank-lines", "parquet"],
)
def test_ingest_of_a_folder_holding_only_an_empty_file(
    spark: SparkSession,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
    name: str,
    content: bytes | None,
    seen: int,
) -> None:
    declare(tmp_path / "schemas", "items", fmt, COLUMNS)
    raw = tmp_path / "raw"
    raw.mkdir()
    if content is None:
        pq.write_table(_arrow([]), raw / name)
    else:
        (raw / name).write_bytes(content)

    summary, _ = _ok(tmp_path, capsys, "ingest", "items", str(raw))

    assert summary["status"] == "succeeded"
    assert (summary["files_seen"], summary["files_ingested"], summary["files_rejected"]) == (
        seen,
        seen,
        0,
    )
    assert _counts(summary) == NOTHING
    assert spark.read.format("delta").load(summary["table"]).count() == 0
    again, _ = _ok(tmp_path, capsys, "ingest", "items", str(raw))
    assert (again["files_seen"], again["files_skipped"]) == (seen, seen)  # in the ledger
    assert _counts(again) == NOTHING


# --- verify -------------------------------------------------------------------------------------


def test_verify_of_an_empty_table(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _empty_table(tmp_path, capsys)

    report, _ = _ok(tmp_path, capsys, "verify", "items", "--full")

    assert report["ok"] is True
    assert (report["rows"], report["table_version"]) == (0, 0)
    assert report["checks"]["hashes"]["checked"] == 0
    assert report["checks"]["accounting"]["runs"] == 1


def test_verify_of_a_table_holding_only_refused_rows(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "bad.jsonl").write_text('{"id": 1, "price": "cheap", "name": "a"}\n')
    ingested, _ = _ok(tmp_path, capsys, "ingest", "items", str(raw))
    assert (ingested["rows_read"], ingested["rows_quarantined"]) == (1, 1)

    report, _ = _ok(tmp_path, capsys, "verify", "items")

    assert (report["ok"], report["rows"]) == (True, 0)


def test_verify_of_a_dataset_never_ingested(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS)

    report, _ = _ok(tmp_path, capsys, "verify", "items")
    assert report["ok"] is True
    assert (report["rows"], report["table_version"]) == (0, None)
    assert "nothing has been ingested yet" in report["message"]
    code, out, err = _cli(tmp_path, capsys, "verify", "items")
    assert code == 0, err
    assert len(out.splitlines()) == 1
    assert out.startswith("items: OK")
    assert "nothing has been ingested yet" in out
    assert not (tmp_path / "lake").exists()  # verify reads: it made no table


def test_verify_without_a_table_fails_when_the_run_log_says_rows_were_written(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS)
    _ok(tmp_path, capsys, "ingest", "items", str(_write_rows(tmp_path / "raw", "json", ROWS)))
    shutil.rmtree(tmp_path / "lake" / "tables" / "items")  # lost behind lakeshard's back

    code, out, err = _cli(tmp_path, capsys, "verify", "items", "--json")

    assert code == EXIT_POLICY, err
    report = last_json_line(out)
    assert (report["ok"], report["rows"], report["table_version"]) == (False, 0, None)
    assert "run log records rows written" in report["message"]
    assert "the table has 0 rows but the run log accounts for 2" in err


# --- export -------------------------------------------------------------------------------------


def test_export_of_an_empty_table(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _empty_table(tmp_path, capsys)
    out = tmp_path / "export"
    split = ("--split", "train=0.75,val=0.25")

    summary, _ = _ok(
        tmp_path, capsys, "export", "items", "--shards", "3", *split, "--out", str(out)
    )

    assert (summary["rows"], summary["table_version"], summary["shards"]) == (0, 0, 3)
    assert summary["splits"] == {"train": 0, "val": 0}
    manifest = Manifest.from_json((out / "manifest.json").read_bytes())
    assert (manifest.rows, manifest.table_version) == (0, 0)
    for split in ("train", "val"):
        shards = manifest.split(split).shards
        assert [(s.rows, s.row_groups) for s in shards] == [(0, ())] * 3
        for shard in shards:
            assert describe_file(pafs.LocalFileSystem(), str(out / shard.path), shard.path) == shard
            table = pq.read_table(out / shard.path)
            assert table.num_rows == 0
            assert table.column_names == ["id", "price", "name", "_content_hash"]
        # The loader streams an empty split as an empty epoch.
        loader = ShardLoader(str(out / "manifest.json"), batch_size=1, split=split)
        assert (len(loader), list(loader)) == (0, [])


def test_export_of_a_dataset_never_ingested_names_that(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS)

    code, out, err = _cli(tmp_path, capsys, "export", "items", "--shards", "2", "--json")

    assert code == EXIT_USAGE
    assert out == ""
    lines = [line for line in err.splitlines() if not line.startswith("lakeshard: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: items: ")
    assert "nothing has been ingested" in lines[0]
    assert not (tmp_path / "lake").exists()


# --- schema check and history -------------------------------------------------------------------


def test_schema_history_and_check_of_a_dataset_never_ingested(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS)

    history, _ = _ok(tmp_path, capsys, "schema", "history", "items")
    assert [(v["version"], v["changes"], v["table_version"]) for v in history["versions"]] == [
        ("v1", [], None)
    ]
    assert history["commits"] == []
    code, out, _ = _cli(tmp_path, capsys, "schema", "history", "items")
    assert code == 0
    assert "v1 (3 columns): not in the table yet" in out
    check, _ = _ok(tmp_path, capsys, "schema", "check", "items")
    assert (check["compatible"], check["problems"], check["table"]["exists"]) == (True, [], False)


def test_schema_history_and_check_with_one_version(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _empty_table(tmp_path, capsys)

    history, _ = _ok(tmp_path, capsys, "schema", "history", "items")
    (only,) = history["versions"]
    assert (only["version"], only["changes"], only["table_version"]) == ("v1", [], 0)
    assert [c["table_version"] for c in history["commits"]] == [0]
    check, _ = _ok(tmp_path, capsys, "schema", "check", "items")
    assert (check["compatible"], check["problems"]) == (True, [])
    assert (check["table"]["exists"], check["table"]["version"], check["table"]["holds"]) == (
        True,
        0,
        "v1",
    )
    assert check["versions"]["changes"] == []
