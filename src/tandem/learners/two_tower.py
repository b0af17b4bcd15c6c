"""The two-tower recommender (see tandem.learners.recommenders): a user tower and an item tower, each an id
embedding plus a small network on the feature table's row, trained on the shared torch loop with an in-batch
softmax. Two things make it useful beyond the warm users:

- **the id is dropped at random** (``id_dropout``, to a shared "cold" row), so the features alone must place a
  user: :meth:`TwoTower.cold_user_factors` answers users who are in the users table but had no interaction;
- **the logits are corrected by each in-batch item's log-frequency** while training (sampled softmax's logQ
  correction: an in-batch softmax sees popular items as negatives more often, and would otherwise learn to avoid
  them), and the log-frequency is added back when scoring: a score is then the full softmax's logit, the
  user's taste and the item's popularity together. Both are folded into the factors (a user's vector divided by
  the temperature, with a 1 appended; an item's with its log-frequency appended), so serving is one product.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tandem.learners.recommenders import Recommender
from tandem.learners.torch_loop import LoopConfig, fit


class TowerNet(nn.Module):
    """User vector: id embedding (the shared cold row when the id is dropped) + a network on the features; item
    vector likewise; both L2-normalised, so a score is a cosine."""

    def __init__(self, user_features: np.ndarray, item_features: np.ndarray, dims: int, id_dropout: float):
        super().__init__()
        self.cold_user = len(user_features)
        self.register_buffer("uf", torch.as_tensor(user_features, dtype=torch.float32))
        self.register_buffer("itf", torch.as_tensor(item_features, dtype=torch.float32))
        self.user_ids = nn.Embedding(len(user_features) + 1, dims)
        self.item_ids = nn.Embedding(len(item_features), dims)
        nn.init.normal_(self.user_ids.weight, std=0.1)
        nn.init.normal_(self.item_ids.weight, std=0.1)
        self.user_net = _tower(user_features.shape[1], dims)
        self.item_net = _tower(item_features.shape[1], dims)
        self.id_dropout = id_dropout if user_features.shape[1] else 0.0

    def users(self, u: torch.Tensor, drop: bool = False, features: torch.Tensor | None = None) -> torch.Tensor:
        ids = u
        if drop and self.id_dropout > 0:
            ids = torch.where(torch.rand(len(u), device=u.device) < self.id_dropout,
                              torch.full_like(u, self.cold_user), u)
        f = self.uf[u.clamp(max=self.cold_user - 1)] if features is None else features
        v = self.user_ids(ids) + (self.user_net(f) if self.user_net is not None else 0)
        return F.normalize(v, dim=-1)

    def items(self, i: torch.Tensor) -> torch.Tensor:
        v = self.item_ids(i) + (self.item_net(self.itf[i]) if self.item_net is not None else 0)
        return F.normalize(v, dim=-1)


class PairLogits(nn.Module):
    """What the loop trains: (user, item) index pairs [B, 2] -> in-batch logits [B, B], logQ-corrected."""

    def __init__(self, towers: TowerNet, log_q: torch.Tensor, temperature: float):
        super().__init__()
        self.towers, self.temperature = towers, temperature
        self.register_buffer("log_q", log_q)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        u, i = pairs[:, 0].long(), pairs[:, 1].long()
        logits = self.towers.users(u, drop=self.training) @ self.towers.items(i).T / self.temperature
        return logits - self.log_q[i]


def _in_batch_softmax(logits: torch.Tensor, _unused: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def _tower(n_in: int, dims: int) -> nn.Module | None:
    return nn.Sequential(nn.Linear(n_in, dims), nn.ReLU(), nn.Linear(dims, dims)) if n_in else None


class TwoTower(Recommender):
    """Two towers on the shared torch loop; serves from its factors, like ALS."""

    family = "two_tower"
    serves_from = "factors"

    def _fit(self, X, deadline):
        users, items = X.nonzero()
        pairs = np.stack([users, items], axis=1).astype(np.float32)  # indices: exact in float32 below 2^24
        counts = np.bincount(items, minlength=X.shape[1]).astype(np.float64)
        log_q = torch.as_tensor(np.log(np.maximum(counts, 1) / max(len(items), 1)), dtype=torch.float32)
        p = self.params
        uf = self.user_features if self.user_features is not None else np.zeros((X.shape[0], 0), np.float32)
        itf = self.item_features if self.item_features is not None else np.zeros((X.shape[1], 0), np.float32)

        def build() -> nn.Module:
            towers = TowerNet(uf, itf, int(p.get("dims", 64)), float(p.get("id_dropout", 0.3)))
            return PairLogits(towers, log_q, float(p.get("temperature", 0.1)))

        config = LoopConfig(max_epochs=int(p.get("epochs", 40)), patience=None,
                            batch_size=int(p.get("batch_size", 1024)), lr=float(p.get("lr", 3e-3)),
                            weight_decay=float(p.get("weight_decay", 1e-6)), seed=self.seed, schedule="cosine")
        result = fit(build, pairs, torch.zeros(len(pairs)), None, None, _in_batch_softmax, config, deadline=deadline)
        self.towers = result.net.towers.eval()
        self.epochs_run = result.epochs_run
        self.temperature = float(p.get("temperature", 0.1))
        with torch.no_grad():
            self.user_factors = self._user_side(self.towers.users(torch.arange(X.shape[0])))
            items = self.towers.items(torch.arange(X.shape[1])).numpy()
        self.item_factors = np.hstack([items, log_q.numpy().reshape(-1, 1)]).astype(np.float32)

    def _user_side(self, vectors: torch.Tensor) -> np.ndarray:
        """User vectors as factors: divided by the temperature, a 1 appended (it meets the items' log-frequency)."""
        v = vectors.numpy() / self.temperature
        return np.hstack([v, np.ones((len(v), 1))]).astype(np.float32)

    def cold_user_factors(self, features: np.ndarray) -> np.ndarray:
        """The user tower's factors of users known only by their features [n, columns] (no interactions)."""
        with torch.no_grad():
            cold = torch.full((len(features),), self.towers.cold_user, dtype=torch.long)
            return self._user_side(self.towers.users(cold, features=torch.as_tensor(features, dtype=torch.float32)))

    def scores(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors[users] @ self.item_factors.T

    def to_onnx(self, g, user_index: str) -> str:
        rows = g.op("Gather", [g.const(self.user_factors, "tower_users"), user_index], axis=0)
        return g.op("MatMul", [rows, g.const(self.item_factors.T.copy(), "tower_items")])

    def describe(self) -> dict:
        return {**super().describe(), "epochs_run": self.epochs_run}
