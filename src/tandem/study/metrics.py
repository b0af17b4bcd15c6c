"""Metrics: names, direction, and computation from class probabilities or predicted values."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from tandem.errors import ConfigError

CLASSIFICATION = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "pr_auc", "log_loss")
REGRESSION = ("rmse", "mae", "r2")
LOWER_IS_BETTER = {"log_loss", "rmse", "mae"}
THRESHOLD_FREE = {"roc_auc", "pr_auc", "log_loss"}
DEFAULT_METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}


def check_metric(metric: str | None, task: str) -> str:
    """The metric to optimise for ``task``; a clear error if it does not fit."""
    if metric is None:
        return DEFAULT_METRIC[task]
    allowed = REGRESSION if task == "regression" else CLASSIFICATION
    if metric not in allowed:
        raise ConfigError(f"metric '{metric}' does not fit a {task} task: expected one of {', '.join(allowed)}")
    return metric


def score(metric: str, y: np.ndarray, pred: np.ndarray, *, threshold: float = 0.5) -> float:
    """Compute ``metric``. ``y`` holds class indices (classification) or values; ``pred`` is [N, C] or [N, 1]."""
    pred = np.asarray(pred, dtype=np.float64)
    if metric in REGRESSION:
        p = pred.reshape(-1)
        if metric == "rmse":
            return float(np.sqrt(np.mean((y - p) ** 2)))
        if metric == "mae":
            return float(np.mean(np.abs(y - p)))
        return float(skm.r2_score(y, p))
    n_classes = pred.shape[1]
    labels = np.arange(n_classes)
    if metric == "log_loss":
        clipped = np.clip(pred, 1e-15, 1)
        return float(skm.log_loss(y, clipped / clipped.sum(axis=1, keepdims=True), labels=labels))
    if metric in ("roc_auc", "pr_auc"):
        if len(np.unique(y)) < 2:
            return float("nan")
        if n_classes == 2:
            fn = skm.roc_auc_score if metric == "roc_auc" else skm.average_precision_score
            return float(fn(y, pred[:, 1]))
        if metric == "roc_auc":
            present = np.unique(y)
            if len(present) < n_classes:
                return float("nan")
            return float(skm.roc_auc_score(y, pred, multi_class="ovr", labels=labels))
        onehot = (y[:, None] == labels[None, :]).astype(int)
        return float(skm.average_precision_score(onehot, pred, average="macro"))
    hard = to_labels(pred, threshold)
    if metric == "accuracy":
        return float(np.mean(hard == y))
    if metric == "balanced_accuracy":
        return float(skm.balanced_accuracy_score(y, hard))
    if metric == "f1":
        if n_classes == 2:
            return float(skm.f1_score(y, hard, zero_division=0))
        return float(skm.f1_score(y, hard, average="macro", labels=labels, zero_division=0))
    raise ConfigError(f"unknown metric '{metric}'")


def to_labels(proba: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class indices from probabilities; binary uses ``threshold`` on the positive class."""
    if proba.shape[1] == 2:
        return (proba[:, 1] >= threshold).astype(np.int64)
    return np.argmax(proba, axis=1)


def loss(metric: str, y: np.ndarray, pred: np.ndarray) -> float:
    """A value to minimise, whatever the metric's direction."""
    s = score(metric, y, pred)
    if s != s:
        return float("inf")
    return s if metric in LOWER_IS_BETTER else -s


def all_metrics(task: str, y: np.ndarray, pred: np.ndarray, *, threshold: float = 0.5) -> dict[str, float]:
    """Every metric that fits the task."""
    names = REGRESSION if task == "regression" else CLASSIFICATION
    out = {}
    for name in names:
        value = score(name, y, pred, threshold=threshold)
        out[name] = None if value != value else round(value, 6)
    return out


def per_class(y: np.ndarray, proba: np.ndarray, labels: list[str], *, threshold: float = 0.5) -> dict[str, dict]:
    """Precision, recall, F1 and support for every label."""
    hard = to_labels(proba, threshold)
    idx = np.arange(len(labels))
    p, r, f, s = skm.precision_recall_fscore_support(y, hard, labels=idx, zero_division=0)
    return {label: {"precision": round(float(p[i]), 6), "recall": round(float(r[i]), 6),
                    "f1": round(float(f[i]), 6), "support": int(s[i])} for i, label in enumerate(labels)}


def best_threshold(metric: str, y: np.ndarray, proba: np.ndarray) -> float:
    """The decision threshold on P(positive) that maximises a threshold-dependent metric."""
    if metric in THRESHOLD_FREE:
        return 0.5
    candidates = np.unique(np.quantile(proba[:, 1], np.linspace(0.01, 0.99, 99)))
    candidates = np.concatenate([[0.5], candidates])
    scores = [score(metric, y, proba, threshold=float(t)) for t in candidates]
    return float(candidates[int(np.argmax(scores))])
