"""Greedy weighted ensemble selection (Caruana et al. 2004) over out-of-fold predictions."""

from __future__ import annotations

import numpy as np

from tandem.study.metrics import loss


def greedy_ensemble(preds: dict[str, np.ndarray], y: np.ndarray, metric: str, *, rounds: int = 25,
                    max_members: int = 4) -> dict[str, float]:
    """Pick members with replacement to minimise ``metric``; return normalised weights (> 0 only)."""
    names = sorted(preds, key=lambda n: loss(metric, y, preds[n]))
    if not names:
        return {}
    counts = {names[0]: 1}
    current = preds[names[0]].astype(np.float64).copy()
    best_loss = loss(metric, y, current)
    for r in range(1, rounds):
        candidates = names if len(counts) < max_members else list(counts)
        trial = [(loss(metric, y, (current * r + preds[n]) / (r + 1)), n) for n in candidates]
        value, name = min(trial)
        if value >= best_loss - 1e-12:
            break
        counts[name] = counts.get(name, 0) + 1
        current = (current * r + preds[name]) / (r + 1)
        best_loss = min(best_loss, value)
    total = sum(counts.values())
    return {n: c / total for n, c in counts.items()}


def blend(preds: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """The weighted sum of member predictions."""
    return sum(w * preds[n] for n, w in weights.items())
