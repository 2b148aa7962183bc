"""``infra/notebooks/query_tables.ipynb`` runs top to bottom against a lake the demo made, and the
README's reader matrix for an evolved table is what the notebook measured."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from pyspark.sql import SparkSession

from pipelines import demo
from tests.conftest import REPO, SCHEMAS
from tests.helpers import artifacts

pytestmark = [pytest.mark.jvm, pytest.mark.slow]

NOTEBOOK = REPO / "infra" / "notebooks" / "query_tables.ipynb"
README_MATRIX = re.compile(r"<!-- evolved-readers -->(.*?)<!-- /evolved-readers -->", re.S)


def test_the_notebook_runs_against_the_demo_lake(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the demo's sample data goes to ./build/demo
    monkeypatch.setenv("LAKESHARD_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("LAKESHARD_SCHEMAS", str(SCHEMAS))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert demo.main() == 0

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Jupyter starts a kernel in the notebook's folder; the kernel inherits the settings above.
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    try:
        client.execute()
    finally:
        nbformat.write(notebook, artifacts() / NOTEBOOK.name)
    printed = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    )
    assert f"lake: {(tmp_path / 'lake').as_uri()}" in printed
    assert "version 1: 1,074 rows" in printed  # the demo's events, read back by Spark
    measured = json.loads(printed.split("EVOLVED_READERS ", 1)[1].splitlines()[0])
    assert set(measured) == {"portable", "in_place"}
    assert all(measured["portable"].values())  # the default: every engine reads the table
    assert all(engines["Spark"] for engines in measured.values())
    assert measured == readme_matrix(), "the README's reader matrix differs from what ran"
    for mode, engines in measured.items():  # status agrees with the engines
        readable = all(engines.values())
        assert f"{mode:9} lakeshard status: spark_free_readable = {readable}" in printed


def readme_matrix() -> dict[str, dict[str, bool]]:
    """Mode -> engine -> reads, from the README table between the evolved-readers markers."""
    match = README_MATRIX.search((REPO / "README.md").read_text())
    assert match, "README.md lacks the <!-- evolved-readers --> table"
    lines = match.group(1).strip().splitlines()
    modes = [cell.strip().strip("`") for cell in lines[0].split("|")[2:-1]]
    matrix: dict[str, dict[str, bool]] = {mode: {} for mode in modes}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        engine = cells[0].split(" ")[0]
        for mode, cell in zip(modes, cells[1:], strict=True):
            matrix[mode][engine] = cell.startswith("yes")
    return matrix
