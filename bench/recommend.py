"""Benchmark: recommendation on MovieLens 100K, tandem at a time budget against the usual baselines.

Data: ``../shared/data/movielens_100k/u.data``; ratings >= 4 are the interactions (55,375 of 100,000).
Split: each user's latest 20% of interactions (by timestamp) are the test set; everything earlier trains.
No user's later interactions are trained on (tandem's ``split_interactions(kind="time")``, checked here).

Methods, each fitted on the same training interactions, scored on the same test users with what each user
had in training left out, by the same metrics (``tandem.study.ranking``):
- popularity: the items most users had (numpy counts);
- ``implicit``'s ``AlternatingLeastSquares`` with its defaults (100 factors, regularization 0.01, alpha 1,
  15 iterations; seed 0);
- item-kNN: ``implicit``'s ``CosineRecommender`` with its defaults (20 neighbours);
- tandem: ``tandem.train(task="recommend")`` at a budget (default 60 s), its own time split inside the
  training interactions to choose, then answered through the bundle's ONNX graph (``Predictor.recommend``).

Also: each method's fit seconds; tandem's top-10 for one known user in process (p50 / p99 over 2,000 calls,
one user a call) and 10,000 users in batch.

Run (from the repository root)::

    .venv/bin/python bench/recommend.py            # ~1.5 minutes
    .venv/bin/python bench/recommend.py --budget 20 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, HERE, git_head, machine, write_atomic  # noqa: E402

K = 10


def say(msg: str) -> None:
    print(f"[recommend] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--no-write", action="store_true", help="print the JSON line only")
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit's advice; its own threads do the work
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    import tandem
    from tandem.data.interactions import InteractionSpec, read_interactions, split_interactions
    from tandem.study.ranking import held_out_by_user, mask_seen, ranking_metrics, top_k

    raw = np.loadtxt(DATA / "movielens_100k" / "u.data", dtype=np.int64)
    table = pa.table({"user_id": raw[:, 0], "item_id": raw[:, 1], "rating": raw[:, 2], "ts": raw[:, 3]})
    data = read_interactions(table, InteractionSpec("user_id", "item_id", "rating", 4, "ts"))
    train_rows, test_rows = split_interactions(data, "time")
    last_train = np.full(data.n_users, -np.inf)
    np.maximum.at(last_train, data.user[train_rows], data.time[train_rows])
    first_test = np.full(data.n_users, np.inf)
    np.minimum.at(first_test, data.user[test_rows], data.time[test_rows])
    assert (last_train <= first_test).all(), "a user's later interaction is in training"
    X = data.matrix(train_rows)
    X.data[:] = 1.0
    users, relevant = held_out_by_user(data.user[test_rows], data.item[test_rows])
    popularity = np.asarray(X.sum(axis=0)).reshape(-1) / X.shape[0]
    say(f"{len(data)} interactions, {data.n_users} users, {data.n_items} items; {len(train_rows)} train, "
        f"{len(test_rows)} test ({len(users)} users)")

    def score(recommended: np.ndarray) -> dict:
        return {m: round(v, 4) for m, v in ranking_metrics(recommended, relevant, K, popularity,
                                                            data.n_items).items()}

    results: dict = {}
    t = time.perf_counter()
    counts = np.asarray(X.sum(axis=0)).reshape(-1).astype(np.float32)
    pop_fit = time.perf_counter() - t
    recommended = top_k(mask_seen(np.tile(counts, (len(users), 1)), X, users), K)
    results["popularity"] = {**score(recommended), "fit_seconds": round(pop_fit, 4)}

    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import CosineRecommender

    for name, model in (("implicit_als_defaults", AlternatingLeastSquares(random_state=0)),
                        ("item_knn_implicit_cosine", CosineRecommender())):
        say(f"fitting {name}")
        t = time.perf_counter()
        model.fit(X, show_progress=False)
        fit = time.perf_counter() - t
        ids, _ = model.recommend(users, X[users], N=K, filter_already_liked_items=True)
        results[name] = {**score(np.asarray(ids)), "fit_seconds": round(fit, 3)}

    folder = Path(tempfile.mkdtemp())
    rows = np.sort(train_rows)
    pcsv.write_csv(pa.table({"user_id": [data.user_ids[u] for u in data.user[rows]],
                             "item_id": [data.item_ids[i] for i in data.item[rows]],
                             "rating": np.full(len(rows), 5), "ts": data.time[rows].astype(np.int64)}),
                   folder / "train.csv")
    say(f"tandem at {args.budget:g} s")
    t = time.perf_counter()
    model = tandem.train(str(folder / "train.csv"), task="recommend", user="user_id", item="item_id",
                         time_column="ts", time_limit=args.budget, k=K, home=folder, name="movielens")
    fit = time.perf_counter() - t
    item_index = {item: i for i, item in enumerate(data.item_ids)}
    ids = [data.user_ids[u] for u in users]
    answers = model.recommend(ids, K)
    recommended = np.array([[item_index[i] for i in a["items"]] for a in answers])
    results["tandem"] = {**score(recommended), "fit_seconds": round(fit, 1),
                         "chose": model.manifest["ensemble"][0]["model"],
                         "validation_ndcg@10": round(model.manifest["metrics"]["validation"]["ndcg@10"], 4),
                         "tried": len(model.leaderboard()), "graph_bytes": (model.path / "model.onnx").stat().st_size}

    say("latency")
    p = model.predictor
    rng = np.random.default_rng(0)
    one = [ids[j] for j in rng.integers(0, len(ids), 2000)]
    for u in one[:100]:
        p.recommend(u, K)
    times = []
    for u in one:
        t = time.perf_counter()
        p.recommend(u, K)
        times.append(time.perf_counter() - t)
    many = [ids[j] for j in rng.integers(0, len(ids), 10_000)]
    batch = []
    for _ in range(3):
        t = time.perf_counter()
        p.recommend(many, K)
        batch.append(time.perf_counter() - t)
    best_baseline = max(results[m]["ndcg@10"] for m in ("popularity", "implicit_als_defaults",
                                                        "item_knn_implicit_cosine"))
    out = {
        "bench": "recommend", "git": git_head(), "machine": machine(), "k": K, "budget_s": args.budget,
        "data": {"interactions": len(data), "users": data.n_users, "items": data.n_items,
                 "train": len(train_rows), "test": len(test_rows), "test_users": len(users)},
        "methods": results,
        "tandem_ndcg_over_best_baseline": round(results["tandem"]["ndcg@10"] / best_baseline, 3),
        "top10_one_user_us": {"p50": round(float(np.median(times)) * 1e6, 1),
                              "p99": round(float(np.quantile(times, 0.99)) * 1e6, 1)},
        "top10_10k_users_seconds": round(float(np.median(batch)), 3),
        "checks": {"ndcg_ge_1.05x_best_baseline": results["tandem"]["ndcg@10"] >= 1.05 * best_baseline,
                   "top10_p50_le_100us": float(np.median(times)) * 1e6 <= 100},
    }
    line = json.dumps(out)
    print(line)
    if not args.no_write:
        write_atomic(HERE / "results" / "recommend.json", out)


if __name__ == "__main__":
    main()
