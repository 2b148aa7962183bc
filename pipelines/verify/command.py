"""``lakeshard verify``: is a dataset's table what its runs say it is?

Three checks on one pinned table version, each reported with numbers and a few examples:

* **unique**: no ``_content_hash`` appears twice (one aggregation over the hash column).
* **hashes**: each stored hash is the content hash of the row as it reads now
  (:func:`pipelines.ingest.hashing.content_hashes`, in an Arrow function on the executors), on a
  random sample or every row. A row is hashed under the names and types of the schema version
  it was written with (the run's data commit carries ``schema_version``; the run log too): a
  column renamed since is hashed under its old name, a date widened to a timestamp since is
  hashed as the date it was. Rows whose version had a column that has been dropped since (or a
  type changed in a way that alters its encoding) cannot be recomputed: they are counted as
  such, not as mismatches.
* **accounting**: every finished run in the run log satisfies ``rows_read = rows_written +
  rows_duplicate + rows_quarantined + rows_dropped``, and the rows the runs wrote, less those
  they updated in place (``details.rows_updated``), are the table's rows.

The run log is read before the table version is pinned, so every run it shows finished has its
commit in that version; rows committed by runs it does not show finished (still running, or
started since) are taken from their data commits, so a verify next to a live ingest agrees.

A dataset never ingested has no table yet: that is the empty case, checked as an empty table
(``table_version`` null, a ``message`` saying so), and fails only if the run log says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.columns import CONTENT_HASH, SOURCE_FILE, col
from pipelines.config import Config
from pipelines.lake import delta, runlog
from pipelines.lake.commits import Commit
from pipelines.runs.progress import progress
from pipelines.runs.summary import ROW_COUNTS
from pipelines.schema.datasets import Dataset
from pipelines.schema.tables import table_schema
from pipelines.verify.accounting import check_accounting
from pipelines.verify.hashes import check_hashes, run_versions
from pipelines.verify.options import EXAMPLES, VerifyOptions

RUN_COLUMNS = ("run_id", "command", "status", "ended_at", "schema_version", *ROW_COUNTS, "details")
NOTHING_INGESTED = "nothing has been ingested yet"
# --- the command -------------------------------------------------------------------------------


def verify(
    spark: SparkSession, settings: Config, dataset: Dataset, options: VerifyOptions
) -> dict[str, Any]:
    """Check the dataset's table; the report's ``ok`` is False on any violation.

    A dataset never ingested has no table: it is checked as an empty one (``table_version``
    None), so it passes unless its run log says rows were written."""
    uri = settings.table_uri(dataset.name)
    runs = runlog.latest_records(
        runlog.read_runs(spark, settings.runs_uri(dataset.name), RUN_COLUMNS)
    )
    version = delta.current_version(uri)
    commits: list[Commit] = []
    if version is None:
        table = spark.createDataFrame([], table_schema(dataset))
    else:
        table = delta.read_table(spark, uri, version)
        commits = delta.run_commits(spark, uri, up_to=version)
    rows = int(table.count())
    where = f"at table version {version}" if version is not None else f"(no table at {uri})"
    progress(f"verifying {dataset.name} {where}: {rows:,} rows")

    progress("checking that content hashes are unique")
    unique = check_unique(table)
    sample = "every row" if options.full else f"a sample of {options.sample:,} rows"
    progress(f"recomputing content hashes of {sample}")
    hashes = check_hashes(spark, table, dataset, rows, options, run_versions(commits, runs))
    progress("checking the run log's accounting")
    accounting = check_accounting(runs, commits, rows)
    checks = {"unique": unique, "hashes": hashes, "accounting": accounting}
    report: dict[str, Any] = {
        "dataset": dataset.name,
        "table": uri,
        "table_version": version,
        "rows": rows,
        "checks": checks,
        "ok": all(check["ok"] for check in checks.values()),
    }
    if version is None:
        report["message"] = (
            NOTHING_INGESTED
            if report["ok"]
            else f"no table at {uri}, although the run log records rows written to it"
        )
    return report


def problems(report: Mapping[str, Any]) -> list[str]:
    """One short description per failed check, for the one-line error."""
    checks = report["checks"]
    found: list[str] = []
    unique = checks["unique"]
    if not unique["ok"]:
        first = unique["examples"][0] if unique["examples"] else None
        where = f" (e.g. {first['hash']} in {', '.join(first['source_files'])})" if first else ""
        found.append(
            f"{unique['duplicates']:,} content hash(es) appear more than once, "
            f"{unique['extra_rows']:,} extra row(s){where}"
        )
    hashes = checks["hashes"]
    if not hashes["ok"]:
        first = hashes["examples"][0] if hashes["examples"] else None
        where = (
            f" (e.g. {first['hash']} in {first['source_file']}, run {first['run_id']})"
            if first
            else ""
        )
        found.append(
            f"{hashes['mismatches']:,} of {hashes['checked']:,} recomputed content hash(es) "
            f"differ from the stored ones{where}"
        )
    accounting = checks["accounting"]
    if accounting["bad_runs"]:
        first = accounting["bad_runs"][0]
        found.append(
            f"{len(accounting['bad_runs'])} run(s) break rows_read = rows_written + "
            f"rows_duplicate + rows_quarantined + rows_dropped (e.g. run {first['run_id']}: "
            f"{first['rows_read']} != {first['accounted']})"
        )
    if accounting["table_rows"] != accounting["expected_rows"]:
        found.append(
            f"the table has {accounting['table_rows']:,} rows but the run log accounts for "
            f"{accounting['expected_rows']:,} (written {accounting['sum_written']:,} - updated "
            f"{accounting['sum_updated']:,} + uncommitted runs' {accounting['unrecorded']:,})"
        )
    return found


def print_report(report: Mapping[str, Any]) -> None:
    checks = report["checks"]
    state = "OK" if report["ok"] else "FAILED"
    if report["table_version"] is None and report["ok"]:
        print(f"{report['dataset']}: {state} — {report['message']} (no table at {report['table']})")
        return
    print(
        f"{report['dataset']}: {state} — {report['rows']:,} rows at table version "
        f"{report['table_version']} ({report['table']})"
    )
    unique = checks["unique"]
    print(f"  unique hashes: {_mark(unique)} ({unique['duplicates']:,} repeated)")
    hashes = checks["hashes"]
    skipped = hashes["not_recomputable"]
    skipped_text = f", {skipped:,} not recomputable" if skipped else ""
    print(
        f"  content hashes: {_mark(hashes)} ({hashes['checked']:,} recomputed, "
        f"{hashes['mismatches']:,} mismatched{skipped_text})"
    )
    accounting = checks["accounting"]
    print(
        f"  accounting: {_mark(accounting)} ({accounting['runs']} run(s), "
        f"{len(accounting['bad_runs'])} unbalanced; written {accounting['sum_written']:,} - "
        f"updated {accounting['sum_updated']:,} + unrecorded {accounting['unrecorded']:,} = "
        f"{accounting['expected_rows']:,} vs {accounting['table_rows']:,} rows)"
    )
    for problem in problems(report):
        print(f"  problem: {problem}")


def _mark(check: Mapping[str, Any]) -> str:
    return "ok" if check["ok"] else "FAILED"


# --- unique hashes -----------------------------------------------------------------------------


def repeated_hashes(table: DataFrame) -> DataFrame:
    """Each content hash stored more than once, with its number of rows (``_copies``)."""
    copies = table.groupBy(CONTENT_HASH).agg(F.count(F.lit(1)).alias("_copies"))
    return copies.filter(col("_copies") > 1)


def check_unique(table: DataFrame) -> dict[str, Any]:
    repeated = repeated_hashes(table)
    totals = repeated.agg(
        F.count(F.lit(1)).alias("hashes"),
        F.coalesce(F.sum(col("_copies") - 1), F.lit(0)).alias("extra"),
    ).collect()[0]
    examples: list[dict[str, Any]] = []
    if totals["hashes"]:
        first = repeated.orderBy(col("_copies").desc(), CONTENT_HASH).limit(EXAMPLES).collect()
        wanted = [bytes(row[CONTENT_HASH]) for row in first]
        located = (
            table.select(CONTENT_HASH, SOURCE_FILE)
            .filter(col(CONTENT_HASH).isin(wanted))
            .groupBy(CONTENT_HASH)
            .agg(F.sort_array(F.collect_set(SOURCE_FILE)).alias("files"))
            .collect()
        )
        files = {bytes(row[CONTENT_HASH]): list(row["files"]) for row in located}
        examples = [
            {
                "hash": bytes(row[CONTENT_HASH]).hex(),
                "copies": int(row["_copies"]),
                "source_files": files.get(bytes(row[CONTENT_HASH]), []),
            }
            for row in first
        ]
    return {
        "ok": totals["hashes"] == 0,
        "duplicates": int(totals["hashes"]),
        "extra_rows": int(totals["extra"]),
        "examples": examples,
    }


# --- recomputed hashes -------------------------------------------------------------------------


# --- accounting --------------------------------------------------------------------------------
