"""Fairness: metrics per group of a sensitive column, and how far apart the groups are.

For classification, per group: rows, accuracy, selection rate (share predicted positive), true
and false positive rates (binary: the positive class is the second label; multiclass: TPR and FPR
are macro-averaged one-vs-rest). Disparities, over groups with at least ``MIN_GROUP_ROWS`` rows:

- demographic-parity ratio: lowest selection rate / highest (1 = parity; the "80% rule" asks >= 0.8);
- demographic-parity difference: highest selection rate - lowest;
- equalized-odds difference: the larger of the TPR gap and the FPR gap (0 = equal odds);
- accuracy difference.

For regression: rows, mean target, mean prediction and MAE per group, and the MAE gap.
These match Fairlearn's definitions of the same names.
"""

from __future__ import annotations

import numpy as np

MIN_GROUP_ROWS = 1
MISSING_GROUP = "(missing)"


def fairness_report(task: str, y: np.ndarray, pred: np.ndarray, column: object, name: str, threshold: float,
                    n_classes: int, *, on: str) -> dict:
    """Fairness figures of predictions ``pred`` ([N, C] probabilities or [N, 1] values) by the groups of the
    Arrow ``column`` named ``name``; ``on`` says which rows they are."""
    from tandem.schema import categorical_strings

    groups = categorical_strings(column)
    groups = np.where(groups == "", MISSING_GROUP, groups)
    if task == "regression":
        hard = np.asarray(pred, dtype=np.float64).reshape(-1)
    elif pred.shape[1] == 2:
        hard = (pred[:, 1] >= threshold).astype(np.int64)
    else:
        hard = np.argmax(pred, axis=1)
    return {"column": name, "rows": int(len(y)), "on": on, **group_metrics(task, y, hard, groups, n_classes=n_classes)}


def group_metrics(task: str, y: np.ndarray, pred: np.ndarray, groups: np.ndarray, *, n_classes: int = 2) -> dict:
    """``pred`` holds class indices (classification) or values (regression); ``groups`` a string per row."""
    groups = np.asarray(groups).astype(str)
    names = sorted(set(groups.tolist()))
    per = {}
    for g in names:
        mask = groups == g
        per[g] = _regression(y[mask], pred[mask]) if task == "regression" else _classification(
            y[mask], pred[mask], task, n_classes)
    counted = {g: m for g, m in per.items() if m["rows"] >= MIN_GROUP_ROWS}
    return {"groups": per, "disparity": _disparity(task, counted)}


def _classification(y: np.ndarray, hard: np.ndarray, task: str, n_classes: int) -> dict:
    out = {"rows": int(len(y)), "accuracy": _mean(hard == y)}
    if task == "binary":
        out["selection_rate"] = _mean(hard == 1)
        out["tpr"] = _mean(hard[y == 1] == 1) if np.any(y == 1) else None
        out["fpr"] = _mean(hard[y == 0] == 1) if np.any(y == 0) else None
        return out
    tprs = [_mean(hard[y == k] == k) for k in range(n_classes) if np.any(y == k)]
    fprs = [_mean(hard[y != k] == k) for k in range(n_classes) if np.any(y != k)]
    out["selection_rate"] = None
    out["tpr"] = float(np.mean(tprs)) if tprs else None
    out["fpr"] = float(np.mean(fprs)) if fprs else None
    return out


def _regression(y: np.ndarray, pred: np.ndarray) -> dict:
    return {"rows": int(len(y)), "mean_target": _mean(y), "mean_prediction": _mean(pred),
            "mae": _mean(np.abs(y - pred))}


def _disparity(task: str, per: dict) -> dict:
    def spread(key: str) -> tuple[float | None, float | None]:
        vals = [m[key] for m in per.values() if m.get(key) is not None]
        return (min(vals), max(vals)) if len(vals) >= 1 else (None, None)

    if task == "regression":
        lo, hi = spread("mae")
        return {"mae_difference": None if lo is None else hi - lo}
    out = {}
    lo, hi = spread("accuracy")
    out["accuracy_difference"] = None if lo is None else hi - lo
    lo, hi = spread("selection_rate")
    out["demographic_parity_difference"] = None if lo is None else hi - lo
    out["demographic_parity_ratio"] = None if lo is None else (lo / hi if hi > 0 else 1.0)
    tpr, fpr = spread("tpr"), spread("fpr")
    gaps = [b - a for a, b in (tpr, fpr) if a is not None]
    out["equalized_odds_difference"] = max(gaps) if gaps else None
    return out


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if len(x) else None
