"""Rows as 64-bit hashes of their values (equal across a training and a test table), and the label conflicts
they show."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tandem.data.quality.report import Finding, _count, _pct

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _joint(table: pa.Table, test: pa.Table | None, name: str) -> pa.ChunkedArray:
    """A column of the training rows followed by the test rows, in one type (so equal values hash alike)."""
    col = table.column(name)
    if test is None or name not in test.column_names:
        return col
    other = test.column(name)
    if other.type != col.type:
        if _is_number(col.type) and _is_number(other.type):
            col, other = pc.cast(col, pa.float64()), pc.cast(other, pa.float64())
        else:
            col, other = pc.cast(col, pa.large_string()), pc.cast(other, pa.large_string())
    return pa.chunked_array(col.chunks + other.chunks, type=col.type)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)


def _codes(col: pa.ChunkedArray) -> np.ndarray:
    """uint64 per row, equal for equal values (missing values equal each other)."""
    t = col.type
    if _is_number(t):
        # as float64, so 5 and 5.0 hash alike across a training and a test table; an integer beyond 2**53 takes
        # the nearest float (as the model reads it), and +0.0 folds -0.0 into 0.0
        x = pc.cast(col, pa.float64(), safe=False).to_numpy(zero_copy_only=False) + 0.0
        x[np.isnan(x)] = np.inf * 0  # every missing value as the same NaN
        return x.view(np.uint64)
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t) or pa.types.is_duration(t):
        col = pc.cast(col, pa.int64()) if not pa.types.is_date(t) else pc.cast(pc.cast(col, pa.date32()), pa.int32())
        return pc.fill_null(col, -1).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        col = pc.cast(col, pa.large_string())
    encoded = pc.dictionary_encode(col.combine_chunks() if col.num_chunks != 1 else col.chunk(0))
    return pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)


def _combine(h: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Mix one column's codes into the row hashes (boost's hash_combine on 64 bits, then a finaliser)."""
    h ^= codes + _GOLDEN + (h << np.uint64(6)) + (h >> np.uint64(2))
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(29)
    return h


def _row_hashes(columns: list[pa.ChunkedArray], n: int) -> np.ndarray:
    h = np.zeros(n, dtype=np.uint64)
    for col in columns:
        h = _combine(h, _codes(col))
    return h


def _label_conflicts(feature_hash: np.ndarray, labels: np.ndarray, has_label: np.ndarray) -> list[Finding]:
    h, y = feature_hash[has_label], labels[has_label].astype(np.int64)
    order = np.argsort(h, kind="stable")
    h, y = h[order], y[order]
    starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
    sizes = np.diff(np.r_[starts, len(h)])
    conflict = np.minimum.reduceat(y, starts) != np.maximum.reduceat(y, starts)
    rows = int(sizes[conflict].sum())
    if not rows:
        return []
    share = rows / len(h)
    return [Finding("label_conflicts", "warning" if share > 0.01 else "info",
                    f"{rows} rows ({_pct(share)}) in {_count(int(conflict.sum()), 'group')} have identical features "
                    "but different labels: no model can tell them apart, which caps accuracy on them", value=share)]
