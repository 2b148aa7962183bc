"""Bytes fetched from the S3 server per input byte, for one ingest with sources and lake on S3.

    python bench/s3_bytes.py [--rows 100000] [--files 4]

Starts the S3 server on loopback and a counting TCP proxy in front of it; the ingest (a
separate ``lakeshard ingest`` process: S3A in the JVM, pyarrow and boto3 alike) talks to the
proxy, which counts every byte the server sends back (object bodies, listings, the Delta log,
the lease). Prints that total / the bytes of the new source files (what an ideal reader would
fetch once). Each read has a purpose (README, "What each read of the sources buys").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.s3 import server as s3_server  # noqa: E402
from pipelines import sample  # noqa: E402
from pipelines.storage.s3 import s3_client  # noqa: E402

REQUEST = re.compile(rb"^(GET|HEAD|PUT|POST|DELETE) /([^/? ]*)")


class CountingProxy:
    """A TCP proxy on loopback that counts the bytes each way, and the bytes sent back per
    (method, bucket) of the request they answer (HTTP/1.1: one response after each request)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.down = 0  # server -> client
        self.up = 0  # client -> server
        self.by_request: dict[str, int] = {}
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            current = ["?"]  # the request the next response bytes answer
            for source, sink, way in ((client, server, "up"), (server, client, "down")):
                threading.Thread(
                    target=self._pump, args=(source, sink, way, current), daemon=True
                ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, way: str, current: list[str]
    ) -> None:
        try:
            while data := source.recv(1 << 16):
                if way == "up" and (match := REQUEST.match(data)):
                    current[0] = f"{match[1].decode()} {match[2].decode() or '/'}"
                sink.sendall(data)
                with self._lock:
                    setattr(self, way, getattr(self, way) + len(data))
                    if way == "down":
                        self.by_request[current[0]] = self.by_request.get(current[0], 0) + len(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per file")
    parser.add_argument("--files", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="s3bytes-"))
    raw = work / "raw"
    sample.write_events(raw, files=args.files, rows=args.rows)
    input_bytes = sum(p.stat().st_size for p in raw.iterdir())
    state = work / "s3"
    info = s3_server.start(
        state, ["raw", "lake"], os.environ.get("LAKESHARD_S3_SERVER", "seaweedfs")
    )
    try:
        os.environ.update(info)
        client = s3_client()
        for path in sorted(raw.iterdir()):
            client.upload_file(str(path), "raw", f"events/{path.name}")
        server = urlparse(info["AWS_ENDPOINT_URL"])
        proxy = CountingProxy((server.hostname or "127.0.0.1", server.port or 80))
        env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
        env.pop("AWS_ENDPOINT_URL_S3", None)
        command = [
            sys.executable, "-m", "pipelines", "ingest", "events", "s3a://raw/events/",
            "--lake", "s3a://lake/", "--schemas", str(ROOT / "schemas"), "--json",
        ]  # fmt: skip
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise SystemExit(f"the ingest exited {done.returncode}")
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        proxy.close()
    finally:
        s3_server.stop(state)
    result = {
        "bench": "s3_bytes",
        "input_bytes": input_bytes,
        "rows_read": summary["rows_read"],
        "fetched_bytes": proxy.down,
        "sent_bytes": proxy.up,
        "fetched_per_input_byte": round(proxy.down / input_bytes, 2),
        "fetched_by_request": dict(sorted(proxy.by_request.items(), key=lambda kv: -kv[1])),
    }
    print(
        f"s3_bytes: {input_bytes / 1e6:.1f} MB of new sources ({summary['rows_read']:,} rows): "
        f"{proxy.down / 1e6:.1f} MB fetched from the S3 server, "
        f"{result['fetched_per_input_byte']}x the input; {proxy.up / 1e6:.1f} MB sent to it"
    )
    for request, count in result["fetched_by_request"].items():
        print(f"  {request:<16} {count / input_bytes:6.2f}x the input  ({count / 1e6:.1f} MB)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
