"""The command line: verbs, flags, help texts and the checks on flag values (argparse)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipelines import __version__
from pipelines.config import DEFAULT_LEASE_TTL_S, parse_seconds
from pipelines.schema.modes import MODES

_EPILOG = """\
environment:
  LAKESHARD_LAKE          lake root (default ./lake); a path, file://, s3a:// or s3:// URI
  LAKESHARD_SCHEMAS       dataset declarations (default ./schemas)
  LAKESHARD_SPARK_MASTER  Spark master (default local[*]; spark-submit's --master wins)
  LAKESHARD_LEASE_WAIT    seconds to wait for another run of the same dataset (default 0)
  LAKESHARD_LEASE_TTL     seconds a dead run's lease lives on (default 120)
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION,
  AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) for S3-compatible storage

exit codes: 0 done, 1 unexpected failure, 2 usage or configuration, 3 refused by policy
"""


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see --help)")


class UsageError(Exception):
    pass


def _common(parser: argparse.ArgumentParser, spark: bool = True) -> None:
    parser.add_argument("--lake", metavar="URI", help="lake root (env LAKESHARD_LAKE; ./lake)")
    parser.add_argument(
        "--schemas", metavar="DIR", help="dataset declarations (env LAKESHARD_SCHEMAS; ./schemas)"
    )
    if spark:
        parser.add_argument(
            "--master", metavar="URL", help="Spark master (env LAKESHARD_SPARK_MASTER; local[*])"
        )
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON on the last line"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument(
        "-q", "--quiet", action="store_true", help="no progress lines on stderr, warnings only"
    )
    talk.add_argument("-v", "--verbose", action="store_true", help="more detail on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="lakeshard",
        description="Raw files to governed, deduplicated Delta tables; shards for trainers.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lakeshard {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=Parser)
    verbs.required = True
    ingest = verbs.add_parser(
        "ingest",
        help="ingest raw files into a dataset's Delta table",
        description=(
            "Read CSV, JSON-lines or Parquet files (plain, .gz, .zst), validate them against "
            "the dataset's current schema, quarantine refused records with their reasons, drop "
            "duplicates by content hash, and append the rest to the Delta table in one commit."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ingest.add_argument("dataset", help="dataset name (a folder under the schemas directory)")
    ingest.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="files, folders or globs; local paths or s3a:// URIs",
    )
    _lease_flags(ingest)
    _monitor_flags(ingest)
    _common(ingest)
    _schema_verbs(verbs)
    _quarantine_verbs(verbs)
    _verify_verb(verbs)
    _export_verb(verbs)
    _maintain_verb(verbs)
    _status_verb(verbs)
    _monitor_verb(verbs)
    return parser


def _lease_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        metavar="SECONDS",
        type=seconds,
        help="if another run is writing this dataset, wait up to this long for it "
        "(env LAKESHARD_LEASE_WAIT; default 0: exit 3 at once)",
    )
    parser.add_argument(
        "--lease-ttl",
        metavar="SECONDS",
        type=seconds,
        help="how long the dataset's lease outlives a run that stops renewing it, e.g. a "
        f"killed driver (env LAKESHARD_LEASE_TTL; default {DEFAULT_LEASE_TTL_S:.0f})",
    )


def _schema_verbs(verbs: Any) -> None:
    schema = verbs.add_parser(
        "schema",
        help="check schema versions for compatibility; show their history",
        description="Schema governance for a dataset's versioned schemas (no Spark needed).",
    )
    actions = schema.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    actions.required = True
    check = actions.add_parser(
        "check",
        help="is the current version compatible with earlier ones and the live table?",
        description=(
            "Compare the dataset's current schema version with its earlier versions and with "
            "the live table's schema (read from its Delta log) under a compatibility mode. "
            "Exit 3 names every offending field when they are incompatible."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("dataset", help="dataset name")
    check.add_argument(
        "--mode",
        choices=MODES,
        help="compatibility mode (default: the dataset's `compatibility:`, else backward)",
    )
    _common(check, spark=False)
    history = actions.add_parser(
        "history",
        help="versions, what each changed, and when each reached the table",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    history.add_argument("dataset", help="dataset name")
    _common(history, spark=False)


def _quarantine_verbs(verbs: Any) -> None:
    quarantine = verbs.add_parser(
        "quarantine",
        help="list quarantined records by reason and rule; replay those that now pass",
        description="Tools for a dataset's quarantine.",
    )
    actions = quarantine.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    actions.required = True
    listing = actions.add_parser(
        "list",
        help="counts of quarantined records by reason and rule",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.add_argument("dataset", help="dataset name")
    listing.add_argument("--replayed", action="store_true", help="include records already replayed")
    _common(listing)
    replay = actions.add_parser(
        "replay",
        help="re-validate quarantined records; move those that now pass into the table, once",
        description=(
            "Parse quarantined records again and validate them against the current schema and "
            "rules. Records that pass are appended to the table (deduplicated) and marked as "
            "replayed, so a second replay moves nothing; records that still fail stay."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("dataset", help="dataset name")
    replay.add_argument("--reason", metavar="TEXT", help="only records whose reason contains TEXT")
    replay.add_argument("--rule", metavar="NAME", help="only records that failed rule NAME")
    _lease_flags(replay)
    _monitor_flags(replay)
    _common(replay)


def _verify_verb(verbs: Any) -> None:
    verify = verbs.add_parser(
        "verify",
        help="check a dataset's table: unique hashes, hashes that match the rows, accounting",
        description=(
            "Check that no content hash appears twice in the table, that stored content "
            "hashes match the rows (a sample, or every row with --full), and that the run "
            "log's row counts add up to the table. Exit 3 names the first problems."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("dataset", help="dataset name")
    how_many = verify.add_mutually_exclusive_group()
    how_many.add_argument("--full", action="store_true", help="recompute the hash of every row")
    how_many.add_argument(
        "--sample",
        metavar="N",
        type=_positive,
        help="recompute the hashes of N random rows (default 10000)",
    )
    _common(verify)


_EXPORT_EXAMPLES = """\
examples:
  lakeshard export events --shards 8
  lakeshard export events --shards 64 --version 12 --split train=0.98,val=0.02 --seed 1
  lakeshard export events --shards 16 --columns event_id,kind,amount --where "amount > 0" \\
      --out s3://lake/exports/events/purchases --json
  spark-submit jobs/export.py events --shards 256 --lake s3a://lake/prod --json

Each split gets N shards, <out>/<split>/shard-00000-of-0000N.parquet, whose row counts differ
by at most one, and <out>/manifest.json (written last) lists them with their rows, bytes and
SHA-256. A record's split follows its content hash, not the seed: it stays in its split
across re-exports and as the table grows. The seed picks the order of rows and which shard
each goes to. The same arguments give the same bytes again; an --out that holds an export
with other arguments is refused (exit 3).

"""


def _export_verb(verbs: Any) -> None:
    export = verbs.add_parser(
        "export",
        help="write a pinned table version as N Parquet shards plus a manifest, for training",
        description=(
            "Pin a version of the dataset's table and write it as N Parquet shards per split "
            "(zstd, fixed-size row groups), each a balanced, shuffled, uniform sample of its "
            "split, plus a JSON manifest for pipelines.loader."
        ),
        epilog=_EXPORT_EXAMPLES + _EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("dataset", help="dataset name")
    export.add_argument(
        "--shards",
        metavar="N",
        type=_shard_count,
        required=True,
        help="shards per split (1 to 65536)",
    )
    export.add_argument(
        "--version",
        metavar="V",
        type=_version,
        help="table version to export (default: the latest)",
    )
    export.add_argument(
        "--out",
        metavar="URI",
        help="folder for the shards and manifest.json: a path, file://, s3:// or s3a:// URI "
        "(default: <lake>/exports/<dataset>/v<V>)",
    )
    export.add_argument(
        "--columns",
        metavar="A,B,...",
        type=_names,
        help="columns to export, in this order (default: every column not starting with _); "
        "_content_hash is always added",
    )
    export.add_argument(
        "--where",
        metavar="SQL",
        help="export only the rows for which this Spark SQL condition is true",
    )
    export.add_argument(
        "--split",
        metavar="NAME=F,...",
        default="train=1",
        help="splits and their fractions, summing to 1, e.g. train=0.98,val=0.02 (default "
        "train=1); a record's split follows its content hash",
    )
    export.add_argument(
        "--seed",
        metavar="S",
        type=_seed,
        default=0,
        help="picks the rows' order and shards, not their split (default 0)",
    )
    export.add_argument(
        "--row-group-rows",
        metavar="N",
        type=_positive,
        help="rows per Parquet row group (default: about 8 MiB of compressed data, from the "
        "table's bytes per row, within 1024 to 131072)",
    )
    _common(export)


_MAINTAIN_EXAMPLES = """\
examples:
  lakeshard maintain events --dry-run
  lakeshard maintain events --wait 600 --json
  lakeshard maintain events --portable      # an evolution: in_place table, readable by all again
  spark-submit jobs/maintain.py events --lake s3a://lake/prod --json

For the dataset's table, quarantine, file ledger and run log: compact each partition's small
files (maintenance.target_file_size in dataset.yaml, default 256MiB; the rows and every
earlier version are kept), write a checkpoint, and VACUUM files that no version of the last
maintenance.retain_hours (default 168, Delta's safety default) reads. Runs under the
dataset's lease: an ingest waits for it, or it for the ingest (--wait).

"""


def _maintain_verb(verbs: Any) -> None:
    maintain = verbs.add_parser(
        "maintain",
        help="compact, checkpoint and vacuum a dataset's tables",
        description=(
            "Compact small files, write a Delta checkpoint and remove files no recent "
            "version reads, for the dataset's table, quarantine, ledger and run log."
        ),
        epilog=_MAINTAIN_EXAMPLES + _EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    maintain.add_argument("dataset", help="dataset name")
    maintain.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be compacted, from the Delta logs alone (no Spark, no lease)",
    )
    maintain.add_argument(
        "--portable",
        action="store_true",
        help=(
            "first drop the reader features an in-place schema change switched on (column "
            "mapping, type widening), so delta-rs, DuckDB and Polars read the table again"
        ),
    )
    _lease_flags(maintain)
    _common(maintain)


def _status_verb(verbs: Any) -> None:
    status = verbs.add_parser(
        "status",
        help="what the lake holds and how the last runs went (no Spark)",
        description=(
            "Per dataset: the table's version, rows, files, bytes and partitions, the schema "
            "version, the last runs (status, duration, rows by outcome), the quarantine "
            "backlog by reason, the lease holder, and runs left running by a driver that "
            "died. Reads the lake's files directly: no Spark, no Java."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("dataset", nargs="?", help="one dataset (default: every declared one)")
    status.add_argument(
        "--runs",
        metavar="N",
        type=_positive,
        help="runs shown per dataset (10; with --html, 60 in the page's charts)",
    )
    status.add_argument(
        "--html",
        metavar="FILE",
        type=Path,
        help="also write the report as one self-contained HTML page with charts (rows per run, "
        "run durations, file sizes per partition, the quarantine by reason)",
    )
    _common(status, spark=False)


def _monitor_verb(verbs: Any) -> None:
    from pipelines.config import SEVERITIES  # not the schema layer: --help needs no pyspark

    watch = verbs.add_parser(
        "monitor",
        help="judge the run history: anomalies, stale data, dead or failed runs; send alerts",
        description=(
            "Per dataset: the newest run against the ones before it (rows and files read, "
            "duplicate, quarantine and rule-violation rates, duration, driver memory), "
            "freshness, runs left running by a driver that died, a failed last run. New "
            "findings at or above the alerting severity are sent once to the webhook and/or "
            "Alertmanager; resolved ones are sent as resolved. Exits 3 while such a finding is "
            "open. Reads the lake's files directly: no Spark, no Java."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch.add_argument("dataset", nargs="?", help="one dataset (default: every declared one)")
    watch.add_argument(
        "--severity",
        choices=SEVERITIES,
        help="alert (and exit 3) from this severity up (default: each dataset's "
        "monitor.alert_severity, warning)",
    )
    _monitor_flags(watch)
    _common(watch, spark=False)


def _monitor_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("monitoring (each also from the environment)")
    group.add_argument(
        "--pushgateway", metavar="URL", help="push run metrics here (LAKESHARD_PUSHGATEWAY)"
    )
    group.add_argument(
        "--metrics-dir",
        metavar="DIR",
        help="write lakeshard_<dataset>.prom here for node_exporter (LAKESHARD_METRICS_DIR)",
    )
    group.add_argument(
        "--webhook", metavar="URL", help="POST new and resolved findings (LAKESHARD_ALERT_WEBHOOK)"
    )
    group.add_argument(
        "--alertmanager",
        metavar="URL",
        help="Alertmanager base URL, alerts to /api/v2/alerts (LAKESHARD_ALERTMANAGER)",
    )


def _shard_count(text: str) -> int:
    from pipelines.export.command import MAX_SHARDS

    value = _integer(text, "a number of shards")
    if not 1 <= value <= MAX_SHARDS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_SHARDS} shards, got {text!r}")
    return value


def _version(text: str) -> int:
    value = _integer(text, "a table version")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a table version (0 or more), got {text!r}")
    return value


def _seed(text: str) -> int:
    value = _integer(text, "a seed")
    if not -(2**63) <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a 64-bit seed, got {text!r}")
    return value


def _integer(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected column names separated by commas, got {text!r}")
    return names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of rows, got {text!r}")
    return value


def seconds(text: str) -> float:
    try:
        return parse_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
