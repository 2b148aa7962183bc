"""``lakeshard export``: pin a table version, plan its splits and shards, write, then the manifest.

The manifest is the commit point, written last: an export that dies leaves none (or the previous,
identical one), and running it again finishes it. The same arguments give the same manifest and
shard bytes; an ``--out`` holding another export is refused (README: "Exporting for training").
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.columns import CONTENT_HASH, col
from pipelines.config import Config, join_uri, normalise_uri
from pipelines.errors import ConfigError, PolicyError
from pipelines.export.ranking import (
    OFFSET_COL,
    PART_COL,
    SPLIT_COL,
    count_ranges,
    framed_rows,
    range_offsets,
    row_group_rows,
    shard_rows,
    table_stats,
    with_rank,
)
from pipelines.export.shards import (
    WritePlan,
    arrow_schema,
    collect_shards,
    placeholder_shard,
    planned_groups,
    write_shards,
)
from pipelines.lake import delta
from pipelines.loader.manifest import (
    MANIFEST,
    Manifest,
    Split,
    parse_split,
    split_bounds,
)
from pipelines.runs.progress import progress
from pipelines.schema.expressions import condition_problem
from pipelines.storage import arrowfs

DEFAULT_SPLIT = "train=1"
MAX_SHARDS = 65_536


@dataclass(frozen=True)
class ExportOptions:
    shards: int
    version: int | None = None  # None: the latest
    out: str | None = None  # None: <lake>/exports/<dataset>/v<version>
    columns: tuple[str, ...] | None = None  # None: the declared (non-bookkeeping) columns
    where: str | None = None
    split: str = DEFAULT_SPLIT
    seed: int = 0
    row_group_rows: int | None = None  # None: from the pinned version's bytes per row


# --- the command -------------------------------------------------------------------------------


def export(
    spark: SparkSession, settings: Config, dataset: str, options: ExportOptions
) -> dict[str, Any]:
    """Export the dataset's table; return the summary (``manifest``, ``rows``, ...)."""
    started = time.monotonic()
    split = parse_split(options.split)
    uri = settings.table_uri(dataset)
    version = pin_version(spark, uri, dataset, options.version)
    table = delta.read_table(spark, uri, version)
    columns = choose_columns(table.schema, options.columns)
    where = check_where(table, options.where)
    out = normalise_uri(options.out) if options.out else default_out(settings, dataset, version)
    planned = Manifest(
        dataset=dataset,
        table=uri,
        table_id=table_id(spark, uri),
        table_version=version,
        columns=columns,
        where=where,
        seed=options.seed,
        schema=schema_entries(table.schema, columns),
        splits=tuple(
            Split(name, fraction, 0, tuple(placeholder_shard() for _ in range(options.shards)))
            for name, fraction in split
        ),
    )
    previous = read_manifest(out)
    refuse_other_export(previous, planned, out)
    stats = table_stats(table)
    progress(f"pinned {dataset} v{version} ({stats.rows:,} rows)")

    rows = table if where is None else table.filter(F.expr(where))
    framed = rows.transform(framed_rows(columns, split_bounds(split), options.seed, stats.rows))
    counts = count_ranges(framed)
    per_split = [sum(n for (s, _), n in counts.items() if s == i) for i in range(len(split))]
    group_rows = options.row_group_rows or row_group_rows(stats)
    expected = {
        (s, shard): shard_rows(per_split[s], options.shards, shard)
        for s in range(len(split))
        for shard in range(options.shards)
    }
    refuse_other_layout(previous, expected, group_rows, out)

    plan = WritePlan(
        out=out,
        s3=settings.s3,
        schema=arrow_schema(table.select(*[col(c) for c in columns]).schema, spark),
        splits=tuple(name for name, _ in split),
        shards=options.shards,
        row_group_rows=group_rows,
    )
    offsets = spark.createDataFrame(
        [(s, p, n) for (s, p), n in sorted(range_offsets(counts).items())],
        schema=f"{SPLIT_COL} int, {PART_COL} long, {OFFSET_COL} long",
    )
    hashed = f"__c{columns.index(CONTENT_HASH)}"
    ranked = framed.transform(with_rank(offsets, options.shards, hashed))
    progress(
        f"writing {len(split) * options.shards} shard(s) of {sum(per_split):,} rows "
        f"to {out} (row groups of {group_rows:,} rows)"
    )
    written = write_shards(spark, ranked, plan)
    shards = collect_shards(plan, written, expected)
    manifest = dataclasses.replace(
        planned,
        splits=tuple(
            Split(name, fraction, per_split[s], shards[s])
            for s, (name, fraction) in enumerate(split)
        ),
    )
    manifest_uri = write_manifest(out, manifest)
    progress(f"wrote {manifest_uri}")
    return {
        "dataset": dataset,
        "manifest": manifest_uri,
        "out": out,
        "table": uri,
        "table_version": version,
        "rows": manifest.rows,
        "table_rows": stats.rows,
        "shards": options.shards,
        "splits": {s.name: s.rows for s in manifest.splits},
        "bytes": sum(shard.bytes for s in manifest.splits for shard in s.shards),
        "row_group_rows": group_rows,
        "seconds": round(time.monotonic() - started, 1),
    }


def print_summary(summary: Mapping[str, Any]) -> None:
    splits = ", ".join(f"{name} {rows:,}" for name, rows in summary["splits"].items())
    print(
        f"{summary['dataset']}: exported table version {summary['table_version']} — "
        f"{summary['rows']:,} rows ({splits}) in {summary['shards']} shard(s) per split, "
        f"{summary['bytes']:,} bytes, {summary['seconds']} s"
    )
    print(f"  manifest: {summary['manifest']}")


# --- what is exported --------------------------------------------------------------------------


def pin_version(spark: SparkSession, uri: str, dataset: str, wanted: int | None) -> int:
    """The version to export: ``wanted`` if the table has it, else its latest."""
    latest = delta.current_version(uri)
    if latest is None:
        raise ConfigError(f"{dataset}: no table at {uri} (nothing has been ingested)")
    if wanted is None:
        return latest
    history = DeltaTable.forPath(spark, uri).history().select("version")
    earliest = int(history.agg(F.min("version")).collect()[0][0])
    if not earliest <= wanted <= latest:
        raise ConfigError(
            f"--version {wanted}: {dataset} has no such table version "
            f"(versions {earliest} to {latest} are available)"
        )
    return wanted


def table_id(spark: SparkSession, uri: str) -> str:
    """The table's Delta id (its metaData id, as DESCRIBE DETAIL shows it).

    The id is set when the table is created and changes only if the table is replaced, which
    lakeshard never does; a table deleted and made again at the same place has a new one."""
    row = DeltaTable.forPath(spark, uri).detail().select("id").first()
    return str(row["id"]) if row else ""


def choose_columns(schema: T.StructType, wanted: Sequence[str] | None) -> tuple[str, ...]:
    """The exported columns: ``wanted`` (default: every column not starting with ``_``) in
    that order, then the content hash, which is always exported."""
    names = schema.fieldNames()
    if wanted is None:
        chosen = [n for n in names if not n.startswith("_")]
    else:
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise ConfigError(
                f"--columns: no column {unknown[0]!r} in the table (columns: {', '.join(names)})"
            )
        repeated = sorted({n for n in wanted if list(wanted).count(n) > 1})
        if repeated:
            raise ConfigError(f"--columns: {repeated[0]!r} is named twice")
        chosen = list(wanted)
    if CONTENT_HASH not in chosen:
        chosen.append(CONTENT_HASH)
    return tuple(chosen)


def check_where(table: DataFrame, where: str | None) -> str | None:
    """Analyse ``--where`` against the pinned table before any data is read: it must be a
    deterministic boolean condition on one row (the same rows on every re-export)."""
    if where is None:
        return None
    problem = condition_problem(table, where)
    if problem is None:
        return where
    if problem.startswith(" uses") or problem == " is not deterministic":
        problem += (
            "; a re-export must select the same rows, so it must be a deterministic "
            "condition on one row"
        )
    raise ConfigError(f"--where {where!r}{problem}")


def schema_entries(schema: T.StructType, columns: Sequence[str]) -> tuple[dict[str, Any], ...]:
    """The manifest's schema: name, Spark SQL type and nullability of each exported column."""
    fields = {f.name: f for f in schema.fields}
    return tuple(
        {
            "name": name,
            "type": fields[name].dataType.simpleString(),
            "nullable": fields[name].nullable,
        }
        for name in columns
    )


def default_out(settings: Config, dataset: str, version: int) -> str:
    return join_uri(settings.lake, "exports", dataset, f"v{version}")


# --- transforms --------------------------------------------------------------------------------


# --- writing -----------------------------------------------------------------------------------


# --- the manifest ------------------------------------------------------------------------------


def read_manifest(out: str) -> Manifest | None:
    """The manifest already in ``out``, if any."""
    uri = join_uri(out, MANIFEST)
    data = arrowfs.read_bytes_if_any(uri)
    return None if data is None else Manifest.from_json(data, where=uri)


_FLAGS = {
    "table": "the table",
    "table_id": "the table's id (it was made again since)",
    "table_version": "--version",
    "columns": "--columns",
    "where": "--where",
    "seed": "--seed",
    "split": "--split",
    "shards": "--shards",
}


def refuse_other_export(previous: Manifest | None, planned: Manifest, out: str) -> None:
    """An export into a folder that holds one made with other arguments is refused; with the
    same arguments it is done again, which gives the same bytes."""
    if previous is None:
        return
    before, now = previous.arguments(), planned.arguments()
    for key in now:
        if before.get(key) != now[key]:
            raise PolicyError(
                f"{out} already holds an export with other arguments ({_FLAGS.get(key, key)}: "
                f"{before.get(key)!r} there, {now[key]!r} now); choose another --out"
            )


def refuse_other_layout(
    previous: Manifest | None,
    expected: Mapping[tuple[int, int], int],
    group_rows: int,
    out: str,
) -> None:
    """The same export with other row groups would change the bytes under its readers."""
    if previous is None:
        return
    laid_out = [
        (shard.row_groups, planned_groups(expected[(s, number)], group_rows))
        for s, split in enumerate(previous.splits)
        for number, shard in enumerate(split.shards)
    ]
    if any(there != now for there, now in laid_out):
        before = max((there[0] for there, _ in laid_out if there), default=0)
        raise PolicyError(
            f"{out} already holds this export with other row groups (--row-group-rows: "
            f"{before} there, {group_rows} now); choose another --out"
        )


def write_manifest(out: str, manifest: Manifest) -> str:
    """Write the manifest last, in one step (a rename; one PUT on S3); return its URI."""
    fs, root = arrowfs.filesystem(out)
    path = f"{root}/{MANIFEST}"
    data = manifest.to_json().encode("utf-8")
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(root, exist_ok=True)
        temp = f"{root}/.{MANIFEST}.{uuid.uuid4().hex}.tmp"
        with open(temp, "wb") as stream:
            stream.write(data)
        os.replace(temp, path)
    else:
        with fs.open_output_stream(path) as stream:
            stream.write(data)
    return join_uri(out, MANIFEST)
