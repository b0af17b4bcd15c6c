"""Checks on a table's columns and rows: batches cast, re-cut, and read with their errors named."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import pyarrow as pa

from tandem.bundle.frames import READ_ERRORS, one_line
from tandem.data.readers.files import _File
from tandem.errors import DataError


def _cast_batches(
    batches: Iterable[pa.RecordBatch], column_types: Mapping[str, pa.DataType], label: str
) -> Iterator[pa.RecordBatch]:
    schema: pa.Schema | None = None
    for batch in batches:
        if not column_types:
            yield batch
            continue
        if schema is None:
            schema = pa.schema(
                [fld.with_type(column_types.get(fld.name, fld.type)) for fld in batch.schema],
                metadata=batch.schema.metadata,
            )
        if batch.schema.equals(schema):
            yield batch
            continue
        arrays = []
        for column, fld in zip(batch.columns, schema, strict=True):
            if column.type == fld.type:
                arrays.append(column)
                continue
            try:
                arrays.append(column.cast(fld.type))
            except READ_ERRORS as exc:
                raise DataError(f"{label} column '{fld.name}' cannot be read as {fld.type}: {one_line(exc)}") from exc
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    combined = pa.Table.from_batches(batches).combine_chunks().to_batches()
    return combined[0]


def _rebatch(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Re-cut a stream of batches into batches of exactly ``size`` rows (the last one may be shorter)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        if pending:
            need = size - count
            if batch.num_rows < need:
                pending.append(batch)
                count += batch.num_rows
                continue
            pending.append(batch.slice(0, need))
            yield _concat(pending)
            batch = batch.slice(need)
            pending, count = [], 0
        while batch.num_rows >= size:
            yield batch.slice(0, size)
            batch = batch.slice(size)
        if batch.num_rows:
            pending, count = [batch], batch.num_rows
    if pending:
        yield _concat(pending)


def checked_batches(f: _File, batches: Iterator[pa.RecordBatch], failure: Callable[[Exception], DataError], *,
                    validate: bool = False) -> Iterator[pa.RecordBatch]:
    """``batches`` of file ``f``, a read error raised as ``failure(exc)``, and a DataError if none has a row."""
    rows = 0
    while True:
        try:
            batch = next(batches)
            if validate:
                batch.validate()
        except StopIteration:
            break
        except READ_ERRORS as exc:
            raise failure(exc) from exc
        rows += batch.num_rows
        yield batch
    if rows == 0:
        raise DataError(f"{f.quoted} has no data rows")
