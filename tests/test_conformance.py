"""Outside corpora as input: tricky but valid CSV, and naughty strings, end to end."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from tests.conftest import CONFORMANCE
from tests.helpers import accounting_holds, ingest_quietly

SPECTRUM = CONFORMANCE / "csv_spectrum" / "csvs"
# Without the corpora, one placeholder case lets the `conformance` fixture skip with its reason.
SPECTRUM_CASES = sorted(p.stem for p in SPECTRUM.glob("*.csv")) or ["corpus-absent"]

# Where the corpus as published disagrees with itself, the test says so instead of skipping:
# - the *_crlf files were stored with LF line endings, though their names and expected values
#   say CRLF; the test restores CRLF before ingesting.
# - location_coordinates.json expects a phone number that is not the one in the CSV.
ERRATA = {"location_coordinates": {"Contact Phone Number": "2095257564"}}


def _declare(
    schemas: Path, name: str, columns: list[str], fmt: str = "csv", extra: str = ""
) -> None:
    folder = schemas / name
    folder.mkdir(parents=True)
    csv_block = "csv:\n  null_values: []\n" if fmt == "csv" else ""
    (folder / "dataset.yaml").write_text(f"format: {fmt}\n{csv_block}{extra}")
    (folder / "v1.yaml").write_text(
        "columns:\n" + "".join(f"  - name: {json.dumps(c)}\n    type: string\n" for c in columns)
    )


@pytest.mark.parametrize("case", SPECTRUM_CASES)
def test_csv_spectrum_parses_to_the_expected_values(
    spark: SparkSession, conformance: Path, tmp_path: Path, case: str
) -> None:
    source = (conformance / "csv_spectrum" / "csvs" / f"{case}.csv").read_bytes()
    if case.endswith("_crlf") and b"\r\n" not in source:
        source = source.replace(b"\n", b"\r\n")
    expected = json.loads((conformance / "csv_spectrum" / "json" / f"{case}.json").read_text())
    expected = expected if isinstance(expected, list) else [expected]
    expected = [dict(row, **ERRATA.get(case, {})) for row in expected]
    header = next(csv.reader(io.StringIO(source.decode("utf-8"))))

    schemas = tmp_path / "schemas"
    _declare(schemas, "spectrum", header)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / f"{case}.csv").write_bytes(source)
    summary = ingest_quietly(
        "spectrum", str(raw), "--lake", str(tmp_path / "lake"), "--schemas", str(schemas)
    )

    assert summary["rows_quarantined"] == 0
    assert summary["rows_read"] == len(expected)
    assert accounting_holds(summary)
    table = spark.read.format("delta").load(summary["table"])
    got = sorted(tuple(r[c] for c in header) for r in table.collect())
    assert got == sorted(tuple(row[c] for c in header) for row in expected)


def _naughty(conformance: Path) -> list[str]:
    """The list's strings. (Its base64 twin also holds byte strings that are not UTF-8; those
    are input-encoding cases, not cell values.)"""
    strings: list[str] = json.loads((conformance / "naughty_strings" / "blns.json").read_text())
    return strings


def test_naughty_strings_round_trip_as_csv_cells_and_json_fields(
    spark: SparkSession, conformance: Path, tmp_path: Path
) -> None:
    strings = _naughty(conformance)
    schemas = tmp_path / "schemas"
    _declare(schemas, "naughty_csv", ["id", "value"])
    _declare(schemas, "naughty_json", ["id", "value"], fmt="json")

    csv_dir, json_dir = tmp_path / "csv", tmp_path / "json"
    csv_dir.mkdir()
    json_dir.mkdir()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(["id", "value"])
    for i, value in enumerate(strings):
        writer.writerow([str(i), value])
    (csv_dir / "naughty.csv").write_text(buffer.getvalue(), encoding="utf-8")
    (json_dir / "naughty.jsonl").write_text(
        "".join(json.dumps({"id": str(i), "value": v}) + "\n" for i, v in enumerate(strings)),
        encoding="utf-8",
    )

    for dataset, folder in (("naughty_csv", csv_dir), ("naughty_json", json_dir)):
        summary = ingest_quietly(
            dataset, str(folder), "--lake", str(tmp_path / "lake"), "--schemas", str(schemas)
        )
        assert summary["rows_read"] == len(strings), dataset
        assert summary["rows_quarantined"] == 0, dataset
        table = spark.read.format("delta").load(summary["table"])
        got = {int(r["id"]): r["value"] for r in table.collect()}
        assert got == dict(enumerate(strings)), dataset
