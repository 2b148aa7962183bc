"""Least privilege: the S3 rights in infra/iam/lakeshard-run.json are enough, and no more is used.

A SeaweedFS server of its own (the shared one has a single all-powerful identity) gets users
whose rights are the IAM policy translated into SeaweedFS's per-bucket actions. Each ingest runs
as a separate process with one user's keys. After every test the source bucket's objects are
byte-identical to what was uploaded: no run writes, renames or deletes a source.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from infra.s3 import server as s3_server
from pipelines import sample
from pipelines.storage.s3 import RIGHTS
from tests.conftest import SCHEMAS, TEST_SPARK_CONF
from tests.helpers import REPO, boto_client, last_json_line, run_cli

pytestmark = [
    pytest.mark.s3,
    pytest.mark.skipif(
        os.environ.get("LAKESHARD_S3_SERVER", "seaweedfs") != "seaweedfs",
        reason="users with per-bucket rights are set up for SeaweedFS only",
    ),
]

SOURCES, LAKE = "src", "lake"
# What each IAM action is among SeaweedFS's coarser per-bucket actions.
SEAWEED_ACTION = {
    "s3:ListBucket": "List",
    "s3:GetObject": "Read",
    "s3:PutObject": "Write",
    "s3:DeleteObject": "Write",
    "s3:AbortMultipartUpload": "Write",
    "s3:ListMultipartUploadParts": "Write",
}


def policy_actions() -> list[str]:
    """The IAM policy a run needs, as SeaweedFS actions on this test's two buckets."""
    text = (REPO / RIGHTS).read_text()
    for name, value in {
        "SOURCE_BUCKET": SOURCES,
        "SOURCE_PREFIX": "",
        "LAKE_BUCKET": LAKE,
        "LAKE_PREFIX": "",
    }.items():
        text = text.replace("${" + name + "}", value)
    actions = set()
    for statement in json.loads(text)["Statement"]:
        assert statement["Effect"] == "Allow"
        for resource in statement["Resource"]:
            bucket = resource.removeprefix("arn:aws:s3:::").split("/")[0]
            actions.update(f"{SEAWEED_ACTION[a]}:{bucket}" for a in statement["Action"])
    return sorted(actions)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("s3-rights")
    exact = policy_actions()
    users = {
        "runner": exact,
        "lakereader": [a for a in exact if a != f"Write:{LAKE}"],
        "sourcewriter": [*exact, f"Write:{SOURCES}"],
    }
    info = s3_server.start(state, [SOURCES, LAKE], "seaweedfs", identities=users)
    raw = tmp_path_factory.mktemp("rights-raw")
    sample.write_events(raw, seed=21, files=2, rows=60)
    admin = boto_client(info)
    for path in sorted(raw.iterdir()):
        admin.upload_file(str(path), SOURCES, f"landing/{path.name}")
    yield {"info": info, "state": state, "users": users, "sources": _objects(admin)}
    s3_server.stop(state)


@pytest.fixture(autouse=True)
def sources_untouched(server: dict[str, Any]) -> Iterator[None]:
    yield
    assert _objects(boto_client(server["info"])) == server["sources"]


def _objects(client: Any) -> dict[str, tuple[str, str]]:
    """Every source object: its ETag and the SHA-256 of its bytes."""
    found = {}
    for item in client.list_objects_v2(Bucket=SOURCES).get("Contents", []):
        body = client.get_object(Bucket=SOURCES, Key=item["Key"])["Body"].read()
        found[item["Key"]] = (item["ETag"], hashlib.sha256(body).hexdigest())
    return found


def _ingest_as(server: dict[str, Any], user: str, prefix: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(server["info"], **s3_server.identity_keys(server["state"], user))
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    env.update(LAKESHARD_SPARK_CONF=TEST_SPARK_CONF)
    return run_cli(
        "ingest",
        "events",
        f"s3a://{SOURCES}/landing",
        "--lake",
        f"s3a://{LAKE}/{prefix}",
        "--schemas",
        str(SCHEMAS),
        "--master",
        "local[2]",
        "--json",
        env=env,
    )


def test_the_policy_names_read_on_sources_and_read_write_on_the_lake() -> None:
    assert policy_actions() == [
        f"List:{LAKE}",
        f"List:{SOURCES}",
        f"Read:{LAKE}",
        f"Read:{SOURCES}",
        f"Write:{LAKE}",
    ]


def test_a_run_with_exactly_the_documented_rights_succeeds(server: dict[str, Any]) -> None:
    result = _ingest_as(server, "runner", "exact")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json_line(result.stdout)
    assert summary["status"] == "succeeded"
    assert summary["files_ingested"] == 2
    assert summary["rows_written"] > 0


def test_read_only_on_the_lake_fails_before_reading_any_data(server: dict[str, Any]) -> None:
    result = _ingest_as(server, "lakereader", "read-only")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: the lake s3a://{LAKE}/read-only refused s3:PutObject")
    assert RIGHTS in lines[0]
    listing = boto_client(server["info"]).list_objects_v2(Bucket=LAKE, Prefix="read-only/")
    assert listing.get("KeyCount", 0) == 0  # nothing written, no table, no lease


def test_write_rights_on_the_sources_are_never_used(server: dict[str, Any]) -> None:
    """The autouse check compares every source object after this run."""
    result = _ingest_as(server, "sourcewriter", "source-writer")
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_json_line(result.stdout)["files_ingested"] == 2
