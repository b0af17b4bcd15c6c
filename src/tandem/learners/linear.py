"""Linear models (logistic regression / ridge) on the dense view (scaled numbers, one-hot categories)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge

from tandem.features.graph import GraphBuilder
from tandem.learners.base import Learner, probabilities_from_logit

ABSENT_LOGIT = -30.0  # a class missing from the training rows: probability ~1e-13


class LinearLearner(Learner):
    family = "linear"
    view = "dense"

    def _fit(self, X, y, X_val, y_val, deadline):
        if self.task == "regression":
            self.model = Ridge(alpha=float(self.params.get("alpha", 1.0)), random_state=self.seed)
            self.model.fit(X, y)
            self._keep(np.atleast_2d(self.model.coef_), np.atleast_1d(self.model.intercept_))
            return
        # a fold (a random split, a rare class) may lack some classes: the model still answers every class,
        # those it never saw at a logit of ABSENT_LOGIT (probability ~1e-13)
        present = np.unique(y)
        rows = 1 if self.task == "binary" else self.n_classes
        coef, intercept = np.zeros((rows, X.shape[1])), np.zeros(rows)
        if len(present) == 1:  # LogisticRegression refuses one class: a constant model
            if self.task == "binary":
                intercept[0] = -ABSENT_LOGIT if present[0] == 1 else ABSENT_LOGIT
            else:
                intercept[:] = ABSENT_LOGIT
                intercept[present[0]] = 0.0
            self._keep(coef, intercept)
            return
        self.model = LogisticRegression(C=float(self.params.get("C", 1.0)),
                                        max_iter=int(self.params.get("max_iter", 500)), random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(X, y)
        fitted_coef, fitted_intercept = np.atleast_2d(self.model.coef_), np.atleast_1d(self.model.intercept_)
        if rows == 1 or len(present) == self.n_classes:
            coef, intercept = fitted_coef, fitted_intercept
        else:
            intercept[:] = ABSENT_LOGIT
            if len(present) == 2:  # one logit: present[1] against present[0]
                intercept[present[0]] = 0.0
                coef[present[1]], intercept[present[1]] = fitted_coef[0], fitted_intercept[0]
            else:
                coef[present], intercept[present] = fitted_coef, fitted_intercept
        self._keep(coef, intercept)

    def _keep(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.coef = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept = np.ascontiguousarray(intercept, dtype=np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = X.astype(np.float64) @ self.coef.T.astype(np.float64) + self.intercept.astype(np.float64)
        if self.task == "regression":
            return z.reshape(-1, 1)
        if self.task == "binary":
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.column_stack([1.0 - p, p])
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def _load(self, folder: Path) -> None:
        arrays = load_file(str(folder / "linear.safetensors"))
        self.coef, self.intercept = arrays["coef"], arrays["intercept"]

    def refit_params(self, scale: float) -> dict:
        return dict(self.params)

    def to_onnx(self, g: GraphBuilder, x: str) -> str:
        z = g.op("Gemm", [x, g.const(self.coef, "coef"), g.const(self.intercept, "intercept")], transB=1)
        if self.task == "regression":
            return z
        if self.task == "binary":
            return probabilities_from_logit(g, z)
        return g.op("Softmax", [z], axis=1)

    def save(self, folder: Path) -> list[str]:
        save_file({"coef": self.coef, "intercept": self.intercept}, str(folder / "linear.safetensors"))
        return ["linear.safetensors"]

    def describe(self) -> dict:
        return {"coefficients": int(self.coef.size)}

    def explainer(self, dense_means: np.ndarray | None = None) -> dict | None:
        # contribution of dense column k: coef_k * (x_k - its training mean); the bias is the output at the means
        means = np.zeros(self.coef.shape[1]) if dense_means is None else np.asarray(dense_means, dtype=np.float64)
        return {"kind": "linear", "view": "dense", "coef": self.coef.astype(np.float64).tolist(),
                "intercept": self.intercept.astype(np.float64).tolist(), "means": means.tolist()}


class EncoderLinearLearner(LinearLearner):
    """Transfer learning's fast head: the linear model on the embedding view (the dense view followed by
    each text column's sentence embedding)."""

    family = "minilm_linear"
    view = "embedding"

    def explainer(self, dense_means: np.ndarray | None = None) -> dict | None:
        return None  # a coefficient of an embedding dimension says nothing about a word


class ImageEmbeddingLinearLearner(EncoderLinearLearner):
    """Transfer learning's fast head for images: the linear model on the embedding view, where the image column's
    pooled EfficientNet-Lite0 features (a frozen ImageNet backbone) follow the other columns' dense view."""

    family = "efficientnet_linear"
