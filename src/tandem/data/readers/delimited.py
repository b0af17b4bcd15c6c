"""Delimited text (CSV, TSV): the delimiter sniffed, read whole or in blocks, and pyarrow's failures reworded
to name the line and column."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from tandem.bundle.delimiters import sniff_delimiter
from tandem.bundle.frames import READ_ERRORS, check_columns, column_names, one_line
from tandem.data.readers.files import (
    _MIN_BLOCK_BYTES,
    MAX_ROW_BYTES,
    _decode_head,
    _empty,
    _File,
    _find_invalid_utf8,
    _not_utf8,
    _open_fitting_rows,
    _past_skipped,
    _read_head,
    _row_block,
    _straddles,
)
from tandem.errors import DataError


@dataclass
class _CsvPlan:
    delimiter: str
    header: list[str]  # as parsed by Python's csv from the first 64 KiB (raw, unstripped)
    avg_line_bytes: float
    raw_by_name: dict[str, str] = field(default_factory=dict)


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
    message = one_line(exc)
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
    names = [n.strip() for n in column_names(schema, label)]
    if names and names[0].startswith("\ufeff"):
        names[0] = names[0].lstrip("\ufeff").strip()
    return pa.schema([fld.with_name(n) for fld, n in zip(schema, names, strict=True)], metadata=schema.metadata)


def _check_binary(f: _File, schema: pa.Schema) -> None:
    """pyarrow infers ``binary`` for a text column holding invalid UTF-8: say where it is."""
    if any(pa.types.is_binary(t) or pa.types.is_large_binary(t) for t in schema.types):
        line = _find_invalid_utf8(f)
        if line is not None:
            raise _not_utf8(f, line)


def _read_csv(f: _File) -> pa.Table:
    plan = _csv_plan(f)
    try:
        try:
            table = pacsv.read_csv(f.path, **_csv_options(plan))
        except READ_ERRORS as exc:
            if not _straddles(exc):
                raise
            # a row longer than pyarrow's default block (1 MiB): read again in blocks the streaming reader
            # would use too, so that both accept and refuse the same rows
            table = pacsv.read_csv(f.path, **_csv_options(plan, block_size=_row_block(f)))
    except READ_ERRORS as exc:
        raise _csv_failure(f, plan, exc) from exc
    schema = _stripped_schema(table.schema, f.quoted)
    check_columns(schema.names, f.quoted)
    _check_binary(f, schema)
    if table.num_rows == 0:
        raise DataError(f"{f.quoted} has a header but no data rows")
    return table.rename_columns(schema.names)


def _iter_csv(f: _File, batch_rows: int, column_types: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
    plan = _csv_plan(f)
    # never past the bound: a larger block would take rows that read_table refuses
    block = int(min(max(plan.avg_line_bytes * batch_rows * 1.2, _MIN_BLOCK_BYTES), MAX_ROW_BYTES))

    def open_csv(block: int, types: Mapping[str, pa.DataType] | None) -> Any:
        return pacsv.open_csv(f.path, **_csv_options(plan, block_size=block, column_types=types))

    try:
        reader, block = _open_fitting_rows(f, block, lambda size: open_csv(size, column_types))
    except READ_ERRORS as exc:
        raise _csv_failure(f, plan, exc) from exc
    schema = _stripped_schema(reader.schema, f.quoted)
    check_columns(schema.names, f.quoted)
    _check_binary(f, schema)
    rows = 0
    skip = 0  # rows already yielded, when the file is read again from its start
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except READ_ERRORS as exc:
            if not (_straddles(exc) and block < _row_block(f)):
                raise _csv_failure(f, plan, exc, schema.names) from exc
            # a row longer than the block: read again from the start in blocks that take any row up to the
            # bound, with the types already given out, and skip the rows already yielded
            block = _row_block(f)
            try:
                reader = open_csv(block, dict(zip(reader.schema.names, reader.schema.types, strict=True)))
            except READ_ERRORS as again:
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
