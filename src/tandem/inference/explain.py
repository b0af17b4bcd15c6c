"""Per-prediction feature contributions for tree (LightGBM) and linear members, in numpy.

Each member's raw output (the logit of the positive class, or the predicted value) is split
exactly into a bias and one contribution per input column:

- trees: Saabas path attribution. Along the path a row takes through a tree, every split moves the
  node value (LightGBM's internal value) to the child's; that move is credited to the split's
  feature. The root values sum to the bias; bias + contributions = the raw score, exactly.
- linear: coefficient x (value - its training mean) on the dense view (one-hot and missing
  indicators add up into their column); the bias is the output at the training means.

For a binary model the ensemble's answer is P(positive) = sum of weight x sigmoid(logit). Each
member's logit contributions are scaled by (sigmoid(logit) - sigmoid(bias)) / (logit - bias), so
they add up to that member's probability move from its bias, and the weighted members add up to
the ensemble's probability: base + sum(contributions) = the probability the graph answers (to
float32 rounding). Regression members add up directly. Multiclass models and MLP members have
no exact attribution here; asking raises ``ExplainError``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tandem.bundle.files import EXPLAIN_FILE
from tandem.bundle.inputs import DATETIME_PARTS, EncodedInputs, InputEncoder
from tandem.bundle.views import PreprocessingViews
from tandem.errors import DataError


class ExplainError(DataError):
    """This bundle cannot explain its predictions (the reason is the message)."""


class Explainer:
    """A bundle's explain.json, ready to attribute encoded rows."""

    def __init__(self, data: dict, preprocessing: dict, encoder: InputEncoder):
        self.task = data["task"]
        self.output = data["output"]
        self.reason = data.get("unavailable")
        self.members = [_Member(m) for m in data.get("members", [])]
        self.pre = PreprocessingViews.from_dict(preprocessing)
        # source column of every encoded feature (datetime parts add up into their column)
        num_sources = [c.name for c in encoder.num_columns
                       for _ in (DATETIME_PARTS if c.kind == "datetime" else (None,))]
        text_sources = self.pre.text_feature_columns
        used = set(num_sources) | {c.name for c in encoder.cat_columns} | set(text_sources)
        self.columns = [name for name in encoder.required if name in used]  # the schema's order
        index = {name: i for i, name in enumerate(self.columns)}
        tree_sources = num_sources + [c.name for c in encoder.cat_columns] + text_sources
        eye = np.eye(len(self.columns))
        self._tree_to_column = eye[[index[s] for s in tree_sources]]  # [view width, columns]: sums parts
        dense_sources = list(num_sources)
        dense_sources += [num_sources[j] for j in self.pre.indicator_columns]
        for j, size in enumerate(self.pre.dense_sizes()):
            dense_sources += [encoder.cat_columns[j].name] * size
        dense_sources += text_sources
        self._dense_to_column = eye[[index[s] for s in dense_sources]]

    @classmethod
    def load(cls, bundle: Path, manifest: dict, encoder: InputEncoder) -> Explainer:
        path = Path(bundle) / EXPLAIN_FILE
        if not path.exists():
            raise ExplainError("this bundle was written before tandem kept explanations: retrain it to explain")
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("unavailable"):  # (a multiclass model, an imported one: no views to build)
            raise ExplainError(data["unavailable"])
        return cls(data, manifest["preprocessing"], encoder)

    def explain(self, enc: EncodedInputs) -> dict:
        """Base value and per-column contributions [N, columns] of the rows ``enc``, in the model's output."""
        if self.reason:
            raise ExplainError(self.reason)
        views: dict[str, np.ndarray] = {}
        base = 0.0
        total = np.zeros((enc.n_rows, len(self.columns)))
        for m in self.members:
            if m.view not in views:
                views[m.view] = (self.pre.tree_view(enc) if m.view == "tree" else self.pre.dense_view(enc)).astype(
                    np.float64)
            bias, contrib = m.attribute(views[m.view])
            per_column = contrib @ (self._tree_to_column if m.view == "tree" else self._dense_to_column)
            if self.task == "binary":
                logit = bias + contrib.sum(axis=1)
                move = logit - bias
                p, p0 = _sigmoid(logit), _sigmoid(bias)
                scale = np.where(np.abs(move) > 1e-12, (p - p0) / np.where(move == 0, 1.0, move), p0 * (1 - p0))
                per_column *= scale[:, None]
                bias = p0
            base += m.weight * bias
            total += m.weight * per_column
        return {"output": self.output, "columns": self.columns, "base": float(base), "contributions": total}


class _Member:
    def __init__(self, d: dict):
        self.kind, self.view, self.weight = d["kind"], d["view"], float(d["weight"])
        if self.kind == "linear":
            self.coef = np.asarray(d["coef"], dtype=np.float64)[0]  # binary and regression: one output
            self.intercept = float(d["intercept"][0])
            self.means = np.asarray(d["means"], dtype=np.float64)
            return
        self.roots = np.asarray(d["roots"], dtype=np.int64)
        self.feature = np.asarray(d["feature"], dtype=np.int64)
        self.threshold = np.asarray(d["threshold"], dtype=np.float64)
        self.is_cat = np.asarray(d["is_cat"], dtype=bool)
        self.missing_left = np.asarray(d["missing_left"], dtype=bool)
        self.left = np.asarray(d["left"], dtype=np.int64)
        self.right = np.asarray(d["right"], dtype=np.int64)
        self.value = np.asarray(d["value"], dtype=np.float64)
        self.set_id = np.asarray(d["set_id"], dtype=np.int64)
        width = max((max(s) for s in d["sets"] if s), default=0) + 1
        self.in_set = np.zeros((max(len(d["sets"]), 1), width), dtype=bool)
        for k, codes in enumerate(d["sets"]):
            self.in_set[k, codes] = True

    def attribute(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """(bias, contributions [N, view width]) of the raw output."""
        if self.kind == "linear":
            return self.intercept + float(self.coef @ self.means), (x - self.means) * self.coef
        return self._saabas(x)

    def _saabas(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        n, width = x.shape
        node = np.tile(self.roots, n)  # every (row, tree) walks down in step
        row = np.repeat(np.arange(n), len(self.roots))
        contrib = np.zeros(n * width)
        active = np.flatnonzero(self.feature[node] >= 0)
        while len(active):
            nd = node[active]
            f = self.feature[nd]
            v = x[row[active], f]
            missing = np.isnan(v)
            go_left = np.where(missing, self.missing_left[nd], v <= self.threshold[nd])
            cat = self.is_cat[nd]
            if cat.any():  # category codes: members go left; unknown, missing or unseen codes go right
                codes = np.where(missing[cat], -1, v[cat]).astype(np.int64)
                inside = (codes >= 0) & (codes < self.in_set.shape[1])
                hit = np.zeros(len(codes), dtype=bool)
                hit[inside] = self.in_set[self.set_id[nd[cat]][inside], codes[inside]]
                go_left[cat] = hit
            nxt = np.where(go_left, self.left[nd], self.right[nd])
            contrib += np.bincount(row[active] * width + f, weights=self.value[nxt] - self.value[nd],
                                   minlength=n * width)
            node[active] = nxt
            active = active[self.feature[nxt] >= 0]
        return float(self.value[self.roots].sum()), contrib.reshape(n, width)


def _sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))
