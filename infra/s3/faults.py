"""Storage faults on loopback, between lakeshard and the S3 server, for the fault tests.

* :class:`Toxiproxy` — Shopify's TCP fault proxy (built from the Go module proxy by
  ``infra/go/build.sh toxiproxy`` and cached), driven through its HTTP API: added latency, a
  bandwidth cap, connections reset mid-transfer, a connection that stalls, the server gone
  for a while (the proxy disabled, so new connections are refused).
* :class:`SlowDownProxy` — an HTTP proxy that answers a share of requests itself with S3's
  ``503 SlowDown`` or a ``500 InternalError`` (what TCP faults cannot show) and forwards the
  rest unchanged (the ``Host`` header too, so request signatures still match).

Both count what they saw, so a test can tell that a fault was met and how often it was retried.

    with Toxiproxy(folder) as toxi:
        endpoint = toxi.proxy("s3", upstream="127.0.0.1:8333")
        toxi.add("s3", "latency", latency=200, jitter=50)
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from infra.s3.server import free_port

BUILD = Path(__file__).resolve().parents[1] / "go" / "build.sh"


def toxiproxy_binary() -> str:
    done = subprocess.run(
        ["bash", str(BUILD), "toxiproxy"], capture_output=True, text=True, check=False, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(f"building toxiproxy failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


class Toxiproxy:
    """A running toxiproxy-server on loopback and its HTTP API."""

    def __init__(self, folder: Path) -> None:
        self.api = f"http://127.0.0.1:{free_port()}"
        port = self.api.rsplit(":", 1)[1]
        log = (folder / "toxiproxy.log").open("wb")
        self.process = subprocess.Popen(
            [toxiproxy_binary(), "-host", "127.0.0.1", "-port", port],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self._call("GET", "/version")
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"toxiproxy did not start; see {log.name}") from None
                time.sleep(0.1)

    def __enter__(self) -> Toxiproxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.api}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read()
        try:
            return json.loads(text) if text else None
        except ValueError:  # /version answers plain text
            return text.decode()

    def proxy(self, name: str, upstream: str) -> str:
        """A proxy to ``upstream`` (host:port); returns its http:// endpoint."""
        listen = f"127.0.0.1:{free_port()}"
        self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream})
        return f"http://{listen}"

    def add(self, proxy: str, kind: str, stream: str = "downstream", **attributes: Any) -> str:
        """Add a toxic (``latency``, ``bandwidth``, ``reset_peer``, ``timeout``, ...)."""
        name = f"{kind}_{stream}"
        body = {"name": name, "type": kind, "stream": stream, "attributes": attributes}
        self._call("POST", f"/proxies/{proxy}/toxics", body)
        return name

    def clear(self, proxy: str) -> None:
        """Remove every toxic and enable the proxy again."""
        for toxic in self._call("GET", f"/proxies/{proxy}/toxics"):
            self._call("DELETE", f"/proxies/{proxy}/toxics/{toxic['name']}")
        self.enable(proxy, True)

    def enable(self, proxy: str, enabled: bool) -> None:
        """A disabled proxy closes its connections and refuses new ones: the server is gone."""
        self._call("POST", f"/proxies/{proxy}", {"enabled": enabled})


_SLOW_DOWN = (
    503,
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>",
)
_INTERNAL = (
    500,
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>",
)


class SlowDownProxy:
    """Forward HTTP to ``upstream``; answer a share of requests with 503 SlowDown or 500."""

    def __init__(self, upstream: str, seed: int = 1) -> None:
        self.upstream = upstream
        self.share = 0.0
        self.answer = _SLOW_DOWN
        self.seen: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, share: float, status: int = 503) -> None:
        self.share, self.answer = share, _SLOW_DOWN if status == 503 else _INTERNAL

    def close(self) -> None:
        self.server.shutdown()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        body = _read_body(request)
        with self._lock:
            refuse = self._rng.random() < self.share
            self.seen["refused" if refuse else "forwarded"] += 1
        if refuse:
            status, payload = self.answer
            request.send_response(status)
            request.send_header("Content-Type", "application/xml")
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            if request.command != "HEAD":
                request.wfile.write(payload)
            return
        try:
            self._forward(request, body)
        except OSError:  # the server behind is gone: so is this connection, without an answer
            request.close_connection = True

    def _forward(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        with contextlib.closing(http.client.HTTPConnection(self.upstream, timeout=60)) as conn:
            hop = ("connection", "transfer-encoding", "content-length", "expect")
            headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
            headers["Content-Length"] = str(len(body))
            conn.request(request.command, request.path, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            request.send_response(answer.status, answer.reason)
            for key, value in answer.getheaders():
                if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                    request.send_header(key, value)
            # A HEAD answer has no body but the object's length, which a reader relies on.
            length = answer.getheader("Content-Length") if request.command == "HEAD" else None
            request.send_header("Content-Length", length or str(len(data)))
            request.end_headers()
            if request.command != "HEAD":
                request.wfile.write(data)


def _read_body(request: BaseHTTPRequestHandler) -> bytes:
    """The request's body, whether sized or sent in HTTP chunks (the AWS SDKs stream uploads)."""
    if "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        length = int(request.headers.get("Content-Length") or 0)
        return request.rfile.read(length) if length else b""
    parts = []
    while True:
        size = int(request.rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while request.rfile.readline().strip():  # trailers, up to the blank line
                pass
            return b"".join(parts)
        parts.append(request.rfile.read(size))
        request.rfile.readline()  # the CRLF after each chunk
