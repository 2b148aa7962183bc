"""What a verify checks: a sample or every row, and how many examples a report shows."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SAMPLE = 10_000
EXAMPLES = 5


@dataclass(frozen=True)
class VerifyOptions:
    sample: int = DEFAULT_SAMPLE  # rows whose hash is recomputed (ignored with ``full``)
    full: bool = False
