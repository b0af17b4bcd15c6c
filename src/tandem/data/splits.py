"""Seeded splits: stratified k-fold / holdout, group k-fold and time-ordered folds."""

from __future__ import annotations

import numpy as np

from tandem.errors import DataError

SPLITS = ("stratified", "random", "group", "time")


def make_folds(
    n_rows: int,
    k: int,
    *,
    seed: int,
    y: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    order: np.ndarray | None = None,
    kind: str = "stratified",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return ``k`` (train_index, valid_index) pairs.

    stratified: every fold keeps the class ratio of ``y``; random: shuffled k-fold (regression);
    group: rows of one group never straddle train and validation; time: validation folds are the
    latest rows by ``order``, each trained only on rows before it (forward chaining).
    """
    if kind not in SPLITS:
        raise DataError(f"split '{kind}' is not one of {', '.join(SPLITS)}")
    if k < 2:
        raise DataError(f"number of folds must be at least 2, got {k}")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(n_rows, dtype=np.int64)
    if kind == "stratified":
        if y is None:
            raise DataError("a stratified split needs the target values")
        classes, codes = np.unique(y, return_inverse=True)
        counts = np.bincount(codes)
        if counts.min() < k:
            rare = classes[int(np.argmin(counts))]
            raise DataError(
                f"too few rows for a {k}-fold split: class '{rare}' has {counts.min()} rows, need at least {k}")
        offset = 0
        for c in range(len(classes)):
            idx = np.flatnonzero(codes == c)
            rng.shuffle(idx)
            fold_of[idx] = (np.arange(len(idx)) + offset) % k
            offset += len(idx)
    elif kind == "random":
        perm = rng.permutation(n_rows)
        fold_of[perm] = np.arange(n_rows) % k
    elif kind == "group":
        if groups is None:
            raise DataError("a group split needs a group column")
        uniq, gcodes = np.unique(groups.astype(str), return_inverse=True)
        if len(uniq) < k:
            raise DataError(f"too few groups for a {k}-fold group split: {len(uniq)} groups, need at least {k}")
        perm = rng.permutation(len(uniq))
        sizes = np.bincount(gcodes)
        load = np.zeros(k)
        gfold = np.empty(len(uniq), dtype=np.int64)
        for g in perm[np.argsort(-sizes[perm], kind="stable")]:
            f = int(np.argmin(load))
            gfold[g] = f
            load[f] += sizes[g]
        fold_of = gfold[gcodes]
    else:  # time
        if order is None:
            raise DataError("a time split needs a time column")
        ranked = np.argsort(order, kind="stable")
        chunks = np.array_split(ranked, k + 1)
        return [(np.sort(np.concatenate(chunks[: i + 1])), np.sort(chunks[i + 1])) for i in range(k)]
    folds = []
    for f in range(k):
        valid = np.flatnonzero(fold_of == f)
        train = np.flatnonzero(fold_of != f)
        folds.append((train, valid))
    return folds
