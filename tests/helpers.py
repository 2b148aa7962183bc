"""Helpers shared by the integration tests."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipelines import cli
from pipelines.runs.summary import accounting_holds

__all__ = [
    "CONFORMANCE",
    "REPO",
    "Receiver",
    "accounting_holds",
    "artifacts",
    "boto_client",
    "dead_claim",
    "declare",
    "ingest_quietly",
    "last_json_line",
    "naughty_corpus",
    "run_cli",
]

REPO = Path(__file__).resolve().parent.parent
# The outside bad-input corpora; tests that need them skip, or say so, where they are absent.
CONFORMANCE = Path(
    os.environ.get("LAKESHARD_CONFORMANCE", str(REPO.parent / "shared" / "conformance"))
)


def naughty_corpus(name: str) -> list[Any]:
    """A file of the naughty-strings corpus (``blns.json``, ``blns.base64.json``) as loaded;
    empty where the corpora are absent."""
    path = CONFORMANCE / "naughty_strings" / name
    if not path.is_file():
        return []
    loaded: list[Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def ingest_quietly(*args: str) -> dict[str, Any]:
    """Run ``lakeshard ingest ARGS --json`` in this process where no capsys is at hand."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["ingest", *args, "--json"])
    assert code == 0, f"ingest {args} exited {code}"
    return last_json_line(out.getvalue())


def last_json_line(stdout: str) -> dict[str, Any]:
    """The summary a ``--json`` command prints as its last stdout line."""
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipelines ARGS`` as a separate process, as a user or cron would."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def declare(
    schemas: Path, name: str, fmt: str, columns: list[tuple[str, str]], extra: str = ""
) -> None:
    """Write a one-version dataset declaration (CSV: no null tokens, every value kept)."""
    folder = schemas / name
    folder.mkdir(parents=True)
    csv_block = "csv:\n  null_values: []\n" if fmt == "csv" else ""
    (folder / "dataset.yaml").write_text(f"format: {fmt}\n{csv_block}{extra}")
    (folder / "v1.yaml").write_text(
        "columns:\n" + "".join(f"  - {{name: {json.dumps(n)}, type: {t}}}\n" for n, t in columns)
    )


def artifacts() -> Path:
    """Where tests keep what a person may want to look at afterwards (a screenshot, an executed
    notebook): ``LAKESHARD_TEST_ARTIFACTS``, else build/test-artifacts in the checkout."""
    folder = Path(os.environ.get("LAKESHARD_TEST_ARTIFACTS", REPO / "build" / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def dead_claim(leases: Path, run_id: str = "20260101T000000Z-deadbeef") -> dict[str, Any]:
    """Leave the claim of a run whose driver died on a dataset's lease (its newest generation):
    this host, a pid above the default pid_max (no such process), an hour left to live."""
    claim = {
        "run_id": run_id,
        "host": socket.gethostname(),
        "pid": 2**22 + 12345,
        "acquired_at": time.time(),
        "expires_at": time.time() + 3600,
    }
    leases.mkdir(parents=True, exist_ok=True)
    top = max((int(p.stem) for p in leases.glob("*.json")), default=0)
    (leases / f"{top + 1:012d}.json").write_text(json.dumps(claim))
    return claim


class Receiver:
    """An HTTP server on loopback that keeps every JSON body POSTed to it, by path."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[Any]:
        return [body for where, body in self.posts if where == path]

    def wait_for(self, path: str, count: int, timeout: float = 60) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.at(path)) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.at(path)


def boto_client(server: dict[str, str]) -> Any:
    """A boto3 client for a test S3 server, with the keys in ``server`` (its variables)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=server["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=server["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=server["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}),
    )
