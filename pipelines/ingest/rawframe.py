"""The uniform raw frame every reader yields, one row per record, and what readers share.

Every format yields the same columns: ``__v0 .. __vN`` (the declared columns as found in the
file: text for CSV and JSON lines, the file's own type for Parquet), ``_raw`` (the record as
text), ``_extra`` (the record's undeclared fields as a JSON object, else null), ``_fields``
(CSV: the names of the fields in ``_raw``), ``_malformed`` (why the record could not be split
into fields, else null), ``_source_file``, and the locator columns ``_split_start``, ``_mono``,
``_row_index`` from which :func:`pipelines.ingest.validate.with_source_rows` derives each
record's row number in its file.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.columns import MONO, ROW_IN_FILE, SOURCE_FILE, SPLIT_START

CORRUPT = "_corrupt_record"
# Columns passed through untouched when present (a replay carries each record's quarantine key).
CARRIED = ("_quarantine_key",)
# Spark turns unquoted empty CSV fields into null whatever nullValue is; with this nullValue
# nothing else is, so the dataset's null_values list is applied by lakeshard alone.
NO_NULL_TOKEN = "\u0000"  # noqa: S105 - not a password
# RFC 8259 JSON: Spark's parser accepts NaN, Infinity and 'single quotes' unless told not to.
STRICT_JSON = {"allowNonNumericNumbers": "false", "allowSingleQuotes": "false"}
SHOWN_KEY_CHARS = 60  # how much of a repeated key a reason quotes

# Spark's decode() knows few charsets; windows-1252 is ISO-8859-1 but for 0x80-0x9F, where
# it maps 27 bytes to other characters (the other 5 fail the strict decode before reading).
_CP1252_BYTES = bytes(b for b in range(0x80, 0xA0) if bytes([b]).decode("cp1252", "ignore"))
CP1252_FROM = _CP1252_BYTES.decode("latin-1")
CP1252_TO = _CP1252_BYTES.decode("cp1252")


def with_locators(frame: DataFrame, row_index: bool = False) -> DataFrame:
    """``frame`` (a file reader's) with the :func:`locators` added by a projection of their own,
    right on the scan. The monotone id is not deterministic, and Spark keeps a projection that
    computes one apart from the projections above it: with it alone down here, everything
    above collapses into one projection, where a value used only for refused records (the raw
    record of a CSV or Parquet row, rebuilt as text) is computed only for them. ``row_index``:
    add ``_row_index`` too (Parquet's own row numbers)."""
    extra = [F.col("_metadata.row_index").alias(ROW_IN_FILE)] if row_index else []
    return frame.select("*", *locators(), *extra)


def located() -> list[Column]:
    """The locator columns of a frame from :func:`with_locators`."""
    return [F.col(SOURCE_FILE), F.col(SPLIT_START), F.col(MONO)]


def locators() -> list[Column]:
    """Where each record comes from: its file, the split it was read in, a monotone id."""
    return [
        F.col("_metadata.file_path").alias(SOURCE_FILE),
        F.col("_metadata.file_block_start").alias(SPLIT_START),
        F.monotonically_increasing_id().alias(MONO),
    ]
