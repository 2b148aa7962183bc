"""``lakeshard status``: the lake's state and its runs, read without Spark or Java."""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import deltalake
import pytest
from pyspark.sql import SparkSession

from pipelines import sample
from pipelines.lake import runlog
from tests import chromium
from tests.conftest import SCHEMAS
from tests.helpers import artifacts, dead_claim, ingest_quietly, run_cli

pytestmark = pytest.mark.jvm


def status_json(lake: Path, *args: str) -> dict[str, Any]:
    """``lakeshard status --json`` as a user runs it, with no Java to be found: a status
    that tried to start a JVM would fail here."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "SPARK_HOME")}
    env["PATH"] = os.path.dirname(sys.executable)  # no java on it
    done = run_cli(
        "status", *args, "--lake", str(lake), "--schemas", str(SCHEMAS), "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def two_runs(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """A lake after two ingests of the sample events: one that writes, one with nothing new.
    Tests that change it work on a copy."""
    folder = tmp_path_factory.mktemp("status")
    sample.write_events(folder / "raw")
    lake = folder / "lake"
    args = ["events", str(folder / "raw"), "--lake", str(lake), "--schemas", str(SCHEMAS)]
    first = ingest_quietly(*args)
    second = ingest_quietly(*args)  # nothing new
    return lake, first, second


def test_status_reports_the_table_its_runs_and_the_quarantine(
    spark: SparkSession,
    two_runs: tuple[Path, dict[str, Any], dict[str, Any]],
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    shutil.copytree(two_runs[0], lake)
    first, second = two_runs[1:]

    report = status_json(lake, "events")
    (events,) = report["datasets"]
    table = deltalake.DeltaTable(str(lake / "tables/events"))
    assert events["table_version"] == table.version() == first["table_version"]
    assert events["rows"] == table.to_pyarrow_table().num_rows == first["rows_written"]
    assert events["files"] == len(table.file_uris())
    assert events["bytes"] == sum(os.path.getsize(p) for p in table.file_uris())
    assert events["schema_version"] == 1
    assert events["lease"] is None
    assert events["findings"] == []
    assert events["spark_free_readable"] is True

    assert [r["run_id"] for r in events["runs"]] == [second["run_id"], first["run_id"]]
    newest, oldest = events["runs"]
    for key in ("rows_read", "rows_written", "rows_duplicate", "rows_quarantined"):
        assert oldest[key] == first[key], key
        assert newest[key] == second[key], key
    assert oldest["status"] == newest["status"] == "succeeded"
    assert oldest["duration_s"] > 0

    backlog = events["quarantine_backlog"]
    assert backlog["rows"] == first["rows_quarantined"] == sum(backlog["reasons"].values())
    assert any("cannot read 'oops' as bigint" in reason for reason in backlog["reasons"])

    # A run whose driver died: its claim and its "running" record are left behind.
    dead = dead_claim(lake / "_lakeshard/leases/events")
    runlog.record_run(
        spark,
        str(lake / "_lakeshard/runs/events"),
        {
            "run_id": dead["run_id"],
            "command": "ingest",
            "dataset": "events",
            "status": "running",
            "started_at": datetime.now(UTC),
            "lakeshard_version": "test",
        },
    )
    names = [d["dataset"] for d in status_json(lake)["datasets"]]  # every declared dataset
    assert names == ["clicks", "events"]
    events = status_json(lake, "events")["datasets"][0]
    assert events["lease"]["run_id"] == dead["run_id"]
    assert events["lease"]["alive"] is False
    assert events["runs"][0]["run_id"] == dead["run_id"]
    assert events["runs"][0]["status"] == "running"
    (finding,) = events["findings"]
    assert finding["kind"] == "abandoned"
    assert finding["runs"] == [dead["run_id"]]


def test_status_of_a_lake_never_written_is_an_ordinary_success(tmp_path: Path) -> None:
    report = status_json(tmp_path / "lake", "--html", str(tmp_path / "status.html"))
    page = (tmp_path / "status.html").read_text()
    assert page.count("Nothing ingested yet.") == 2
    assert [d["dataset"] for d in report["datasets"]] == ["clicks", "events"]
    for dataset in report["datasets"]:
        assert dataset["table_version"] is None
        assert dataset["runs"] == []
        assert dataset["quarantine_backlog"] == {"rows": 0, "reasons": {}}


def test_the_status_page_draws_its_charts_in_a_real_browser(
    two_runs: tuple[Path, dict[str, Any], dict[str, Any]], tmp_path: Path
) -> None:
    binary = chromium.find_binary()
    if binary is None:
        pytest.skip(chromium.MISSING)
    lake, first, _ = two_runs
    page = tmp_path / "status.html"
    status_json(lake, "--html", str(page))

    with chromium.Chromium(binary, tmp_path / "profile", tmp_path / "chromium.log") as browser:
        seen = browser.load(page.as_uri())
        charts = browser.evaluate(CHARTS_ON_THE_PAGE)
        shot = artifacts() / "status-page.png"
        browser.screenshot(shot)

    assert seen.errors == []
    assert seen.requests == [page.as_uri()]  # self-contained: nothing else was fetched
    (events,) = charts
    assert events["dataset"] == "events"
    drawn = {c["title"]: c for c in events["charts"]}
    assert set(drawn) == {
        "Rows per run",
        "Run duration",
        "File sizes per partition",
        "Quarantine waiting for replay",
    }
    for chart in drawn.values():
        assert chart["width"] > 500, chart
        assert chart["height"] > 50, chart
    # One bar per outcome of the first run (the second wrote, skipped and quarantined nothing),
    # one per run's duration, one per partition, one per quarantine reason.
    outcomes = [first[k] for k in ("rows_written", "rows_duplicate", "rows_quarantined")]
    assert drawn["Rows per run"]["bars"] == sum(1 for n in outcomes if n)
    assert drawn["Run duration"]["bars"] == 2
    table = deltalake.DeltaTable(str(lake / "tables/events"))
    assert drawn["File sizes per partition"]["bars"] == len(table.partitions())
    assert drawn["Quarantine waiting for replay"]["bars"] == len(
        status_json(lake, "events")["datasets"][0]["quarantine_backlog"]["reasons"]
    )
    assert shot.stat().st_size > 20_000  # a page with charts, not a blank one


def test_the_browser_check_sees_errors_and_requests_that_leave_the_page(tmp_path: Path) -> None:
    """The checks above can fail: a console error, an exception and a fetch are all caught."""
    binary = chromium.find_binary()
    if binary is None:
        pytest.skip(chromium.MISSING)
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><body><img src='http://127.0.0.1:9/x.png'>"
        "<script>console.error('drawn wrong'); undefinedFunction();</script></body></html>"
    )
    with chromium.Chromium(binary, tmp_path / "profile", tmp_path / "chromium.log") as browser:
        seen = browser.load(page.as_uri())
    assert any("drawn wrong" in e for e in seen.errors), seen.errors
    assert any("undefinedFunction" in e or "Uncaught" in e for e in seen.errors), seen.errors
    assert "http://127.0.0.1:9/x.png" in seen.requests


def test_a_status_page_that_cannot_be_written_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("status", "--lake", str(tmp_path / "lake"), "--html", "/no/such/dir/s.html")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: --html /no/such/dir/s.html: /no/such/dir is not a folder this user can write to"
    )


# Per dataset section: each chart's heading, its size on screen, and how many bars it drew.
CHARTS_ON_THE_PAGE = """
Array.from(document.querySelectorAll('section')).filter(s => s.querySelector('svg')).map(s => ({
  dataset: s.querySelector('h2').textContent,
  charts: Array.from(s.querySelectorAll('svg.chart')).map(svg => {
    const box = svg.getBoundingClientRect();
    const title = svg.previousElementSibling.textContent.split(':')[0].replace(/ \\(.*/, '');
    return {title, width: box.width, height: box.height,
            bars: Array.from(svg.querySelectorAll('rect.bar'))
                       .filter(r => r.getBoundingClientRect().height > 0).length};
  }),
}))
"""


def test_monitor_of_a_lake_never_written_is_an_ordinary_success(tmp_path: Path) -> None:
    done = run_cli("monitor", "--lake", str(tmp_path / "lake"), "--schemas", str(SCHEMAS), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["findings"] == []
    assert report["alerting"] == 0
