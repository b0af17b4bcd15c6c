"""Read tables from files and in-memory frames into pyarrow, with one-line errors a person can act on.

Files: CSV/TSV (delimiter sniffed), Parquet, JSON lines (and a JSON array of objects), Arrow IPC / Feather.
Frames: pandas and polars DataFrames, pyarrow Tables, and ``dict`` of column -> values.

Every failure the user can cause raises :class:`tandem.errors.DataError` whose message is one line naming
the file as the user gave it (and the line/column where it makes sense) and what was expected.

This module is used on serving hosts: it imports only pyarrow at module level. pandas and polars are
imported lazily, and only when the object handed in already comes from them.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from tandem.errors import DataError

__all__ = [
    "MAX_ROW_BYTES",
    "SUPPORTED_SUFFIXES",
    "count_rows_estimate",
    "iter_batches",
    "read_table",
    "sniff_delimiter",
]

SUPPORTED_SUFFIXES: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
}
"""File suffix (lower case) -> format name."""

CANDIDATE_DELIMITERS = ",;\t|"
SNIFF_BYTES = 64 * 1024
_CHUNK_BYTES = 1 << 20
_MIN_BLOCK_BYTES = 1 << 20
MAX_ROW_BYTES = 64 << 20
"""The longest CSV row (record) or JSON line that every reader accepts: pyarrow parses in blocks and reads
a row that spans at most one block boundary, so blocks of this size take any row up to it. A longer row is
refused with one line naming the file and this bound, by :func:`read_table` and :func:`iter_batches` alike
(both read such a file in blocks of this size from its start), though one up to twice as long may happen
to fit between the block boundaries."""
_MAX_BLOCK_BYTES = 256 << 20
_BOM = codecs.BOM_UTF8
_EXPECTED_SUFFIXES = ", ".join(SUPPORTED_SUFFIXES)
# ArrowInvalid/ArrowTypeError are ValueError/TypeError subclasses; ArrowIOError is an OSError.
_READ_ERRORS = (pa.ArrowException, OSError, ValueError, TypeError, OverflowError, UnicodeDecodeError)
_EMPTY_EXPECTATION = {
    "csv": "expected a header row and at least one data row",
    "jsonl": "expected one JSON object per line",
    "parquet": "expected a Parquet file",
    "arrow": "expected an Arrow IPC (Feather) file",
}

Source = Any  # str | os.PathLike | pandas.DataFrame | polars.DataFrame | pa.Table | Mapping[str, Sequence]


# --------------------------------------------------------------------------------------------- public API


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
        if f.fmt == "csv":
            return _read_csv(f)
        if f.fmt == "jsonl":
            return _read_jsonl(f)
        if f.fmt == "parquet":
            return _read_parquet(f)
        return _read_arrow(f)
    return _read_in_memory(source, what)


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
        table = _read_in_memory(path, what)
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
    return _rebatch(batches, batch_rows)


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
        except _READ_ERRORS:
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


def sniff_delimiter(sample: str, default: str = ",") -> str:
    """The delimiter of CSV text ``sample``: one of ``,`` ``;`` TAB ``|``.

    Uses :class:`csv.Sniffer` restricted to those delimiters on the complete lines of the sample; the
    answer must occur in the first (header) line, otherwise the candidate most frequent in the header line
    wins; with no candidate at all (a single column) ``default`` is returned (pass ``"\\t"`` for ``.tsv``).
    """
    text = sample.lstrip("\ufeff")
    cut = max(text.rfind("\n"), text.rfind("\r"))
    if cut > 0:
        text = text[: cut + 1]
    header = _first_record_text(text)
    guess: str | None
    try:
        guess = csv.Sniffer().sniff(text, delimiters=CANDIDATE_DELIMITERS).delimiter
    except csv.Error:
        guess = None
    if guess is not None and guess in header:
        return guess
    counts = {d: header.count(d) for d in CANDIDATE_DELIMITERS}
    if default in counts and counts[default] > 0 and counts[default] == max(counts.values()):
        return default
    best = max(CANDIDATE_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > 0 else default


# --------------------------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class _File:
    path: str  # what the file system sees (user expanded)
    name: str  # as the user gave it, for messages
    suffix: str
    fmt: str
    size: int

    @property
    def quoted(self) -> str:
        return f"'{self.name}'"


def _is_path(source: object) -> bool:
    return isinstance(source, (str, bytes, os.PathLike))


def _resolve(source: Source, what: str, *, allow_empty: bool = False) -> _File:
    if not _is_path(source):
        raise DataError(f"{what}: expected a file path, got {type(source).__name__}")
    name = os.fsdecode(os.fspath(source))
    path = os.path.expanduser(name)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(f"{what} file '{name}' not found") from None
    except OSError as exc:
        raise DataError(f"cannot read {what} file '{name}': {exc.strerror or exc}") from None
    if os.path.isdir(path):
        raise DataError(f"{what} path '{name}' is a directory: expected a file ({_EXPECTED_SUFFIXES})")
    suffix = os.path.splitext(name)[1].lower()
    if not suffix:
        raise DataError(f"'{name}' has no file suffix to tell its format: expected one of {_EXPECTED_SUFFIXES}")
    fmt = SUPPORTED_SUFFIXES.get(suffix)
    if fmt is None:
        raise DataError(f"unsupported format '{suffix}' for '{name}': expected one of {_EXPECTED_SUFFIXES}")
    if not os.access(path, os.R_OK):
        raise DataError(f"cannot read {what} file '{name}': permission denied")
    f = _File(path=path, name=name, suffix=suffix, fmt=fmt, size=st.st_size)
    if f.size == 0 and not allow_empty:
        raise _empty(f)
    return f


def _empty(f: _File) -> DataError:
    return DataError(f"{f.quoted} is empty: {_EMPTY_EXPECTATION[f.fmt]}")


def _not_utf8(f: _File, line: int) -> DataError:
    return DataError(f"{f.quoted} is not UTF-8 text (first invalid byte at line {line}): re-save it as UTF-8")


def _one_line(exc: BaseException) -> str:
    """The first line of an exception's message (pyarrow errors may carry several, or a tuple of args)."""
    parts = [str(a) for a in exc.args if str(a).strip()] if len(exc.args) > 1 else [str(exc)]
    text = "; ".join(p.strip().splitlines()[0] for p in parts if p.strip())
    return text or type(exc).__name__


def _read_head(f: _File) -> bytes:
    try:
        with open(f.path, "rb") as fh:
            return fh.read(SNIFF_BYTES)
    except OSError as exc:
        raise DataError(f"cannot read {f.quoted}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------- UTF-8


def _invalid_utf8_offset(data: bytes, final: bool) -> tuple[int | None, int]:
    """(offset of the first invalid byte or None, bytes consumed); an incomplete tail is left unconsumed."""
    try:
        data.decode("utf-8")
        return None, len(data)
    except UnicodeDecodeError as exc:
        if not final and exc.reason == "unexpected end of data" and exc.end == len(data):
            return None, exc.start
        return exc.start, exc.start


def _find_invalid_utf8(f: _File) -> int | None:
    """1-based line of the first byte that is not UTF-8 (a leading BOM is fine), or None."""
    lines_before = 0
    carry = b""
    first = True
    try:
        with open(f.path, "rb") as fh:
            while True:
                chunk = fh.read(_CHUNK_BYTES)
                data = carry + chunk
                if first:
                    first = False
                    if data.startswith(_BOM):
                        data = data[len(_BOM) :]
                bad, consumed = _invalid_utf8_offset(data, final=not chunk)
                if bad is not None:
                    return lines_before + data.count(b"\n", 0, bad) + 1
                if not chunk:
                    return None
                lines_before += data.count(b"\n", 0, consumed)
                carry = data[consumed:]
    except OSError:
        return None


def _decode_head(f: _File, head: bytes) -> str:
    """The decoded first bytes of a text file (BOM stripped); raises DataError when they are not UTF-8."""
    body = head[len(_BOM) :] if head.startswith(_BOM) else head
    final = len(head) >= f.size
    bad, consumed = _invalid_utf8_offset(body, final)
    if bad is not None:
        raise _not_utf8(f, body.count(b"\n", 0, bad) + 1)
    text = body[:consumed].decode("utf-8")
    if final and not text.strip():
        raise _empty(f)
    return text


# --------------------------------------------------------------------------------------------- CSV


@dataclass
class _CsvPlan:
    delimiter: str
    header: list[str]  # as parsed by Python's csv from the first 64 KiB (raw, unstripped)
    avg_line_bytes: float
    raw_by_name: dict[str, str] = field(default_factory=dict)


def _first_record_text(text: str) -> str:
    """The first record of CSV text (quoted newlines kept inside it)."""
    in_quotes = False
    for i, ch in enumerate(text):
        if ch == '"':
            in_quotes = not in_quotes
        elif ch in "\r\n" and not in_quotes:
            return text[:i]
    return text


def _csv_plan(f: _File) -> _CsvPlan:
    head = _read_head(f)
    text = _decode_head(f, head)
    delimiter = sniff_delimiter(text, default="\t" if f.suffix == ".tsv" else ",")
    try:
        header = next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
    except csv.Error:
        header = []
    newlines = max(text.count("\n"), 1)
    plan = _CsvPlan(delimiter=delimiter, header=header, avg_line_bytes=max(len(head) / newlines, 1.0))
    plan.raw_by_name = {name.strip(): name for name in header}
    return plan


def _csv_options(
    plan: _CsvPlan, *, block_size: int | None = None, column_types: Mapping[str, pa.DataType] | None = None
) -> dict[str, Any]:
    read = pacsv.ReadOptions(use_threads=True)
    if block_size is not None:
        read.block_size = block_size
    parse = pacsv.ParseOptions(delimiter=plan.delimiter, newlines_in_values=True)
    convert = pacsv.ConvertOptions(strings_can_be_null=True)
    if column_types:
        convert.column_types = {plan.raw_by_name.get(k, k): v for k, v in column_types.items()}
    return {"read_options": read, "parse_options": parse, "convert_options": convert}


def _csv_rows(f: _File, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based line where the record starts, fields) for every non-empty record, header included."""
    with open(f.path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
        previous = 0
        for row in reader:
            start = previous + 1
            previous = reader.line_num
            if row:
                yield start, row


def _find_ragged_row(f: _File, delimiter: str) -> tuple[int, int, int] | None:
    """(line, expected fields, found fields) of the first record whose width differs from the header."""
    expected = None
    try:
        for line, row in _csv_rows(f, delimiter):
            if expected is None:
                expected = len(row)
            elif len(row) != expected:
                return line, expected, len(row)
    except (csv.Error, OSError):
        return None
    return None


def _find_value_line(f: _File, delimiter: str, column: int, value: str) -> int | None:
    try:
        rows = _csv_rows(f, delimiter)
        next(rows, None)
        for line, row in rows:
            if column < len(row) and row[column] == value:
                return line
    except (csv.Error, OSError):
        return None
    return None


_RAGGED = re.compile(r"Expected (\d+) columns?, got (\d+)(?:: (.*))?")
_CONVERSION = re.compile(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to ([^:]+): invalid value '(.*)'")


def _csv_failure(f: _File, plan: _CsvPlan, exc: BaseException, names: list[str] | None = None) -> DataError:
    """Turn a pyarrow CSV failure into one line that says where and what."""
    message = _one_line(exc)
    line = _find_invalid_utf8(f)
    if line is not None:
        return _not_utf8(f, line)
    if "Empty CSV file" in message:
        return _empty(f)
    if _straddles(exc):
        return DataError(f"{f.quoted} has a row longer than pyarrow can read in one {MAX_ROW_BYTES >> 20} MiB "
                         f"block: a CSV row may hold up to {MAX_ROW_BYTES >> 20} MiB (keep such values in "
                         "Parquet, or in files beside the table)")
    ragged = _RAGGED.search(message)
    if ragged:
        found = _find_ragged_row(f, plan.delimiter)
        if found is not None:
            line, expected, got = found
            return DataError(f"{f.quoted} line {line}: expected {expected} fields, found {got}")
        row_text = (ragged.group(3) or "")[:80]
        return DataError(
            f"{f.quoted}: expected {ragged.group(1)} fields per row, found a row with {ragged.group(2)}: {row_text!r}"
        )
    conversion = _CONVERSION.search(message)
    if conversion:
        index, type_name, value = int(conversion.group(1)), conversion.group(2), conversion.group(3)
        columns = names or [h.strip() for h in plan.header]
        column = columns[index] if index < len(columns) else f"#{index + 1}"
        line = _find_value_line(f, plan.delimiter, index, value)
        where = f" line {line}" if line is not None else ""
        if type_name == "null":
            found = f"value '{value}' where the first rows had only empty cells"
        else:
            found = f"value '{value}' is not {type_name} like the first rows"
        return DataError(
            f"{f.quoted}{where}, column '{column}': {found}: "
            f"pass column_types={{'{column}': ...}} to fix the column's type"
        )
    return DataError(f"{f.quoted} could not be read as CSV: {message}")


def _stripped_schema(schema: pa.Schema, label: str) -> pa.Schema:
    names = [n.strip() for n in _names(schema, label)]
    if names and names[0].startswith("\ufeff"):
        names[0] = names[0].lstrip("\ufeff").strip()
    return pa.schema([fld.with_name(n) for fld, n in zip(schema, names, strict=True)], metadata=schema.metadata)


def _check_binary(f: _File, schema: pa.Schema) -> None:
    """pyarrow infers ``binary`` for a text column holding invalid UTF-8: say where it is."""
    if any(pa.types.is_binary(t) or pa.types.is_large_binary(t) for t in schema.types):
        line = _find_invalid_utf8(f)
        if line is not None:
            raise _not_utf8(f, line)


def _straddles(exc: BaseException) -> bool:
    """pyarrow's failure for a row that does not fit its blocks."""
    return "straddl" in str(exc)


def _row_block(f: _File) -> int:
    """The block that takes any row up to MAX_ROW_BYTES (the whole file when it is smaller)."""
    return int(min(f.size + 1, MAX_ROW_BYTES))


def _read_csv(f: _File) -> pa.Table:
    plan = _csv_plan(f)
    try:
        try:
            table = pacsv.read_csv(f.path, **_csv_options(plan))
        except _READ_ERRORS as exc:
            if not _straddles(exc):
                raise
            # a row longer than pyarrow's default block (1 MiB): read again in blocks the streaming reader
            # would use too, so that both accept and refuse the same rows
            table = pacsv.read_csv(f.path, **_csv_options(plan, block_size=_row_block(f)))
    except _READ_ERRORS as exc:
        raise _csv_failure(f, plan, exc) from exc
    schema = _stripped_schema(table.schema, f.quoted)
    _check_columns(schema.names, f.quoted)
    _check_binary(f, schema)
    if table.num_rows == 0:
        raise DataError(f"{f.quoted} has a header but no data rows")
    return table.rename_columns(schema.names)


def _open_fitting_rows(f: _File, block: int, open_reader: Callable[[int], Any]) -> tuple[Any, int]:
    """``open_reader(block)``, and its block size; when a row straddles that block, a reader in blocks that take
    any row up to the bound instead."""
    try:
        return open_reader(block), block
    except _READ_ERRORS as exc:
        if not (_straddles(exc) and block < _row_block(f)):
            raise
        return open_reader(_row_block(f)), _row_block(f)


def _past_skipped(batch: pa.RecordBatch, skip: int) -> tuple[pa.RecordBatch, int]:
    """``batch`` less its first ``skip`` rows (yielded before the file was read again), and the rows left to skip."""
    dropped = min(skip, batch.num_rows)
    return batch.slice(dropped), skip - dropped


def _iter_csv(f: _File, batch_rows: int, column_types: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
    plan = _csv_plan(f)
    # never past the bound: a larger block would take rows that read_table refuses
    block = int(min(max(plan.avg_line_bytes * batch_rows * 1.2, _MIN_BLOCK_BYTES), MAX_ROW_BYTES))

    def open_csv(block: int, types: Mapping[str, pa.DataType] | None) -> Any:
        return pacsv.open_csv(f.path, **_csv_options(plan, block_size=block, column_types=types))

    try:
        reader, block = _open_fitting_rows(f, block, lambda size: open_csv(size, column_types))
    except _READ_ERRORS as exc:
        raise _csv_failure(f, plan, exc) from exc
    schema = _stripped_schema(reader.schema, f.quoted)
    _check_columns(schema.names, f.quoted)
    _check_binary(f, schema)
    rows = 0
    skip = 0  # rows already yielded, when the file is read again from its start
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except _READ_ERRORS as exc:
            if not (_straddles(exc) and block < _row_block(f)):
                raise _csv_failure(f, plan, exc, schema.names) from exc
            # a row longer than the block: read again from the start in blocks that take any row up to the
            # bound, with the types already given out, and skip the rows already yielded
            block = _row_block(f)
            try:
                reader = open_csv(block, dict(zip(reader.schema.names, reader.schema.types, strict=True)))
            except _READ_ERRORS as again:
                raise _csv_failure(f, plan, again, schema.names) from again
            skip = rows
            continue
        if skip:
            batch, skip = _past_skipped(batch, skip)
            if batch.num_rows == 0:
                continue
        rows += batch.num_rows
        yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
    if rows == 0:
        raise DataError(f"{f.quoted} has a header but no data rows")


# --------------------------------------------------------------------------------------------- JSON lines


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


_JSON_TYPE_CHANGE = re.compile(r"Column\((/[^)]*)\) changed from (\w+) to (\w+)")


def _iter_json_lines(f: _File) -> Iterator[tuple[int, object]]:
    """(line, value) for each non-blank line; raises DataError for invalid UTF-8 or JSON."""
    with open(f.path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _not_utf8(f, number) from None
            try:
                value = json.loads(text)
            except ValueError as exc:
                detail = f"{exc.msg} (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else exc
                if number == 1 and text.strip() in ("{", "["):
                    raise DataError(
                        f"{f.quoted} line 1: a JSON value spread over several lines: expected one JSON "
                        "object per line (JSON lines) or an array of objects"
                    ) from None
                raise DataError(f"{f.quoted} line {number}: not valid JSON: {detail}") from None
            yield number, value


def _jsonl_failure(f: _File, exc: BaseException) -> DataError:
    message = _one_line(exc)
    line = _find_invalid_utf8(f)
    if line is not None:
        return _not_utf8(f, line)
    change = _JSON_TYPE_CHANGE.search(message)
    keys = [k for k in change.group(1).split("/") if k] if change else []
    first_kind: str | None = None
    try:
        for number, value in _iter_json_lines(f):
            if not isinstance(value, dict):
                return DataError(f"{f.quoted} line {number}: expected a JSON object, found {_json_kind(value)}")
            if keys:
                for key in keys:
                    value = value.get(key) if isinstance(value, dict) else None
                if value is None:
                    continue
                kind = _json_kind(value)
                if first_kind is None:
                    first_kind = kind
                elif kind != first_kind:
                    column = ".".join(keys)
                    return DataError(
                        f"{f.quoted} line {number}, column '{column}': found {kind} after {first_kind} in "
                        "earlier lines: expected one type per column"
                    )
    except DataError as error:
        return error
    except OSError:
        pass
    if change:
        column = ".".join(keys)
        return DataError(
            f"{f.quoted} column '{column}' changed from {change.group(2)} to {change.group(3)}: expected one "
            f"type per column (pass column_types={{'{column}': ...}} to force one)"
        )
    if "straddl" in message:
        return DataError(f"{f.quoted} has a line longer than pyarrow can read in one {MAX_ROW_BYTES >> 20} MiB "
                         f"block: a JSON line may hold up to {MAX_ROW_BYTES >> 20} MiB (expected one JSON object "
                         "per line)")
    return DataError(f"{f.quoted} could not be read as JSON lines: {message}")


def _json_head(f: _File) -> tuple[str, bool]:
    """(decoded first bytes, whether the file is a JSON array)."""
    text = _decode_head(f, _read_head(f))
    return text, text.lstrip().startswith("[")


def _read_json_array(f: _File) -> pa.Table:
    try:
        with open(f.path, encoding="utf-8-sig") as fh:
            value = json.load(fh)
    except UnicodeDecodeError:
        raise _not_utf8(f, _find_invalid_utf8(f) or 1) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{f.quoted} line {exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    except OSError as exc:
        raise DataError(f"cannot read {f.quoted}: {exc.strerror or exc}") from None
    if not value:
        raise DataError(f"{f.quoted} has no data rows: expected an array of JSON objects")
    columns: dict[str, list[Any]] = {}
    for i, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            raise DataError(f"{f.quoted} item {i}: expected a JSON object, found {_json_kind(item)}")
        for key in item:
            columns.setdefault(key, [])
    for key, values in columns.items():
        values.extend(item.get(key) for item in value)
    return _table_from_columns(columns, f.quoted, rows_word="data rows")


def _json_block_size(text: str, batch_rows: int | None) -> int:
    lines = text.splitlines() or [text]
    longest = max(len(line.encode("utf-8")) for line in lines)
    avg = len(text.encode("utf-8")) / max(len(lines), 1)
    want = max(_MIN_BLOCK_BYTES, 4 * longest)
    if batch_rows is not None:
        want = max(want, int(avg * batch_rows * 1.2))
    return int(min(want, _MAX_BLOCK_BYTES))


def _read_jsonl(f: _File) -> pa.Table:
    import pyarrow.json as pajson

    text, is_array = _json_head(f)
    if is_array:
        return _check_table(_read_json_array(f), f.quoted, rows_word="data rows")
    block = _json_block_size(text, None)
    for attempt in range(2):
        try:
            table = pajson.read_json(f.path, read_options=pajson.ReadOptions(use_threads=True, block_size=block))
            table.validate(full=True)  # pyarrow's JSON reader lets invalid UTF-8 into strings
            break
        except _READ_ERRORS as exc:
            if attempt == 0 and _straddles(exc):
                block = _row_block(f)  # as the streaming reader does: both take and refuse the same lines
                continue
            raise _jsonl_failure(f, exc) from exc
    return _check_table(table, f.quoted, rows_word="data rows")


def _json_sample_keys(text: str) -> list[str]:
    """Top-level keys of the objects on the complete lines of ``text``, in order of first appearance."""
    keys: dict[str, None] = {}
    for line in text.splitlines()[:-1] or text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            keys.update(dict.fromkeys(value))
    return list(keys)


def _iter_jsonl(f: _File, batch_rows: int, column_types: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
    import pyarrow.json as pajson

    text, is_array = _json_head(f)
    if is_array or not hasattr(pajson, "open_json"):
        table = _read_json_array(f) if is_array else _read_jsonl(f)
        yield from _cast_batches(table.to_batches(), column_types, f.quoted)
        return
    # Forcing types through the reader keeps later blocks from failing on a type inferred from the first
    # one; only keys seen in the head are forced, since pyarrow adds every forced field, present or not.
    keys = _json_sample_keys(text)
    forced = {k: t for k, t in column_types.items() if k in keys}
    block = min(_json_block_size(text, batch_rows), MAX_ROW_BYTES)

    def open_json(block: int, schema: pa.Schema | None) -> Any:
        parse = pajson.ParseOptions(unexpected_field_behavior="infer")
        if schema is not None and len(schema):
            parse.explicit_schema = schema
        read = pajson.ReadOptions(use_threads=True, block_size=block)
        return pajson.open_json(f.path, read_options=read, parse_options=parse)

    def reopen(schema: pa.Schema) -> Any:
        """A reader from the start in blocks that take any line up to the bound, with the types given out."""
        return open_json(_row_block(f), schema) if block < _row_block(f) else None

    forced_schema = pa.schema(list(forced.items())) if forced else None
    try:
        reader, block = _open_fitting_rows(f, block, lambda size: open_json(size, forced_schema))
    except _READ_ERRORS as exc:
        raise _jsonl_failure(f, exc) from exc
    try:
        names = reader.schema.names
    except UnicodeDecodeError as exc:
        raise _jsonl_failure(f, exc) from exc
    _check_columns(names, f.quoted)
    # forced fields come first in pyarrow's schema: put the columns back in the file's order
    order = [k for k in keys if k in names] + [n for n in names if n not in keys]
    yield from _cast_batches(_jsonl_batches(f, reader, order, reopen), column_types, f.quoted)


def _jsonl_batches(f: _File, reader: Any, order: list[str],
                   reopen: Callable[[pa.Schema], Any] | None = None) -> Iterator[pa.RecordBatch]:
    rows = 0
    skip = 0  # rows already yielded, when the file is read again from its start
    reorder = order != reader.schema.names
    while True:
        try:
            batch = reader.read_next_batch()
            batch.validate(full=True)  # pyarrow's JSON reader lets invalid UTF-8 into strings
        except StopIteration:
            break
        except _READ_ERRORS as exc:
            again = reopen(reader.schema) if reopen is not None and _straddles(exc) else None
            if again is None:
                raise _jsonl_failure(f, exc) from exc
            reader, reopen, skip = again, None, rows  # a line longer than the block: read on in bigger ones
            reorder = order != reader.schema.names
            continue
        if skip:
            batch, skip = _past_skipped(batch, skip)
            if batch.num_rows == 0:
                continue
        rows += batch.num_rows
        yield batch.select(order) if reorder else batch
    if rows == 0:
        raise DataError(f"{f.quoted} has no data rows")


# --------------------------------------------------------------------------------------------- Parquet, Arrow


def _parquet_failure(f: _File, exc: BaseException) -> DataError:
    return DataError(f"{f.quoted} is not a readable Parquet file: {_one_line(exc)}")


def _open_parquet(f: _File) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(f.path)
    except _READ_ERRORS as exc:
        raise _parquet_failure(f, exc) from exc


def _read_parquet(f: _File) -> pa.Table:
    pf = _open_parquet(f)
    try:
        table = pf.read(use_threads=True)
    except _READ_ERRORS as exc:
        raise _parquet_failure(f, exc) from exc
    return _check_table(table, f.quoted, rows_word="data rows")


def _iter_parquet(f: _File, batch_rows: int) -> Iterator[pa.RecordBatch]:
    pf = _open_parquet(f)
    _check_columns(pf.schema_arrow, f.quoted)
    rows = 0
    batches = pf.iter_batches(batch_size=batch_rows, use_threads=True)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except _READ_ERRORS as exc:
            raise _parquet_failure(f, exc) from exc
        rows += batch.num_rows
        yield batch
    if rows == 0:
        raise DataError(f"{f.quoted} has no data rows")


def _arrow_failure(f: _File, exc: BaseException) -> DataError:
    return DataError(f"{f.quoted} is not a readable Arrow IPC or Feather file: {_one_line(exc)}")


def _open_arrow(f: _File) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Schema and batches of an Arrow IPC file, an IPC stream, or a Feather v1 file."""
    import pyarrow.ipc as paipc

    source = None
    try:
        source = pa.memory_map(f.path)
        reader = paipc.open_file(source)
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))
    except _READ_ERRORS as exc:
        first_error = exc
        if source is not None:
            source.close()
    source = None
    try:
        source = pa.memory_map(f.path)
        stream = paipc.open_stream(source)
        return stream.schema, iter(stream)
    except _READ_ERRORS:
        if source is not None:
            source.close()
    if _read_head(f).startswith(b"FEA1"):
        import pyarrow.feather as feather

        try:
            table = feather.read_table(f.path)
        except _READ_ERRORS as exc:
            raise _arrow_failure(f, exc) from exc
        return table.schema, iter(table.to_batches())
    raise _arrow_failure(f, first_error) from first_error


def _iter_arrow(f: _File) -> Iterator[pa.RecordBatch]:
    schema, batches = _open_arrow(f)
    _check_columns(schema, f.quoted)
    rows = 0
    while True:
        try:
            batch = next(batches)
            batch.validate()
        except StopIteration:
            break
        except _READ_ERRORS as exc:
            raise _arrow_failure(f, exc) from exc
        rows += batch.num_rows
        yield batch
    if rows == 0:
        raise DataError(f"{f.quoted} has no data rows")


def _read_arrow(f: _File) -> pa.Table:
    batches = list(_iter_arrow(f))
    return pa.Table.from_batches(batches, schema=batches[0].schema)


# --------------------------------------------------------------------------------------------- frames


def _frame_family(obj: object) -> str | None:
    for cls in type(obj).__mro__:
        root = (getattr(cls, "__module__", "") or "").split(".", 1)[0]
        if root in ("pandas", "polars"):
            return root
    return None


def _read_in_memory(source: Source, what: str) -> pa.Table:
    family = _frame_family(source)
    if family == "pandas":
        return _from_pandas(source, what)
    if family == "polars":
        return _from_polars(source, what)
    if isinstance(source, pa.Table):
        return _check_table(source, f"{what} (pyarrow Table)")
    if isinstance(source, pa.RecordBatch):
        return _check_table(pa.Table.from_batches([source]), f"{what} (pyarrow RecordBatch)")
    if isinstance(source, Mapping):
        return _table_from_columns(source, f"{what} (dict of columns)")
    raise DataError(
        f"{what}: expected a file path, a pandas or polars DataFrame, a pyarrow Table or a dict of "
        f"column -> values, got {type(source).__name__}"
    )


def _from_pandas(df: Any, what: str) -> pa.Table:
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{what}: expected a DataFrame, got a pandas {type(df).__name__}")
    label = f"{what} (pandas DataFrame)"
    names = [str(c) for c in df.columns]
    _check_columns(names, label)
    if len(df) == 0:
        raise DataError(f"{label} has no rows")
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except _READ_ERRORS as exc:
        for i, name in enumerate(names):
            try:
                pa.Array.from_pandas(df.iloc[:, i])
            except _READ_ERRORS as column_exc:
                raise DataError(
                    f"{label} column '{name}' cannot be converted: {_one_line(column_exc)}: expected values of one type"
                ) from exc
        raise DataError(f"{label} cannot be converted to a table: {_one_line(exc)}") from exc
    return _check_table(table.replace_schema_metadata(None), label)


def _from_polars(df: Any, what: str) -> pa.Table:
    import polars as pl

    if isinstance(df, pl.LazyFrame):
        try:
            df = df.collect()
        except Exception as exc:  # polars raises its own exception hierarchy for bad user queries
            raise DataError(f"{what} (polars LazyFrame) could not be collected: {_one_line(exc)}") from exc
    if not isinstance(df, pl.DataFrame):
        raise DataError(f"{what}: expected a DataFrame, got a polars {type(df).__name__}")
    label = f"{what} (polars DataFrame)"
    _check_columns(list(df.columns), label)
    if df.height == 0:
        raise DataError(f"{label} has no rows")
    try:
        table = df.to_arrow()
    except _READ_ERRORS as exc:
        raise DataError(f"{label} cannot be converted to a table: {_one_line(exc)}") from exc
    return _check_table(_without_views(table), label)


def _without_views(table: pa.Table) -> pa.Table:
    """Cast string_view/binary_view columns (newer polars) to large_string/large_binary."""
    is_string_view = getattr(pa.types, "is_string_view", lambda t: False)
    is_binary_view = getattr(pa.types, "is_binary_view", lambda t: False)
    fields = []
    changed = False
    for fld in table.schema:
        if is_string_view(fld.type):
            fld, changed = fld.with_type(pa.large_string()), True
        elif is_binary_view(fld.type):
            fld, changed = fld.with_type(pa.large_binary()), True
        fields.append(fld)
    return table.cast(pa.schema(fields, metadata=table.schema.metadata)) if changed else table


def _table_from_columns(columns: Mapping[Any, Any], label: str, rows_word: str = "rows") -> pa.Table:
    arrays: dict[str, pa.Array | pa.ChunkedArray] = {}
    first: tuple[str, int] | None = None
    if not columns:
        raise DataError(f"{label} has no columns")
    for name, values in columns.items():
        if not isinstance(name, str):
            raise DataError(f"{label}: column names must be strings, got {type(name).__name__} {name!r}")
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            array = values
        elif isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__"):
            raise DataError(f"{label} column '{name}': expected a list of values, got {type(values).__name__}")
        else:
            try:
                array = pa.array(values)
            except _READ_ERRORS as exc:
                raise DataError(
                    f"{label} column '{name}' cannot be converted: {_one_line(exc)}: expected values of one type"
                ) from exc
        if first is None:
            first = (name, len(array))
        elif len(array) != first[1]:
            raise DataError(
                f"{label} column '{name}' has {len(array)} value{'' if len(array) == 1 else 's'}: "
                f"expected {first[1]} like column '{first[0]}'"
            )
        arrays[name] = array
    return _check_table(pa.table(arrays), label, rows_word=rows_word)


# --------------------------------------------------------------------------------------------- checks


def _join_numbers(numbers: list[int]) -> str:
    text = [str(n) for n in numbers]
    return text[0] if len(text) == 1 else ", ".join(text[:-1]) + " and " + text[-1]


def _looks_numeric(name: str) -> bool:
    try:
        float(name)
    except ValueError:
        return False
    return True


def _names(schema: pa.Schema, label: str) -> list[str]:
    """Column names; pyarrow decodes them lazily, so a name that is not UTF-8 fails here."""
    try:
        return list(schema.names)
    except UnicodeDecodeError:
        raise DataError(f"{label} has a column name that is not UTF-8 text: re-save it as UTF-8") from None


def _check_columns(names: Iterable[str] | pa.Schema, label: str) -> None:
    names = _names(names, label) if isinstance(names, pa.Schema) else list(names)
    if not names:
        raise DataError(f"{label} has no columns")
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(names, start=1):
        positions.setdefault(name, []).append(i)
    duplicates = [f"'{n}' (columns {_join_numbers(p)})" for n, p in positions.items() if len(p) > 1]
    if duplicates:
        hint = ""
        if all(_looks_numeric(n) for n in names):
            hint = " (the first line must be a header row of column names)"
        raise DataError(f"{label} has duplicate column names: {', '.join(duplicates)}{hint}")


def _check_table(table: pa.Table, label: str, rows_word: str = "rows") -> pa.Table:
    _check_columns(table.schema, label)
    if table.num_rows == 0:
        raise DataError(f"{label} has no {rows_word}")
    return table


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
            except _READ_ERRORS as exc:
                raise DataError(f"{label} column '{fld.name}' cannot be read as {fld.type}: {_one_line(exc)}") from exc
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
