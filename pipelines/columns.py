"""Bookkeeping column names (one definition each), and a Spark column by its exact name.

Importable without pyspark: the trainer-side loader needs the names too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column

CONTENT_HASH = "_content_hash"
SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"
RUN_ID = "_run_id"
INGESTED_AT = "_ingested_at"
RAW = "_raw"
REASON = "_reason"
MALFORMED = "_malformed"
SPLIT_START = "_split_start"
ROW_IN_FILE = "_row_index"  # exact 0-based row index where the format gives one (Parquet)
MONO = "_mono"
EXTRA = "_extra"  # a record's fields that the schema does not declare, as a JSON object
RESCUED = "_rescued"  # on_drift: rescue — fields that did not fit, as JSON, with the source file
RULES = "_rules"  # names of the row rules a record failed
DROPPED = "_dropped"  # a record dropped by a rule (on_violation: drop)
FIELDS = "_fields"  # a quarantined CSV record's column names (its file's header)
BLANK = "_blank"  # a blank line in a JSON-lines file: counted as a line, not as a record


def col(name: str) -> Column:
    """A column by its exact name, whatever characters it holds (dots, spaces, backticks)."""
    from pyspark.sql import functions as F  # here: the names above need no pyspark

    return F.col("`" + name.replace("`", "``") + "`")


def value_col(index: int) -> str:
    """Internal name of the i-th declared column while a batch is processed."""
    return f"__v{index}"
