"""Seeded splits: stratified, random, group and time folds."""

from __future__ import annotations

import numpy as np
import pytest

from tandem.data.splits import make_folds
from tandem.errors import DataError


def _covers_once(folds, n):
    seen = np.concatenate([va for _, va in folds])
    return sorted(seen.tolist()) == list(range(n))


def test_stratified_keeps_class_ratio_and_is_seeded():
    y = np.array([0] * 90 + [1] * 10)
    folds = make_folds(100, 5, seed=3, y=y, kind="stratified")
    assert _covers_once(folds, 100)
    for tr, va in folds:
        assert len(np.intersect1d(tr, va)) == 0
        assert y[va].sum() == 2 and len(va) == 20
    again = make_folds(100, 5, seed=3, y=y, kind="stratified")
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    other = make_folds(100, 5, seed=4, y=y, kind="stratified")
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other, strict=True))


def test_group_folds_never_split_a_group():
    groups = np.repeat(np.arange(20), 5)
    folds = make_folds(100, 4, seed=0, groups=groups, kind="group")
    assert _covers_once(folds, 100)
    for tr, va in folds:
        assert not set(groups[tr]) & set(groups[va])


def test_time_folds_train_only_on_the_past():
    order = np.random.default_rng(0).permutation(100).astype(float)
    folds = make_folds(100, 4, seed=0, order=order, kind="time")
    for tr, va in folds:
        assert order[tr].max() < order[va].min()


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "stratified", "y": np.array([0] * 9 + [1])}, "class '1' has 1 rows, need at least 5"),
    ({"kind": "group", "groups": np.array([1, 1, 2, 2] * 3)}, "too few groups for a 5-fold group split: 2 groups"),
    ({"kind": "stratified"}, "a stratified split needs the target values"),
    ({"kind": "weekly"}, "split 'weekly' is not one of stratified, random, group, time"),
])
def test_bad_split_requests_are_named(kwargs, message):
    n = len(kwargs.get("y", kwargs.get("groups", np.zeros(12))))
    with pytest.raises(DataError) as info:
        make_folds(n, 5, seed=0, **kwargs)
    assert message in str(info.value)
