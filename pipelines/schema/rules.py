"""Row rules: check their expressions before a run, and keep the table's CHECK constraints in step.

A rule is ``{name, expr, on_violation}`` in ``dataset.yaml``; :func:`pipelines.validate.with_rules`
evaluates it on every valid record. Here each expression is analysed by Spark against the
current schema, once, before any data is read: an unknown column, a non-boolean result, a
subquery, a UDF, an aggregate or a non-deterministic function is a configuration error (exit 2)
naming the file and key.

Rules that refuse rows (``quarantine``, ``fail``) also guard the Delta table itself as CHECK
constraints named ``lakeshard_rule_<name>``, so a writer that bypasses lakeshard cannot break them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pyspark.errors import AnalysisException, ParseException
from pyspark.logger import PySparkLogger
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.errors import ConfigError
from pipelines.schema.datasets import Dataset, Rule

CONSTRAINT_PREFIX = "lakeshard_rule_"
# Table property marking a constraint that could not be added (rows already break it).
UNENFORCED = "lakeshard.unenforced."
# Catalyst expression classes a rule may not use: it must be a pure function of one row.
_FORBIDDEN = {
    "ScalarSubquery": "a subquery",
    "Exists": "a subquery",
    "ListQuery": "a subquery",
    "InSubquery": "a subquery",
    "LateralSubquery": "a subquery",
    "PythonUDF": "a UDF",
    "ScalaUDF": "a UDF",
    "HiveSimpleUDF": "a UDF",
    "HiveGenericUDF": "a UDF",
    "AggregateExpression": "an aggregate",
    "WindowExpression": "a window function",
}


@contextmanager
def _quiet_pyspark() -> Iterator[None]:
    """pyspark logs every analysis error it raises; a bad rule is reported once, by lakeshard."""
    # pyspark's own logger class: a plain logging.Logger made first under these names would
    # break pyspark's later calls to them (they pass extra keyword arguments).
    names = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")
    loggers: list[logging.Logger] = [PySparkLogger.getLogger(n) for n in names]
    saved = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        yield
    finally:
        for logger, was in zip(loggers, saved, strict=True):
            logger.disabled = was


def check_rules(spark: SparkSession, dataset: Dataset) -> None:
    """Raise ConfigError (exit 2) for the first rule whose expression is not a row predicate."""
    if not dataset.rules:
        return
    empty = spark.createDataFrame([], dataset.schema.struct())
    with _quiet_pyspark():
        for rule in dataset.rules:
            _check(empty, rule, dataset)


def _check(empty: Any, rule: Rule, dataset: Dataset) -> None:
    where = f"{dataset.declaration}: {rule.key}.expr"
    try:
        frame = empty.select(F.expr(rule.expr).alias("ok"))
        dtype = frame.schema["ok"].dataType
    except (AnalysisException, ParseException) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        message = lines[0] if lines else type(exc).__name__
        if "UNRESOLVED_COLUMN" in message:
            columns = ", ".join(dataset.schema.names)
            message = message.split(" Did you mean")[0] + f" (columns: {columns})"
        raise ConfigError(f"{where}: {rule.expr!r}: {message}") from None
    if not isinstance(dtype, T.BooleanType):
        raise ConfigError(
            f"{where}: {rule.expr!r} is of type {dtype.simpleString()}, not a boolean condition"
        )
    plan = frame._jdf.queryExecution().analyzed()
    if plan.getClass().getSimpleName() != "Project":
        raise ConfigError(f"{where}: {rule.expr!r} is not a condition on one row")
    root = plan.expressions().apply(0)
    for node in _nodes(root):
        what = _FORBIDDEN.get(str(node.getClass().getSimpleName()))
        if what is not None:
            raise ConfigError(f"{where}: {rule.expr!r} uses {what}; a rule sees one row only")
    if not root.deterministic():
        raise ConfigError(
            f"{where}: {rule.expr!r} is not deterministic; a rule must give the same answer "
            "for the same row on every run"
        )


def _nodes(node: Any) -> Iterator[Any]:
    yield node
    children = node.children()
    for index in range(children.size()):
        yield from _nodes(children.apply(index))


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
