"""The learner protocol: fit, predict, export to ONNX, save native files."""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from tandem.features.graph import GraphBuilder

#: families that train on the shared torch loop and can run under torchrun (``params["devices"]`` > 1)
DEVICE_FAMILIES = ("mlp", "cnn", "efficientnet_finetune")


class Learner(ABC):
    """One model family. Outputs are [N, C] class probabilities, or [N, 1] for regression."""

    family: str = ""
    view: str = "dense"  # which preprocessing view it consumes: "tree" or "dense"

    def __init__(self, params: dict, *, task: str, n_classes: int, seed: int,
                 categorical: list[int] | None = None):
        self.params = dict(params)
        self.task = task
        self.n_classes = n_classes
        self.seed = seed
        self.categorical = list(categorical or [])
        self.fit_seconds = 0.0
        self.stopped_by_deadline = False
        self.curve: dict | None = None  # training vs validation loss per round or epoch (fits with a validation set)
        # set on a learner that :meth:`continued` made: its epochs over all rows, and the runs averaged into it
        self.continued_epochs, self.continued_runs = 0, 0

    @property
    def n_outputs(self) -> int:
        return 1 if self.task == "regression" else self.n_classes

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
            *, deadline: float | None = None) -> Learner:
        """Fit; with a validation set, stop early on it. Stop at ``deadline`` (time.monotonic()) at the latest."""
        start = time.monotonic()
        devices = int(self.params.get("devices", 1))
        if devices > 1 and self.family in DEVICE_FAMILIES and "WORLD_SIZE" not in os.environ:
            from tandem.learners.distributed import fit_on_devices  # (not inside a torchrun worker already)

            fit_on_devices(self, devices, X, y, X_val, y_val, deadline)
        else:
            self._fit(X, y, X_val, y_val, deadline)
        self.fit_seconds = time.monotonic() - start
        return self

    def fit_state(self) -> dict:
        """What a fit leaves beside the native files (its curve, whether the deadline stopped it, its seconds):
        what another process sends back with them (tandem.learners.distributed, tandem.study.cluster)."""
        return {"curve": self.curve, "stopped_by_deadline": self.stopped_by_deadline, "fit_seconds": self.fit_seconds}

    def restore_fit_state(self, state: dict) -> None:
        """Take back what :meth:`fit_state` gave."""
        self.curve, self.stopped_by_deadline = state["curve"], state["stopped_by_deadline"]
        self.fit_seconds = state["fit_seconds"]

    @abstractmethod
    def _fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None, y_val: np.ndarray | None,
             deadline: float | None) -> None: ...

    def epoch_seconds(self) -> float | None:
        """Seconds one epoch of the last fit took, for a family that can go on training (:meth:`continued`)."""
        return None

    def continued(self, X: np.ndarray, y: np.ndarray, *, epochs: int, deadline: float) -> Learner | None:
        """A new learner: this fitted one trained ``epochs`` more epochs on (X, y), all the rows, at a low rate,
        for when a refit from scratch does not fit the time left; this one unchanged. None when the family cannot
        (the default) or the deadline came first."""
        return None

    @abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Native prediction: [N, C] probabilities or [N, 1] values."""

    @abstractmethod
    def refit_params(self, scale: float) -> dict:
        """Parameters to refit on all rows without a validation set (``scale`` = rows ratio)."""

    @abstractmethod
    def to_onnx(self, g: GraphBuilder, x: str) -> str:
        """Add this model to ``g`` reading float tensor ``x``; return the name of its float [N, C] output."""

    @abstractmethod
    def save(self, folder: Path) -> list[str]:
        """Write native files (safe formats only) into ``folder``; return their names."""

    @classmethod
    def load(cls, folder: Path, *, task: str, n_classes: int) -> Learner:
        """Restore a fitted learner from the native files :meth:`save` wrote (no pickle)."""
        learner = cls({}, task=task, n_classes=n_classes, seed=0)
        learner._load(folder)
        return learner

    @abstractmethod
    def _load(self, folder: Path) -> None: ...

    def describe(self) -> dict:
        """Learned sizes worth showing (trees, epochs, ...)."""
        return {}

    def explainer(self, dense_means: np.ndarray | None = None) -> dict | None:
        """What tandem.inference.explain needs to attribute this model's raw output (logit or value) to its
        input features, as JSON-able data; None when the family has no exact attribution (MLP)."""
        return None


CURVE_POINTS = 200


def training_curve(metric: str, train: list[float], valid: list[float], *, best: int, unit: str) -> dict:
    """Train and validation loss per step (1-based), thinned to at most ``CURVE_POINTS`` points."""
    n = min(len(train), len(valid))
    step = max(1, -(-n // CURVE_POINTS))
    keep = list(range(0, n, step))
    if keep and keep[-1] != n - 1:
        keep.append(n - 1)
    return {"metric": metric, "unit": unit, "steps": [i + 1 for i in keep],
            "train": [round(float(train[i]), 6) for i in keep], "valid": [round(float(valid[i]), 6) for i in keep],
            "best": int(best)}


def deadline_passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def probabilities_from_logit(g: GraphBuilder, logit: str, dtype: type = np.float32) -> str:
    """[N, 1] logit -> [N, 2] probabilities (1 - p, p), in the logit's float type."""
    p = g.op("Sigmoid", [logit])
    q = g.op("Sub", [g.const(np.array([[1.0]], dtype=dtype), "one"), p])
    return g.op("Concat", [q, p], axis=1, prefix="proba")
