"""A real Prometheus Pushgateway and Alertmanager on loopback, for tests and a local try-out.

Each binary is built once from the Go module proxy by ``infra/go/build.sh`` and cached in
``~/.cache/lakeshard/bin``. Alertmanager gets a configuration whose only receiver is a webhook
(the URL given), grouping nothing and waiting one second, so an alert posted to its API reaches
the receiver within seconds.

    with pushgateway(tmp) as url: ...
    with alertmanager(tmp, "http://127.0.0.1:PORT/am") as url: ...
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BUILD = Path(__file__).resolve().parents[1] / "go" / "build.sh"


def binary(name: str) -> str:
    """The cached binary, built first if missing (about a minute each, cold)."""
    done = subprocess.run(
        ["bash", str(BUILD), name], capture_output=True, text=True, check=False, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(f"building {name} failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def pushgateway(folder: Path) -> Iterator[str]:
    port = _free_port()
    command = [binary("pushgateway"), f"--web.listen-address=127.0.0.1:{port}"]
    with _serving(command, folder / "pushgateway.log", f"http://127.0.0.1:{port}") as url:
        yield url


@contextlib.contextmanager
def alertmanager(folder: Path, receiver_url: str) -> Iterator[str]:
    port, cluster = _free_port(), _free_port()
    config = folder / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: test\n"
        "  group_by: ['...']\n"  # every alert its own group: no batching in a test
        "  group_wait: 1s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: test\n"
        "    webhook_configs:\n"
        f"      - url: {receiver_url}\n"
        "        send_resolved: true\n"
    )
    command = [
        binary("alertmanager"),
        f"--config.file={config}",
        f"--storage.path={folder / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--cluster.listen-address=127.0.0.1:{cluster}",
    ]
    with _serving(command, folder / "alertmanager.log", f"http://127.0.0.1:{port}") as url:
        yield url


@contextlib.contextmanager
def _serving(command: list[str], log: Path, url: str) -> Iterator[str]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_ready(f"{url}/-/ready", process, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{log.stem} exited {process.returncode}:\n{log.read_text()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{log.stem} not ready after 60 s:\n{log.read_text()[-2000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
