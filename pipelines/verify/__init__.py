"""``lakeshard verify``: is a dataset's table what its runs say it is?

:mod:`.command` runs the three checks on one pinned version and reports them; :mod:`.hashes`
recomputes stored content hashes; :mod:`.accounting` holds the run log against the table.
"""

from pipelines.verify.accounting import check_accounting
from pipelines.verify.command import (
    print_report,
    problems,
    verify,
)
from pipelines.verify.hashes import hash_plans
from pipelines.verify.options import DEFAULT_SAMPLE, VerifyOptions

__all__ = [
    "DEFAULT_SAMPLE",
    "VerifyOptions",
    "check_accounting",
    "hash_plans",
    "print_report",
    "problems",
    "verify",
]
