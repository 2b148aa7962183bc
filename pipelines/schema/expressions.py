"""Vetting a Spark SQL expression a user wrote: a deterministic boolean condition on one row.

Row rules (``dataset.yaml``) and ``export --where`` are both such conditions: Spark analyses the
expression against the schema before any data is read, and anything that would make its answer
depend on more than the row (a subquery, an aggregate, a window, a UDF, randomness) is refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.spark import quiet_query_errors

# Catalyst expression classes a condition may not use: it must be a pure function of one row.
FORBIDDEN = {
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


def condition_problem(frame: DataFrame, expr: str) -> str | None:
    """What is wrong with ``expr`` as a condition on one row of ``frame`` (None: nothing), as a
    phrase that follows the quoted expression: ``": <analysis error>"``, ``" is of type int, not
    a boolean condition"``, ``" uses a subquery"``, ``" is not deterministic"``."""
    with quiet_query_errors():
        try:
            analysed = frame.select(F.expr(expr).alias("ok"))
            dtype = analysed.schema["ok"].dataType
        except (AnalysisException, ParseException) as exc:
            return ": " + _analysis_message(exc, frame.columns)
    if not isinstance(dtype, T.BooleanType):
        return f" is of type {dtype.simpleString()}, not a boolean condition"
    plan = analysed._jdf.queryExecution().analyzed()
    if plan.getClass().getSimpleName() != "Project":
        return " is not a condition on one row"
    root = plan.expressions().apply(0)
    for node in _nodes(root):
        what = FORBIDDEN.get(str(node.getClass().getSimpleName()))
        if what is not None:
            return f" uses {what}"
    if not root.deterministic():
        return " is not deterministic"
    return None


def _analysis_message(exc: Exception, columns: Sequence[str]) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    message = lines[0] if lines else type(exc).__name__
    if "UNRESOLVED_COLUMN" in message:
        message = message.split(" Did you mean")[0] + f" (columns: {', '.join(columns)})"
    return message


def _nodes(node: Any) -> Iterator[Any]:
    yield node
    children = node.children()
    for index in range(children.size()):
        yield from _nodes(children.apply(index))
