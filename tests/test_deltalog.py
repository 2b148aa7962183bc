"""Reading the Delta log without Spark, against tables written by delta-rs (another engine)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import CommitProperties, DeltaTable, PostCommitHookProperties, write_deltalake

from pipelines.errors import DamagedLake
from pipelines.ingest.hashing import arrow_type
from pipelines.lake.deltafiles import read_columns
from pipelines.lake.deltalog import commits, data_files, snapshot

NO_HOOKS = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)


def append(path: Path, columns: dict[str, list[object]], user_metadata: str | None = None) -> None:
    """One commit: append rows (adding any new column to the schema), without checkpoints."""
    props = (
        CommitProperties(custom_metadata={"userMetadata": user_metadata}) if user_metadata else None
    )
    write_deltalake(
        path,
        pa.table(columns),
        mode="append",
        schema_mode="merge",
        commit_properties=props,
        post_commithook_properties=NO_HOOKS,
    )


def log_file(path: Path, version: int, suffix: str = "json") -> Path:
    return path / "_delta_log" / f"{version:020d}.{suffix}"


def arrow_schema_of(uri: str) -> pa.Schema:
    """The snapshot's schema as Arrow, to compare with what delta-rs reads."""
    found = snapshot(uri)
    assert found is not None
    return pa.schema([pa.field(f.name, arrow_type(f.dataType), f.nullable) for f in found.schema])


def test_no_table(tmp_path: Path) -> None:
    assert snapshot(str(tmp_path / "missing")) is None
    assert commits(str(tmp_path / "missing")) == []
    (tmp_path / "empty" / "_delta_log").mkdir(parents=True)
    assert snapshot(str(tmp_path / "empty")) is None
    assert commits(str(tmp_path / "empty")) == []


def test_history_of_a_growing_table(tmp_path: Path) -> None:
    table = tmp_path / "orders"
    before = datetime.now(UTC).replace(microsecond=0)
    append(table, {"id": [1, 2], "price": [1.5, 2.5]}, user_metadata='{"run_id": "r1"}')
    append(table, {"id": [3], "price": [3.5]}, user_metadata="not json")
    append(table, {"id": [4], "price": [4.5]})
    append(table, {"id": [5], "price": [5.5], "note": ["new column"]}, user_metadata="[1, 2]")
    after = datetime.now(UTC)

    found = snapshot(str(table))
    assert found is not None
    assert found.version == 3 == DeltaTable(table).version()
    assert [(f.name, f.dataType.simpleString()) for f in found.schema] == [
        ("id", "bigint"),
        ("price", "double"),
        ("note", "string"),
    ]
    assert arrow_schema_of(str(table)) == pa.schema(DeltaTable(table).schema().to_arrow())
    assert found.partition_columns == ()

    history = commits(str(table))
    assert [c.version for c in history] == [0, 1, 2, 3]
    assert all(before <= c.timestamp <= after for c in history)
    assert all(c.timestamp.tzinfo == UTC for c in history)
    assert [c.timestamp for c in history] == sorted(c.timestamp for c in history)
    assert [c.user_metadata for c in history] == [{"run_id": "r1"}, {}, {}, {}]
    assert [c.operation for c in history] == ["WRITE"] * 4
    schemas = [c.schema and [f.name for f in c.schema] for c in history]
    assert schemas == [["id", "price"], None, None, ["id", "price", "note"]]
    assert history[1].operation_metrics["num_added_rows"] == "1"


def test_partitions_properties_and_constraints(tmp_path: Path) -> None:
    table = tmp_path / "events"
    write_deltalake(
        table,
        pa.table({"day": ["2024-01-01"], "n": [1]}),
        partition_by=["day"],
        configuration={"delta.logRetentionDuration": "interval 7 days"},
        post_commithook_properties=NO_HOOKS,
    )
    DeltaTable(table).alter.add_constraint({"positive": "n > 0"})

    found = snapshot(f"file://{table}")
    assert found is not None
    assert found.version == 1
    assert found.partition_columns == ("day",)
    assert found.configuration["delta.logRetentionDuration"] == "interval 7 days"
    assert found.constraints == {"positive": "n > 0"}
    assert [c.operation for c in commits(f"file://{table}")] == ["WRITE", "ADD CONSTRAINT"]


def _table_with_checkpoint(table: Path) -> None:
    """Versions 0-11, a checkpoint at 11 (the schema changed at 5), then 12 and 13."""
    for i in range(12):
        columns: dict[str, list[object]] = {"id": [i]}
        if i >= 5:
            columns["added_at_5"] = ["x"]
        append(table, columns)
    DeltaTable(table).create_checkpoint()
    append(table, {"id": [12], "added_at_5": ["y"]})
    append(table, {"id": [13], "added_at_5": ["z"]})


def test_snapshot_reads_the_checkpoint_once_early_commits_are_gone(tmp_path: Path) -> None:
    table = tmp_path / "long"
    _table_with_checkpoint(table)
    assert log_file(table, 11, "checkpoint.parquet").exists()
    assert json.loads((table / "_delta_log" / "_last_checkpoint").read_text())["version"] == 11
    for version in range(12):  # as log cleanup does: only the checkpoint knows the schema now
        log_file(table, version).unlink()

    found = snapshot(str(table))
    assert found is not None
    assert found.version == 13 == DeltaTable(table).version()
    assert [f.name for f in found.schema] == ["id", "added_at_5"]
    assert arrow_schema_of(str(table)) == pa.schema(DeltaTable(table).schema().to_arrow())
    assert [c.version for c in commits(str(table))] == [12, 13]

    (table / "_delta_log" / "_last_checkpoint").unlink()  # the listing finds the checkpoint
    assert snapshot(str(table)) == found


def test_a_schema_change_after_the_checkpoint_wins(tmp_path: Path) -> None:
    table = tmp_path / "changed"
    _table_with_checkpoint(table)
    append(table, {"id": [14], "added_at_5": ["w"], "added_at_14": [1.0]})
    for version in range(12):
        log_file(table, version).unlink()
    found = snapshot(str(table))
    assert found is not None
    assert found.version == 14
    assert [f.name for f in found.schema] == ["id", "added_at_5", "added_at_14"]


@pytest.mark.parametrize("hint", ['{"version": 3, "size": 1}', "{not json", ""])
def test_last_checkpoint_is_only_a_hint(tmp_path: Path, hint: str) -> None:
    table = tmp_path / "stale"
    _table_with_checkpoint(table)
    (table / "_delta_log" / "_last_checkpoint").write_text(hint)
    for version in range(12):
        log_file(table, version).unlink()
    found = snapshot(str(table))
    assert found is not None
    assert [f.name for f in found.schema] == ["id", "added_at_5"]


def test_multi_part_checkpoint(tmp_path: Path) -> None:
    table = tmp_path / "parts"
    _table_with_checkpoint(table)
    single = log_file(table, 11, "checkpoint.parquet")
    state = pq.read_table(single)
    middle = state.num_rows // 2
    for part, rows in ((1, state.slice(0, middle)), (2, state.slice(middle))):
        pq.write_table(rows, log_file(table, 11, f"checkpoint.{part:010d}.{2:010d}.parquet"))
    single.unlink()
    for version in range(12):
        log_file(table, version).unlink()
    found = snapshot(str(table))
    assert found is not None
    assert [f.name for f in found.schema] == ["id", "added_at_5"]

    log_file(table, 11, f"checkpoint.{2:010d}.{2:010d}.parquet").unlink()
    with pytest.raises(DamagedLake, match="commit 0 is missing and no checkpoint covers it"):
        snapshot(str(table))


def _v2_checkpoint_in_json(table: Path, *actions: tuple[str, int]) -> None:
    """Replace the checkpoint at 11 by a V2 one in JSON holding these (kind, from commit)."""
    lines = [
        line
        for kind, version in actions
        for line in log_file(table, version).read_text().splitlines()
        if line.startswith(f'{{"{kind}"')
    ]
    name = "checkpoint.3a0d65cd-4056-49b8-937b-95f9e3ee90e5.json"
    log_file(table, 11, name).write_text("\n".join(lines) + "\n")
    log_file(table, 11, "checkpoint.parquet").unlink()


def test_v2_checkpoint_in_json(tmp_path: Path) -> None:
    table = tmp_path / "v2"
    _table_with_checkpoint(table)
    _v2_checkpoint_in_json(table, ("protocol", 0), ("metaData", 5))
    for version in range(12):
        log_file(table, version).unlink()
    found = snapshot(str(table))
    assert found is not None
    assert [f.name for f in found.schema] == ["id", "added_at_5"]


def test_a_missing_commit_is_an_error_not_a_stale_schema(tmp_path: Path) -> None:
    table = tmp_path / "gap"
    _table_with_checkpoint(table)
    log_file(table, 12).unlink()
    with pytest.raises(DamagedLake, match="commit 12 is missing and the checkpoint is at 11"):
        snapshot(str(table))


def test_a_log_behind_its_last_checkpoint_is_an_error(tmp_path: Path) -> None:
    table = tmp_path / "lost"
    _table_with_checkpoint(table)
    log_file(table, 13).unlink()
    log_file(table, 12).unlink()
    (table / "_delta_log" / "_last_checkpoint").write_text('{"version": 13, "size": 15}')
    with pytest.raises(DamagedLake, match="names version 13, but the log ends at 11"):
        snapshot(str(table))
    for leftover in (table / "_delta_log").glob("0*"):
        leftover.unlink()
    with pytest.raises(DamagedLake, match="names version 13, but the log holds no commits"):
        snapshot(str(table))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("commit", "00000000000000000001.json line 1 is not JSON"),
        ("checkpoint", "cannot read the checkpoint 00000000000000000011.checkpoint.parquet"),
        ("schema", "unreadable metaData"),
    ],
)
def test_a_corrupt_log_is_a_damaged_lake(tmp_path: Path, damage: str, problem: str) -> None:
    table = tmp_path / "corrupt"
    _table_with_checkpoint(table)
    if damage == "commit":
        log_file(table, 1).write_text('{"commitInfo": {"timestamp": 1')
        with pytest.raises(DamagedLake, match=problem) as caught:
            commits(str(table))
    else:
        for version in range(12):
            log_file(table, version).unlink()
        checkpoint = log_file(table, 11, "checkpoint.parquet")
        if damage == "checkpoint":
            checkpoint.write_bytes(checkpoint.read_bytes()[:100])
        else:
            state = pq.read_table(checkpoint).to_pylist()
            for row in state:
                if row["metaData"]:
                    row["metaData"]["schemaString"] = '{"type": "struct", "fields": [{}]}'
            pq.write_table(
                pa.Table.from_pylist(state, schema=pq.read_schema(checkpoint)), checkpoint
            )
        with pytest.raises(DamagedLake, match=problem) as caught:
            snapshot(str(table))
    assert str(table) in caught.value.message
    assert "\n" not in caught.value.message
    assert caught.value.exit_code == 1
    assert "restore it from a backup" in caught.value.message


def test_values_holding_unicode_line_breaks_do_not_split_an_action(tmp_path: Path) -> None:
    """Delta logs are newline-delimited JSON; U+2028, U+2029, U+0085 and U+000B inside a
    string (a partition value, commit metadata) are not line breaks there."""
    table = tmp_path / "breaks"
    odd = "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg"
    write_deltalake(
        table,
        pa.table({"id": [1], "part": [odd]}),
        partition_by=["part"],
        commit_properties=CommitProperties(
            custom_metadata={"userMetadata": json.dumps({"v": odd})}
        ),
        post_commithook_properties=NO_HOOKS,
    )
    (info,) = commits(str(table))
    assert info.user_metadata == {"v": odd}
    found = snapshot(str(table))
    assert found is not None
    assert found.partition_columns == ("part",)


def live_files(uri: str) -> list[str]:
    found = data_files(uri)
    assert found is not None
    return list(found.paths)


def test_data_files_replay_adds_and_removes_across_a_checkpoint(tmp_path: Path) -> None:
    table = tmp_path / "files"
    _table_with_checkpoint(table)
    for version in range(12):  # only the checkpoint knows the early files now
        log_file(table, version).unlink()
    assert live_files(str(table)) == sorted(DeltaTable(table).file_uris())
    assert len(live_files(str(table))) == 14

    DeltaTable(table).optimize.compact()  # removes 14 small files, adds one
    DeltaTable(table).delete("id = 13")  # rewrites that file without the row
    found = data_files(str(table))
    assert found is not None
    assert found.version == DeltaTable(table).version()
    assert list(found.paths) == sorted(DeltaTable(table).file_uris())
    ids = sorted(pq.read_table(list(found.paths), columns=["id"]).column("id").to_pylist())
    assert ids == list(range(13))
    assert found.rows == 13  # from the files' statistics


def test_data_files_of_a_partitioned_table_decode_the_paths(tmp_path: Path) -> None:
    table = tmp_path / "parted"
    write_deltalake(
        table, pa.table({"day": ["2024-01-01", "a b/c%"], "n": [1, 2]}), partition_by=["day"]
    )
    paths = live_files(str(table))
    assert paths == sorted(DeltaTable(table).file_uris())
    found = data_files(str(table))
    assert found is not None
    assert [f.size for f in found.files] == [Path(p).stat().st_size for p in paths]
    assert sorted(f.partition for f in found.files) == [
        (("day", "2024-01-01"),),
        (("day", "a b/c%"),),
    ]
    DeltaTable(table).create_checkpoint()  # the same, read from a checkpoint's pairs
    log_file(table, 0).unlink()
    assert data_files(str(table)) == found


def test_data_files_of_a_created_table_and_of_no_table(tmp_path: Path) -> None:
    assert data_files(str(tmp_path / "missing")) is None
    table = tmp_path / "empty"
    DeltaTable.create(table, pa.schema([pa.field("id", pa.int64())]))
    assert live_files(str(table)) == []


def edit_actions(commit: Path, kind: str, change: dict[str, Any]) -> None:
    """Set fields of every ``kind`` action in one commit file (as another writer might)."""
    actions = [json.loads(line) for line in commit.read_text().splitlines()]
    for action in actions:
        if kind in action:
            action[kind].update(change)
    commit.write_text("".join(json.dumps(a) + "\n" for a in actions))


def test_data_files_refuses_what_plain_parquet_cannot_read(tmp_path: Path) -> None:
    mapped = tmp_path / "mapped"
    append(mapped, {"id": [1]})
    edit_actions(
        log_file(mapped, 0), "metaData", {"configuration": {"delta.columnMapping.mode": "name"}}
    )
    assert data_files(str(mapped)) is None  # physical column names differ

    v2 = tmp_path / "v2"
    _table_with_checkpoint(v2)
    _v2_checkpoint_in_json(v2, ("protocol", 0), ("metaData", 5), ("add", 5))
    assert data_files(str(v2)) is None  # its adds may live in sidecars

    dv = tmp_path / "dv"
    append(dv, {"id": [1, 2]})
    vector = {
        "storageType": "u",
        "pathOrInlineDv": "ab^-aqEH.-t@S}K{vb[*k^",
        "offset": 4,
        "sizeInBytes": 34,
        "cardinality": 1,
    }
    edit_actions(log_file(dv, 0), "add", {"deletionVector": vector})
    assert data_files(str(dv)) is None  # a row of that file is deleted


def test_read_columns_fills_a_column_older_files_lack(tmp_path: Path) -> None:
    table = tmp_path / "grown"
    append(table, {"id": [1, 2]})
    append(table, {"id": [3], "note": ["new"]})
    found = read_columns(str(table), ["id", "note"])
    assert found is not None
    assert sorted(found.to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "note": None},
        {"id": 2, "note": None},
        {"id": 3, "note": "new"},
    ]
    assert read_columns(str(tmp_path / "missing"), ["id"]) is None
