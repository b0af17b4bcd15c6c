"""JSON lines (and a JSON array of objects): read whole or in blocks, failures reworded to name the line."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from tandem.bundle.frames import READ_ERRORS, check_columns, check_table, one_line, table_from_columns
from tandem.data.readers.files import (
    _BOM,
    _MAX_BLOCK_BYTES,
    _MIN_BLOCK_BYTES,
    MAX_ROW_BYTES,
    _decode_head,
    _File,
    _find_invalid_utf8,
    _not_utf8,
    _open_fitting_rows,
    _past_skipped,
    _read_head,
    _row_block,
    _straddles,
)
from tandem.data.readers.tables import _cast_batches
from tandem.errors import DataError


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
    message = one_line(exc)
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
    return table_from_columns(columns, f.quoted, rows_word="data rows")


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
        return check_table(_read_json_array(f), f.quoted, rows_word="data rows")
    block = _json_block_size(text, None)
    for attempt in range(2):
        try:
            table = pajson.read_json(f.path, read_options=pajson.ReadOptions(use_threads=True, block_size=block))
            table.validate(full=True)  # pyarrow's JSON reader lets invalid UTF-8 into strings
            break
        except READ_ERRORS as exc:
            if attempt == 0 and _straddles(exc):
                block = _row_block(f)  # as the streaming reader does: both take and refuse the same lines
                continue
            raise _jsonl_failure(f, exc) from exc
    return check_table(table, f.quoted, rows_word="data rows")


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
    except READ_ERRORS as exc:
        raise _jsonl_failure(f, exc) from exc
    try:
        names = reader.schema.names
    except UnicodeDecodeError as exc:
        raise _jsonl_failure(f, exc) from exc
    check_columns(names, f.quoted)
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
        except READ_ERRORS as exc:
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
