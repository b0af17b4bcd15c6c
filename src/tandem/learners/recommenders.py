"""Recommendation families: from a user x item interaction matrix to a score for every (user, item).

Each family fits on the training matrix X (scipy CSR, users x items, weights) and scores users two ways that
agree: :meth:`Recommender.scores` in numpy (what the study evaluates and the parity check compares) and
:meth:`Recommender.to_onnx`, the same scores as ONNX nodes from a user index (what the bundle serves).

- ``popularity``: how many users had each item; the baseline every report shows, and the answer for an
  unknown user.
- ``item_knn``: cosine similarity between items' user sets, the ``neighbours`` most similar kept per item;
  a user's score for an item sums its similarity to what the user had.
- ``ease``: EASE (Steck, 2019), a closed-form item-item linear model with a zero diagonal,
  B = I - P diag(1/diag(P)), P = (X'X + lambda I)^-1. Strong on dense catalogues; costs items^2 memory.
- ``two_tower``: a user tower and an item tower (an id embedding plus a small network on the user's or item's
  features, from the feature tables), trained on the torch loop with an in-batch softmax (popularity-corrected)
  and the user's id dropped at random, so the features alone place a user: what answers a **new user** who
  is in the users table but had no interaction. Only with feature tables.
- ``als``: implicit-feedback matrix factorisation (Hu, Koren & Volinsky, 2008) by alternating least squares:
  confidence 1 + alpha * weight, ``factors`` dimensions, ``regularization``. Scales with users and items.

A ``blend`` sums two or more of these, each one's scores standardised per user (mean 0, standard deviation 1
over the catalogue) and weighted: the study tries it on validation and keeps it only when it beats every
single model there.

Item-item families serve from a table of every known user's scores, computed at export (users x items
floats): they are left out of the portfolio when that table would pass :data:`MAX_SCORE_TABLE`. ALS serves
from its factors (a lookup and a product), which scales to large catalogues.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from tandem.features.graph import GraphBuilder

MAX_SCORE_TABLE = 50_000_000  # users x items floats (200 MB) an item-item family may serve from
MAX_EASE_ITEMS = 20_000  # EASE inverts an items x items matrix
RECOMMEND_FAMILIES = ("popularity", "item_knn", "ease", "als", "two_tower")  # (a blend is not asked for by name)


class Recommender:
    """One recommendation configuration: ``fit`` on the training matrix, then score its users."""

    family = ""
    serves_from = "table"  # "table": a users x items score table in the graph; "factors": user and item factors

    def __init__(self, params: dict | None = None, seed: int = 0):
        self.params = dict(params or {})
        self.seed = seed
        self.X = None  # the training matrix (what a user had)
        self.fit_seconds = 0.0
        self.user_features: np.ndarray | None = None  # [users, columns], rows as the matrix's (two_tower only)
        self.item_features: np.ndarray | None = None

    def fit(self, X, deadline: float | None = None) -> Recommender:
        started = time.monotonic()
        self.X = X.tocsr().astype(np.float32)
        self._fit(self.X, deadline)
        self.fit_seconds = time.monotonic() - started
        return self

    def _fit(self, X, deadline: float | None) -> None:
        raise NotImplementedError

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Scores [len(users), items] (float32) of known users (indices into the training matrix's rows)."""
        raise NotImplementedError

    def to_onnx(self, g: GraphBuilder, user_index: str) -> str:
        """The scores [N, items] of ``user_index`` (int64 [N], each a known user) as graph nodes."""
        table = np.concatenate([self.scores(rows) for rows in _chunks(self.X.shape[0])]).astype(np.float32)
        return g.op("Gather", [g.const(table, f"{self.family}_scores"), user_index], axis=0)

    def describe(self) -> dict:
        return {k: v for k, v in self.params.items() if isinstance(v, (int, float, str, bool))}

    def save(self, folder: Path) -> list[str]:
        """The parameters (the graph holds the weights); returns the files written."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "params.json").write_text(json.dumps({"family": self.family, "params": self.params}))
        return ["params.json"]


class Popularity(Recommender):
    family = "popularity"
    serves_from = "factors"  # one row for every user

    def _fit(self, X, deadline):
        self.counts = np.asarray((X > 0).sum(axis=0), dtype=np.float32).reshape(-1)

    def row(self) -> np.ndarray:
        """The popularity of every item, as shares of users (float32 [items])."""
        return (self.counts / max(self.X.shape[0], 1)).astype(np.float32)

    def scores(self, users):
        return np.broadcast_to(self.row(), (len(users), len(self.counts))).copy()

    def to_onnx(self, g, user_index):
        row = g.const(self.row().reshape(1, -1), "popularity")
        n = g.op("Shape", [user_index])
        return g.op("Expand", [row, g.op("Concat", [n, g.const(np.array([len(self.counts)], np.int64))], axis=0)])


class ItemKNN(Recommender):
    family = "item_knn"

    def _fit(self, X, deadline):
        import scipy.sparse as sp

        binary = (X > 0).astype(np.float32)
        norms = np.sqrt(np.asarray(binary.sum(axis=0)).reshape(-1))
        sim = (binary.T @ binary).toarray()
        shrink = float(self.params.get("shrink", 10.0))
        sim /= np.outer(norms, norms) + shrink + 1e-9
        np.fill_diagonal(sim, 0.0)
        k = min(int(self.params.get("neighbours", 100)), sim.shape[0] - 1)
        if 0 < k < sim.shape[0] - 1:  # keep each item's k most similar items (its column's largest)
            cut = np.argpartition(-sim, k, axis=0)[k:]
            np.put_along_axis(sim, cut, 0.0, axis=0)
        self.similarity = sp.csr_matrix(sim)

    def scores(self, users):
        return np.asarray((self.X[users] @ self.similarity).toarray(), dtype=np.float32)


class EASE(Recommender):
    family = "ease"

    def _fit(self, X, deadline):
        binary = (X > 0).astype(np.float64)
        gram = (binary.T @ binary).toarray()
        gram[np.diag_indices_from(gram)] += float(self.params.get("l2", 500.0))
        p = np.linalg.inv(gram)
        self.weights = (p / -np.diag(p)).astype(np.float32)
        np.fill_diagonal(self.weights, 0.0)

    def scores(self, users):
        return np.asarray((self.X[users] > 0).astype(np.float32) @ self.weights, dtype=np.float32)


class ALS(Recommender):
    """Implicit ALS in numpy: each half-step solves one small (factors x factors) system per user or item."""

    family = "als"
    serves_from = "factors"

    def _fit(self, X, deadline):
        d = int(self.params.get("factors", 64))
        reg = float(self.params.get("regularization", 0.05))
        alpha = float(self.params.get("alpha", 2.0))
        iterations = int(self.params.get("iterations", 15))
        rng = np.random.default_rng(self.seed)
        n_users, n_items = X.shape
        self.user_factors = (rng.standard_normal((n_users, d)) * 0.01).astype(np.float64)
        self.item_factors = (rng.standard_normal((n_items, d)) * 0.01).astype(np.float64)
        confidence = X.copy().astype(np.float64)
        confidence.data = alpha * confidence.data
        by_item = confidence.T.tocsr()
        self.iterations_run = 0
        for _ in range(iterations):
            _als_half_step(confidence, self.item_factors, self.user_factors, reg)
            _als_half_step(by_item, self.user_factors, self.item_factors, reg)
            self.iterations_run += 1
            if deadline is not None and time.monotonic() >= deadline:
                break

    def scores(self, users):
        return (self.user_factors[users] @ self.item_factors.T).astype(np.float32)

    def to_onnx(self, g, user_index):
        rows = g.op("Gather", [g.const(self.user_factors.astype(np.float32), "als_users"), user_index], axis=0)
        return g.op("MatMul", [rows, g.const(self.item_factors.T.astype(np.float32).copy(), "als_items")])

    def describe(self):
        return {**super().describe(), "iterations_run": self.iterations_run}


def _als_half_step(confidence, fixed: np.ndarray, solved: np.ndarray, reg: float) -> None:
    """Solve every row of ``solved`` given ``fixed``: (F'F + F_u' diag(c_u) F_u + reg I) x = F_u' (1 + c_u)."""
    gram = fixed.T @ fixed + reg * np.eye(fixed.shape[1])
    indptr, indices, data = confidence.indptr, confidence.indices, confidence.data
    for u in range(solved.shape[0]):
        a, b = indptr[u], indptr[u + 1]
        if a == b:
            solved[u] = 0.0
            continue
        f = fixed[indices[a:b]]
        c = data[a:b]
        solved[u] = np.linalg.solve(gram + (f.T * c) @ f, f.T @ (1.0 + c))


class Blend(Recommender):
    """Members' scores, each standardised per user, weighted and summed. ``params["members"]``: a list of
    ``{"family", "params", "weight"}``."""

    family = "blend"

    def __init__(self, params: dict | None = None, seed: int = 0):
        super().__init__(params, seed)
        self.members = [(make_recommender(m["family"], m["params"], seed), float(m["weight"]))
                        for m in self.params["members"]]
        self.serves_from = "table" if any(m.serves_from == "table" for m, _ in self.members) else "factors"

    def _fit(self, X, deadline):
        for member, _ in self.members:
            member.user_features, member.item_features = self.user_features, self.item_features
            member.fit(X, deadline)

    def scores(self, users):
        total = np.zeros((len(users), self.X.shape[1]), dtype=np.float32)
        for member, weight in self.members:
            s = member.scores(users).astype(np.float32)
            s = (s - s.mean(axis=1, keepdims=True)) / (s.std(axis=1, keepdims=True) + np.float32(1e-6))
            total += np.float32(weight) * s
        return total

    def to_onnx(self, g, user_index):
        total = None
        eps = g.const(np.array(1e-6, np.float32), "eps")
        for member, weight in self.members:
            s = member.to_onnx(g, user_index)
            centred = g.op("Sub", [s, g.op("ReduceMean", [s, g.const(np.array([1], np.int64), "axis1")],
                                           keepdims=1)])
            var = g.op("ReduceMean", [g.op("Mul", [centred, centred]), g.const(np.array([1], np.int64), "axis1")],
                       keepdims=1)
            z = g.op("Div", [centred, g.op("Add", [g.op("Sqrt", [var]), eps])])
            part = g.op("Mul", [z, g.const(np.array(weight, np.float32), "weight")])
            total = part if total is None else g.op("Add", [total, part])
        return total

    def describe(self):
        return {"members": [{"family": m.family, "weight": w, **m.describe()} for m, w in self.members]}


FAMILY_CLASSES: dict[str, type[Recommender]] = {c.family: c for c in (Popularity, ItemKNN, EASE, ALS, Blend)}


def make_recommender(family: str, params: dict | None = None, seed: int = 0) -> Recommender:
    if family == "two_tower":  # torch loads only for it
        from tandem.learners.two_tower import TwoTower

        return TwoTower(params, seed)
    return FAMILY_CLASSES[family](params, seed)


def fits_in_memory(family: str, n_users: int, n_items: int) -> str | None:
    """Why ``family`` cannot serve data of this size, or None when it can."""
    if family in ("item_knn", "ease") and n_users * n_items > MAX_SCORE_TABLE:
        return (f"{family} serves from a users x items score table ({n_users:,} x {n_items:,} is more than "
                f"{MAX_SCORE_TABLE:,} floats)")
    if family == "ease" and n_items > MAX_EASE_ITEMS:
        return f"ease inverts an items x items matrix ({n_items:,} items is more than {MAX_EASE_ITEMS:,})"
    return None


def _chunks(n: int, size: int = 4096) -> list[np.ndarray]:
    return [np.arange(a, min(a + size, n)) for a in range(0, n, size)]
