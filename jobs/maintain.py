"""spark-submit entry point for ``lakeshard maintain``: same arguments, same main."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by spark-submit: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines import cli


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return cli.main(["maintain", *args])


if __name__ == "__main__":
    sys.exit(main())
