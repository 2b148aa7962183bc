"""``lakeshard export``: a pinned version as balanced, fair, split-stable shards and a manifest.

One module lake (``items``, partitioned by day, two ingests: versions 1 and 2) is exported a
few times with the shared SparkSession; shards are read back with pyarrow alone, and what they
should hold is recomputed here in plain Python: the split from the content hash
(``manifest.split_of``), the order from ``xxhash64(seed, hash)`` as Spark computes it.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs import export as export_job
from pipelines import cli
from pipelines.errors import EXIT_POLICY, EXIT_USAGE
from pipelines.export import ranking
from pipelines.export import shards as shard_writing
from pipelines.loader import ShardLoader
from pipelines.loader.manifest import (
    MANIFEST,
    Manifest,
    describe_file,
    parse_split,
    split_bounds,
    split_of,
)
from pipelines.storage import arrowfs
from tests.helpers import declare, ingest_quietly, last_json_line

COLUMNS = [("id", "long"), ("day", "date"), ("name", "string"), ("score", "double")]
DAYS = ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"]
SPLIT = "train=0.75,val=0.25"
SHARDS = 3


def _records(first: int, count: int) -> list[str]:
    rng = random.Random(first)
    return [
        json.dumps(
            {
                "id": i,
                "day": DAYS[i % len(DAYS)],
                "name": f"item-{i}",
                "score": round(rng.random(), 3),
            }
        )
        for i in range(first, first + count)
    ]


def _where(root: Path) -> list[str]:
    return ["--lake", str(root / "lake"), "--schemas", str(root / "schemas")]


def _export(root: Path, *args: str) -> dict[str, Any]:
    """``lakeshard export items ARGS --json`` in this process; the summary."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["export", "items", *args, *_where(root), "--json"])
    assert code == 0, f"export {args} exited {code}"
    return last_json_line(out.getvalue())


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``items``: 240 rows at version 1, 360 at version 2."""
    root = tmp_path_factory.mktemp("export")
    declare(root / "schemas", "items", "json", COLUMNS, extra="partition_by: [day]\n")
    for number, (first, count) in enumerate([(0, 240), (240, 120)]):
        folder = root / "raw" / str(number)
        folder.mkdir(parents=True)
        (folder / "items.jsonl").write_text("\n".join(_records(first, count)) + "\n")
        ingest_quietly("items", str(folder), *_where(root))
    return root


@pytest.fixture(scope="module")
def exports(lake: Path) -> dict[str, dict[str, Any]]:
    """The same old version twice into two folders, once with another seed, and the latest."""
    same = ["--shards", str(SHARDS), "--split", SPLIT, "--version", "1", "--row-group-rows", "16"]
    return {
        "first": _export(lake, *same, "--seed", "7", "--out", str(lake / "out" / "first")),
        "again": _export(lake, *same, "--seed", "7", "--out", str(lake / "out" / "again")),
        "reseeded": _export(lake, *same, "--seed", "8", "--out", str(lake / "out" / "reseeded")),
        "latest": _export(lake, "--shards", str(SHARDS), "--split", SPLIT, "--seed", "7"),
    }


def _manifest(summary: dict[str, Any]) -> Manifest:
    return Manifest.from_json(arrowfs.read_bytes(summary["manifest"]))


def _shards(summary: dict[str, Any]) -> Iterator[tuple[str, int, Path, pa.Table]]:
    """(split, shard number, path, rows) of every shard of a local export."""
    folder = Path(arrowfs.filesystem(summary["out"])[1])
    for split in _manifest(summary).splits:
        for number, shard in enumerate(split.shards):
            yield split.name, number, folder / shard.path, pq.read_table(folder / shard.path)


def _hashes(summary: dict[str, Any], split: str) -> list[list[bytes]]:
    """Content hashes of each shard of a split, in file order."""
    return [
        table.column("_content_hash").to_pylist()
        for name, _, _, table in _shards(summary)
        if name == split
    ]


def _table_hashes(spark: SparkSession, lake: Path, version: int) -> Counter[bytes]:
    table = (
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(str(lake / "lake" / "tables" / "items"))
    )
    return Counter(bytes(row[0]) for row in table.select("_content_hash").collect())


def _order_key(seed: int, content_hash: bytes) -> int:
    """Spark's ``xxhash64(seed, hash)``: XXH64 of the long from seed 42, then of the bytes."""
    inner = xxhash.xxh64_intdigest(struct.pack("<q", seed), seed=42)
    key = xxhash.xxh64_intdigest(content_hash, seed=inner)
    return key - 2**64 if key >= 2**63 else key


# --- what the manifest says --------------------------------------------------------------------


def test_an_older_version_is_exported_whole_while_a_newer_exists(
    spark: SparkSession, lake: Path, exports: dict[str, dict[str, Any]]
) -> None:
    summary = exports["first"]
    manifest = _manifest(summary)
    assert summary["table_version"] == manifest.table_version == 1
    assert summary["rows"] == manifest.rows == sum(_table_hashes(spark, lake, 1).values()) == 240
    assert exports["latest"]["table_version"] == 2
    assert exports["latest"]["rows"] == 360
    assert summary["shards"] == SHARDS
    assert summary["splits"] == {s.name: s.rows for s in manifest.splits}

    exported: Counter[bytes] = Counter()
    for split in manifest.splits:
        assert split.rows == sum(shard.rows for shard in split.shards)
        sizes = [shard.rows for shard in split.shards]
        assert len(sizes) == SHARDS
        assert max(sizes) - min(sizes) <= 1, sizes
        for hashes in _hashes(summary, split.name):
            exported.update(hashes)
    # Every row of version 1 exactly once, and nothing else.
    assert exported == _table_hashes(spark, lake, 1)


def test_files_match_the_manifest_byte_for_byte(exports: dict[str, dict[str, Any]]) -> None:
    summary = exports["first"]
    fs, folder = arrowfs.filesystem(summary["out"])
    for split in _manifest(summary).splits:
        for shard in split.shards:
            assert describe_file(fs, f"{folder}/{shard.path}", shard.path) == shard
            assert set(shard.row_groups[:-1]) <= {16}, shard.row_groups
    columns = [entry["name"] for entry in _manifest(summary).schema]
    assert columns == ["id", "day", "name", "score", "_content_hash"]
    for _, _, path, table in _shards(summary):
        assert table.column_names == columns, path
        assert table.schema.field("_content_hash").type == pa.binary()
        nullable = [entry["nullable"] for entry in _manifest(summary).schema]
        assert [field.nullable for field in table.schema] == nullable == [True] * 4 + [False]
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


def test_a_re_export_gives_the_same_bytes(exports: dict[str, dict[str, Any]]) -> None:
    first, again = exports["first"], exports["again"]
    first_manifest = arrowfs.read_bytes(first["manifest"])
    assert first_manifest == arrowfs.read_bytes(again["manifest"])
    pairs = zip(_shards(first), _shards(again), strict=True)
    for (_, _, one, _), (_, _, other, _) in pairs:
        assert one.read_bytes() == other.read_bytes(), one


def test_a_rerun_into_the_same_folder_is_done_again_identically(
    lake: Path, exports: dict[str, dict[str, Any]]
) -> None:
    first = exports["first"]
    before = {path: path.read_bytes() for _, _, path, _ in _shards(first)}
    manifest = arrowfs.read_bytes(first["manifest"])
    args = ["--shards", str(SHARDS), "--split", SPLIT, "--version", "1", "--seed", "7"]
    _export(lake, *args, "--row-group-rows", "16", "--out", str(lake / "out" / "first"))
    assert arrowfs.read_bytes(first["manifest"]) == manifest
    assert {path: path.read_bytes() for path in before} == before


# --- splits, order and fairness ----------------------------------------------------------------


def test_each_row_is_in_the_split_its_content_hash_names(
    exports: dict[str, dict[str, Any]],
) -> None:
    for summary in exports.values():
        manifest = _manifest(summary)
        bounds = split_bounds(tuple((s.name, s.fraction) for s in manifest.splits))
        for index, split in enumerate(manifest.splits):
            for hashes in _hashes(summary, split.name):
                assert all(split_of(h, bounds) == index for h in hashes), split.name
        train = {h for hashes in _hashes(summary, "train") for h in hashes}
        val = {h for hashes in _hashes(summary, "val") for h in hashes}
        assert train
        assert val
        assert not train & val


def test_a_record_keeps_its_split_as_the_table_grows_and_the_seed_changes(
    exports: dict[str, dict[str, Any]],
) -> None:
    def split_of_each(summary: dict[str, Any]) -> dict[bytes, str]:
        return {
            h: name
            for name in ("train", "val")
            for hashes in _hashes(summary, name)
            for h in hashes
        }

    old, new = split_of_each(exports["first"]), split_of_each(exports["latest"])
    assert len(new) > len(old)
    assert {h: new[h] for h in old} == old
    assert split_of_each(exports["reseeded"]) == old


def test_shards_are_the_split_in_seeded_order_dealt_round_robin(
    exports: dict[str, dict[str, Any]],
) -> None:
    for name in ("first", "reseeded", "latest"):
        summary = exports[name]
        seed = _manifest(summary).seed
        for split in ("train", "val"):
            shards = _hashes(summary, split)
            ordered = sorted(
                (h for hashes in shards for h in hashes), key=lambda h: (_order_key(seed, h), h)
            )
            # Rank r is at position r // N of shard r % N.
            assert shards == [ordered[i :: len(shards)] for i in range(len(shards))], name


def test_the_seed_changes_the_order_and_the_shards(exports: dict[str, dict[str, Any]]) -> None:
    seven, eight = _hashes(exports["first"], "train"), _hashes(exports["reseeded"], "train")
    assert [set(s) for s in seven] != [set(s) for s in eight]
    assert sorted(h for s in seven for h in s) == sorted(h for s in eight for h in s)


def test_every_shard_is_a_sample_of_every_partition(exports: dict[str, dict[str, Any]]) -> None:
    for split, number, _, table in _shards(exports["latest"]):
        days = Counter(str(day) for day in table.column("day").to_pylist())
        assert set(days) == set(DAYS), (split, number, days)


def test_the_loader_reads_every_exported_row_once(exports: dict[str, dict[str, Any]]) -> None:
    summary = exports["first"]
    for split in ("train", "val"):
        loader = ShardLoader(summary["manifest"], batch_size=1, rank=0, world_size=1, split=split)
        read = Counter(bytes(batch["_content_hash"][0]) for batch in loader)
        assert read == Counter(h for hashes in _hashes(summary, split) for h in hashes)


# --- options -----------------------------------------------------------------------------------


def test_columns_and_where_choose_what_is_exported(
    spark: SparkSession, lake: Path, tmp_path: Path
) -> None:
    summary = _export(
        lake,
        *(
            "--shards",
            "2",
            "--columns",
            "name,id",
            "--where",
            "score > 0.5 AND day <> '2024-03-01'",
        ),
        *("--out", str(tmp_path / "some")),
    )
    table = spark.read.format("delta").load(str(lake / "lake" / "tables" / "items"))
    wanted = table.filter((F.col("score") > 0.5) & (F.col("day") != "2024-03-01"))
    assert 0 < summary["rows"] == wanted.count() < 360
    assert summary["splits"] == {"train": summary["rows"]}
    manifest = _manifest(summary)
    assert manifest.columns == ("name", "id", "_content_hash")
    assert manifest.where == "score > 0.5 AND day <> '2024-03-01'"
    exported: Counter[bytes] = Counter()
    for _, _, _, shard in _shards(summary):
        assert shard.column_names == ["name", "id", "_content_hash"]
        exported.update(shard.column("_content_hash").to_pylist())
    expected = Counter(bytes(row[0]) for row in wanted.select("_content_hash").collect())
    assert exported == expected


def test_version_zero_has_no_rows_and_every_shard_file(lake: Path, tmp_path: Path) -> None:
    summary = _export(
        lake, "--shards", "2", "--split", SPLIT, "--version", "0", "--out", str(tmp_path / "v0")
    )
    assert summary["rows"] == 0
    shards = list(_shards(summary))
    assert len(shards) == 4
    assert all(table.num_rows == 0 for *_, table in shards)
    assert shards[0][3].column_names == ["id", "day", "name", "score", "_content_hash"]


def test_the_default_folder_and_the_spark_submit_job(
    lake: Path, exports: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    latest = exports["latest"]
    assert latest["out"] == (lake / "lake" / "exports" / "items" / "v2").as_uri()
    assert latest["manifest"] == f"{latest['out']}/{MANIFEST}"
    capsys.readouterr()
    args = ["items", "--shards", str(SHARDS), "--split", SPLIT, "--seed", "7", *_where(lake)]
    assert export_job.main(args) == 0
    out, err = capsys.readouterr()
    assert "exported table version 2" in out
    assert latest["manifest"] in out
    assert "lakeshard: pinned items v2 (360 rows)" in err


@pytest.mark.parametrize(
    ("args", "code", "names"),
    [
        (["--shards", "2", "--version", "9"], EXIT_USAGE, ["--version 9", "0 to 2"]),
        (["--shards", "2", "--columns", "name,colour"], EXIT_USAGE, ["colour", "score"]),
        (["--shards", "2", "--where", "colour = 'red'"], EXIT_USAGE, ["--where", "colour"]),
        (["--shards", "2", "--where", "score +"], EXIT_USAGE, ["--where", "PARSE_SYNTAX_ERROR"]),
        (["--shards", "2", "--where", "score"], EXIT_USAGE, ["--where", "not a boolean"]),
        (["--shards", "2", "--where", "rand() < 0.5"], EXIT_USAGE, ["deterministic"]),
        (["--shards", "2", "--where", "EXISTS (SELECT 1)"], EXIT_USAGE, ["deterministic"]),
        (["--shards", "2", "--split", "train=0.9,val=0.2"], EXIT_USAGE, ["--split", "sum"]),
        (["--shards", "2", "--split", "train"], EXIT_USAGE, ["--split", "NAME=FRACTION"]),
        (["--shards", "0"], EXIT_USAGE, ["--shards"]),
        (["--version", "1"], EXIT_USAGE, ["--shards"]),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    lake: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int, names: list[str]
) -> None:
    capsys.readouterr()
    assert cli.main(["export", "items", *args, *_where(lake)]) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("lakeshard: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0]


def test_a_folder_holding_another_export_is_refused(
    lake: Path, exports: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = str(lake / "out" / "first")
    manifest = arrowfs.read_bytes(exports["first"]["manifest"])
    same = ["--shards", str(SHARDS), "--split", SPLIT, "--version", "1", "--out", folder]
    for args, named in [
        ([*same, "--seed", "9", "--row-group-rows", "16"], "--seed"),
        (
            ["--shards", "4", "--split", SPLIT, "--version", "1", "--seed", "7", "--out", folder],
            "--shards",
        ),
        ([*same, "--seed", "7", "--row-group-rows", "32"], "--row-group-rows"),
    ]:
        capsys.readouterr()
        assert cli.main(["export", "items", *args, *_where(lake)]) == EXIT_POLICY
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error: "), err
        assert named in err, err
        assert "another --out" in err, err
    assert arrowfs.read_bytes(exports["first"]["manifest"]) == manifest


# --- the parts, without an export --------------------------------------------------------------


def test_the_split_expression_agrees_with_split_of_at_every_bound(spark: SparkSession) -> None:
    bounds = split_bounds(parse_split("a=0.5,b=0.25,c=0.125,d=0.125"))
    keys = {0, 1, 2**63 - 1, 2**63, 2**64 - 1}
    keys |= {bound + step for bound in bounds[:-1] for step in (-1, 0, 1)}
    hashes = [key.to_bytes(8, "big") + bytes(range(8)) for key in sorted(keys)]
    frame = spark.createDataFrame([(h,) for h in hashes], "_content_hash binary")
    got = [row[0] for row in frame.select(ranking.split_index(bounds)).collect()]
    assert got == [split_of(h, bounds) for h in hashes]
    assert set(got) == {0, 1, 2, 3}


def test_each_shard_gets_a_partition_of_its_own(spark: SparkSession) -> None:
    partitions = 24
    keys = shard_writing.direct_keys(spark, partitions)
    targets = (
        spark.range(partitions)
        .select(F.col("id").cast("int").alias("__target_of"))
        .join(keys, on="__target_of", how="left")
        .repartition(partitions, "__target")
        .select("__target_of", F.spark_partition_id().alias("partition"))
        .collect()
    )
    assert sorted((row[0], row[1]) for row in targets) == [(g, g) for g in range(partitions)]


def test_shard_sizes_row_groups_and_ranges() -> None:
    assert [ranking.shard_rows(10, 4, i) for i in range(4)] == [3, 3, 2, 2]
    assert [ranking.shard_rows(2, 4, i) for i in range(4)] == [1, 1, 0, 0]
    assert shard_writing.planned_groups(10, 4) == (4, 4, 2)
    assert shard_writing.planned_groups(8, 4) == (4, 4)
    assert shard_writing.planned_groups(0, 4) == ()
    # Ranges: at least two (Java ignores a shift by 64), about a million rows each.
    assert [ranking.range_bits(n) for n in (0, 10, 2_000_000, 2_000_001, 10**9)] == [1, 1, 1, 2, 10]
    stats = ranking.TableStats
    assert ranking.row_group_rows(stats(rows=0, bytes=0)) == ranking.MAX_GROUP_ROWS
    assert ranking.row_group_rows(stats(rows=1000, bytes=10**9)) == ranking.MIN_GROUP_ROWS
    assert ranking.row_group_rows(stats(rows=10**6, bytes=100 * 10**6)) == 82_944  # 100 B a row
    assert ranking.range_offsets({(0, 1): 5, (0, -1): 3, (1, 0): 4}) == {
        (0, -1): 0,
        (0, 1): 3,
        (1, 0): 0,
    }


# --- S3 ----------------------------------------------------------------------------------------


@pytest.mark.s3
def test_an_export_to_s3_reads_back_through_the_object_store(
    spark: SparkSession, s3: dict[str, str], tmp_path: Path
) -> None:
    declare(tmp_path / "schemas", "items", "json", COLUMNS, extra="partition_by: [day]\n")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "items.jsonl").write_text("\n".join(_records(0, 50)) + "\n")
    where = ["--lake", f"s3a://lake/{s3['prefix']}", "--schemas", str(tmp_path / "schemas")]
    ingest_quietly("items", str(tmp_path / "raw"), *where)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["export", "items", "--shards", "2", "--split", SPLIT, *where, "--json"])
    assert code == 0
    summary = last_json_line(out.getvalue())
    assert summary["manifest"] == f"s3a://lake/{s3['prefix']}/exports/items/v1/{MANIFEST}"
    assert s3["AWS_SECRET_ACCESS_KEY"] not in out.getvalue()

    manifest = Manifest.from_json(arrowfs.read_bytes(summary["manifest"]))
    fs, folder = arrowfs.filesystem(summary["out"])
    hashes: list[bytes] = []
    for split in manifest.splits:
        for shard in split.shards:
            assert describe_file(fs, f"{folder}/{shard.path}", shard.path) == shard
            with fs.open_input_file(f"{folder}/{shard.path}") as handle:
                hashes += pq.read_table(handle).column("_content_hash").to_pylist()
    assert manifest.rows == len(hashes) == len(set(hashes)) == 50
