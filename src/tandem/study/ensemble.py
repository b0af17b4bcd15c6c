"""Greedy weighted ensemble selection (Caruana et al. 2004) over out-of-fold predictions."""

from __future__ import annotations

import numpy as np

from tandem.study.metrics import loss


def greedy_ensemble(preds: dict[str, np.ndarray], y: np.ndarray, metric: str, *, rounds: int = 25,
                    max_members: int = 4, costs: dict[str, float] | None = None,
                    max_cost: float = float("inf"), cost_ratio: float = 1.5) -> dict[str, float]:
    """Pick members with replacement to minimise ``metric``; return normalised weights (> 0 only).

    With ``costs`` (one-row latency of each model), the distinct members' total cost stays within
    ``max_cost`` and within ``cost_ratio`` times its leading model's cost: the ensemble may buy
    accuracy with latency, but only so much.
    """
    names = sorted(preds, key=lambda n: loss(metric, y, preds[n]))
    if not names:
        return {}
    costs = costs or {}
    within = [n for n in names if costs.get(n, 0.0) <= max_cost]
    if within:  # the best model that fits the latency budget leads; others only if none does
        names = within + [n for n in names if n not in within]
    counts = {names[0]: 1}
    first_cost = costs.get(names[0], 0.0)
    budget = max(first_cost, min(max_cost, cost_ratio * first_cost)) if costs else float("inf")

    def affordable(name: str) -> bool:
        return name in counts or sum(costs.get(n, 0.0) for n in counts) + costs.get(name, 0.0) <= budget

    current = preds[names[0]].astype(np.float64).copy()
    best_loss = loss(metric, y, current)
    for r in range(1, rounds):
        candidates = [n for n in (names if len(counts) < max_members else list(counts)) if affordable(n)]
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
