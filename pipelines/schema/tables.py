"""The schema of a dataset's Delta table: its declared columns plus lakeshard's bookkeeping."""

from __future__ import annotations

from pyspark.sql import types as T

from pipelines.columns import (
    CONTENT_HASH,
    INGESTED_AT,
    RESCUED,
    RUN_ID,
    SOURCE_FILE,
)
from pipelines.schema.datasets import Dataset


def table_schema(dataset: Dataset) -> T.StructType:
    """The Delta table's schema: declared columns (nullability kept) plus bookkeeping."""
    rescued = [T.StructField(RESCUED, T.StringType())] if dataset.on_drift == "rescue" else []
    return T.StructType(
        [
            *dataset.schema.struct().fields,
            T.StructField(CONTENT_HASH, T.BinaryType(), nullable=False),
            T.StructField(SOURCE_FILE, T.StringType(), nullable=False),
            T.StructField(RUN_ID, T.StringType(), nullable=False),
            T.StructField(INGESTED_AT, T.TimestampType(), nullable=False),
            *rescued,
        ]
    )
