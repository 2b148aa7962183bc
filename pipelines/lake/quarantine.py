"""The quarantine table: refused records with where they came from and why, each stored once."""

from __future__ import annotations

from pyspark.sql import types as T

from pipelines.columns import (
    FIELDS,
    RAW,
    REASON,
    RULES,
    RUN_ID,
    SOURCE_FILE,
    SOURCE_ROW,
)

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
