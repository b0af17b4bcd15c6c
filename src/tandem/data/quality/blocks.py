"""Numeric columns a block at a time: the stats and outliers of :mod:`tandem.data.quality.columns`, from one
matrix."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tandem.data.quality.columns import ID_UNIQUE_SHARE, _outlier_finding, _Stats
from tandem.data.quality.report import Finding

BLOCK_VALUES = 1 << 22  # values of a block of numeric columns (32 MiB as float64)


# A wide table (thousands of numeric columns) checked column by column spends seconds in Python
# and in numpy's per-call overhead; these give the same stats and findings from one matrix.
def _numeric_groups(table: pa.Table, features: list[str], n: int) -> list[list[str]]:
    names = [c for c in features
             if pa.types.is_floating(table.schema.field(c).type) or pa.types.is_integer(table.schema.field(c).type)]
    if n == 0 or len(names) < 2:
        return []
    per_block = max(1, BLOCK_VALUES // n)
    return [names[i:i + per_block] for i in range(0, len(names), per_block)]


def _integer_mask(table: pa.Table, names: list[str]) -> np.ndarray:
    return np.array([pa.types.is_integer(table.schema.field(c).type) for c in names], dtype=bool)


def _matrix(table: pa.Table, names: list[str], index: pa.Array | None = None) -> np.ndarray:
    """Columns ``names`` as rows of one float64 matrix, missing values as NaN."""
    cols = []
    for c in names:
        col = table.column(c)
        if index is not None:
            col = col.take(index)
        cols.append(np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64))
    return np.stack(cols) if cols else np.empty((0, 0 if index is None else len(index)))


def _exact_block(table: pa.Table, names: list[str]) -> tuple[list[str], np.ndarray]:
    """The matrix of the columns whose values float64 keeps apart as Arrow does (others go one by one):
    integers of 2**53 or more round, and Arrow counts -0.0 and 0.0 as two values where a sort sees one."""
    x = _matrix(table, names)
    with np.errstate(invalid="ignore"):
        bad = ((x == 0) & np.signbit(x)).any(axis=1)
        bad |= _integer_mask(table, names) & (np.abs(x) >= 2.0 ** 53).any(axis=1)
    if bad.any():
        keep = np.flatnonzero(~bad)
        return [names[i] for i in keep], x[keep]
    return names, x


def _block_stats(sorted_x: np.ndarray, integer: np.ndarray) -> list[_Stats]:
    """:func:`_column_stats` of each row of ``sorted_x`` (a column's values sorted, NaN last)."""
    b, n = sorted_x.shape
    present = n - np.isnan(sorted_x).sum(axis=1)
    valid = np.arange(n)[None, :] < present[:, None]
    starts = np.ones_like(valid)
    starts[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    starts &= valid
    n_unique = starts.sum(axis=1)
    flat = np.flatnonzero(starts)  # a run of equal values begins at each; runs end at the next or at the NaNs
    row = flat // n
    ends = np.minimum(np.r_[flat[1:], b * n], row * n + present[row])
    top = np.zeros(b, dtype=np.int64)
    if len(flat):
        firsts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        top[row[firsts]] = np.maximum.reduceat(ends - flat, firsts)
    lo = sorted_x[:, 0]
    hi = sorted_x[np.arange(b), np.maximum(present - 1, 0)]
    out = []
    for j in range(b):
        p, u = int(present[j]), int(n_unique[j])
        st = _Stats("numeric", n - p, u, float(top[j]) / p if p else 0.0)
        if integer[j] and u >= ID_UNIQUE_SHARE * p and p >= 20:
            st.integer_steps = int(hi[j]) - int(lo[j]) + 1 == u
        out.append(st)
    return out


def _quantiles_by_count(sorted_x: np.ndarray, present: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.quantile`` of each row's present values (its first ``present`` ones), rows as columns of the result;
    rows with the same count share one call, so every figure is what the per-column call gives."""
    out = np.full((len(q), len(sorted_x)), np.nan)
    for m in np.unique(present):
        if m == 0:
            continue
        rows = np.flatnonzero(present == m)
        out[:, rows] = np.quantile(sorted_x[rows, :m], q, axis=1)
    return out


def _block_outliers(names: list[str], sorted_x: np.ndarray, stats: list[_Stats]) -> list[Finding]:
    """:func:`_outliers` of each column with more than 20 values, on a block of at most OUTLIER_SAMPLE rows."""
    rows = np.flatnonzero([s.n_unique > 20 for s in stats])
    if not len(rows):
        return []
    x = sorted_x[rows]
    present = np.array([x.shape[1] - stats[i].missing for i in rows])
    p1, p99 = _quantiles_by_count(x, present, np.array([0.01, 0.99]))
    spread = p99 - p1
    with np.errstate(invalid="ignore"):
        far = (x < (p1 - spread)[:, None]) | (x > (p99 + spread)[:, None])
    far &= (spread > 0)[:, None]
    k = far.sum(axis=1)
    lo = np.where(far, x, np.inf).min(axis=1)
    hi = np.where(far, x, -np.inf).max(axis=1)
    return [_outlier_finding(names[rows[j]], int(k[j]), int(present[j]), p1[j], p99[j], lo[j], hi[j])
            for j in np.flatnonzero(k)]
