"""Ranking metrics for recommendations, per user then averaged over users who have held-out items.

- ``recall@k``: the share of a user's held-out items in their top k.
- ``ndcg@k``: discounted gain of the hits (1 / log2(rank + 1)), over the best possible for that user.
- ``map@k``: the mean over hits of precision at the hit's rank, over min(k, held-out items).
- ``coverage@k``: the share of the catalogue recommended to at least one user.
- ``popularity@k``: the mean share of training users who had each recommended item (lower: less obvious).
"""

from __future__ import annotations

import numpy as np

MASKED = np.float32(-np.inf)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's ``k`` highest scores, best first; among equal scores the lower index first, as
    ONNX's TopK orders them (so the graph and this scorer agree item for item)."""
    k = min(k, scores.shape[1])
    if k * 8 < scores.shape[1]:  # the k best and every score tied with the k-th, then an exact stable order
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1: k]
        candidates = scores >= kth
        if candidates.sum(axis=1).max() <= 4 * k:
            width = int(candidates.sum(axis=1).max())
            idx = np.argsort(~candidates, axis=1, kind="stable")[:, :width]  # candidate columns, in index order
            picked = np.take_along_axis(scores, idx, axis=1)
            order = np.argsort(-picked, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(idx, order, axis=1)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def mask_seen(scores: np.ndarray, seen, users: np.ndarray) -> np.ndarray:
    """``scores`` with what each of ``users`` had in ``seen`` (a CSR users x items matrix) set to -inf."""
    rows = seen[users]
    scores[np.repeat(np.arange(len(users)), np.diff(rows.indptr)), rows.indices] = MASKED
    return scores


def ranking_metrics(recommended: np.ndarray, relevant: list[np.ndarray], k: int, popularity: np.ndarray,
                    n_items: int) -> dict[str, float]:
    """Metrics of ``recommended`` [users, >=k] item indices against each user's ``relevant`` items."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recall, ndcg, ap = [], [], []
    for rec, rel in zip(recommended[:, :k], relevant, strict=True):
        if len(rel) == 0:
            continue
        hit = np.isin(rec, rel)
        n_hits = hit.cumsum()
        recall.append(n_hits[-1] / len(rel))
        ideal = discounts[: min(k, len(rel))].sum()
        ndcg.append(float((hit * discounts[: len(rec)]).sum() / ideal))
        precision = n_hits / np.arange(1, len(rec) + 1)
        ap.append(float((precision * hit).sum() / min(k, len(rel))))
    shown = recommended[:, :k]
    return {f"ndcg@{k}": float(np.mean(ndcg)) if ndcg else float("nan"),
            f"recall@{k}": float(np.mean(recall)) if recall else float("nan"),
            f"map@{k}": float(np.mean(ap)) if ap else float("nan"),
            f"coverage@{k}": float(len(np.unique(shown)) / max(n_items, 1)),
            f"popularity@{k}": float(popularity[shown].mean()) if shown.size else float("nan")}


def held_out_by_user(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The users with held-out interactions (sorted) and each one's held-out items."""
    order = np.argsort(users, kind="stable")
    u, i = users[order], items[order]
    distinct, starts = np.unique(u, return_index=True)
    return distinct, np.split(i, starts[1:])
