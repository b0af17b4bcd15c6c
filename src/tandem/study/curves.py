"""What the report draws, computed once at training time from the validation predictions.

ROC and precision-recall curves, the confusion matrix at the tuned threshold and a calibration
table (classification); predicted against actual values and residual quantiles (regression).
Curves are thinned to at most ``MAX_POINTS`` points, so a manifest stays small whatever the rows.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

MAX_POINTS = 150
CALIBRATION_BINS = 10
MAX_CLASSES_DRAWN = 10


def evaluation_curves(task: str, y: np.ndarray, pred: np.ndarray, labels: list[str] | None,
                      threshold: float) -> dict:
    """The report's curves for validation targets ``y`` and predictions ``pred`` ([N, C] or [N, 1])."""
    pred = np.asarray(pred, dtype=np.float64)
    if task == "regression":
        return _regression(y, pred.reshape(-1))
    n_classes = pred.shape[1]
    hard = (pred[:, 1] >= threshold).astype(np.int64) if n_classes == 2 else np.argmax(pred, axis=1)
    out: dict = {"rows": int(len(y)), "labels": labels,
                 "confusion": skm.confusion_matrix(y, hard, labels=np.arange(n_classes)).tolist(),
                 "threshold": threshold if n_classes == 2 else None}
    if n_classes == 2:
        positive = pred[:, 1]
        out["roc"] = {labels[1]: _roc(y == 1, positive)} if len(np.unique(y)) == 2 else {}
        out["pr"] = {labels[1]: _pr(y == 1, positive)} if len(np.unique(y)) == 2 else {}
        out["calibration"] = _calibration(positive, y == 1, f"P({labels[1]})")
    else:
        drawn = range(min(n_classes, MAX_CLASSES_DRAWN))
        out["roc"] = {labels[k]: _roc(y == k, pred[:, k]) for k in drawn if 0 < np.sum(y == k) < len(y)}
        out["pr"] = {labels[k]: _pr(y == k, pred[:, k]) for k in drawn if 0 < np.sum(y == k) < len(y)}
        out["calibration"] = _calibration(pred.max(axis=1), hard == y, "confidence (top class)")
    return out


def _thin(*arrays: np.ndarray) -> list[list[float]]:
    n = len(arrays[0])
    keep = np.unique(np.linspace(0, n - 1, min(n, MAX_POINTS)).round().astype(int))
    return [np.round(a[keep], 5).tolist() for a in arrays]


def _roc(truth: np.ndarray, score: np.ndarray) -> dict:
    fpr, tpr, _ = skm.roc_curve(truth, score)
    fpr, tpr = _thin(fpr, tpr)
    return {"fpr": fpr, "tpr": tpr, "auc": round(float(skm.roc_auc_score(truth, score)), 6)}


def _pr(truth: np.ndarray, score: np.ndarray) -> dict:
    precision, recall, _ = skm.precision_recall_curve(truth, score)
    recall, precision = _thin(recall[::-1], precision[::-1])
    return {"recall": recall, "precision": precision,
            "average_precision": round(float(skm.average_precision_score(truth, score)), 6),
            "base_rate": round(float(np.mean(truth)), 6)}


def _calibration(prob: np.ndarray, hit: np.ndarray, what: str) -> dict:
    """Mean predicted probability against the observed frequency, in equal-width bins."""
    bins = np.minimum((prob * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    count = np.bincount(bins, minlength=CALIBRATION_BINS)
    mean_p = np.bincount(bins, weights=prob, minlength=CALIBRATION_BINS) / np.maximum(count, 1)
    freq = np.bincount(bins, weights=hit.astype(np.float64), minlength=CALIBRATION_BINS) / np.maximum(count, 1)
    used = count > 0
    ece = float(np.sum(count[used] * np.abs(mean_p[used] - freq[used])) / max(count.sum(), 1))
    return {"what": what, "predicted": np.round(mean_p[used], 5).tolist(), "observed": np.round(freq[used], 5).tolist(),
            "rows": count[used].astype(int).tolist(), "expected_calibration_error": round(ece, 6)}


def _regression(y: np.ndarray, pred: np.ndarray) -> dict:
    rng = np.random.default_rng(0)
    sample = rng.choice(len(y), min(len(y), 400), replace=False) if len(y) else np.arange(0)
    residual = y - pred
    return {"rows": int(len(y)), "actual": np.round(y[sample], 5).tolist(),
            "predicted": np.round(pred[sample], 5).tolist(),
            "residual_quantiles": np.round(np.quantile(residual, [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]), 5).tolist()
            if len(y) else []}
