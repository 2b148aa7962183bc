"""A damaged lake gets a clear answer from every command, never a silent wrong result.

One lake is ingested (three runs, a checkpoint in the table's log), then each test damages a
copy of it one way and runs one command on it: exit 1, one ``error:`` line naming the damaged
object and what to do.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from pipelines import cli, sample
from pipelines.errors import EXIT_FAILURE
from tests.conftest import SCHEMAS
from tests.helpers import ingest_quietly

pytestmark = [pytest.mark.jvm, pytest.mark.unverified]  # damaged on purpose


@pytest.fixture(scope="module")
def whole_lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("damaged")
    lake = base / "lake"
    where = ["--lake", str(lake), "--schemas", str(SCHEMAS)]
    for run in range(3):
        raw = base / f"raw{run}"
        sample.write_events(raw, seed=40 + run, files=1, rows=30)
        ingest_quietly("events", str(raw), *where)
        if run == 0:  # a checkpoint at every second commit from here on
            table = lake / "tables" / "events"
            spark.sql(
                f"ALTER TABLE delta.`{table}` SET TBLPROPERTIES ('delta.checkpointInterval' = '2')"
            )
    assert list((lake / "tables" / "events" / "_delta_log").glob("*.checkpoint.parquet"))
    return lake


def _damage(lake: Path, kind: str) -> str:
    """Damage the lake; return what the error line must name."""
    table = lake / "tables" / "events"
    log = table / "_delta_log"
    if kind == "truncated commit":
        newest = sorted(log.glob("*[0-9].json"))[-1]
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
        return f"{newest.name} line"
    if kind == "deleted data file":
        victim = sorted(table.glob("event_date=*/*.parquet"))[0]
        victim.unlink()
        return str(victim.relative_to(table))
    if kind == "corrupt checkpoint":
        checkpoint = sorted(log.glob("*.checkpoint.parquet"))[-1]
        checkpoint.write_bytes(b"PAR1" + b"\0" * 64)
        return checkpoint.name
    if kind == "missing ledger":
        shutil.rmtree(lake / "_lakeshard" / "ledger" / "events")
        return "the file ledger of events is missing"
    assert kind == "missing run log"
    shutil.rmtree(lake / "_lakeshard" / "runs" / "events")
    return "the run log of events is missing"


def _command(name: str, lake: Path, tmp_path: Path) -> list[str]:
    where = ["--lake", str(lake), "--schemas", str(SCHEMAS)]
    return {
        "ingest": ["ingest", "events", str(tmp_path / "new"), *where],
        "verify": ["verify", "events", "--full", *where],
        "export": ["export", "events", "--shards", "2", "--out", str(tmp_path / "out"), *where],
        "status": ["status", "events", *where],
    }[name]


@pytest.mark.parametrize("command", ["ingest", "verify", "export", "status"])
@pytest.mark.parametrize(
    "kind",
    [
        "truncated commit",
        "deleted data file",
        "corrupt checkpoint",
        "missing ledger",
        "missing run log",
    ],
)
def test_each_command_names_the_damaged_object(
    whole_lake: Path, tmp_path: Path, kind: str, command: str
) -> None:
    lake = tmp_path / "lake"
    shutil.copytree(whole_lake, lake)
    named = _damage(lake, kind)
    sample.write_events(tmp_path / "new", seed=99, files=1, rows=10)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(_command(command, lake, tmp_path))
    lines = [line for line in err.getvalue().splitlines() if line.startswith("error: ")]
    assert code == EXIT_FAILURE, err.getvalue()[-2000:]
    assert len(lines) == 1, err.getvalue()[-2000:]
    assert named in lines[0]
    assert "restore it from a backup" in lines[0]
    assert "Traceback" not in err.getvalue()
    assert out.getvalue() == ""  # no report computed from what was left
