"""What each verb does: load the dataset, check the lake, run the work, print the result."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from pipelines.config import Config, normalise_uri
from pipelines.errors import (
    EXIT_OK,
    EXIT_POLICY,
)


def ingest(args: argparse.Namespace, settings: Config) -> int:
    from pipelines.ingest.run import run_ingest
    from pipelines.schema.declarations import load_dataset
    from pipelines.spark import get_spark
    from pipelines.storage.s3 import check_lake_reachable

    dataset = load_dataset(settings.schemas, args.dataset)
    sources = [normalise_uri(source) for source in args.sources]  # refuses credentials in one
    _lake_ready(settings, [dataset.name], writes=True)
    for source in sources:
        if source.startswith("s3a://"):
            check_lake_reachable(source, settings.s3)
    spark = get_spark(config=settings)
    with _monitored(settings, dataset):
        summary = run_ingest(spark, settings, dataset, list(args.sources), _lease_options(settings))
    _emit(summary.as_json(), args.json, _print_summary)
    return EXIT_OK


@contextlib.contextmanager
def _monitored(settings: Config, dataset: Any) -> Iterator[None]:
    """After the run, failed or not: its metrics published, the history judged, alerts sent."""
    from pipelines.errors import PolicyError
    from pipelines.ops import monitor

    try:
        yield
    except PolicyError:
        raise  # refused before it ran (a lease held, an incompatible schema): nothing new
    except BaseException:
        monitor.after_run(settings, dataset)
        raise
    monitor.after_run(settings, dataset)


def _lease_options(config: Config) -> Any:
    from pipelines.runs.lifecycle import LeaseOptions

    return LeaseOptions(wait_s=config.lease_wait_s, ttl_s=config.lease_ttl_s)


def schema(args: argparse.Namespace, settings: Config) -> int:
    from pipelines.schema import governance
    from pipelines.schema.declarations import load_dataset
    from pipelines.storage.s3 import check_lake_reachable

    dataset = load_dataset(settings.schemas, args.dataset)
    check_lake_reachable(settings.lake, settings.s3)
    if args.action == "check":
        report = governance.check(settings, dataset, args.mode)
        _emit(report, args.json, governance.print_check)
        if not report["compatible"]:
            print(
                f"error: {dataset.name} {report['current']} is not {report['mode']}-compatible: "
                + "; ".join(report["problems"]),
                file=sys.stderr,
            )
            return EXIT_POLICY
        return EXIT_OK
    _emit(governance.history(settings, dataset), args.json, governance.print_history)
    return EXIT_OK


def quarantine(args: argparse.Namespace, settings: Config) -> int:
    from pipelines.ingest import replay
    from pipelines.schema.declarations import load_dataset
    from pipelines.spark import get_spark

    dataset = load_dataset(settings.schemas, args.dataset)
    _lake_ready(settings, [dataset.name], writes=args.action != "list")
    spark = get_spark(config=settings)
    if args.action == "list":
        found = replay.counts(spark, settings.quarantine_uri(dataset.name), args.replayed)
        report = {"dataset": dataset.name, **found}
        _emit(report, args.json, _print_groups)
        return EXIT_OK
    with _monitored(settings, dataset):
        summary = replay.run_replay(
            spark, settings, dataset, args.reason, args.rule, _lease_options(settings)
        )
    _emit(summary.as_json(), args.json, _print_summary)
    return EXIT_OK


def verify(args: argparse.Namespace, settings: Config) -> int:
    from pipelines import verify
    from pipelines.schema.declarations import load_dataset
    from pipelines.spark import get_spark

    dataset = load_dataset(settings.schemas, args.dataset)
    _lake_ready(settings, [dataset.name])
    spark = get_spark(config=settings)
    options = verify.VerifyOptions(sample=args.sample or verify.DEFAULT_SAMPLE, full=args.full)
    report = verify.verify(spark, settings, dataset, options)
    _emit(report, args.json, verify.print_report)
    if not report["ok"]:
        shown = "; ".join(verify.problems(report))
        print(f"error: {dataset.name}: the table fails verification: {shown}", file=sys.stderr)
        return EXIT_POLICY
    return EXIT_OK


def export(args: argparse.Namespace, settings: Config) -> int:
    from pipelines import export
    from pipelines.loader.manifest import parse_split
    from pipelines.schema.declarations import load_dataset
    from pipelines.spark import get_spark
    from pipelines.storage.s3 import check_lake_reachable

    dataset = load_dataset(settings.schemas, args.dataset)
    parse_split(args.split)  # a bad --split fails before Spark starts
    _lake_ready(settings, [dataset.name], writes=not args.out)  # default out
    if args.out:
        check_lake_reachable(normalise_uri(args.out), settings.s3, writes=True)
    spark = get_spark(config=settings)
    options = export.ExportOptions(
        shards=args.shards,
        version=args.version,
        out=args.out,
        columns=args.columns,
        where=args.where,
        split=args.split,
        seed=args.seed,
        row_group_rows=args.row_group_rows,
    )
    summary = export.export(spark, settings, dataset.name, options)
    _emit(summary, args.json, export.print_summary)
    return EXIT_OK


def maintain(args: argparse.Namespace, settings: Config) -> int:
    from pipelines.ops import maintain
    from pipelines.schema.declarations import load_dataset

    dataset = load_dataset(settings.schemas, args.dataset)
    _lake_ready(settings, [dataset.name], writes=not args.dry_run)
    if args.dry_run:
        report = maintain.plan(settings, dataset, portable=args.portable)
    else:
        from pipelines.spark import get_spark

        spark = get_spark(config=settings)
        report = maintain.maintain(
            spark,
            settings,
            dataset,
            settings.lease_wait_s,
            settings.lease_ttl_s,
            portable=args.portable,
        )
    _emit(report, args.json, maintain.print_report)
    return EXIT_OK


def status(args: argparse.Namespace, settings: Config) -> int:
    from pipelines.ops import status
    from pipelines.schema.declarations import list_datasets, load_dataset

    names = [args.dataset] if args.dataset is not None else list_datasets(settings.schemas)
    datasets = [load_dataset(settings.schemas, name) for name in names]
    if args.html is not None:
        from pipelines.ops import page

        page.check_writable(args.html)
    _lake_ready(settings, names)
    runs = args.runs or (status.RUNS_CHARTED if args.html else status.RUNS_SHOWN)
    report = status.status(settings, datasets, runs, partition_detail=args.html is not None)
    if args.html is not None:
        page.write(args.html, page.render(report))
        print(f"status page written to {args.html}", file=sys.stderr)
    _emit(report, args.json, status.print_report)
    return EXIT_OK


def monitor(args: argparse.Namespace, settings: Config) -> int:
    from pipelines.ops import monitor
    from pipelines.schema.declarations import list_datasets, load_dataset

    names = [args.dataset] if args.dataset is not None else list_datasets(settings.schemas)
    datasets = [load_dataset(settings.schemas, name) for name in names]
    _lake_ready(settings, names)
    report = monitor.monitor(settings, datasets, args.severity)
    _emit(report, args.json, monitor.print_report)
    return EXIT_POLICY if report["alerting"] else EXIT_OK


def _lake_ready(settings: Config, names: list[str], *, writes: bool = False) -> None:
    """Before Spark starts: the lake answers (and takes writes, for a command that writes), and
    each dataset's part of it is whole (pipelines.lake.health)."""
    from pipelines.lake import health
    from pipelines.storage.s3 import check_lake_reachable

    check_lake_reachable(settings.lake, settings.s3, writes=writes)
    for name in names:
        health.check(settings, name)


def _emit(report: dict[str, Any], as_json: bool, show: Callable[[dict[str, Any]], None]) -> None:
    if as_json:
        print(json.dumps(report, default=str))
    else:
        show(report)


def _print_groups(report: dict[str, Any]) -> None:
    print(f"{report['dataset']}: {report['rows']:,} quarantined record(s) not yet replayed")
    for group in report["groups"]:
        rule = f" [rule {group['rule']}]" if group["rule"] else ""
        print(f"  {group['rows']:>10,}  {group['reason']}{rule}  ({group['files']} file(s))")


def _print_summary(data: dict[str, object]) -> None:
    width = max(len(k) for k in data)
    for key, value in data.items():
        print(f"{key:<{width}}  {value}")
