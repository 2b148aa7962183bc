"""The ``lakeshard`` command; ``jobs/<verb>.py`` run the same :func:`main` under spark-submit.

:mod:`.parser` declares the verbs and flags, :mod:`.commands` carries each verb out, and
:mod:`.main` maps errors to one line on stderr and an exit code.
"""

from pipelines.cli.main import main
from pipelines.cli.parser import build_parser

__all__ = ["build_parser", "main"]
