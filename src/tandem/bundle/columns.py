"""Whole columns as the numbers and category keys a bundle's graph reads, with Arrow compute: the table
path of :mod:`tandem.bundle.values` (the same numbers, the same errors naming the column and row)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tandem.bundle.values import DATETIME_PARTS, expected, to_bool_float
from tandem.errors import SchemaError
from tandem.schema import ColumnSpec


def one_value(v: object) -> pa.ChunkedArray:
    """One row's value as a column (text stays text; a datetime64 of any unit is read as microseconds)."""
    if isinstance(v, str):
        return pa.chunked_array([pa.array([v], pa.string())])
    if isinstance(v, np.datetime64):
        v = v.astype("datetime64[us]")
    return pa.chunked_array([pa.array([v])])


def first_bad_row(original: pa.ChunkedArray, converted_ok: np.ndarray) -> tuple[int, object]:
    bad = int(np.flatnonzero(~converted_ok)[0])
    return bad, original[bad].as_py()


def numeric_block(col: pa.ChunkedArray, c: ColumnSpec, what: str, row_offset: int = 0) -> np.ndarray:
    if c.kind == "datetime":
        return datetime_block(col, c, what, row_offset)
    t = col.type
    if c.kind == "boolean":
        if pa.types.is_boolean(t):
            return pc.cast(col, pa.float32()).to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, 1)
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            values = col.to_pylist()
            out = np.empty(len(values), dtype=np.float32)
            for i, v in enumerate(values):
                try:
                    out[i] = to_bool_float(v)
                except ValueError:
                    raise SchemaError(f"{what} column '{c.name}' row {i + 1 + row_offset}: expected {expected(c)}, "
                                      f"got {v!r}") from None
            return out.reshape(-1, 1)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        # an integer beyond 2**53 becomes the nearest float, as one row's value does (the model reads floats)
        arr = pc.cast(col, pa.float64(), safe=False)
    elif pa.types.is_null(t):
        return np.full((len(col), 1), np.nan, dtype=np.float32)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        stripped = pc.utf8_trim_whitespace(col)
        blank = pc.or_kleene(pc.equal(stripped, ""), pc.is_in(pc.utf8_lower(stripped),
                                                              pa.array(["nan", "na", "null"])))
        cleaned = pc.if_else(blank, None, stripped)
        try:
            arr = pc.cast(cleaned, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = cleaned.to_pylist()
            for i, v in enumerate(values):
                if v is None:
                    continue
                try:
                    float(v)
                except ValueError:
                    raise SchemaError(f"{what} column '{c.name}' row {i + 1 + row_offset}: expected {expected(c)}, "
                                      f"got {v!r}") from None
            raise
    else:
        raise SchemaError(f"{what} column '{c.name}': expected {expected(c)}, got values of type {t}")
    out = as_float(arr)
    if c.kind == "boolean":
        ok = np.isnan(out) | (out == 0) | (out == 1)
        if not ok.all():
            i, v = first_bad_row(col, ok)
            raise SchemaError(f"{what} column '{c.name}' row {i + 1 + row_offset}: expected {expected(c)}, got {v!r}")
    return out.reshape(-1, 1)


def as_float(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Numbers as float32 with NaN for null (pyarrow turns nulls into NaN for float output)."""
    return np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64).astype(np.float32)


def datetime_block(col: pa.ChunkedArray, c: ColumnSpec, what: str, row_offset: int = 0) -> np.ndarray:
    t = col.type
    try:
        if pa.types.is_timestamp(t):
            ts = col if t.tz is None else pc.cast(col, pa.timestamp(t.unit))
        elif pa.types.is_date(t):
            ts = pc.cast(col, pa.timestamp("s"))
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            cleaned = pc.if_else(pc.equal(pc.utf8_trim_whitespace(col), ""), None, col)
            ts = pc.cast(cleaned, pa.timestamp("us"))
        elif pa.types.is_null(t):
            return np.full((len(col), len(DATETIME_PARTS)), np.nan, dtype=np.float32)
        else:
            raise SchemaError(f"{what} column '{c.name}': expected {expected(c)}, got values of type {t}")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = col.to_pylist()
        for i, v in enumerate(values):
            if v is None or str(v).strip() == "":
                continue
            try:
                pc.cast(pa.array([str(v)]), pa.timestamp("us"))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise SchemaError(f"{what} column '{c.name}' row {i + 1 + row_offset}: expected {expected(c)}, "
                                  f"got {v!r}") from None
        raise
    ts = pc.cast(ts, pa.timestamp("s"), safe=False)  # fractions of a second dropped, not refused
    seconds = as_float(pc.cast(ts, pa.int64())).astype(np.float64)
    parts = [seconds / 86400.0, as_float(pc.month(ts)), as_float(pc.day_of_week(ts)), as_float(pc.hour(ts))]
    return np.column_stack(parts).astype(np.float32)
