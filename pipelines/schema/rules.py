"""Row rules: check their expressions before a run, and keep the table's CHECK constraints in step.

A rule is ``{name, expr, on_violation}`` in ``dataset.yaml``;
:func:`pipelines.ingest.validate.with_rules` evaluates it on every valid record. Here each
expression is vetted once, before any data is read (:mod:`.expressions`): an unknown column, a
non-boolean result, a subquery, a UDF, an aggregate or a non-deterministic function is a
configuration error (exit 2) naming the file and key.

Rules that refuse rows (``quarantine``, ``fail``) also guard the Delta table itself as CHECK
constraints named ``lakeshard_rule_<name>``, so a writer that bypasses lakeshard cannot break them.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import SparkSession

from pipelines.errors import ConfigError
from pipelines.schema.datasets import Dataset, Rule
from pipelines.schema.expressions import condition_problem

CONSTRAINT_PREFIX = "lakeshard_rule_"
# Table property marking a constraint that could not be added (rows already break it).
UNENFORCED = "lakeshard.unenforced."


def check_rules(spark: SparkSession, dataset: Dataset) -> None:
    """Raise ConfigError (exit 2) for the first rule whose expression is not a row predicate."""
    if not dataset.rules:
        return
    empty = spark.createDataFrame([], dataset.schema.struct())
    for rule in dataset.rules:
        problem = condition_problem(empty, rule.expr)
        if problem is None:
            continue
        if problem.startswith(" uses"):
            problem += "; a rule sees one row only"
        elif problem == " is not deterministic":
            problem += "; a rule must give the same answer for the same row on every run"
        raise ConfigError(f"{dataset.declaration}: {rule.key}.expr: {rule.expr!r}{problem}")


def constraint_expr(rule: Rule) -> str:
    """The CHECK constraint for a rule: like the rule, a null result is a violation."""
    return f"coalesce(({rule.expr}), false)"


def wanted_constraints(dataset: Dataset) -> dict[str, str]:
    """Constraint name -> expression, for the rules that refuse rows."""
    return {
        rule.constraint: constraint_expr(rule)
        for rule in dataset.rules
        if rule.on_violation in ("quarantine", "fail")
    }


def constraint_changes(
    present: Mapping[str, str], wanted: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """Which of lakeshard's constraints to drop and which to add to reach ``wanted``.

    ``present`` holds the table's constraints (Delta keeps them as table properties
    ``delta.constraints.<name>``); constraints not made by lakeshard are left alone.
    """
    ours = {
        name.removeprefix("delta.constraints."): expr
        for name, expr in present.items()
        if name.startswith("delta.constraints." + CONSTRAINT_PREFIX)
    }
    same = {name for name, expr in wanted.items() if name in ours and _same(ours[name], expr)}
    drop = sorted(name for name in ours if name not in same)
    unenforced = {
        name: expr
        for name, expr in wanted.items()
        if _same(present.get(UNENFORCED + name, ""), expr)
    }
    add = {name: expr for name, expr in wanted.items() if name not in same | set(unenforced)}
    return drop, add


def _same(stored: str, expr: str) -> bool:
    """Delta stores a constraint's text re-spaced (``coalesce ( ( a > 0 ) , false )``)."""
    return _squeezed(stored) == _squeezed(expr)


def _squeezed(expr: str) -> str:
    """The expression without whitespace outside quoted literals and names."""
    out: list[str] = []
    quote: str | None = None
    for char in expr:
        if quote is None and char in "'\"`":
            quote = char
        elif char == quote:
            quote = None
        if quote is not None or not char.isspace():
            out.append(char)
    return "".join(out)
