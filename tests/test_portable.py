"""Evolved tables stay readable by every engine: ``evolution: portable`` (the default) makes
renames, drops and widenings by rewriting the table once; ``evolution: in_place`` uses Delta's
reader features. The reader matrix (each kind of change x each mode x Spark, delta-rs, DuckDB
over delta-rs's Arrow dataset, Polars) is measured here and must be what the README says.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import re
import shutil
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyspark.sql import SparkSession

from pipelines import cli
from pipelines.errors import StorageError
from pipelines.lake import delta, deltalog
from tests.conftest import REPO, table_problems
from tests.helpers import artifacts, ingest_quietly, last_json_line

pytestmark = pytest.mark.jvm

V1 = [
    "{name: id, type: long, nullable: false}",
    "{name: name, type: string}",
    "{name: qty, type: int}",
    "{name: price, type: 'decimal(5,2)'}",
    "{name: day, type: date}",
]
V1_ROWS = [
    {"id": 1, "name": "bolt", "qty": 5, "price": "1.25", "day": "2024-01-02"},
    {"id": 2, "name": "nut", "qty": 7, "price": "0.50", "day": "2024-01-03"},
]

# kind -> (the column it changes in v2, its v2 declaration or None where dropped, the v2 row's
# value for it, that column as each engine must read it: (Arrow type, values by id))
KINDS: dict[str, tuple[str, str | None, Any, pa.DataType | None, dict[int, Any]]] = {
    "add nullable": (
        "colour",
        "{name: colour, type: string}",
        "red",
        pa.string(),
        {1: None, 2: None, 3: "red"},
    ),
    "rename": (
        "title",
        "{name: title, type: string, renamed_from: name}",
        "washer",
        pa.string(),
        {1: "bolt", 2: "nut", 3: "washer"},
    ),
    "drop": ("qty", None, None, None, {}),
    "widen int to long": (
        "qty",
        "{name: qty, type: long}",
        9_000_000_000,
        pa.int64(),
        {1: 5, 2: 7, 3: 9_000_000_000},
    ),
    "widen decimal": (
        "price",
        "{name: price, type: 'decimal(10,2)'}",
        "12345678.90",
        pa.decimal128(10, 2),
        {1: Decimal("1.25"), 2: Decimal("0.50"), 3: Decimal("12345678.90")},
    ),
    "widen date to timestamp_ntz": (
        "day",
        "{name: day, type: timestamp_ntz}",
        "2024-02-01T10:30:00",
        pa.timestamp("us"),
        {
            1: dt.datetime(2024, 1, 2),
            2: dt.datetime(2024, 1, 3),
            3: dt.datetime(2024, 2, 1, 10, 30),
        },
    ),
}
MODES = ("portable", "in_place")
README_MATRIX = re.compile(r"<!-- reader-matrix -->(.*?)<!-- /reader-matrix -->", re.S)


def _v2(kind: str) -> tuple[list[str], dict[str, Any]]:
    """The v2 columns of a kind of change, and a row of v2."""
    column, declared, value, _, _ = KINDS[kind]
    row: dict[str, Any] = {"id": 3, "name": "washer", "qty": 9, "price": "2.00"}
    row["day"] = "2024-02-01"
    columns = list(V1)
    if kind == "add nullable":
        columns.append(declared or "")
    elif kind == "drop":
        columns = [c for c in columns if "name: qty" not in c]
        del row["qty"]
    else:
        old = {"rename": "name"}.get(kind, column)
        index = next(i for i, c in enumerate(columns) if f"name: {old}," in c)
        columns[index] = declared or ""
        row.pop(old)
    if value is not None:
        row[column] = value
    return columns, row


def _schemas(root: Path, columns_by_version: list[list[str]], mode: str | None) -> Path:
    folder = root / "schemas" / "items"
    folder.mkdir(parents=True, exist_ok=True)
    declaration = "format: json\ncompatibility: backward\n"
    if mode is not None:
        declaration += f"evolution: {mode}\n"
    (folder / "dataset.yaml").write_text(declaration)
    for number, columns in enumerate(columns_by_version, start=1):
        body = "".join(f"  - {c}\n" for c in columns)
        (folder / f"v{number}.yaml").write_text("columns:\n" + body)
    return root / "schemas"


def _rows(folder: Path, rows: list[dict[str, Any]]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder)


@pytest.fixture(scope="module")
def v1_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake whose items table holds two rows of v1 (the same for either mode)."""
    root = tmp_path_factory.mktemp("v1")
    schemas = _schemas(root, [V1], None)
    where = ["--lake", str(root / "lake"), "--schemas", str(schemas)]
    ingest_quietly("items", _rows(root / "raw", V1_ROWS), *where)
    return root / "lake"


# --- the engines ---------------------------------------------------------------------------


def _arrow_by_engine(spark: SparkSession, path: str) -> dict[str, Callable[[], pa.Table]]:
    def with_spark() -> pa.Table:
        return spark.read.format("delta").load(path).toArrow()

    def with_delta_rs() -> pa.Table:
        from deltalake import DeltaTable

        return DeltaTable(path).to_pyarrow_table()

    def with_duckdb() -> pa.Table:
        import duckdb
        from deltalake import DeltaTable

        con = duckdb.connect()
        con.register("items", DeltaTable(path).to_pyarrow_dataset())
        return con.sql("SELECT * FROM items").to_arrow_table()

    def with_polars() -> pa.Table:
        import polars as pl

        return pl.read_delta(path).to_arrow()

    return {
        "Spark": with_spark,
        "delta-rs": with_delta_rs,
        "DuckDB": with_duckdb,
        "Polars": with_polars,
    }


def _judge(kind: str, read: Callable[[], pa.Table]) -> str:
    """'yes' when the engine reads every row under the v2 names, types and values; else 'no:'
    and what went wrong (its error's type, or what it read wrong)."""
    column, _, _, arrow_type, values = KINDS[kind]
    try:
        table = read()
    except Exception as exc:  # an engine's refusal is the measurement
        return f"no: {type(exc).__name__}"
    declared = {n for n in table.column_names if not n.startswith("_")}
    wanted = {"id", "name", "qty", "price", "day"}
    if kind == "add nullable":
        wanted.add("colour")
    elif kind == "drop":
        wanted.discard("qty")
    elif kind == "rename":
        wanted = (wanted - {"name"}) | {"title"}
    if table.num_rows != 3:
        return f"no: {table.num_rows} rows"
    if declared != wanted:
        return f"no: columns {sorted(declared)}"
    if arrow_type is None:
        return "yes"
    field = table.schema.field(column)
    if _normal(field.type) != _normal(arrow_type):
        return f"no: {column} read as {field.type}"
    ids = table.column("id").to_pylist()
    got = dict(zip(ids, table.column(column).to_pylist(), strict=True))
    if got != values:
        return f"no: wrong values ({got})"
    return "yes"


def _normal(dtype: pa.DataType) -> pa.DataType:
    """Arrow types up to their spelling: string views and large strings are strings."""
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return pa.string()
    if pa.types.is_string_view(dtype):
        return pa.string()
    return dtype


def test_the_reader_matrix_is_what_the_readme_says(
    spark: SparkSession, v1_lake: Path, tmp_path: Path
) -> None:
    measured: dict[tuple[str, str], dict[str, str]] = {}
    for mode in MODES:
        for kind in KINDS:
            root = tmp_path / f"{mode}-{kind.replace(' ', '-')}"
            shutil.copytree(v1_lake, root / "lake")
            columns, row = _v2(kind)
            schemas = _schemas(root, [V1, columns], mode)
            where = ["--lake", str(root / "lake"), "--schemas", str(schemas)]
            summary = ingest_quietly("items", _rows(root / "raw", [row]), *where)
            assert summary["rows_written"] == 1, (mode, kind)
            path = str(root / "lake" / "tables" / "items")
            engines = _arrow_by_engine(spark, path)
            measured[(kind, mode)] = {name: _judge(kind, read) for name, read in engines.items()}

    shown = "\n".join(f"{k} ({m}): {cells}" for (k, m), cells in measured.items())
    (artifacts() / "reader-matrix.txt").write_text(shown + "\n")
    for kind in KINDS:  # the default reads everywhere, whatever the change
        assert all(v == "yes" for v in measured[(kind, "portable")].values()), shown
    assert all(v == "yes" for v in measured[("add nullable", "in_place")].values()), shown
    assert all(cells["Spark"] == "yes" for cells in measured.values()), shown
    assert {k: _yes(v) for k, v in measured.items()} == readme_matrix(), (
        "the README's reader matrix differs from what was measured:\n" + shown
    )


def _yes(cells: dict[str, str]) -> dict[str, bool]:
    return {engine: verdict == "yes" for engine, verdict in cells.items()}


def readme_matrix() -> dict[tuple[str, str], dict[str, bool]]:
    """(kind, mode) -> engine -> reads, from the README table between the reader-matrix markers."""
    match = README_MATRIX.search((REPO / "README.md").read_text())
    assert match, "README.md lacks the <!-- reader-matrix --> table"
    lines = match.group(1).strip().splitlines()
    engines = [cell.strip() for cell in lines[0].split("|")[3:-1]]
    matrix: dict[tuple[str, str], dict[str, bool]] = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        kind, mode = cells[0], cells[1].strip("`")
        matrix[(kind, mode)] = {
            engine: cell.startswith("yes") for engine, cell in zip(engines, cells[2:], strict=True)
        }
    return matrix


# --- the rewrite ---------------------------------------------------------------------------

STORY_V2 = [
    "{name: id, type: long, nullable: false}",
    "{name: title, type: string, renamed_from: name}",
    "{name: qty, type: long}",
    "{name: price, type: 'decimal(5,2)'}",
    "{name: day, type: date}",
    "{name: colour, type: string}",
]


def _verify_full(lake: Path, schemas: Path) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(
            ["verify", "items", "--full", "--lake", str(lake), "--schemas", str(schemas), "--json"]
        )
    report = last_json_line(out.getvalue())
    assert code == 0, report
    return report


def test_a_rename_and_a_widening_leave_a_table_every_engine_reads_with_its_history(
    spark: SparkSession, v1_lake: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    shutil.copytree(v1_lake, lake)
    schemas = _schemas(tmp_path, [V1, STORY_V2], None)  # the default mode
    where = ["--lake", str(lake), "--schemas", str(schemas)]
    table = lake / "tables" / "items"
    before = deltalog.latest_version(table.as_uri())
    v2_row = {"id": 3, "title": "washer", "qty": 9_000_000_000, "price": "2.00"}
    v2_row |= {"day": "2024-02-01", "colour": "red"}
    summary = ingest_quietly("items", _rows(tmp_path / "raw", [v2_row]), *where)
    assert summary["rows_written"] == 1

    # Every engine reads all rows under the new names and types.
    for engine, read in _arrow_by_engine(spark, str(table)).items():
        got = read()
        rows = sorted(
            zip(*(got.column(c).to_pylist() for c in ("id", "title", "qty", "colour")), strict=True)
        )
        assert rows == [
            (1, "bolt", 5, None),
            (2, "nut", 7, None),
            (3, "washer", 9_000_000_000, "red"),
        ], engine
        assert got.schema.field("qty").type == pa.int64(), engine
        assert "name" not in got.column_names, engine
    # The protocol stays what every engine reads: no reader feature was switched on.
    snap = deltalog.snapshot(table.as_uri())
    assert snap is not None
    assert snap.configuration.get("delta.columnMapping.mode", "none") == "none"
    from deltalake import DeltaTable

    protocol = DeltaTable(str(table)).protocol()
    assert not protocol.reader_features, protocol
    # One rewrite commit (it adds no rows: the run log and verify count only the data commit),
    # and the history stays: the version before reads as it was, with delta-rs too.
    history = spark.sql(f"DESCRIBE HISTORY delta.`{table}`").orderBy("version").collect()
    rewrites = [h for h in history if "rewrite" in json.loads(h["userMetadata"] or "{}")]
    assert len(rewrites) == 1
    assert rewrites[0]["version"] > (before or 0)
    assert [c.run_id for c in delta.run_commits(spark, str(table))] == [
        *[c.run_id for c in delta.run_commits(spark, str(table), up_to=before)],
        summary["run_id"],
    ]
    old = DeltaTable(str(table), version=before).to_pyarrow_table()
    assert sorted(old.column("name").to_pylist()) == ["bolt", "nut"]
    assert old.schema.field("qty").type == pa.int32()
    # Hashes, ledger, quarantine and run log stay consistent: verify --full passes.
    report = _verify_full(lake, schemas)
    assert report["checks"]["hashes"]["checked"] == 3
    assert table_problems(table, lake / "_lakeshard" / "runs" / "items", spark) == []
    # Delta keeps no NOT NULL through the rewrite; lakeshard still refuses a null id.
    null_id = ingest_quietly("items", _rows(tmp_path / "null", [{"id": None, "qty": 1}]), *where)
    assert (null_id["rows_written"], null_id["rows_quarantined"]) == (0, 1)


def test_a_run_that_dies_after_the_rewrite_is_finished_by_the_next(
    spark: SparkSession, v1_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rewrite is one commit; a run that fails right after it (before its data commit)
    leaves a rewritten table, and the next run adds its rows: equal to a run that did not fail."""
    lakes = {name: tmp_path / name / "lake" for name in ("clean", "failed")}
    schemas = _schemas(tmp_path, [V1, STORY_V2], None)
    v2_row = {"id": 3, "title": "washer", "qty": 9_000_000_000, "colour": "red"}
    raw = _rows(tmp_path / "raw", [v2_row])
    for lake in lakes.values():
        shutil.copytree(v1_lake, lake)
    ingest_quietly("items", raw, "--lake", str(lakes["clean"]), "--schemas", str(schemas))

    overwrite = delta.overwrite

    def dies_after_the_rewrite(*args: Any, **kwargs: Any) -> None:
        overwrite(*args, **kwargs)
        raise StorageError("injected: the driver lost the lake after the rewrite")

    monkeypatch.setattr(delta, "overwrite", dies_after_the_rewrite)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(
            ["ingest", "items", raw, "--lake", str(lakes["failed"]), "--schemas", str(schemas)]
        )
    assert code == 1
    monkeypatch.undo()
    rerun = ingest_quietly("items", raw, "--lake", str(lakes["failed"]), "--schemas", str(schemas))
    assert rerun["rows_written"] == 1

    def content(lake: Path) -> tuple[list[Any], list[str]]:
        frame = spark.read.format("delta").load(str(lake / "tables" / "items"))
        rows = sorted(
            (r["_content_hash"].hex(), r["id"], r["title"], r["qty"]) for r in frame.collect()
        )
        return rows, frame.columns

    assert content(lakes["failed"]) == content(lakes["clean"])
    _verify_full(lakes["failed"], schemas)


def test_maintain_portable_makes_an_in_place_table_readable_by_every_engine(
    spark: SparkSession, v1_lake: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    shutil.copytree(v1_lake, lake)
    schemas = _schemas(tmp_path, [V1, STORY_V2], "in_place")
    where = ["--lake", str(lake), "--schemas", str(schemas)]
    v2_row = {"id": 3, "title": "washer", "qty": 9_000_000_000, "colour": "red"}
    ingest_quietly("items", _rows(tmp_path / "raw", [v2_row]), *where)
    table = str(lake / "tables" / "items")
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaProtocolError

    with pytest.raises(DeltaProtocolError):
        DeltaTable(table).to_pyarrow_table()

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["maintain", "items", "--portable", *where, "--json"])
    assert code == 0, err.getvalue()
    report = last_json_line(out.getvalue())
    assert report["portable"] == {
        "features_dropped": ["columnMapping", "typeWidening"],
        "spark_free_readable": True,
    }
    assert "declares evolution: in_place" in err.getvalue()  # it would come back
    for engine, read in _arrow_by_engine(spark, table).items():
        got = read()
        rows = sorted(
            zip(*(got.column(c).to_pylist() for c in ("id", "title", "qty")), strict=True)
        )
        assert rows == [(1, "bolt", 5), (2, "nut", 7), (3, "washer", 9_000_000_000)], engine
    # NOT NULL and every row's hash survive; a second run has nothing to drop.
    assert not spark.read.format("delta").load(table).schema["id"].nullable
    assert _verify_full(lake, schemas)["checks"]["hashes"]["checked"] == 3
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["maintain", "items", "--portable", *where, "--json"]) == 0
    assert last_json_line(out.getvalue())["portable"]["features_dropped"] == []


def test_the_rewrite_converts_nested_fields_by_name(spark: SparkSession) -> None:
    """Inside structs, arrays and map values: widened fields cast, dropped ones gone, added
    ones null, null structs kept null; bookkeeping columns untouched."""
    from pyspark.sql import types as T

    from pipelines.schema.evolution import Rewrite

    old = T.StructType.fromDDL(
        "id BIGINT, s STRUCT<a: INT, b: STRING>, xs ARRAY<STRUCT<x: INT>>, "
        "m MAP<STRING, STRUCT<d: DATE>>, _run_id STRING"
    )
    rows = [
        (1, (5, "keep"), [(7,), (8,)], {"k": (dt.date(2024, 1, 2),)}, "run-1"),
        (2, None, None, None, "run-2"),
    ]
    frame = spark.createDataFrame(rows, old)
    new = T.StructType.fromDDL(
        "id BIGINT, s STRUCT<a: BIGINT, c: STRING>, xs ARRAY<STRUCT<x: BIGINT>>, "
        "m MAP<STRING, STRUCT<d: TIMESTAMP_NTZ>>"
    )
    rewrite = Rewrite(tuple((f.name, f.name, f.dataType) for f in new.fields), ())
    got = rewrite.frame(frame)
    assert [f.name for f in got.schema.fields] == ["id", "s", "xs", "m", "_run_id"]
    assert got.schema["s"].dataType == new["s"].dataType
    first, second = sorted(got.collect(), key=lambda r: r["id"])
    assert first["s"].asDict() == {"a": 5, "c": None}
    assert [x["x"] for x in first["xs"]] == [7, 8]
    assert first["m"]["k"]["d"] == dt.datetime(2024, 1, 2)
    assert first["_run_id"] == "run-1"
    assert (second["s"], second["xs"], second["m"]) == (None, None, None)
