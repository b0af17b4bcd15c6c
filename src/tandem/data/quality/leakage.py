"""Target leakage: a feature that predicts the target (almost) on its own, scored on rows it was not fit on."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tandem.data.quality.blocks import BLOCK_VALUES, _matrix, _quantiles_by_count
from tandem.data.quality.columns import _Stats
from tandem.data.quality.report import Finding
from tandem.data.quality.rows import _codes

LEAK_ERROR = 0.98  # skill of one feature alone (0 = no better than the majority, 1 = perfect) ...
LEAK_WARNING = 0.90  # ... on rows it did not see
LEAK_SAMPLE_ROWS = 200_000


def _leakage(table: pa.Table, target_col: pa.ChunkedArray, features: list[str], stats: dict[str, _Stats],
             task: str, seed: int, blocks: list[tuple[list[str], np.ndarray | None]] | None = None) -> list[Finding]:
    """Flag a feature that predicts the target (almost) on its own, scored on rows it was not fit on."""
    keep = pc.is_valid(target_col)
    if pa.types.is_floating(target_col.type):
        keep = pc.and_(keep, pc.invert(pc.is_nan(target_col)))
    rows = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
    rng = np.random.default_rng(seed)
    if len(rows) > LEAK_SAMPLE_ROWS:
        rows = np.sort(rng.choice(rows, LEAK_SAMPLE_ROWS, replace=False))
    if len(rows) < 20:
        return []
    half = rng.permutation(len(rows)) < len(rows) // 2  # fit on one half, score on the other
    index = pa.array(rows)
    target = target_col.take(index)
    if task == "regression":
        y = pc.cast(target, pa.float64()).to_numpy(zero_copy_only=False)
    else:
        y = _codes(target).astype(np.int64)
        _, y = np.unique(y, return_inverse=True)
    skills: dict[str, float] = {}
    cells = (min(len(rows), 256) + 2) * (1 if task == "regression" else int(y.max()) + 1)  # per column, at most
    per_chunk = max(1, min(BLOCK_VALUES // cells, BLOCK_VALUES // len(rows)))
    for block_names, block in blocks or []:
        varied = [i for i, c in enumerate(block_names) if stats[c].n_unique > 1]
        for i in range(0, len(varied), per_chunk):
            at = varied[i:i + per_chunk]
            chunk = [block_names[j] for j in at]
            if len(rows) < table.num_rows:
                x = _matrix(table, chunk, index)
            else:  # every row kept: the block read for the stats, or one read of the whole columns
                x = block[at] if block is not None else _matrix(table, chunk)
            skills.update(zip(chunk, _block_skill(x, [stats[c] for c in chunk], y, half, task), strict=True))
    out = []
    for name in features:
        s = stats[name]
        if s.n_unique <= 1 or s.kind == "other":
            continue
        if name in skills:
            skill = skills[name]
        else:
            bins, n_bins = _bins(table.column(name).take(index), s, half)
            skill = _skill(bins, n_bins, y, half, task)
        if skill >= LEAK_WARNING:
            what = "R²" if task == "regression" else "skill over the majority class"
            out.append(Finding(
                "target_leakage", "error" if skill >= LEAK_ERROR else "warning",
                f"predicts the target on its own ({what} {skill:.3f} on rows it was not fit on): a copy or a "
                "consequence of the target would make the model look perfect and fail in use; keep it only if "
                "its value is known before the target is", name, round(float(skill), 4)))
    return out


_QUANTILE_EDGES = np.linspace(0, 1, 257)[1:-1]


def _block_bins(x: np.ndarray, stats: list[_Stats], fit_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_bins` of each row of ``x``: the same partition of its values into bins (numbered alike
    for the quantile bins, in another order for one bin per value, which no skill depends on)."""
    b, r = x.shape
    bins = np.empty((b, r), dtype=np.int64)
    n_bins = np.empty(b, dtype=np.int64)
    wide = np.array([s.n_unique > 256 for s in stats], dtype=bool)
    if wide.any():
        rows = np.flatnonzero(wide)
        fit = np.sort(x[rows][:, fit_rows], axis=1)
        present = fit.shape[1] - np.isnan(fit).sum(axis=1)
        edges = _quantiles_by_count(fit, present, _QUANTILE_EDGES)
        for j, i in enumerate(rows):
            if present[j] == 0:
                bins[i], n_bins[i] = 0, 1
                continue
            e = np.unique(edges[:, j])
            bins[i] = np.searchsorted(e, x[i], side="right")
            bins[i, np.isnan(x[i])] = len(e) + 1
            n_bins[i] = len(e) + 2
    rows = np.flatnonzero(~wide)
    if len(rows):  # one bin per value (equal floats alike, -0.0 with 0.0), every missing value in one more
        v = x[rows]
        order = np.argsort(v, axis=1, kind="stable")
        sv = np.take_along_axis(v, order, axis=1)
        new = np.ones(sv.shape, dtype=bool)
        new[:, 1:] = (sv[:, 1:] != sv[:, :-1]) & ~(np.isnan(sv[:, 1:]) & np.isnan(sv[:, :-1]))
        rank = np.cumsum(new, axis=1) - 1
        sub = np.empty_like(rank)
        np.put_along_axis(sub, order, rank, axis=1)
        bins[rows] = sub
        n_bins[rows] = rank[:, -1] + 1 if r else 1
    return bins, n_bins


def _block_skill(x: np.ndarray, stats: list[_Stats], y: np.ndarray, fit: np.ndarray, task: str) -> list[float]:
    """:func:`_skill` of each row of ``x`` (a feature on the leakage rows), from one bincount per block."""
    bins, n_bins = _block_bins(x, stats, fit)
    score = ~fit
    offsets = np.r_[0, np.cumsum(n_bins)[:-1]]
    flat = bins + offsets[:, None]  # every column's bins numbered apart
    total_bins = int(n_bins.sum())
    y_fit, y_score = y[fit], y[score]
    if task == "regression":
        fit_bins = flat[:, fit].ravel()  # column by column, each in row order: the per-column sums' order
        total = np.bincount(fit_bins, weights=np.tile(y_fit, len(x)), minlength=total_bins)
        count = np.bincount(fit_bins, minlength=total_bins)
        mean = np.where(count > 0, total / np.maximum(count, 1), y_fit.mean())
        sst = float(np.sum((y_score - y_score.mean()) ** 2))
        if sst == 0:
            return [0.0] * len(x)
        squares = (y_score[None, :] - mean[flat[:, score]]) ** 2
        # one sum per row: numpy's 2-D reduction adds in another order than the per-column 1-D sum
        return [1.0 - float(np.sum(row)) / sst for row in squares]
    n_classes = int(y.max()) + 1
    cells = flat[:, fit] * n_classes + y_fit[None, :]
    table = np.bincount(cells.ravel(), minlength=total_bins * n_classes).reshape(total_bins, n_classes)
    majority = int(np.bincount(y_fit, minlength=n_classes).argmax())
    guess = np.where(table.sum(axis=1) > 0, table.argmax(axis=1), majority)
    accuracy = np.mean(guess[flat[:, score]] == y_score[None, :], axis=1)
    base = float(np.mean(y_score == majority))
    return [0.0 if base >= 1.0 else (float(a) - base) / (1.0 - base) for a in accuracy]


def _bins(col: pa.ChunkedArray, s: _Stats, fit_rows: np.ndarray) -> tuple[np.ndarray, int]:
    """A bin per row: quantile bins for numbers, one per value otherwise; missing values share one bin."""
    if s.kind == "numeric" and s.n_unique > 256:
        x = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        fit = x[fit_rows]
        fit = fit[~np.isnan(fit)]
        if not len(fit):
            return np.zeros(len(x), dtype=np.int64), 1
        edges = np.unique(np.quantile(fit, np.linspace(0, 1, 257)[1:-1]))
        bins = np.searchsorted(edges, x, side="right")
        bins[np.isnan(x)] = len(edges) + 1
        return bins, len(edges) + 2
    codes = _codes(col)
    _, bins = np.unique(codes, return_inverse=True)
    return bins.reshape(-1), int(bins.max()) + 1


def _skill(bins: np.ndarray, n_bins: int, y: np.ndarray, fit: np.ndarray, task: str) -> float:
    score = ~fit
    if task == "regression":
        total = np.bincount(bins[fit], weights=y[fit], minlength=n_bins)
        count = np.bincount(bins[fit], minlength=n_bins)
        mean = np.where(count > 0, total / np.maximum(count, 1), y[fit].mean())
        sst = float(np.sum((y[score] - y[score].mean()) ** 2))
        if sst == 0:
            return 0.0
        return 1.0 - float(np.sum((y[score] - mean[bins[score]]) ** 2)) / sst
    n_classes = int(y.max()) + 1
    table = np.bincount(bins[fit] * n_classes + y[fit], minlength=n_bins * n_classes).reshape(n_bins, n_classes)
    majority = int(np.bincount(y[fit], minlength=n_classes).argmax())
    guess = np.where(table.sum(axis=1) > 0, table.argmax(axis=1), majority)
    accuracy = float(np.mean(guess[bins[score]] == y[score]))
    base = float(np.mean(y[score] == majority))
    return 0.0 if base >= 1.0 else (accuracy - base) / (1.0 - base)
