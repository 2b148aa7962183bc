"""``lakeshard schema check`` and ``lakeshard schema history``: no Spark, seconds in a CI job.

Both read the declared versions from ``schemas/`` and the live table's schema and commits
straight from its Delta log (:mod:`pipelines.lake.deltalog`), and judge changes with
:mod:`pipelines.schema.compat` — the same judgement, and the same plan, that an ingest applies
(:mod:`pipelines.schema.evolution`), so a green ``schema check`` means the next ingest will take
the version.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipelines.config import Config
from pipelines.errors import PolicyError
from pipelines.lake import deltalog
from pipelines.schema import compat, evolution
from pipelines.schema.datasets import Dataset, SchemaVersion


def check(settings: Config, dataset: Dataset, mode: str | None = None) -> dict[str, Any]:
    """The verdict on the current version: against earlier versions and the live table."""
    if mode is not None:
        dataset = dataclasses.replace(dataset, compatibility=mode)
    chain = [compat.Version(v.label, v.struct(), v.renames) for v in dataset.versions]
    declared = compat.check(dataset.compatibility, chain)
    problems = [finding.describe() for finding in declared.findings]
    uri = settings.table_uri(dataset.name)
    live = deltalog.snapshot(uri)
    table: dict[str, Any] = {"uri": uri, "exists": live is not None}
    if live is not None:
        table["version"] = live.version
        table["holds"] = None
        try:
            plan = evolution.plan(dataset, live.schema, live.configuration)
        except PolicyError as exc:
            table["problem"] = exc.message
            problems.append(f"table: {exc.message}")
        else:
            table["holds"] = plan.table_label
            table["changes"] = [c.as_json() for c in plan.changes]
            table["alter"] = list(plan.statements)
    return {
        "dataset": dataset.name,
        "mode": dataset.compatibility,
        "current": dataset.schema.label,
        "compatible": not problems,
        "versions": declared.as_json(),
        "table": table,
        "problems": problems,
    }


def history(settings: Config, dataset: Dataset) -> dict[str, Any]:
    """Each declared version: what it changed, and the table commit where it first arrived."""
    uri = settings.table_uri(dataset.name)
    commits = deltalog.commits(uri) if deltalog.snapshot(uri) is not None else []
    versions: list[dict[str, Any]] = []
    previous: SchemaVersion | None = None
    for version in dataset.versions:
        changes = (
            []
            if previous is None
            else compat.diff(previous.struct(), version.struct(), version.renames)
        )
        arrived = _arrival(version, commits)
        versions.append(
            {
                "version": version.label,
                "file": str(version.path),
                "columns": len(version.columns),
                "changes": [c.as_json() for c in changes],
                "reached_table_at": arrived.timestamp.isoformat() if arrived else None,
                "table_version": arrived.version if arrived else None,
            }
        )
        previous = version
    schema_commits = [
        {
            "table_version": c.version,
            "at": c.timestamp.isoformat(),
            "operation": c.operation,
            "schema": c.schema.simpleString() if c.schema is not None else None,
            "schema_version": c.user_metadata.get("schema_version"),
        }
        for c in commits
        if c.schema is not None
    ]
    return {"dataset": dataset.name, "table": uri, "versions": versions, "commits": schema_commits}


def _arrival(
    version: SchemaVersion, commits: list[deltalog.CommitInfo]
) -> deltalog.CommitInfo | None:
    """The first commit that wrote rows of this version, or created the table with it."""
    for commit in commits:
        if commit.user_metadata.get("schema_version") == version.version:
            return commit
        if commit.schema is not None and commit.version == 0:
            created = evolution.declared_part(commit.schema)
            if evolution.held_version([version], created) == 0:
                return commit
    return None


def print_check(report: dict[str, Any]) -> None:
    state = "compatible" if report["compatible"] else "INCOMPATIBLE"
    print(f"{report['dataset']} {report['current']}: {state} (mode {report['mode']})")
    for change in report["versions"]["changes"]:
        print(f"  change: {change['description']}")
    table = report["table"]
    if table["exists"]:
        holds = table.get("holds") or "no declared version"
        print(f"  table {table['uri']} (Delta version {table['version']}) holds {holds}")
        for statement in table.get("alter", []):
            print(f"  next ingest: ALTER TABLE … {statement}")
    else:
        print(f"  table {table['uri']}: not created yet")
    for problem in report["problems"]:
        print(f"  problem: {problem}")


def print_history(report: dict[str, Any]) -> None:
    print(f"{report['dataset']}: {report['table']}")
    for item in report["versions"]:
        when = (
            f"reached the table at {item['reached_table_at']} (Delta version "
            f"{item['table_version']})"
            if item["reached_table_at"]
            else "not in the table yet"
        )
        print(f"  {item['version']} ({item['columns']} columns): {when}")
        for change in item["changes"]:
            print(f"      {change['description']}")
