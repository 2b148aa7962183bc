"""A table's columns read straight from the data files of its latest version, without Spark:
for lakeshard's small bookkeeping tables (ledger, run log, quarantine reasons), which every run
and every ``status`` reads. The files come from :func:`deltalog.data_files`; where plain Parquet
would not give the rows back (column mapping, deletion vectors), callers read through Delta."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.lake import deltalog

READ_THREADS = 8  # data files of these tables are small: on object storage, latency dominates


def read_columns(uri: str, columns: list[str]) -> pa.Table | None:
    """These (non-partition) columns of the latest version, read without Spark; a column an
    older file lacks reads as nulls, timestamps as microseconds. None where
    :func:`deltalog.data_files` says plain Parquet will not do (or there is no table)."""
    found = deltalog.data_files(uri)
    if found is None:
        return None
    if not found.files:
        return pa.table({name: pa.array([], pa.null()) for name in columns})

    def one(path: str) -> pa.Table:
        present = set(pq.read_schema(path, filesystem=found.fs).names)
        table = pq.read_table(
            path, columns=[c for c in columns if c in present], filesystem=found.fs
        )
        arrays = []
        for name in columns:
            if name not in present:
                arrays.append(pa.nulls(table.num_rows))
                continue
            column = table.column(name)
            if pa.types.is_timestamp(column.type):
                column = column.cast(pa.timestamp("us", tz="UTC"))
            arrays.append(column)
        return pa.Table.from_arrays(arrays, names=columns)

    with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(found.files))) as pool:
        tables = list(pool.map(one, found.paths))
    return pa.concat_tables(tables, promote_options="permissive")
