"""Table maintenance: compaction, a checkpoint and a safe VACUUM of a dataset's tables.

Every ingest appends a few small files to each of a dataset's four Delta tables (the table,
its quarantine, its file ledger, its run log); a table read often after many small runs pays
for each of them. ``lakeshard maintain`` (README "Maintenance"), under the dataset's lease so
that no ingest writes meanwhile, and for each table:

1. **compacts** each partition's small files into files of about ``maintenance.
   target_file_size`` (Delta's bin-packing ``OPTIMIZE``: a ``dataChange=false`` commit, so
   the rows, their content hashes and every earlier version stay as they were; a partition
   already in one file is left alone, so a second run rewrites nothing);
2. writes a **checkpoint**, so that readers (Spark, delta-rs, lakeshard's own log reader)
   replay one Parquet file instead of every JSON commit;
3. **vacuums** the files no version of the last ``maintenance.retain_hours`` reads (at least
   Delta's safety default of 168 hours unless the dataset asks otherwise by name), so time
   travel within the retention keeps working.

Nothing is recorded in the run log: it holds the runs that move rows, and maintenance moves
none (and a run log that grew with every maintenance would never be compact).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from pipelines.config import Config
from pipelines.lake import delta, deltalog
from pipelines.lake import lease as leases
from pipelines.ops.status import spark_only_features
from pipelines.runs.progress import progress, warn
from pipelines.runs.summary import new_run_id
from pipelines.schema.datasets import SAFE_RETAIN_HOURS, Dataset
from pipelines.storage.listing import session_settings


@dataclass(frozen=True)
class Files:
    """A table's live data files (what its latest version reads)."""

    count: int
    bytes: int
    partitions: int

    @classmethod
    def of(cls, spark: SparkSession, uri: str) -> Files | None:
        """None where there is no table. From the Delta log without Spark where it can be."""
        found = deltalog.data_files(uri)
        if found is not None:
            partitions = len({f.partition for f in found.files})
            return cls(len(found.files), found.bytes, partitions)
        if deltalog.latest_version(uri) is None:
            return None
        detail = DeltaTable.forPath(spark, uri).detail().first()  # e.g. column mapping
        assert detail is not None
        return cls(int(detail["numFiles"]), int(detail["sizeInBytes"]), -1)


def plan(settings: Config, dataset: Dataset, portable: bool = False) -> dict[str, Any]:
    """What :func:`maintain` would do (``--dry-run``): read from the Delta logs, no Spark."""
    report = _report(settings, dataset, True, lambda kind, uri: _planned(uri, dataset))
    if portable:
        features = spark_only_features(settings.table_uri(dataset.name))
        report["portable"] = {"features_dropped": features, "spark_free_readable": not features}
    return report


def maintain(
    spark: SparkSession,
    settings: Config,
    dataset: Dataset,
    wait_s: float,
    ttl_s: float,
    portable: bool = False,
) -> dict[str, Any]:
    """Maintain ``dataset``'s tables under its lease (exit 3 while another run holds it);
    ``portable``: first drop the table's reader features (:func:`make_portable`)."""
    run_id = "maintain-" + new_run_id()
    with leases.held(settings.lease_uri(dataset.name), run_id, ttl_s, wait_s) as held:
        dropped = make_portable(spark, settings, dataset, held.check) if portable else None

        def one(kind: str, uri: str) -> dict[str, Any]:
            held.check()
            return _maintain_table(spark, kind, uri, dataset)

        report = _report(settings, dataset, False, one)
    if dropped is not None:
        left = spark_only_features(settings.table_uri(dataset.name))
        report["portable"] = {"features_dropped": dropped, "spark_free_readable": not left}
    return report


def make_portable(
    spark: SparkSession, settings: Config, dataset: Dataset, check: Callable[[], None]
) -> list[str]:
    """Drop the reader features an ``evolution: in_place`` change switched on (column mapping,
    type widening) from the dataset's table, so that Spark-free readers read it again.

    Delta's ``DROP FEATURE`` rewrites the files that need it (physical column names, values of
    the old type) and downgrades the protocol, keeping the history (a ``checkpointProtection``
    writer feature guards it; readers need nothing). Versions from before the drop still carry
    the features: time travel to them stays Spark-only. Returns the features dropped."""
    uri = settings.table_uri(dataset.name)
    features = spark_only_features(uri)
    for feature in features:
        check()
        progress(f"maintain {dataset.name} table: dropping the reader feature {feature}")
        delta.alter(spark, uri, f"DROP FEATURE {feature}")
    if features and dataset.evolution == "in_place":
        warn(
            f"{dataset.declaration} declares evolution: in_place, so the next rename, drop "
            f"or widening switches {', '.join(features)} on again (evolution: portable "
            "rewrites the table instead)"
        )
    return features


def _report(
    settings: Config,
    dataset: Dataset,
    dry_run: bool,
    each: Callable[[str, str], dict[str, Any]],
) -> dict[str, Any]:
    started = time.monotonic()
    upkeep = dataset.maintenance
    tables = {
        kind: each(kind, uri)
        for kind, uri in (
            ("table", settings.table_uri(dataset.name)),
            ("quarantine", settings.quarantine_uri(dataset.name)),
            ("ledger", settings.ledger_uri(dataset.name)),
            ("runs", settings.runs_uri(dataset.name)),
        )
    }
    return {
        "dataset": dataset.name,
        "dry_run": dry_run,
        "target_file_bytes": upkeep.target_file_bytes,
        "retain_hours": upkeep.retain_hours,
        "tables": tables,
        "seconds": round(time.monotonic() - started, 2),
    }


def _maintain_table(spark: SparkSession, kind: str, uri: str, dataset: Dataset) -> dict[str, Any]:
    before = Files.of(spark, uri)
    if before is None:
        return _counts(None, None, 0, None, None)
    upkeep = dataset.maintenance
    version_before = deltalog.latest_version(uri)
    table = DeltaTable.forPath(spark, uri)
    progress(f"maintain {dataset.name} {kind}: compacting {before.count} file(s)")
    with session_settings(
        spark,
        {
            "spark.databricks.delta.optimize.maxFileSize": str(upkeep.target_file_bytes),
            "spark.databricks.delta.optimize.minFileSize": str(upkeep.target_file_bytes),
        },
    ):
        table.optimize().executeCompaction()
    jvm: Any = spark.sparkContext._jvm
    jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, uri).checkpoint()
    removed = _vacuum(spark, uri, upkeep.retain_hours)
    after = Files.of(spark, uri)
    version_after = deltalog.latest_version(uri)
    return _counts(before, after, removed, version_before, version_after)


def _planned(uri: str, dataset: Dataset) -> dict[str, Any]:
    """What compaction would do: per partition, its files under the target size packed into as
    few files of about the target as their bytes need (VACUUM's work is not predicted)."""
    target = dataset.maintenance.target_file_bytes
    found = deltalog.data_files(uri)
    if found is None:
        return _counts(None, None, 0, deltalog.latest_version(uri), None)
    groups: dict[tuple[tuple[str, str | None], ...], list[deltalog.DataFile]] = {}
    for file in found.files:
        groups.setdefault(file.partition, []).append(file)
    files_after = 0
    for files in groups.values():
        small = [f for f in files if f.size < target]
        packed = -(-sum(f.size for f in small) // target) if len(small) > 1 else len(small)
        files_after += len(files) - len(small) + packed
    before = Files(len(found.files), found.bytes, len(groups))
    planned = Files(files_after, found.bytes, len(groups))
    return _counts(before, planned, 0, found.version, found.version)


def _counts(
    before: Files | None,
    after: Files | None,
    removed: int,
    version_before: int | None,
    version_after: int | None,
) -> dict[str, Any]:
    return {
        "files_before": before.count if before else 0,
        "files_after": after.count if after else 0,
        "bytes_before": before.bytes if before else 0,
        "bytes_after": after.bytes if after else 0,
        "files_removed": removed,
        "partitions": before.partitions if before else 0,
        "version_before": version_before,
        "version_after": version_after,
    }


def _vacuum(spark: SparkSession, uri: str, retain_hours: int) -> int:
    """VACUUM where it would delete something; the number of files deleted. A dry run first:
    a VACUUM with nothing to delete still commits its start and end to the log, and a second
    ``maintain`` should leave every table at the version it found."""
    short = (
        retain_hours < SAFE_RETAIN_HOURS
    )  # the check Delta runs; the dataset asked by name to skip it
    settings = {
        "spark.databricks.delta.retentionDurationCheck.enabled": str(not short),
        # VACUUM lists the table's folders as a Spark job of this many tasks (Spark's default:
        # 10,000; a DRY RUN of a small table took 140 s on 2 cores, and 9 s at 4).
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(
            max(2, 2 * spark.sparkContext.defaultParallelism)
        ),
    }
    with session_settings(spark, settings):
        path = uri.replace("`", "``")
        doomed = spark.sql(f"VACUUM delta.`{path}` RETAIN {retain_hours} HOURS DRY RUN").count()
        if doomed:
            DeltaTable.forPath(spark, uri).vacuum(float(retain_hours))
    return int(doomed)


def print_report(report: dict[str, Any]) -> None:
    """The report as a table a person reads (``--json`` prints it whole)."""
    what = "would be" if report["dry_run"] else "was"
    print(f"{report['dataset']}: maintenance {what} done in {report['seconds']:.1f}s")
    if "portable" in report:
        dropped = report["portable"]["features_dropped"]
        shown = ", ".join(dropped) if dropped else "none (the table was portable already)"
        print(f"  reader features {'to drop' if report['dry_run'] else 'dropped'}: {shown}")
    print(f"  {'table':<11} {'files':>15} {'MB':>19} {'removed':>8}")
    for kind, counts in report["tables"].items():
        files = f"{counts['files_before']:,} -> {counts['files_after']:,}"
        size = f"{counts['bytes_before'] / 1e6:,.1f} -> {counts['bytes_after'] / 1e6:,.1f}"
        print(f"  {kind:<11} {files:>15} {size:>19} {counts['files_removed']:>8,}")
