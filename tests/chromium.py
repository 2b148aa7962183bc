"""A real headless Chromium driven over the DevTools protocol, for tests of pages lakeshard writes.

The protocol travels over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out, each message JSON
ended by a NUL byte), so no WebSocket client or browser-driver package is needed: Debian's
``chromium`` is enough. The browser records what a person would see go wrong: console errors,
uncaught exceptions, failed loads, and any request that leaves the machine.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BINARY_NAMES = ("chromium", "chromium-browser", "google-chrome")
MISSING = (
    "no Chromium found (LAKESHARD_CHROMIUM, or chromium on PATH): `make test` installs "
    "Debian's chromium when run as root; otherwise `apt-get install chromium`"
)


def find_binary() -> str | None:
    """``LAKESHARD_CHROMIUM``, or a Chromium on PATH."""
    named = os.environ.get("LAKESHARD_CHROMIUM")
    if named:
        return named
    return next((found for name in BINARY_NAMES if (found := shutil.which(name))), None)


@dataclass
class PageLoad:
    """What happened while a page loaded."""

    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    requests: list[str] = field(default_factory=list)  # every URL the page asked for


class Chromium:
    """One headless browser with one tab; use as a context manager."""

    def __init__(self, binary: str, profile: Path, log: Path) -> None:
        to_browser, self._send_fd = os.pipe()
        self._recv_fd, from_browser = os.pipe()

        def pipes_on_3_and_4() -> None:  # runs in the child, before exec
            high_in, high_out = os.dup(to_browser), os.dup(from_browser)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        self._log = log.open("wb")
        self._process = subprocess.Popen(  # preexec_fn: the one way to put the pipes on fds 3 and 4
            [
                binary,
                "--headless",
                "--no-sandbox",  # tests run as root in CI
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            close_fds=False,
            preexec_fn=pipes_on_3_and_4,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.kill()
        self._process.wait(timeout=30)
        os.close(self._send_fd)
        os.close(self._recv_fd)
        self._log.close()

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._send_fd, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._receive(timeout=60)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer["result"]
                return result
            self._events.append(answer)

    def load(self, url: str, width: int = 1000, height: int = 1200) -> PageLoad:
        """Open url at this viewport size and wait for its load event and a quiet moment."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self._events.clear()
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
            self._events.append(self._receive(timeout=deadline - time.monotonic()))
        self.evaluate("new Promise(r => requestAnimationFrame(() => setTimeout(r, 200)))")
        return self._page_load()

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        answer = self.call(
            "Runtime.evaluate",
            session=True,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def screenshot(self, path: Path) -> None:
        """The whole page, not only the viewport, as a PNG."""
        answer = self.call(
            "Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True
        )
        path.write_bytes(base64.b64decode(answer["data"]))

    def _page_load(self) -> PageLoad:
        seen = PageLoad()
        for event in self._events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                text = " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                seen.errors.append(f"console: {text}")
            elif method == "Runtime.exceptionThrown":
                seen.errors.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                seen.errors.append(f"log: {params['entry']['text']}")
            elif method == "Network.loadingFailed":
                seen.errors.append(f"failed load: {params.get('errorText')}")
            elif method == "Network.requestWillBeSent":
                seen.requests.append(params["request"]["url"])
        return seen

    def _receive(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._recv_fd], [], [], max(left, 0))
            if not ready:
                raise RuntimeError(f"no answer from Chromium in {timeout:.0f} s")
            chunk = os.read(self._recv_fd, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        answer: dict[str, Any] = json.loads(message)
        return answer
