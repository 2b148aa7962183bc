"""lakeshard's image, built with buildah on a Debian base made with debootstrap: `lakeshard
ingest` of the sample data inside it, against a lake folder mounted into it, read back outside
with delta-rs; then built again, which must leave the storage as it found it. A minute and a half
with the base and the runtime and deps stages cached (built by the first run), minutes without:
`make test` runs it (and installs buildah and debootstrap where it can), `make image-test` alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import deltalake
import pytest

from pipelines import sample
from tests.helpers import REPO, artifacts

pytestmark = [pytest.mark.slow]

TAG = "localhost/lakeshard:test"


def buildah(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["buildah", "--storage-driver", "vfs", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def build() -> float:
    """Builds the image as `make image` does; returns the seconds it took."""
    started = time.monotonic()
    built = subprocess.run(
        ["bash", "infra/docker/build.sh", TAG],
        cwd=REPO,
        env={**os.environ, "LAKESHARD_DEBOOTSTRAP": "1", "PATH": "/usr/sbin:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return time.monotonic() - started


def image_id(tag: str) -> str:
    return buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", tag).stdout.strip()


def stored() -> dict[str, int]:
    """How many images and containers the storage keeps (vfs: each layer a whole file system)."""
    store = json.loads(buildah("info").stdout)["store"]
    return {
        "images": store["ImageStore"]["number"],
        "containers": store["ContainerStore"]["number"],
    }


def test_the_image_ingests_the_sample_into_a_mounted_lake(tmp_path: Path) -> None:
    if shutil.which("buildah") is None or shutil.which("debootstrap") is None:
        pytest.skip(
            "buildah and debootstrap are not installed (apt-get install buildah debootstrap)"
        )
    # Leftovers of interrupted builds (untagged images nothing uses) would only take disk space.
    while buildah("rmi", "--prune").stdout.strip():
        pass
    build_s = build()
    first, after_first = image_id(TAG), stored()
    size = buildah("images", "--format", "{{.Size}}", TAG).stdout.strip()
    # Building again replaces the image and leaves the storage as it was: nothing piles up.
    rebuild_s = build()
    assert image_id(TAG) != first
    assert buildah("inspect", "--type", "image", first).returncode != 0
    assert stored() == after_first
    (artifacts() / "image.txt").write_text(
        f"{TAG}: built in {build_s:.0f} s, rebuilt in {rebuild_s:.0f} s, size {size}, "
        f"storage after each: {after_first}\n"
    )

    raw, lake = tmp_path / "raw", tmp_path / "lake"
    stats = sample.write_events(raw)
    lake.mkdir()
    for folder in (raw, lake, tmp_path):
        folder.chmod(0o777)  # the image's user is uid 10001
    container = buildah("from", TAG).stdout.strip()
    try:
        done = buildah(
            "run",
            "--isolation",
            "chroot",
            "-v",
            f"{raw}:/raw:ro",
            "-v",
            f"{lake}:/lake",
            # A chroot has no name for the container's host name: Spark binds to loopback.
            "--env",
            "SPARK_LOCAL_HOSTNAME=localhost",
            "--env",
            "SPARK_LOCAL_IP=127.0.0.1",
            container,
            "--",
            "lakeshard",
            "ingest",
            "events",
            "/raw",
            "--json",
        )
    finally:
        buildah("rm", container)
        buildah("rmi", TAG)  # 1.8 GB; the cached runtime and deps stages stay
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["rows_read"] == stats.lines
    table = deltalake.DeltaTable(str(lake / "tables" / "events")).to_pyarrow_table()
    assert table.num_rows == summary["rows_written"] > 0
