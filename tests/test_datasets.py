from pathlib import Path

import pytest
from pyspark.sql import types as T

from pipelines.errors import ConfigError
from pipelines.schema.declarations import load_dataset


def test_bundled_declarations_load(schemas: Path) -> None:
    events = load_dataset(schemas, "events")
    assert events.format == "csv"
    assert events.partition_by == ("event_date",)
    assert events.csv.null_values == ("", "NA")
    assert events.schema.version == 1
    assert events.schema.struct()["event_id"] == T.StructField("event_id", T.LongType(), False)
    clicks = load_dataset(schemas, "clicks")
    assert clicks.format == "json"


def _write(schemas: Path, name: str, dataset_yaml: str, v1_yaml: str) -> None:
    folder = schemas / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.yaml").write_text(dataset_yaml)
    (folder / "v1.yaml").write_text(v1_yaml)


V1 = "columns:\n  - {name: id, type: long, nullable: false}\n  - {name: day, type: date}\n"


@pytest.mark.parametrize(
    ("dataset_yaml", "v1_yaml", "message"),
    [
        (
            "format: csv\npartition_by: [nope]\n",
            V1,
            r"dataset\.yaml: partition_by\[0\]: unknown column 'nope'",
        ),
        ("format: xml\n", V1, r"dataset\.yaml: format: expected one of csv, json, parquet"),
        ("format: csv\nshards: 3\n", V1, r"dataset\.yaml: shards: unknown key"),
        (
            "format: csv\ncsv: {delimiter: ';;'}\n",
            V1,
            r"csv\.delimiter: must be exactly one character",
        ),
        (
            "format: csv\n",
            "columns:\n  - {name: id, type: lng}\n",
            r"v1\.yaml: columns\[0\]\.type: unknown type 'lng'",
        ),
        (
            "format: csv\n",
            "columns:\n  - {name: _id, type: long}\n",
            r"v1\.yaml: columns\[0\]\.name: '_id' is not allowed",
        ),
        (
            "format: csv\n",
            "columns:\n  - {name: id, type: long, nulable: true}\n",
            r"columns\[0\]\.nulable: unknown key",
        ),
        ("format: csv\nencoding: ebcdic\n", V1, r"encoding: expected one of utf-8, utf-16"),
        ("format: parquet\nencoding: utf-8\n", V1, r"encoding: only applies to csv and json"),
        ("format: csv\non_changed_file: keep\n", V1, r"on_changed_file: expected one of reject"),
        ("format: csv\nlimits: {max_file_bytes: 10 parsecs}\n", V1, r"limits\.max_file_bytes"),
        ("format: csv\nlimits: {max_rows: 3}\n", V1, r"limits\.max_rows: unknown key"),
        ("format: csv\n", "columns: [}\n", r"v1\.yaml: line 1, column \d+: malformed YAML"),
        ("format: [csv\n", V1, r"dataset\.yaml: line \d+, column \d+: malformed YAML"),
    ],
)
def test_mistakes_fail_fast_naming_file_and_key(
    tmp_path: Path, dataset_yaml: str, v1_yaml: str, message: str
) -> None:
    _write(tmp_path, "broken", dataset_yaml, v1_yaml)
    with pytest.raises(ConfigError, match=message) as info:
        load_dataset(tmp_path, "broken")
    assert info.value.exit_code == 2
    assert "\n" not in info.value.message


def test_unknown_dataset_lists_the_known_ones(schemas: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'nope'.*known: clicks, events"):
        load_dataset(schemas, "nope")


def test_schema_versions_must_be_contiguous(tmp_path: Path) -> None:
    _write(tmp_path, "gappy", "format: csv\n", V1)
    (tmp_path / "gappy" / "v3.yaml").write_text(V1)
    with pytest.raises(ConfigError, match=r"missing v2\.yaml"):
        load_dataset(tmp_path, "gappy")


def test_file_policies_and_limits_have_defaults_and_sizes(tmp_path: Path) -> None:
    _write(tmp_path, "plain", "format: json\n", V1)
    plain = load_dataset(tmp_path, "plain")
    assert (plain.encoding, plain.on_changed_file) == ("utf-8", "reject")
    assert plain.limits.max_file_bytes == 16 * 2**30
    _write(
        tmp_path,
        "tuned",
        "format: csv\nencoding: Latin-1\non_changed_file: reingest\n"
        "limits: {max_file_bytes: 10GB, max_line_bytes: 65536}\n",
        V1,
    )
    tuned = load_dataset(tmp_path, "tuned")
    assert (tuned.encoding, tuned.on_changed_file) == ("latin-1", "reingest")
    assert (tuned.limits.max_file_bytes, tuned.limits.max_line_bytes) == (10**10, 65536)
