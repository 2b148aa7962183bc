"""The content hash's JVM implementation (``pipelines/jvm/src``, what ingest runs) against the
Python one and python-xxhash: XXH3-128 at every length class, and a table written by the Python
engine read back as duplicates by the JVM one. The byte-for-byte property tests over every type
are in test_hash_properties.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import xxhash
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines import cli
from pipelines.ingest.validate import content_hash_column
from pipelines.storage.listing import session_settings
from tests.helpers import accounting_holds, ingest_quietly, last_json_line


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "little")


def test_xxh3_128_matches_python_xxhash_at_every_input_length(spark: SparkSession) -> None:
    """XXH3 takes another path at 0-16, 17-128, 129-240 and over 240 bytes, and per stripe
    (1,024 bytes) and block beyond: one-string records of 0..1,200 bytes (9..1,209 encoded) and
    the empty record (5 bytes) cover them all."""
    texts = ["é" * (n // 2) + "x" * (n % 2) for n in range(0, 1201)]
    frame = spark.createDataFrame([(t,) for t in texts], "s string")
    got = frame.select("s", content_hash_column(F.struct("s"), "jvm").alias("h")).collect()
    for row in got:
        raw = row["s"].encode("utf-8")
        encoded = b"(" + _u32(1) + b"S" + _u32(1) + b"s" + b"S" + _u32(len(raw)) + raw
        assert bytes(row["h"]) == xxhash.xxh3_128_digest(encoded), f"{len(encoded)} bytes"
    no_fields = F.struct(F.lit(None).cast("int").alias("n"))
    empty = spark.range(1).select(content_hash_column(no_fields, "jvm"))
    assert bytes(empty.first()[0]) == xxhash.xxh3_128_digest(b"(" + _u32(0))


V1 = """columns:
  - {name: id, type: long, nullable: false}
  - {name: name, type: string}
  - {name: price, type: "decimal(12,4)"}
  - {name: ratio, type: double}
  - {name: day, type: date}
  - {name: at, type: timestamp}
  - {name: tags, type: array<string>}
  - {name: attrs, type: "map<string,int>"}
  - {name: ctx, type: "struct<zone:string,n:smallint>"}
"""


def _record(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": None if i % 5 == 0 else f"naïve {i} \u202e",
        "price": f"{i}.{i % 7}0",
        "ratio": [0.5, -0.0, 1e300, None][i % 4],
        "day": f"2024-0{1 + i % 9}-1{i % 10}",
        "at": f"2024-03-1{i % 10}T1{i % 10}:00:00.{i:06d}+02:00",
        "tags": [f"t{i}", None, ""][: i % 4],
        "attrs": {f"k{j}": (None if j == 1 else j) for j in range(i % 3 + 1)},
        "ctx": None if i % 6 == 0 else {"zone": "é" * (i % 3), "n": i - 20},
    }


def _ingest(root: Path, name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    folder = root / "raw" / name
    folder.mkdir(parents=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    where = ["--lake", str(root / "lake"), "--schemas", str(root / "schemas")]
    summary = ingest_quietly("items", str(folder), *where)
    assert accounting_holds(summary)
    return summary


def test_rows_the_python_engine_wrote_are_duplicates_for_the_jvm_engine(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """A table written before the JVM hash (the Arrow UDF) stays consistent after the switch."""
    folder = tmp_path / "schemas" / "items"
    folder.mkdir(parents=True)
    (folder / "dataset.yaml").write_text("format: json\n")
    (folder / "v1.yaml").write_text(V1)
    records = [_record(i) for i in range(40)]

    monkeypatch.setenv("LAKESHARD_HASH_ENGINE", "python")
    before = _ingest(tmp_path, "old", records)
    assert (before["rows_written"], before["rows_quarantined"]) == (40, 0)

    monkeypatch.setenv("LAKESHARD_HASH_ENGINE", "jvm")
    # The same records, reordered, with two new ones: a new file, so the ledger reads it.
    again = _ingest(tmp_path, "new", [_record(40), *reversed(records), _record(41)])
    assert (again["rows_duplicate"], again["rows_written"]) == (40, 2)

    # verify recomputes every hash with the other implementation (pyarrow, in an Arrow UDF).
    where = ["--lake", str(tmp_path / "lake"), "--schemas", str(tmp_path / "schemas")]
    code = cli.main(["verify", "items", "--full", *where, "--json"])
    report = last_json_line(capsys.readouterr().out)
    hashes = report["checks"]["hashes"]
    assert code == 0, report
    assert (hashes["ok"], hashes["checked"], hashes["mismatches"]) == (True, 42, 0), report


def test_inline_struct_struct_column_and_interpreted_hash_alike(spark: SparkSession) -> None:
    """The ways the JVM computes a hash: the record built inline (ingest's way; generated code
    sets each field in a reused row), in whole-stage code generation or in a projection of its
    own (its fields set in split methods), a struct column (generated code hashes the row it
    gets), and without code generation (``eval``). All agree with the Python implementation, on
    every field type; row k + 1 has field k null, after a row where it was not."""
    frame = spark.sql(
        "SELECT id, "
        "id % 2 = 0 AS b, CAST(id AS tinyint) AS y, CAST(-id AS smallint) AS s, "
        "CAST(id * 7 AS int) AS i, id * 1000003 AS l, CAST(id / 3 AS float) AS f, "
        "-id / 7 AS d, CAST(id / 8 AS decimal(9,3)) AS n, "
        "CAST(id * 1e20 AS decimal(30,2)) AS w, repeat('é', CAST(id AS int)) AS t, "
        "CAST(repeat('x', CAST(id AS int)) AS binary) AS x, date_add(DATE'2024-01-01', "
        "CAST(id AS int)) AS day, TIMESTAMP'2024-03-01 10:00:00' + make_interval(0, 0, 0, 0, "
        "0, 0, id) AS at, TIMESTAMP_NTZ'2024-03-01 10:00:00' + make_interval(0, 0, 0, id) "
        "AS ntz, array(CAST(id AS string), NULL) AS a, map('k', CAST(id AS int)) AS m, "
        "named_struct('z', 'é', 'k', CAST(id AS int)) AS r FROM range(0, 40, 1, 1)"
    )
    names = frame.columns[1:]
    nulled = frame.select(
        "id", *[F.when(F.col("id") != k + 1, F.col(c)).alias(c) for k, c in enumerate(names)]
    )
    inline = content_hash_column(F.struct(*names), "jvm")
    python = content_hash_column(F.struct(*names), "python")
    expected = {r["id"]: bytes(r["h"]) for r in nulled.select("id", python.alias("h")).collect()}
    assert len(set(expected.values())) == 40

    def hashes(frame: DataFrame, hashed: Column) -> dict[int, bytes]:
        return {r["id"]: bytes(r["h"]) for r in frame.select("id", hashed.alias("h")).collect()}

    assert "lakeshardHasher" in _generated_code(nulled.select(inline))
    assert hashes(nulled, inline) == expected
    as_column = nulled.select("id", F.struct(*names).alias("rec")).cache()
    try:
        assert hashes(as_column, content_hash_column(F.col("rec"), "jvm")) == expected
    finally:
        as_column.unpersist()
    for mode in ("CODEGEN_ONLY", "NO_CODEGEN"):
        with session_settings(
            spark, {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": mode}
        ):
            assert hashes(nulled, inline) == expected, mode


def _generated_code(frame: DataFrame) -> str:
    """The Java code Spark generates for ``frame`` (whole-stage code generation)."""
    execution = frame._jdf.queryExecution()
    debug = frame.sparkSession._jvm.org.apache.spark.sql.execution.debug.package
    return str(debug.codegenString(execution.executedPlan()))
