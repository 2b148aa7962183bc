"""The ``lakeshard`` command; ``jobs/<verb>.py`` run the same ``main`` under spark-submit."""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from collections.abc import Sequence

from pipelines.cli import commands
from pipelines.cli.parser import UsageError, build_parser
from pipelines.config import DEFAULT_MASTER, Config, resolve_config
from pipelines.errors import (
    EXIT_FAILURE,
    EXIT_TERMINATED,
    EXIT_USAGE,
    LakeshardError,
    clear_stop,
    describe,
    request_stop,
    stop_requested,
)


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


def _quiet_pyspark_errors() -> None:
    """pyspark logs every Spark error it raises as a JSON blob on stderr; the command reports
    its errors itself, as one line (``--debug`` shows them in full)."""
    from pyspark.logger import PySparkLogger

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).disabled = True


def _main(args_list: list[str]) -> int:
    debug = "--debug" in args_list
    if not debug:
        _quiet_pyspark_errors()
    try:
        args = build_parser().parse_args(args_list)
        settings = resolve_config(args.lake, args.schemas, getattr(args, "master", None))
        if settings.master is None:
            settings = Config(settings.lake, settings.schemas, DEFAULT_MASTER)
        if args.verb == "ingest":
            return commands.ingest(args, settings)
        if args.verb == "schema":
            return commands.schema(args, settings)
        if args.verb == "quarantine":
            return commands.quarantine(args, settings)
        if args.verb == "verify":
            return commands.verify(args, settings)
        if args.verb == "export":
            return commands.export(args, settings)
        raise UsageError(f"lakeshard: unknown command {args.verb!r}")
    except UsageError as exc:
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
