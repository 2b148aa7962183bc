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
    assert measured["Spark"] is True
    assert measured == readme_matrix(), "the README's reader matrix differs from what ran"
    refused = not all(measured.values())
    assert f"spark_free_readable = {not refused}" in printed  # status agrees with the engines


def readme_matrix() -> dict[str, bool]:
    """Engine -> reads, from the README table between the evolved-readers markers."""
    match = README_MATRIX.search((REPO / "README.md").read_text())
    assert match, "README.md lacks the <!-- evolved-readers --> table"
    rows = [line.split("|")[1:-1] for line in match.group(1).strip().splitlines()[2:]]
    return {cells[0].strip().split(" ")[0]: cells[1].strip().startswith("yes") for cells in rows}
