"""The ``lakeshard`` command; ``jobs/<verb>.py`` run the same ``main`` under spark-submit."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

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
from pipelines.runs import progress

_VERBS: dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "ingest": commands.ingest,
    "schema": commands.schema,
    "quarantine": commands.quarantine,
    "verify": commands.verify,
    "export": commands.export,
    "maintain": commands.maintain,
    "status": commands.status,
    "monitor": commands.monitor,
}


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


# The extra that brings what a missing module is part of, for a one-line error.
_EXTRAS = {
    "pyspark": "spark",
    "delta": "spark",
    "boto3": "spark",
    "xxhash": "spark",
    "yaml": "spark",
}


def _quiet_query_errors(debug: bool) -> AbstractContextManager[None]:
    try:
        from pipelines.spark import quiet_query_errors
    except ImportError:  # a lean install without Spark: nothing to silence
        return nullcontext()
    return quiet_query_errors(not debug)


def _main(args_list: list[str]) -> int:
    debug = "--debug" in args_list
    try:
        args = build_parser().parse_args(args_list)
        progress.configure(
            progress.QUIET if args.quiet else progress.VERBOSE if args.verbose else progress.NORMAL
        )
        config = resolve_config(
            args.lake,
            args.schemas,
            getattr(args, "master", None),
            lease_wait_s=getattr(args, "wait", None),
            lease_ttl_s=getattr(args, "lease_ttl", None),
            targets={
                name: getattr(args, name, None)
                for name in ("pushgateway", "metrics_dir", "webhook", "alertmanager")
            },
        )
        if config.master is None:
            config = dataclasses.replace(config, master=DEFAULT_MASTER)
        handler = _VERBS.get(args.verb)
        if handler is None:
            raise UsageError(f"lakeshard: unknown command {args.verb!r}")
        with _quiet_query_errors(debug):
            return handler(args, config)
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"error: lakeshard {args_list[0] if args_list else ''} needs {exc.name}, which this "
            f"install lacks: pip install 'lakeshard[{extra}]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
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
