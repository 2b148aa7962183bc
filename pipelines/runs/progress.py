"""Progress lines of long work, and the checkpoint where a requested stop happens."""

from __future__ import annotations

import sys

from pipelines.errors import (
    raise_if_stopped,
)


def progress(message: str) -> None:
    """Report a step on stderr; also a checkpoint where a requested stop (SIGTERM) happens."""
    raise_if_stopped()
    print(f"lakeshard: {message}", file=sys.stderr, flush=True)
