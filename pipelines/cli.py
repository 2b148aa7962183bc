"""The ``lakeshard`` command; ``jobs/<verb>.py`` run the same ``main`` under spark-submit."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence

from pipelines import __version__
from pipelines.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    ConfigError,
    LakeshardError,
    clear_stop,
    describe,
    request_stop,
    stop_requested,
)
from pipelines.lease import DEFAULT_TTL_S
from pipelines.settings import DEFAULT_MASTER, Settings, resolve_settings

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


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message} (see --help)")


class _UsageError(Exception):
    pass


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", metavar="URI", help="lake root (env LAKESHARD_LAKE; ./lake)")
    parser.add_argument(
        "--schemas", metavar="DIR", help="dataset declarations (env LAKESHARD_SCHEMAS; ./schemas)"
    )
    parser.add_argument(
        "--master", metavar="URL", help="Spark master (env LAKESHARD_SPARK_MASTER; local[*])"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the run summary as JSON on the last line"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lakeshard",
        description="Raw files to governed, deduplicated Delta tables; shards for trainers.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lakeshard {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
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
    ingest.add_argument(
        "--wait",
        metavar="SECONDS",
        type=_seconds,
        help="if another run is writing this dataset, wait up to this long for it "
        "(env LAKESHARD_LEASE_WAIT; default 0: exit 3 at once)",
    )
    ingest.add_argument(
        "--lease-ttl",
        metavar="SECONDS",
        type=_seconds,
        help="how long the dataset's lease outlives a run that stops renewing it, e.g. a "
        f"killed driver (env LAKESHARD_LEASE_TTL; default {DEFAULT_TTL_S:.0f})",
    )
    _common(ingest)
    return parser


def _setting(flag: float | None, variable: str, default: float) -> float:
    """A number of seconds: the flag, else the environment variable, else the default."""
    if flag is not None:
        return flag
    text = os.environ.get(variable)
    if text is None:
        return default
    try:
        return _seconds(text)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"{variable}: {exc}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}")
    return value


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler stopping the job): cancel Spark's jobs and stop at the next
    checkpoint, so the run is recorded as failed and its lease released. Raising here instead
    could cut a py4j exchange in half and leave the JVM gateway unusable for that record."""
    request_stop()
    from pyspark import SparkContext

    active = SparkContext._active_spark_context
    if active is not None:
        active.cancelAllJobs()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code. Errors are one line on stderr."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    clear_stop()
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main(args_list: list[str]) -> int:
    debug = "--debug" in args_list
    try:
        args = build_parser().parse_args(args_list)
        settings = resolve_settings(args.lake, args.schemas, args.master)
        if settings.master is None:
            settings = Settings(settings.lake, settings.schemas, DEFAULT_MASTER)
        if args.verb == "ingest":
            return _ingest(args, settings)
        raise _UsageError(f"lakeshard: unknown command {args.verb!r}")
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LakeshardError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        if stop_requested():  # a Spark job cancelled by SIGTERM
            print("error: terminated (SIGTERM)", file=sys.stderr)
            return EXIT_TERMINATED
        print(f"error: {describe(exc)} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.datasets import load_dataset
    from pipelines.ingest import LeaseOptions, run_ingest
    from pipelines.spark import get_spark
    from pipelines.storage import check_lake_reachable

    dataset = load_dataset(settings.schemas, args.dataset)
    check_lake_reachable(settings.lake)
    for source in args.sources:
        if source.startswith(("s3://", "s3a://")):
            check_lake_reachable(source)
    lease = LeaseOptions(
        wait_s=_setting(args.wait, "LAKESHARD_LEASE_WAIT", 0.0),
        ttl_s=_setting(args.lease_ttl, "LAKESHARD_LEASE_TTL", DEFAULT_TTL_S),
    )
    spark = get_spark(settings.master)
    summary = run_ingest(spark, settings, dataset, list(args.sources), lease)
    if args.json:
        print(json.dumps(summary.as_json(), sort_keys=False))
    else:
        _print_summary(summary.as_json())
    return EXIT_OK


def _print_summary(data: dict[str, object]) -> None:
    width = max(len(k) for k in data)
    for key, value in data.items():
        print(f"{key:<{width}}  {value}")
