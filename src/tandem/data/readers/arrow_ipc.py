"""Arrow IPC files and streams, and Feather (v1 and v2) files: read batch by batch."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from tandem.bundle.frames import READ_ERRORS, check_columns, one_line
from tandem.data.readers.files import _File, _read_head
from tandem.data.readers.tables import checked_batches
from tandem.errors import DataError


def _arrow_failure(f: _File, exc: BaseException) -> DataError:
    return DataError(f"{f.quoted} is not a readable Arrow IPC or Feather file: {one_line(exc)}")


def _open_arrow(f: _File) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Schema and batches of an Arrow IPC file, an IPC stream, or a Feather v1 file."""
    import pyarrow.ipc as paipc

    source = None
    try:
        source = pa.memory_map(f.path)
        reader = paipc.open_file(source)
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))
    except READ_ERRORS as exc:
        first_error = exc
        if source is not None:
            source.close()
    source = None
    try:
        source = pa.memory_map(f.path)
        stream = paipc.open_stream(source)
        return stream.schema, iter(stream)
    except READ_ERRORS:
        if source is not None:
            source.close()
    if _read_head(f).startswith(b"FEA1"):
        import pyarrow.feather as feather

        try:
            table = feather.read_table(f.path)
        except READ_ERRORS as exc:
            raise _arrow_failure(f, exc) from exc
        return table.schema, iter(table.to_batches())
    raise _arrow_failure(f, first_error) from first_error


def _iter_arrow(f: _File) -> Iterator[pa.RecordBatch]:
    schema, batches = _open_arrow(f)
    check_columns(schema, f.quoted)
    yield from checked_batches(f, batches, lambda exc: _arrow_failure(f, exc), validate=True)


def _read_arrow(f: _File) -> pa.Table:
    batches = list(_iter_arrow(f))
    return pa.Table.from_batches(batches, schema=batches[0].schema)
