"""Permutation importance of the whole pipeline, scored out of fold: how much the validation score drops when
one input column's values are shuffled.

Each fold's ensemble (the members' models of that fold, with the ensemble's weights, as one ONNX graph:
preprocessing included) predicts that fold's own validation rows, which none of its models trained on;
the scores are pooled over the folds. The baseline is therefore the ensemble's out-of-fold score, the one
the study validated. The refit model trained on every row, so no row could score it fairly.

The cost is one graph run per column and shuffle: on wide tables more than a time limit holds. Given a
deadline, the columns are ordered cheaply (how strongly each one moves with the model's predictions), the
number of shuffles and then of rows is cut to what the time left pays for, and the columns are scored in
that order until the deadline; the result says what was left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tandem.bundle.inputs import DATETIME_PARTS, EncodedInputs, InputEncoder
from tandem.study import metrics as M

REPEATS = 3
ROWS = 2000  # rows scored at most, pooled over the folds (a seeded sample of each fold's share)
MIN_ROWS = 500  # fewer rows are too noisy to be worth the columns they would buy
MIN_COLUMNS = 3  # scored (once each) even past the deadline: a spent budget still gets the likeliest few
SHARE = 0.1  # of the time limit, the time plan keeps for importance when a full one would cost more
# one graph run on the scored rows: a fixed cost and one per number read, and building each fold's graph
# (measured on a 2-core Xeon: 60 rows x 10,000 numbers, 600 x 7 columns)
RUN_SECONDS, RUN_PER_VALUE, FOLD_GRAPHS_SECONDS = 1e-3, 3e-9, 0.2
_PARTS = ("num", "cat", "text", "image", "tokens")


@dataclass
class Fold:
    """One fold's ensemble and the rows it is scored on (rows none of its models trained on)."""

    run: Callable[[EncodedInputs], np.ndarray]  # the graph's probabilities or predictions
    enc: EncodedInputs
    y: np.ndarray


def importance_seconds(n_rows: int, n_columns: int, width: int, time_limit: float) -> float:
    """What the time plan keeps for permutation importance of ``n_columns`` input columns (``width`` numbers
    a row): a full one, or ``SHARE`` of the time limit when that costs more (it then cuts itself down)."""
    run = RUN_SECONDS + RUN_PER_VALUE * min(n_rows, ROWS) * width
    return FOLD_GRAPHS_SECONDS + min((1 + REPEATS * n_columns) * run, SHARE * time_limit)


def input_columns(encoder: InputEncoder) -> list[tuple[str, str, list[int]]]:
    """Each input column as (name, encoded part, its indices in that part)."""
    columns = []
    j = 0
    for c in encoder.num_columns:
        width = len(DATETIME_PARTS) if c.kind == "datetime" else 1
        columns.append((c.name, "num", list(range(j, j + width))))
        j += width
    columns += [(c.name, "cat", [k]) for k, c in enumerate(encoder.cat_columns)]
    columns += [(c.name, "text", [2 * k, 2 * k + 1]) for k, c in enumerate(encoder.text_columns)]  # words, chars
    columns += [(c.name, "image", []) for c in encoder.image_columns]  # (the whole image moves)
    return columns


def cheap_order(columns: list[tuple[str, str, list[int]]], enc: EncodedInputs, pred: np.ndarray) -> list[int]:
    """Columns (indices into ``columns``) by how strongly their values move with the predictions ``pred``
    [N, C] on the rows ``enc``, strongest first: the absolute correlation for numbers (the largest of a
    date's parts), the correlation ratio for categories; text and images first. One pass over the data,
    far cheaper than one graph run per column."""
    p = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    p = p - p.mean(axis=0)
    p_norm = np.sqrt((p ** 2).sum(axis=0))
    p_norm[p_norm == 0] = np.inf
    strength = np.zeros(len(columns))
    num = [i for i, (_, part, _) in enumerate(columns) if part == "num"]
    if num:
        x = enc.num.astype(np.float64)
        means = np.nanmean(np.where(np.isnan(x).all(axis=0), 0.0, x), axis=0)
        x = np.where(np.isnan(x), means, x) - means
        x_norm = np.sqrt((x ** 2).sum(axis=0))
        x_norm[x_norm == 0] = np.inf
        corr = np.abs((x.T @ p) / x_norm[:, None] / p_norm[None, :]).max(axis=1)
        starts = [columns[i][2][0] for i in num]  # a column's numbers are contiguous: a date's parts
        strength[num] = np.maximum.reduceat(corr, starts)
    for i, (_, part, index) in enumerate(columns):
        if part == "cat":
            _, codes = np.unique(enc.cat[:, index[0]].astype(str), return_inverse=True)
            counts = np.bincount(codes).astype(np.float64)
            sums = np.stack([np.bincount(codes, weights=p[:, c]) for c in range(p.shape[1])], axis=1)
            between = (sums ** 2 / counts[:, None]).sum(axis=0)  # p is centred: the between-group sum of squares
            strength[i] = float((np.sqrt(between) / p_norm).max())
        elif part != "num":
            strength[i] = np.inf
    return [int(i) for i in np.argsort(-strength, kind="stable")]


def permutation_importance(folds: list[Fold], encoder: InputEncoder, metric: str, threshold: float, *,
                           scored_on: str, seed: int = 0, order: list[int] | None = None,
                           deadline: float | None = None) -> dict:
    """Columns by importance, largest first, scored on ``folds`` (pooled) in ``order`` until ``deadline``
    (time.monotonic()); with too little time, fewer shuffles, then fewer rows, then fewer columns (but
    ``MIN_COLUMNS`` at least)."""
    sign = -1.0 if metric in M.LOWER_IS_BETTER else 1.0
    columns = input_columns(encoder)
    order = list(range(len(columns))) if order is None else order
    deadline = float("inf") if deadline is None else deadline
    rng = np.random.default_rng(seed)
    available = sum(f.enc.n_rows for f in folds)

    base = _pooled_score(folds, metric, threshold)  # (a first run also pays the sessions' warm-up)
    start = time.monotonic()
    _pooled_score(folds, metric, threshold)
    per_run = time.monotonic() - start  # one pass over every fold: the price of one shuffle of one column
    left = deadline - time.monotonic()
    repeats = REPEATS if len(columns) * REPEATS * per_run <= left else max(1, int(left / (len(columns) * per_run)))
    if len(columns) * per_run > left and available > MIN_ROWS:
        # fewer rows make each run cheaper (down to a floor of fixed costs): buy more columns with them
        keep = max(MIN_ROWS / available, left / (len(columns) * per_run))
        folds = [Fold(f.run, f.enc.take(rows), f.y[rows]) for f in folds
                 for rows in [np.sort(rng.choice(f.enc.n_rows, max(1, round(f.enc.n_rows * keep)), replace=False))]]
        start = time.monotonic()
        base = _pooled_score(folds, metric, threshold)
        per_run = time.monotonic() - start
    rows = sum(f.enc.n_rows for f in folds)
    y = np.concatenate([f.y for f in folds])
    work = [_Shuffler(f.enc) for f in folds]

    out = []
    spent, runs = 0.0, 0
    for i in order:
        name, part, index = columns[i]
        expected = (spent / runs if runs else per_run) * repeats
        if len(out) >= MIN_COLUMNS and time.monotonic() + expected > deadline:
            break
        start = time.monotonic()
        drops = []
        for _ in range(repeats):
            preds = []
            for fold, shuffler in zip(folds, work, strict=True):
                with shuffler.shuffled(part, index, rng.permutation(fold.enc.n_rows)) as enc:
                    preds.append(fold.run(enc))
            drops.append(sign * (base - M.score(metric, y, np.concatenate(preds), threshold=threshold)))
        spent, runs = spent + time.monotonic() - start, runs + repeats
        out.append({"column": name, "importance": round(float(np.mean(drops)), 6),
                    "std": round(float(np.std(drops)), 6)})
    out.sort(key=lambda r: -r["importance"])
    result = {"metric": metric, "baseline": round(float(base), 6), "scored_on": scored_on, "rows": int(rows),
              "folds": len(folds), "repeats": repeats, "columns": out, "columns_total": len(columns),
              "skipped": len(columns) - len(out)}
    cuts = []
    if len(out) < len(columns):
        cuts.append(f"{len(out):,} of {len(columns):,} columns scored, those that move most with the model's "
                    f"predictions first; the other {len(columns) - len(out):,} were left out")
    if repeats < REPEATS:
        cuts.append(f"{repeats} shuffle{'s' if repeats > 1 else ''} per column instead of {REPEATS}")
    if rows < available:
        cuts.append(f"on {rows:,} of the {available:,} rows")
    if cuts:
        result["note"] = "cut down to keep the time limit: " + "; ".join(cuts)
    return result


def _pooled_score(folds: list[Fold], metric: str, threshold: float) -> float:
    pred = np.concatenate([f.run(f.enc) for f in folds])
    return M.score(metric, np.concatenate([f.y for f in folds]), pred, threshold=threshold)


class _Shuffler:
    """A working copy of a fold's inputs in which one column at a time is shuffled, then put back."""

    def __init__(self, enc: EncodedInputs):
        self.orig = enc
        # images move whole (a fresh array each time): only the other parts need a copy to shuffle in
        self.work = {k: None if getattr(enc, k) is None or k == "image" else getattr(enc, k).copy() for k in _PARTS}
        self.work["image"] = enc.image

    def shuffled(self, part: str, index: list[int], order: np.ndarray) -> _Shuffled:
        return _Shuffled(self, part, index, order)


class _Shuffled:
    def __init__(self, owner: _Shuffler, part: str, index: list[int], order: np.ndarray):
        self.owner, self.part, self.index, self.order = owner, part, index, order

    def __enter__(self) -> EncodedInputs:
        orig, work, part, index, order = self.owner.orig, self.owner.work, self.part, self.index, self.order
        parts = dict(work)
        if part == "image":
            parts["image"] = orig.image[order]
        else:
            work[part][:, index] = getattr(orig, part)[np.ix_(order, index)]
            if part == "text" and orig.tokens is not None:  # the sentence encoder reads the same column
                work["tokens"][:, index[0] // 2] = orig.tokens[order, index[0] // 2]
        return EncodedInputs(**parts)

    def __exit__(self, *exc: object) -> None:
        orig, work, part, index = self.owner.orig, self.owner.work, self.part, self.index
        if part != "image":
            work[part][:, index] = getattr(orig, part)[:, index]
            if part == "text" and orig.tokens is not None:
                work["tokens"][:, index[0] // 2] = orig.tokens[:, index[0] // 2]
