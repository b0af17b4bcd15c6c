"""The ensemble phase: greedy weighted ensemble selection (Caruana et al. 2004) over out-of-fold predictions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from tandem.learners import TEXT_ENCODER_VIEWS, learner_class
from tandem.study import metrics as M
from tandem.study.fairness import fairness_report
from tandem.study.metrics import loss

if TYPE_CHECKING:
    from tandem.footprint.meter import Meter
    from tandem.study.prepare import Prepared
    from tandem.study.result import Candidate, Progress, StudyConfig


def greedy_ensemble(preds: dict[str, np.ndarray], y: np.ndarray, metric: str, *, rounds: int = 25,
                    max_members: int = 4, costs: dict[str, float] | None = None,
                    max_cost: float = float("inf"), cost_ratio: float = 1.5, sizes: dict[str, float] | None = None,
                    max_size: float = float("inf")) -> dict[str, float]:
    """Pick members with replacement to minimise ``metric``; return normalised weights (> 0 only).

    With ``costs`` (one-row latency of each model), the distinct members' total cost stays within
    ``max_cost`` and within ``cost_ratio`` times its leading model's cost: the ensemble may buy
    accuracy with latency, but only so much. With ``sizes`` (each model's graph bytes), the distinct
    members' total size stays within ``max_size`` once a model that fits it leads.
    """
    names = sorted(preds, key=lambda n: loss(metric, y, preds[n]))
    if not names:
        return {}
    costs, sizes = costs or {}, sizes or {}
    for budgeted, limit in ((costs, max_cost), (sizes, max_size)):
        within = [n for n in names if budgeted.get(n, 0.0) <= limit]
        if within:  # the best model that fits the budget leads; others only if none does
            names = within + [n for n in names if n not in within]
    counts = {names[0]: 1}
    first_cost = costs.get(names[0], 0.0)
    budget = max(first_cost, min(max_cost, cost_ratio * first_cost)) if costs else float("inf")
    size_budget = max(sizes.get(names[0], 0.0), max_size)

    def affordable(name: str) -> bool:
        if name in counts:
            return True
        return (sum(costs.get(n, 0.0) for n in counts) + costs.get(name, 0.0) <= budget
                and sum(sizes.get(n, 0.0) for n in counts) + sizes.get(name, 0.0) <= size_budget)

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


@dataclass
class Ensemble:
    """The chosen blend, scored on the validation rows of the active folds."""

    weights: dict[str, float]  # member name -> weight
    blended: np.ndarray  # the blend's out-of-fold predictions on ``rows``
    rows: np.ndarray
    threshold: float
    validation_metrics: dict
    fairness: dict | None


def energy_latency_cap_us(config: StudyConfig, meter: Meter | None) -> float:
    """The one-row latency (µs) an energy budget per 1,000 predictions allows, at the joules per CPU second this
    study measured (a one-row prediction on one thread is CPU time); inf without an energy budget."""
    if config.energy_per_1k_budget_j is None or meter is None:
        return float("inf")
    rate = meter.joules_per_cpu_second()
    return float("inf") if rate is None else config.energy_per_1k_budget_j / 1000 / rate * 1e6


def choose_ensemble(prep: Prepared, config: StudyConfig, usable: list[Candidate], rows: np.ndarray,
                    say: Progress, meter: Meter | None = None) -> Ensemble:
    """Blend the usable candidates within the latency, energy and size budgets, pick the binary threshold, score the
    blend (and its fairness over ``config.sensitive``) on ``rows``; overfitting candidates get a warning."""
    task, metric, y = prep.task, prep.metric, prep.y
    for c in usable:
        if c.overfit:
            prep.warnings.append(f"{c.name} overfits: {metric} {c.train_score:.4f} on training rows vs "
                                 f"{c.val_score:.4f} on validation")
    ens_metric = metric if (task == "regression" or metric in M.THRESHOLD_FREE) else "log_loss"
    say("ensembling")
    # the sentence encoder is a fixed price for its accuracy: the latency budget is on top of it; so are the image
    # networks (none answers in 100 µs), all of them, so that two can blend, within the cost ratio of the leader
    encoder_us = max((c.latency_us for c in usable if learner_class(c.family).view in TEXT_ENCODER_VIEWS),
                     default=0.0)
    encoder_us += sum(c.latency_us for c in usable if learner_class(c.family).view == "image")
    max_size = float("inf") if config.max_bytes is None else float(config.max_bytes)
    energy_cap = energy_latency_cap_us(config, meter)
    if energy_cap < config.latency_budget_us + encoder_us:
        say(f"--energy-per-1k-budget {config.energy_per_1k_budget_j:g} J: one-row predictions of at most "
            f"{energy_cap:.0f} µs at this machine's measured rate")
    weights = greedy_ensemble({c.name: c.oof[rows] for c in usable}, y[rows], ens_metric,
                              costs={c.name: c.latency_us for c in usable},
                              max_cost=min(config.latency_budget_us + encoder_us, energy_cap),
                              sizes={c.name: c.onnx_bytes for c in usable}, max_size=max_size)
    too_big = sum(c.onnx_bytes for c in usable if c.name in weights)
    if usable and too_big > max_size:
        smallest = min(usable, key=lambda c: c.onnx_bytes)
        prep.warnings.append(f"no model fits --max-bytes {config.max_bytes}: the ensemble's members take "
                             f"{too_big} bytes (the smallest model tried, {smallest.name}, takes "
                             f"{smallest.onnx_bytes})")
    blended = blend({c.name: c.oof[rows] for c in usable}, weights)
    threshold = 0.5
    if task == "binary":
        threshold = M.best_threshold(metric, y[rows], blended)
    val_metrics = M.all_metrics(task, y[rows], blended, threshold=threshold)
    fairness = None
    if config.sensitive is not None:
        fairness = fairness_report(task, y[rows], blended, prep.table.column(config.sensitive).take(pa.array(rows)),
                                   config.sensitive, threshold, prep.n_classes,
                                   on="validation rows (out-of-fold predictions of the ensemble)")
    return Ensemble(weights, blended, rows, threshold, val_metrics, fairness)
