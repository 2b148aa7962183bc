"""The quarantine table: refused records with where they came from and why, keyed so that a record is stored once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast
import pyarrow as pa
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.functions import arrow_udf
from pipelines.ingest import hashing
from pipelines.columns import (
    BLANK,
    CONTENT_HASH,
    DROPPED,
    EXTRA,
    FIELDS,
    INGESTED_AT,
    MALFORMED,
    MONO,
    RAW,
    REASON,
    RESCUED,
    ROW_IN_FILE,
    RULES,
    RUN_ID,
    SOURCE_FILE,
    SOURCE_ROW,
    SPLIT_START,
    col,
    value_col,
)
from pipelines.schema.datasets import Dataset
from pipelines.schema.datasets import SchemaVersion
from pipelines.ingest.reading import CARRIED
from pipelines.ingest.reading import STRICT_JSON


QUARANTINE_KEY = "_quarantine_key"


REPLAYED_BY = "_replayed_by"  # the replay run that moved a quarantined record to the table


REPLAYED_AT = "_replayed_at"


QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField(QUARANTINE_KEY, T.StringType(), nullable=False),
        T.StructField(SOURCE_FILE, T.StringType(), nullable=False),
        T.StructField(SOURCE_ROW, T.LongType(), nullable=False),
        T.StructField(RAW, T.StringType(), nullable=True),
        T.StructField(REASON, T.StringType(), nullable=False),
        T.StructField("_format", T.StringType(), nullable=False),
        T.StructField("_schema_version", T.IntegerType(), nullable=False),
        T.StructField(RUN_ID, T.StringType(), nullable=False),
        T.StructField("_quarantined_at", T.TimestampType(), nullable=False),
        T.StructField(RULES, T.ArrayType(T.StringType()), nullable=True),
        T.StructField(FIELDS, T.ArrayType(T.StringType()), nullable=True),
        T.StructField(REPLAYED_BY, T.StringType(), nullable=True),
        T.StructField(REPLAYED_AT, T.TimestampType(), nullable=True),
    ]
)
