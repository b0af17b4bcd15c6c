"""Tensor columns: one array per row (an imported model's image, token ids or plain vector), read from JSON
rows, columns of nested lists, v2 tensors or Arrow list columns, and checked against the column's shape and
dtype before any of it reaches the graph."""

from __future__ import annotations

import math

import numpy as np

from tandem.errors import SchemaError
from tandem.schema import ColumnSpec

#: The most numbers one row of one tensor column may hold (a 1024 x 1024 RGB image is 3.1M).
MAX_ROW_ELEMENTS = 1 << 24


def describe_shape(shape: list[int]) -> str:
    return "[" + ", ".join("any" if d < 0 else str(d) for d in shape) + "]"


def tensor_block(values: object, column: ColumnSpec, what: str, row_offset: int = 0) -> np.ndarray:
    """``values`` (a list of per-row arrays or nested lists, or an array [N, ...]) as the column's dtype and
    shape [N, *shape]; a SchemaError names the column, the row when it can, and what was expected."""
    shape, dtype = list(column.shape or []), np.dtype(column.dtype or "float32")
    where = f"{what} column '{column.name}'"
    if isinstance(values, np.ndarray) and values.dtype != object:
        block = values
    else:
        rows = list(values)
        if not rows:
            return np.empty((0, *[max(d, 0) for d in shape]), dtype=dtype)
        block = None
        try:
            block = np.asarray(rows)
        except (ValueError, TypeError):
            pass
        if block is None or block.dtype == object:
            _name_ragged_row(rows, shape, where, row_offset)
            raise SchemaError(f"{where}: expected {len(shape)}-dimensional arrays of shape {describe_shape(shape)} "
                              "with the same shape in every row")
    if block.ndim != len(shape) + 1:
        raise SchemaError(f"{where}: expected arrays of shape {describe_shape(shape)} per row, got "
                          f"{describe_shape(list(block.shape[1:]))}")
    for axis, (want, got) in enumerate(zip(shape, block.shape[1:], strict=True)):
        if want >= 0 and want != got:
            raise SchemaError(f"{where}: expected arrays of shape {describe_shape(shape)} per row, got "
                              f"{describe_shape(list(block.shape[1:]))} (dimension {axis + 1} is {got}, expected "
                              f"{want})")
    per_row = math.prod(block.shape[1:])
    if per_row > MAX_ROW_ELEMENTS:
        raise SchemaError(f"{where}: {per_row:,} numbers per row is over the limit of {MAX_ROW_ELEMENTS:,}")
    return _cast(block, dtype, where, row_offset)


def _cast(block: np.ndarray, dtype: np.dtype, where: str, row_offset: int) -> np.ndarray:
    kind = block.dtype.kind
    if kind not in "biuf":
        raise SchemaError(f"{where}: expected numbers ({dtype.name}), got {block.dtype.name if kind != 'U' else 'text'}"
                          " values")
    if dtype.kind == "f":
        with np.errstate(over="ignore"):  # a number beyond the dtype becomes inf, refused just below
            out = block.astype(dtype, copy=False)
        if kind == "f" and not np.isfinite(out).all():
            row = int(np.argwhere(~np.isfinite(out.reshape(len(out), -1)))[0][0])
            raise SchemaError(f"{where} row {row + 1 + row_offset}: expected finite numbers within {dtype.name} range")
        return np.ascontiguousarray(out)
    if dtype.kind == "b":
        if kind != "b":
            raise SchemaError(f"{where}: expected true/false values, got {block.dtype.name}")
        return np.ascontiguousarray(block)
    if kind == "f":
        whole = np.isfinite(block) & (block == np.round(block))
        if not whole.all():
            row = int(np.argwhere(~whole.reshape(len(block), -1))[0][0])
            raise SchemaError(f"{where} row {row + 1 + row_offset}: expected whole numbers ({dtype.name})")
    info = np.iinfo(dtype)
    if block.size and (block.min() < info.min or block.max() > info.max):
        bad = (block < info.min) | (block > info.max)
        row = int(np.argwhere(bad.reshape(len(block), -1))[0][0])
        raise SchemaError(f"{where} row {row + 1 + row_offset}: a value is outside the {dtype.name} range")
    return np.ascontiguousarray(block.astype(dtype))


def _name_ragged_row(rows: list, shape: list[int], where: str, row_offset: int) -> None:
    """Raise naming the first row whose array does not have the first row's shape (or is not an array)."""
    first = None
    for i, row in enumerate(rows):
        try:
            arr = np.asarray(row)
        except (ValueError, TypeError):
            arr = None
        if arr is None or arr.dtype == object:
            raise SchemaError(f"{where} row {i + 1 + row_offset}: expected an array of shape {describe_shape(shape)}"
                              " (nested lists of numbers, the same length at each level)")
        if first is None:
            first = arr.shape
        elif arr.shape != first:
            raise SchemaError(f"{where} row {i + 1 + row_offset}: shape {describe_shape(list(arr.shape))} differs "
                              f"from row {1 + row_offset}'s {describe_shape(list(first))}; every row of a request "
                              "needs the same shape")
