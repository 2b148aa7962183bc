"""A bare ``pip install lakeshard`` is a trainer's install: ShardLoader streams an export with
pyarrow and NumPy alone, and neither Spark, Delta nor boto3 comes with it.

Installs the checkout into a fresh virtual environment (PyPI or the pip cache must be reachable).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow

# What the build reads (setup.cfg: packages pipelines and jobs, the long description).
SOURCES = ("pyproject.toml", "setup.cfg", "README.md", "pipelines", "jobs")
SPARK_SIDE = ("pyspark", "delta", "boto3", "xxhash", "yaml")

# Builds an export by hand as tests/shards.py does (without xxhash: any 16 bytes tell rows apart
# for the loader), streams one batch, and tries the imports the trainer must not need.
TRAINER = """
import hashlib
import importlib
import sys

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.loader import ShardLoader
from pipelines.loader.manifest import Manifest, Split, describe_file

root = sys.argv[1]
COLUMNS = (("id", "bigint"), ("name", "string"), ("_content_hash", "binary"))
shards, first = [], 0
for index, size in enumerate([5, 9]):
    ids = list(range(first, first + size))
    first += size
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": pa.array([f"row {i}" for i in ids]),
            "_content_hash": pa.array(
                [hashlib.blake2b(str(i).encode(), digest_size=16).digest() for i in ids],
                pa.binary(),
            ),
        }
    )
    relative = f"train/shard-{index:05d}.parquet"
    pafs.LocalFileSystem().create_dir(f"{root}/train")
    pq.write_table(table, f"{root}/{relative}", row_group_size=4)
    shards.append(describe_file(pafs.LocalFileSystem(), f"{root}/{relative}", relative))
manifest = Manifest(
    dataset="handmade",
    table=f"file://{root}/table",
    table_id="00000000-0000-0000-0000-000000000000",
    table_version=1,
    columns=tuple(name for name, _ in COLUMNS),
    where=None,
    seed=0,
    schema=tuple({"name": n, "type": t, "nullable": False} for n, t in COLUMNS),
    splits=(Split(name="train", fraction="1", rows=first, shards=tuple(shards)),),
)
with open(f"{root}/manifest.json", "w") as out:
    out.write(manifest.to_json())

batch = next(iter(ShardLoader(root, batch_size=4, seed=3)))
print("from", sys.modules["pipelines.loader"].__file__)
print("columns", sorted(batch))
print("ids", sorted(int(i) for i in batch["id"]))
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except ImportError:
        print("absent", name)
    else:
        print("present", name)
"""


def test_a_bare_install_streams_an_export_without_spark(tmp_path: Path) -> None:
    source = tmp_path / "lakeshard"  # a copy: an in-tree build would write into the checkout
    for name in SOURCES:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(REPO / name, source / name, ignore=ignore)
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environ["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=900,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    export = tmp_path / "export"
    export.mkdir()
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    trainer = subprocess.run(
        [python, str(script), str(export), *SPARK_SIDE],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp_path,  # not the checkout: the installed package, not the working tree
        timeout=300,
        check=False,
    )
    assert trainer.returncode == 0, trainer.stderr[-3000:]
    lines = trainer.stdout.splitlines()
    assert lines[0].startswith(f"from {env_dir}/lib/"), lines[0]  # the installed copy
    assert lines[1] == "columns ['_content_hash', 'id', 'name']"
    ids = [int(i) for i in lines[2].removeprefix("ids ").strip("[]").split(", ")]
    assert len(set(ids)) == 4
    assert set(ids) <= set(range(14))
    assert lines[3:] == [f"absent {name}" for name in SPARK_SIDE]

    # The command line is there too, and a verb that needs Spark says which extra brings it.
    def lakeshard(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(env_dir / "bin" / "lakeshard"), *args]
        return subprocess.run(
            command, capture_output=True, text=True, env=environ, cwd=tmp_path, timeout=120
        )

    assert lakeshard("--help").returncode == 0
    ingest = lakeshard("ingest", "events", str(export))
    assert ingest.returncode == 2, ingest.stderr
    assert ingest.stderr.strip().splitlines() == [
        "error: lakeshard ingest needs pyspark, which this install lacks: "
        "pip install 'lakeshard[spark]'"
    ]
