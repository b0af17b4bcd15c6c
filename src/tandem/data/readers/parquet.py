"""Parquet files: read whole or row group by row group."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from tandem.bundle.frames import READ_ERRORS, check_columns, check_table, one_line
from tandem.data.readers.files import _File
from tandem.data.readers.tables import checked_batches
from tandem.errors import DataError


def _parquet_failure(f: _File, exc: BaseException) -> DataError:
    return DataError(f"{f.quoted} is not a readable Parquet file: {one_line(exc)}")


def _open_parquet(f: _File) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(f.path)
    except READ_ERRORS as exc:
        raise _parquet_failure(f, exc) from exc


def _read_parquet(f: _File) -> pa.Table:
    pf = _open_parquet(f)
    try:
        table = pf.read(use_threads=True)
    except READ_ERRORS as exc:
        raise _parquet_failure(f, exc) from exc
    return check_table(table, f.quoted, rows_word="data rows")


def _iter_parquet(f: _File, batch_rows: int) -> Iterator[pa.RecordBatch]:
    pf = _open_parquet(f)
    check_columns(pf.schema_arrow, f.quoted)
    batches = pf.iter_batches(batch_size=batch_rows, use_threads=True)
    yield from checked_batches(f, batches, lambda exc: _parquet_failure(f, exc))
