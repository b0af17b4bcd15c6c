"""The readers' entry points: the reader chosen by what the source is (a file by its suffix, a folder by
what it holds, an in-memory frame by its library) and the table or stream of batches it gives."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from tandem.bundle.frames import READ_ERRORS, as_table
from tandem.data.readers.arrow_ipc import _iter_arrow, _read_arrow
from tandem.data.readers.delimited import _iter_csv, _read_csv
from tandem.data.readers.files import _BOM, _CHUNK_BYTES, Source, _is_path, _resolve
from tandem.data.readers.json_lines import _iter_jsonl, _read_jsonl
from tandem.data.readers.parquet import _iter_parquet, _read_parquet
from tandem.data.readers.tables import _cast_batches, _rebatch
from tandem.errors import DataError

SOURCE_KEY = b"tandem.source"  # table metadata: "mail" for a table read from a mail folder
READ_ERRORS_KEY = b"tandem.read_errors"  # table metadata: JSON list of "file: why" for files that failed


ARRAY_SUFFIXES = (".npz", ".npy")  # numpy image arrays (tandem.data.images)


def _local_path(source: Source) -> str | None:
    """A path source as the file system reads it (``~`` expanded); None for in-memory data."""
    return os.path.expanduser(os.fsdecode(os.fspath(source))) if _is_path(source) else None


def _is_folder_or_arrays(source: Source) -> bool:
    local = _local_path(source)
    return local is not None and (local.lower().endswith(ARRAY_SUFFIXES) or os.path.isdir(local))


def read_errors(table: pa.Table) -> list[str]:
    """The per-file errors of a table read from a folder (empty for anything else)."""
    meta = table.schema.metadata or {}
    return json.loads(meta[READ_ERRORS_KEY]) if READ_ERRORS_KEY in meta else []


def read_table(source: Source, *, what: str = "data") -> pa.Table:
    """Read ``source`` into a :class:`pyarrow.Table`.

    ``source`` is a path (``str`` or ``os.PathLike``; the format comes from the suffix, see
    :data:`SUPPORTED_SUFFIXES`), a pandas or polars DataFrame, a pyarrow Table or RecordBatch, or a
    ``dict`` mapping column names to equal-length sequences of values.

    ``what`` is the noun used in messages, e.g. ``"training data"`` or ``"prediction input"``.

    A directory with one sub-folder per label of image files, or of e-mail files (``.eml``, mbox), is
    read by :mod:`tandem.data.images` or :mod:`tandem.data.mail`: one row per image or message, the
    label in column ``label``; files that cannot be read are left out and named by :func:`read_errors`.
    ``.npz`` / ``.npy`` image arrays are read by :mod:`tandem.data.images` too.

    CSV: the delimiter is sniffed from the first 64 KiB among ``, ; TAB |``; the first row is the header
    (names are stripped of surrounding spaces); quoted fields may hold delimiters and newlines; pyarrow's
    default null markers (empty cell, NA, N/A, NaN, null, ...) become null, ``?`` does not.

    Raises :class:`DataError` (one line) for anything wrong with the data: missing file, directory,
    unsupported suffix, empty file, header without rows, ragged rows, text that is not UTF-8, duplicate
    column names, corrupt Parquet/Arrow/JSON, frames without rows or columns.
    """
    local = _local_path(source)
    if local is not None and os.path.isdir(local):
        from tandem.data.images import is_image_folder, read_image_folder
        from tandem.data.mail import is_mail_folder, read_mail_folder

        folder = Path(local)
        for is_kind, read, kind in ((is_image_folder, read_image_folder, "images"),
                                    (is_mail_folder, read_mail_folder, "mail")):
            if is_kind(folder):
                table, errors = read(folder)
                return table.replace_schema_metadata({SOURCE_KEY: kind, READ_ERRORS_KEY: json.dumps(errors)})
    if local is not None and local.lower().endswith(ARRAY_SUFFIXES):
        from tandem.data.images import read_image_arrays

        if not os.path.exists(local):
            raise DataError(f"{what} file '{os.fsdecode(os.fspath(source))}' not found")
        return read_image_arrays(local)
    if _is_path(source):
        f = _resolve(source, what)
        readers = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}
        return _with_image_files(readers.get(f.fmt, _read_arrow)(f), f.path, what)
    return as_table(source, what)


def _with_image_files(table: pa.Table | pa.RecordBatch, path: str, what: str,
                      row_offset: int = 0) -> pa.Table | pa.RecordBatch:
    """A table file's columns of image file names read as the images' bytes (tandem.data.images)."""
    from tandem.data.images import image_path_columns, read_image_paths

    folder = Path(path).parent
    columns = image_path_columns(table, folder)
    if not columns:
        return table
    return read_image_paths(table, folder, columns, what=what, row_offset=row_offset)


def _image_files_in_batches(batches: Iterator[pa.RecordBatch], path: str, what: str) -> Iterator[pa.RecordBatch]:
    """:func:`_with_image_files` on each batch of a stream, rows counted from the file's first."""
    done = 0
    for batch in batches:
        yield _with_image_files(batch, path, what, done)
        done += batch.num_rows


def iter_batches(
    path: Source,
    *,
    batch_rows: int = 65536,
    column_types: dict[str, pa.DataType] | None = None,
    what: str = "data",
) -> Iterator[pa.RecordBatch]:
    """Stream a file as record batches of ``batch_rows`` rows (the last one may be shorter).

    Memory stays bounded by a few batches: CSV is read block by block, Parquet row group by row group,
    Arrow IPC batch by batch and JSON lines block by block.

    Types are inferred from the first block of the file; ``column_types`` (column name -> pyarrow type)
    forces the types of the named columns so that every batch has the same schema (for CSV and JSON lines
    through the reader's options, for Parquet/Arrow by a cast). Names that are not in the file are ignored.

    Errors are checked and worded as in :func:`read_table`; an error found late in the file is raised
    when the iteration reaches it. In-memory sources (frames, dicts) are accepted too and sliced.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    types = dict(column_types or {})
    if _is_folder_or_arrays(path):  # image or mail folders, image arrays: read whole (they hold encoded files)
        return iter(read_table(path, what=what).to_batches(max_chunksize=batch_rows))
    if not _is_path(path):
        table = as_table(path, what)
        return _rebatch(_cast_batches(table.to_batches(), types, what), batch_rows)
    f = _resolve(path, what)  # eager: a missing or unsupported file fails at the call, not at the first batch
    if f.fmt == "csv":
        batches = _iter_csv(f, batch_rows, types)
    elif f.fmt == "jsonl":
        batches = _iter_jsonl(f, batch_rows, types)
    elif f.fmt == "parquet":
        batches = _cast_batches(_iter_parquet(f, batch_rows), types, f.quoted)
    else:
        batches = _cast_batches(_iter_arrow(f), types, f.quoted)
    return _rebatch(_image_files_in_batches(batches, f.path, what), batch_rows)


def count_rows_estimate(path: Source) -> int | None:
    """A cheap row count for a progress bar, or ``None`` when there is no cheap way to know.

    Parquet: the footer's ``num_rows``. CSV: newlines counted in binary chunks, minus the header (quoted
    newlines and blank lines make it an over-estimate). JSON lines: newlines. Arrow and JSON arrays: None.
    An empty file counts 0. Raises :class:`DataError` for a missing file, a directory or an unsupported suffix.
    """
    if _is_folder_or_arrays(path):
        return None
    f = _resolve(path, "data", allow_empty=True)
    if f.size == 0:
        return 0
    if f.fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(f.path).metadata.num_rows)
        except READ_ERRORS:
            return None
    if f.fmt not in ("csv", "jsonl"):
        return None
    lines = 0
    last = b""
    first_char = b""
    try:
        with open(f.path, "rb") as fh:
            while chunk := fh.read(_CHUNK_BYTES):
                if not first_char:
                    first_char = chunk.lstrip(_BOM).lstrip()[:1]
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError:
        return None
    if f.fmt == "jsonl" and first_char == b"[":
        return None
    if last not in (b"\n", b""):
        lines += 1
    if f.fmt == "csv":
        lines -= 1
    return max(lines, 0)
