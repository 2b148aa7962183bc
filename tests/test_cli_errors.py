"""Bad configuration gets exit code 2 and one line naming the problem, as a separate process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import run_cli

SECRET = "wJalrXUtnFEMI-not-a-real-secret-K7MDENG"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    env.update(extra)
    return env


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_unknown_dataset(tmp_path: Path) -> None:
    result = run_cli("ingest", "nope", str(tmp_path), "--lake", str(tmp_path / "lake"), env=_env())
    assert result.returncode == 2
    assert "unknown dataset 'nope'" in _one_error_line(result.stderr)


def test_malformed_yaml(schemas: Path, tmp_path: Path) -> None:
    (schemas / "events" / "dataset.yaml").write_text("format: csv\npartition_by: [event_date\n")
    result = run_cli("ingest", "events", str(tmp_path), "--schemas", str(schemas), env=_env())
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "events/dataset.yaml" in line
    assert "malformed YAML" in line


def test_unknown_type_name(schemas: Path, tmp_path: Path) -> None:
    v1 = schemas / "events" / "v1.yaml"
    v1.write_text(
        v1.read_text().replace(
            "type: long\n    nullable: false", "type: lnog\n    nullable: false", 1
        )
    )
    result = run_cli("ingest", "events", str(tmp_path), "--schemas", str(schemas), env=_env())
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "events/v1.yaml: columns[0].type: unknown type 'lnog'" in line


def test_bad_flag() -> None:
    result = run_cli("ingest", "events", "x", "--shards", "3", env=_env())
    assert result.returncode == 2
    assert "unrecognized arguments: --shards" in _one_error_line(result.stderr)


def test_unreachable_s3_endpoint(tmp_path: Path) -> None:
    env = _env(
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_ACCESS_KEY_ID="AKIDEXAMPLE",
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_REGION="us-east-1",
    )
    result = run_cli("ingest", "events", str(tmp_path), "--lake", "s3://lake/x", env=env)
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "cannot reach the lake bucket 'lake' at http://127.0.0.1:9" in line
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.s3
def test_wrong_s3_credentials(s3: dict[str, str], tmp_path: Path) -> None:
    env = _env(
        AWS_ENDPOINT_URL=s3["AWS_ENDPOINT_URL"],
        AWS_ACCESS_KEY_ID=s3["AWS_ACCESS_KEY_ID"],
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_REGION="us-east-1",
    )
    result = run_cli("ingest", "events", str(tmp_path), "--lake", "s3a://lake/x", env=env)
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "access denied to the lake bucket 'lake'" in line
    assert SECRET not in result.stdout + result.stderr
    assert s3["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr


def test_help_documents_the_environment() -> None:
    result = run_cli("ingest", "--help", env=_env())
    assert result.returncode == 0
    for text in ("LAKESHARD_LAKE", "AWS_ENDPOINT_URL", "--json", "exit codes"):
        assert text in result.stdout


@pytest.mark.parametrize(
    ("secret", "where"),
    [
        (SECRET, "source"),
        ("wJalrXUtnFEMI/K7MDENG+bPxRfi/CYEXAMPLEKEY", "source"),  # a '/' ends the authority early
        (SECRET, "lake"),
        (SECRET, "LAKESHARD_LAKE"),
    ],
)
def test_credentials_in_a_uri_are_refused_and_shown_masked(
    secret: str, where: str, tmp_path: Path
) -> None:
    uri = f"s3a://AKIAEXAMPLEKEY123:{secret}@bucket/landing/2026"
    args = ["ingest", "events", uri if where == "source" else str(tmp_path)]
    env = _env()
    if where == "lake":
        args += ["--lake", uri]
    elif where == "LAKESHARD_LAKE":
        env["LAKESHARD_LAKE"] = uri
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "s3a://********@bucket/landing/2026: credentials in a URI are not accepted" in line
    for part in (secret, *secret.split("/")):
        assert part not in result.stdout + result.stderr
    assert "AKIAEXAMPLEKEY123" not in result.stdout + result.stderr
