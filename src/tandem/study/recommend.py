"""The recommendation study: a portfolio of recommenders tried within the time limit, the best on validation
refitted on every interaction and written as a verified bundle whose one ONNX graph answers top-k.

Phases, as in the table study: **prepare** (index the interactions, the quality gate, the split: each user's
latest interactions held out), **search** (the portfolio in order, then the best family's parameters refined
around its best value while time is left), **refit** (the winner on all interactions), **export** (the graph:
user id -> index -> scores -> the user's seen items masked -> TopK; parity with the numpy scorer; latency).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx

from tandem.bundle.files import MANIFEST_FILE, MODEL_FILE, NATIVE_DIR, PROFILE_FILE, REPORT_FILE
from tandem.bundle.recommend import (
    EXCLUDE_INPUT,
    FROM_FEATURES_OUTPUT,
    IDS_FILE,
    ITEMS_OUTPUT,
    K_INPUT,
    KNOWN_OUTPUT,
    SCORES_OUTPUT,
    USER_INPUT,
)
from tandem.data.interactions import Interactions, SideFeatures, align_features, split_interactions
from tandem.errors import ConfigError, need
from tandem.features.graph import BOOL, FLOAT, INT64, STRING, GraphBuilder, tensor_info
from tandem.footprint.ledger import Span
from tandem.footprint.meter import Meter
from tandem.inference.drift import interaction_profile
from tandem.learners import torch_installed
from tandem.learners.recommenders import (
    RECOMMEND_FAMILIES,
    Popularity,
    Recommender,
    fits_in_memory,
    make_recommender,
)
from tandem.report.html import render_report
from tandem.study.ranking import held_out_by_user, mask_seen, ranking_metrics, top_k

Progress = Callable[[str], None]

PORTFOLIO_TWO_TOWER = {"dims": 64, "epochs": 40, "id_dropout": 0.3}  # also the cold-start judgement's towers
#: tried in order; the refinement then moves the best family's first parameter by these factors
PORTFOLIO: list[dict] = [
    {"name": "popularity", "family": "popularity", "params": {}},
    {"name": "ease", "family": "ease", "params": {"l2": 500.0}},
    {"name": "item_knn", "family": "item_knn", "params": {"neighbours": 100, "shrink": 10.0}},
    {"name": "als", "family": "als", "params": {"factors": 64, "regularization": 0.05, "alpha": 2.0,
                                                "iterations": 15}},
    {"name": "ease_l2_100", "family": "ease", "params": {"l2": 100.0}},
    {"name": "ease_l2_2000", "family": "ease", "params": {"l2": 2000.0}},
    {"name": "item_knn_300", "family": "item_knn", "params": {"neighbours": 300, "shrink": 10.0}},
    {"name": "als_128", "family": "als", "params": {"factors": 128, "regularization": 0.1, "alpha": 5.0,
                                                    "iterations": 15}},
    {"name": "two_tower", "family": "two_tower", "params": PORTFOLIO_TWO_TOWER},
]
TWO_TOWER_SHARE = 0.25  # of the time limit, at most, for one two-tower fit
COLD_SHARE = 0.1  # of the users with COLD_MIN interactions, held out whole to judge answers from features alone
COLD_MIN = 5
COLD_RESERVE = 0.3  # of the time limit, kept from the search for that judgement and the towers' refit
COLD_MARGIN = 1.02  # answers from features must beat the popular items' NDCG by this factor to be kept
BLEND_WEIGHTS = (0.5, 0.7, 0.3)  # of the better family's model
# a blend must beat the best single model on validation by this factor: on MovieLens 100K a blend 2.8% better on
# validation was 0.8% worse on the test users (its weight, chosen on validation, flatters it there)
BLEND_MARGIN = 1.04
REFINED = {"ease": ("l2", (0.5, 2.0), float), "item_knn": ("neighbours", (0.5, 2.0), int),
           "als": ("alpha", (0.5, 2.0), float)}
EXPORT_RESERVE = 0.08  # of the time limit, kept for the refit's share of export work and writing the bundle
LATENCY_CALLS = 300


@dataclass
class RecommendConfig:
    """What to recommend and how much time to spend."""

    time_limit: float = 60.0
    k: int = 10
    seed: int = 0
    split: str | None = None  # time (default with a time column), global_time or random
    families: list[str] | None = None
    user_features: SideFeatures | None = None  # the users table (--users), keyed by the user column
    item_features: SideFeatures | None = None  # the items table (--items), keyed by the item column


@dataclass
class Trial:
    name: str
    family: str
    params: dict
    metrics: dict
    fit_seconds: float
    score_seconds: float


@dataclass
class RecommendResult:
    data: Interactions
    config: RecommendConfig
    best: Trial
    model: Recommender
    popularity: Popularity
    trials: list[Trial]
    split: str
    validation: dict
    started: float
    notes: list[str] = field(default_factory=list)
    meter: Meter | None = None
    spans: list[Span] = field(default_factory=list)
    marks: dict = field(default_factory=dict)
    cold: ColdUsers | None = None  # users known by their features only, answered by the two towers


@dataclass
class ColdUsers:
    """Users in the users table without interactions: their ids, the two towers' vectors for them and for the
    items, and how answers from features alone scored on users held out whole (against popularity)."""

    ids: list[str]
    user_factors: np.ndarray
    item_factors: np.ndarray
    validation: dict


def run_recommend_study(data: Interactions, config: RecommendConfig, *, progress: Progress | None = None,
                        started: float | None = None, meter: Meter | None = None) -> RecommendResult:
    """Search the portfolio within ``config.time_limit`` (counted from ``started``) and refit the best."""
    say = progress or (lambda _m: None)
    started = time.monotonic() if started is None else started
    deadline = started + config.time_limit
    marks = {"prepare": meter.mark()} if meter else {}
    families = _families(config.families)
    notes: list[str] = []
    if "two_tower" in families and not torch_installed():
        if config.families and "two_tower" in config.families:
            need("torch", "train", "family two_tower")
        families = [f for f in families if f != "two_tower"]
        if config.user_features is not None or config.item_features is not None:
            notes.append("two_tower left out: PyTorch is not installed (pip install 'tandem[train]')")
    split = config.split or ("time" if data.has_time else "random")
    if not data.has_time and split != "random":
        raise ConfigError(f"split '{split}' needs a time column (--time-column)")
    if not data.has_time:
        notes.append("no time column: validation holds out a random 20% of each user's interactions")
    train_rows, held_rows = split_interactions(data, split, seed=config.seed)
    X = data.matrix(train_rows)
    users, relevant = held_out_by_user(data.user[held_rows], data.item[held_rows])
    popularity = Popularity().fit(X)
    shares = popularity.row()
    configs = []
    for c in PORTFOLIO:
        why = fits_in_memory(c["family"], data.n_users, data.n_items)
        if c["family"] not in families:
            continue
        if c["family"] == "two_tower" and config.user_features is None and config.item_features is None:
            if config.families:
                notes.append("two_tower left out: it needs a users or an items feature table (--users, --items)")
            continue
        if why:
            notes.append(f"{c['name']} left out: {why}")
            continue
        configs.append(c)
    if not configs:
        raise ConfigError("no recommendation family can run on this data: " + "; ".join(notes))
    if marks:
        marks["search"] = meter.mark()
    trials: list[Trial] = []
    spans: list[Span] = []
    cold_wanted = config.user_features is not None and "two_tower" in families
    reserve = (EXPORT_RESERVE + (COLD_RESERVE if cold_wanted else 0.0)) * config.time_limit
    tried: set[str] = set()

    def attempt(c: dict) -> None:
        key = json.dumps([c["family"], c["params"]], sort_keys=True)
        if key in tried:
            return
        tried.add(key)
        say(f"fitting {c['name']}")
        start_mark = meter.mark() if meter else None
        model = _with_features(make_recommender(c["family"], c["params"], config.seed), data, config)
        model.fit(X, _fit_deadline(c["family"], deadline - reserve, config.time_limit))
        t = time.monotonic()
        metrics = evaluate(model, X, users, relevant, config.k, shares)
        trials.append(Trial(c["name"], c["family"], dict(c["params"]), metrics, model.fit_seconds,
                            time.monotonic() - t))
        if meter:
            spans.append(Span(c["name"], c["family"], "trial", start_mark, meter.mark()))

    metric = f"ndcg@{config.k}"
    for c in configs:
        if trials and not _fits(trials, c["family"], deadline - reserve):
            notes.append(f"{c['name']} not tried: the time limit")
            continue
        attempt(c)
    # refine the best family's main parameter while it improves and time allows
    while trials:
        best = max(trials, key=lambda t: _score(t, metric))
        if best.family not in REFINED or not _fits(trials, best.family, deadline - reserve, refit=True):
            break
        param, factors, kind = REFINED[best.family]
        before = len(trials)
        for f in factors:
            value = kind(best.params[param] * f)
            if _fits(trials, best.family, deadline - reserve, refit=True):
                attempt({"name": f"{best.family}_{param}_{value:g}", "family": best.family,
                         "params": {**best.params, param: value}})
        if len(trials) == before or max(trials, key=lambda t: _score(t, metric)) is best:
            break
    _try_blends(trials, metric, attempt, deadline - reserve)
    best = _choose(trials, metric, notes)
    if marks:
        marks["refit"] = meter.mark()
    say(f"refitting {best.name} on every interaction")
    start_mark = meter.mark() if meter else None
    full = data.matrix()
    model = _with_features(make_recommender(best.family, best.params, config.seed), data, config).fit(full, None)
    if meter:
        spans.append(Span(best.name, best.family, "refit", start_mark, meter.mark()))
    cold = None
    if cold_wanted:
        cold = _cold_users(data, config, model if model.family == "two_tower" else None,
                           deadline - EXPORT_RESERVE * config.time_limit, notes, say)
    return RecommendResult(data, config, best, model, Popularity().fit(full), trials, split, best.metrics, started,
                           notes, meter, spans, marks, cold)


def _choose(trials: list[Trial], metric: str, notes: list[str]) -> Trial:
    """The best configuration on validation; a blend only when it beats the best single model by BLEND_MARGIN
    (it costs the members' bytes and latency together)."""
    single = max((t for t in trials if t.family != "blend"), key=lambda t: _score(t, metric))
    blends = [t for t in trials if t.family == "blend"]
    if not blends:
        return single
    blend = max(blends, key=lambda t: _score(t, metric))
    if _score(blend, metric) >= BLEND_MARGIN * _score(single, metric):
        return blend
    if _score(blend, metric) > _score(single, metric):
        notes.append(f"{blend.name} scored {blend.metrics[metric]:.4f} on validation against {single.name}'s "
                     f"{single.metrics[metric]:.4f}: less than {BLEND_MARGIN:g}x, so the single model is kept "
                     "(a blend costs both members' bytes and latency)")
    return single


def _try_blends(trials: list[Trial], metric: str, attempt: Callable[[dict], None], deadline: float) -> None:
    """Blend the best models of the two best families (weights 0.3/0.5/0.7) when time allows; the study keeps a
    blend only when it scores best on validation, like any configuration."""
    leaders: dict[str, Trial] = {}
    for t in sorted(trials, key=lambda t: -_score(t, metric)):
        if t.family not in ("popularity", "blend") and t.family not in leaders:
            leaders[t.family] = t
    if len(leaders) < 2:
        return
    a, b = list(leaders.values())[:2]
    cost = a.fit_seconds + b.fit_seconds + a.score_seconds + b.score_seconds
    for weight in BLEND_WEIGHTS:
        if time.monotonic() + 2.3 * cost >= deadline:  # the blend now, and its refit later
            return
        attempt({"name": f"blend_{a.name}_{b.name}_{weight:g}", "family": "blend", "params": {"members": [
            {"family": a.family, "params": a.params, "weight": weight},
            {"family": b.family, "params": b.params, "weight": round(1 - weight, 6)}]}})


def _with_features(model: Recommender, data: Interactions, config: RecommendConfig) -> Recommender:
    """The feature tables' rows in the order of the interactions' users and items (two_tower reads them)."""
    if model.family in ("two_tower", "blend"):
        model.user_features = align_features(config.user_features, data.user_ids)[0]
        model.item_features = align_features(config.item_features, data.item_ids)[0]
    return model


def _fit_deadline(family: str, deadline: float, time_limit: float) -> float:
    """A network trains until its deadline: the two towers get a share of the time limit, not all that is left."""
    if family in ("two_tower", "blend"):  # (a blend may hold the towers)
        return min(deadline, time.monotonic() + TWO_TOWER_SHARE * time_limit)
    return deadline


def _cold_users(data: Interactions, config: RecommendConfig, towers: Recommender | None, deadline: float,
                notes: list[str], say: Progress) -> ColdUsers | None:
    """Answers from features alone for the users table's users who had no interaction, kept only when, on users
    held out whole (a seeded share of those with enough interactions), they beat the popular items."""
    features = config.user_features
    known = set(data.user_keys)
    new_ids = [u for u in features.ids if u not in known]
    if not new_ids:
        return None
    rng = np.random.default_rng(config.seed)
    counts = np.bincount(data.user, minlength=data.n_users)
    uf, has = align_features(features, data.user_ids)
    eligible = np.flatnonzero((counts >= COLD_MIN) & has)
    if len(eligible) < 10:
        notes.append(f"{len(new_ids)} users of the users table had no interaction: too few users with features "
                     "and interactions to judge answers from features alone, so they get the popular items")
        return None
    say("judging answers from features alone on users held out whole")
    held = rng.choice(eligible, max(5, int(COLD_SHARE * len(eligible))), replace=False)
    rows = np.flatnonzero(~np.isin(data.user, held))
    X = data.matrix(rows)
    probe = _with_features(make_recommender("two_tower", PORTFOLIO_TWO_TOWER, config.seed), data, config)
    fits = 1 if towers is not None else 2  # the probe, then (unless the search chose the towers) their refit
    probe.fit(X, time.monotonic() + max(deadline - time.monotonic(), 1.0) / fits)
    scores = probe.cold_user_factors(uf[held]) @ probe.item_factors.T
    relevant = [data.item[data.user == u] for u in held]
    shares = Popularity().fit(X).row()
    k = config.k
    ours = ranking_metrics(top_k(scores, k), relevant, k, shares, data.n_items)
    popular = ranking_metrics(top_k(np.tile(shares, (len(held), 1)), k), relevant, k, shares, data.n_items)
    validation = {"users_held_out": int(len(held)), f"ndcg@{k}": ours[f"ndcg@{k}"],
                  f"popularity_ndcg@{k}": popular[f"ndcg@{k}"]}
    if ours[f"ndcg@{k}"] <= COLD_MARGIN * popular[f"ndcg@{k}"]:
        notes.append(f"{len(new_ids)} users of the users table had no interaction; on {len(held)} users held out "
                     f"whole, their features alone scored NDCG@{k} {ours[f'ndcg@{k}']:.4f} against the popular "
                     f"items' {popular[f'ndcg@{k}']:.4f} (less than {COLD_MARGIN:g}x), so they get the popular items")
        return None
    if towers is None:
        towers = _with_features(make_recommender("two_tower", PORTFOLIO_TWO_TOWER, config.seed), data, config)
        towers.fit(data.matrix(), max(deadline, time.monotonic() + 1.0))
    row_of = {u: i for i, u in enumerate(features.ids)}
    new_features = features.matrix[[row_of[u] for u in new_ids]]
    notes.append(f"{len(new_ids)} users of the users table had no interaction: they are answered from their "
                 f"features (on {len(held)} users held out whole: NDCG@{k} {ours[f'ndcg@{k}']:.4f} against "
                 f"{popular[f'ndcg@{k}']:.4f} for the popular items)")
    return ColdUsers(new_ids, towers.cold_user_factors(new_features).astype(np.float32),
                     towers.item_factors.astype(np.float32), validation)


def evaluate(model: Recommender, X, users: np.ndarray, relevant: list[np.ndarray], k: int,
             popularity: np.ndarray) -> dict[str, float]:
    """Ranking metrics of ``model`` (fitted on ``X``) for ``users`` against their held-out ``relevant`` items,
    what each user had in ``X`` masked."""
    recommended = []
    for a in range(0, len(users), 2048):
        chunk = users[a: a + 2048]
        recommended.append(top_k(mask_seen(model.scores(chunk), X, chunk), k))
    return ranking_metrics(np.concatenate(recommended), relevant, k, popularity, X.shape[1])


def _families(asked: list[str] | None) -> list[str]:
    if not asked:
        return list(RECOMMEND_FAMILIES)
    unknown = [f for f in asked if f not in RECOMMEND_FAMILIES]
    if unknown:
        raise ConfigError(f"unknown recommendation family {', '.join(repr(f) for f in unknown)}: expected "
                          f"{', '.join(RECOMMEND_FAMILIES)}")
    return list(asked)


def _score(t: Trial, metric: str) -> float:
    v = t.metrics.get(metric, float("nan"))
    return -math.inf if v != v else v


def _fits(trials: list[Trial], family: str, deadline: float, refit: bool = False) -> bool:
    """Whether one more fit of ``family`` (and, with ``refit``, the final refit too) fits before ``deadline``,
    from the slowest trial of that family so far (or of any family, for a family not tried yet)."""
    same = [t.fit_seconds + t.score_seconds for t in trials if t.family == family]
    cost = max(same or [t.fit_seconds + t.score_seconds for t in trials] or [0.0])
    return time.monotonic() + cost * (2.3 if refit else 1.15) < deadline


# -- the graph ---------------------------------------------------------------------------------------------

def recommend_graph(model: Recommender, popularity: Popularity, data: Interactions,
                    cold: ColdUsers | None = None) -> onnx.ModelProto:
    """user id -> index (unknown: -1) -> the model's scores (a user known by features only: the two towers';
    unknown: popularity) -> seen items masked (when ``exclude_seen``) -> TopK(k) -> item ids."""
    g = GraphBuilder()
    g.reserve(USER_INPUT, K_INPUT, EXCLUDE_INPUT)
    n_warm = data.n_users
    keys = data.user_keys + (cold.ids if cold else [])
    index = g.op("LabelEncoder", [USER_INPUT], domain="ai.onnx.ml", keys_strings=keys,
                 values_int64s=list(range(len(keys))), default_int64=-1)

    def i64(v: int, name: str) -> str:
        return g.const(np.array(v, np.int64), name)

    known = g.op("And", [g.op("GreaterOrEqual", [index, i64(0, "zero")]), g.op("Less", [index, i64(n_warm, "warm")])])
    safe = g.op("Min", [g.op("Max", [index, i64(0, "zero")]), i64(n_warm - 1, "last_warm")])
    axis1 = g.const(np.array([1], np.int64), "axis1")
    known_col = g.op("Unsqueeze", [known, axis1])
    otherwise = g.const(popularity.row().reshape(1, -1), "popular")
    from_features = g.op("GreaterOrEqual", [index, i64(n_warm, "warm")])
    if cold is not None:  # the two towers' vectors of users known by their features only
        cold_index = g.op("Min", [g.op("Max", [g.op("Sub", [index, i64(n_warm, "warm")]), i64(0, "zero")]),
                                  i64(len(cold.ids) - 1, "last_cold")])
        rows = g.op("Gather", [g.const(cold.user_factors, "cold_users"), cold_index], axis=0)
        cold_scores = g.op("MatMul", [rows, g.const(cold.item_factors.T.copy(), "cold_items")])
        otherwise = g.op("Where", [g.op("Unsqueeze", [from_features, axis1]), cold_scores, otherwise])
    scores = g.op("Where", [known_col, model.to_onnx(g, safe), otherwise])
    seen_rows = g.op("Gather", [g.const((model.X > 0).toarray(), "seen"), safe], axis=0)
    hide = g.op("And", [g.op("And", [seen_rows, known_col]), EXCLUDE_INPUT])
    scores = g.op("Where", [hide, g.const(np.array(-np.inf, np.float32), "masked"), scores])
    values, indices = g.op("TopK", [scores, K_INPUT], axis=1, largest=1, sorted=1, n_out=2)
    is_int = data.item_id_type == "int"
    item_table = np.array(data.item_ids, dtype=np.int64 if is_int else object)
    g.alias(g.op("Gather", [g.const(item_table, "item_ids"), indices], axis=0), ITEMS_OUTPUT)
    g.alias(values, SCORES_OUTPUT)
    g.alias(known, KNOWN_OUTPUT)
    g.alias(from_features, FROM_FEATURES_OUTPUT)
    inputs = [tensor_info(USER_INPUT, STRING, ["N"]), tensor_info(K_INPUT, INT64, [1]),
              tensor_info(EXCLUDE_INPUT, BOOL, [1])]
    outputs = [tensor_info(ITEMS_OUTPUT, INT64 if is_int else STRING, ["N", "k"]),
               tensor_info(SCORES_OUTPUT, FLOAT, ["N", "k"]), tensor_info(KNOWN_OUTPUT, BOOL, ["N"]),
               tensor_info(FROM_FEATURES_OUTPUT, BOOL, ["N"])]
    return g.model(inputs, outputs, doc=f"tandem recommender ({model.family})")


def _parity(sess, model: Recommender, data: Interactions, k: int, rows: int = 200) -> dict:
    """The graph's top-k against the numpy scorer's on up to ``rows`` users: the largest score difference and
    the share of users whose top-k agree (items swapped between equal scores aside)."""
    users = np.arange(min(rows, data.n_users))
    native = mask_seen(model.scores(users), model.X, users)
    order = top_k(native, k)
    out = sess.run(None, {USER_INPUT: np.array(data.user_keys, dtype=object)[users],
                          K_INPUT: np.array([k], np.int64), EXCLUDE_INPUT: np.array([True])})
    graph_scores = out[1]
    native_top = np.take_along_axis(native, order, axis=1)
    finite = np.isfinite(native_top)
    diff = float(np.max(np.abs(graph_scores[finite] - native_top[finite]))) if finite.any() else 0.0
    ids = np.array(data.item_ids, dtype=object)[order]
    same = [list(a) == list(b) or np.allclose(np.sort(s), np.sort(t), atol=1e-5)
            for a, b, s, t in zip(out[0].astype(object), ids, graph_scores, native_top, strict=True)]
    return {"max_abs_diff": diff, "users": int(len(users)), "top_k_agree": float(np.mean(same))}


def _latency(sess, data: Interactions, k: int, calls: int = LATENCY_CALLS) -> float:
    """p50 seconds of one user's top-k in the graph (one thread), over ``calls`` calls."""
    rng = np.random.default_rng(0)
    feeds = [{USER_INPUT: np.array([data.user_keys[u]], dtype=object), K_INPUT: np.array([k], np.int64),
              EXCLUDE_INPUT: np.array([True])} for u in rng.integers(0, data.n_users, calls)]
    run = getattr(sess, "_sess", sess).run
    outputs = [o.name for o in sess.get_outputs()]
    times = []
    for f in feeds:
        t = time.perf_counter()
        run(outputs, f, None)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def export_recommender(result: RecommendResult, target: Path, *, name: str, version: int | None,
                       say: Progress = lambda _m: None) -> dict:
    """Write the recommendation bundle ``target`` (atomically) and return its manifest."""
    import onnxruntime as ort

    from tandem.bundle.format import write_bundle
    from tandem.study.export import INFERENCE_WINDOW, library_versions, rounded_score, study_footprint

    say("exporting to ONNX")
    data, config, model = result.data, result.config, result.model
    graph = recommend_graph(model, result.popularity, data, result.cold)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    parity = _parity(sess, model, data, config.k)
    latency = _latency(sess, data, config.k)
    inference_marks = None
    if result.meter is not None:  # the energy of 1,000 one-user answers, as a table model's export meters it
        say(f"metering {INFERENCE_WINDOW} answers")
        start = result.meter.mark()
        _latency(sess, data, config.k, INFERENCE_WINDOW)
        inference_marks = (start, result.meter.mark())
    spec = data.spec
    metric = f"ndcg@{config.k}"
    leaderboard = [{"model": t.name, "family": t.family, **{f"val_{m}": rounded_score(v) for m, v in t.metrics.items()},
                    "fit_seconds": round(t.fit_seconds, 3), "params": t.params}
                   for t in sorted(result.trials, key=lambda t: -_score(t, metric))]
    quality = data.quality_report().to_dict()
    profile = interaction_profile(np.array(data.user_keys, dtype=object)[data.user],
                                  np.array(data.item_keys, dtype=object)[data.item], spec.user, spec.item)
    m = result.marks
    footprint = study_footprint(result.meter, result.started, [
        ("prepare", m.get("prepare")), ("search", m.get("search")), ("refit and export", m.get("refit"))],
        result.spans, inference_marks, "one user's top-k a call, on the training machine at export")
    manifest = {
        "name": name, "version": version, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": "recommend", "target": spec.item, "metric": metric, "threshold": 0.5, "source": "interactions",
        "schema": {"columns": [{"name": spec.user, "kind": "id", "note": f"{data.user_id_type} user ids"}],
                   "notes": []},
        "recommend": {"user": spec.user, "item": spec.item, "rating": spec.rating, "min_rating": spec.min_rating,
                      "time": spec.time, "user_id_type": data.user_id_type, "item_id_type": data.item_id_type,
                      "users": data.n_users, "items": data.n_items, "interactions": len(data), "k": config.k,
                      "split": result.split, "serves_from": model.serves_from,
                      "users_from_features": len(result.cold.ids) if result.cold else 0,
                      "cold_start_validation": result.cold.validation if result.cold else None},
        "outputs": [ITEMS_OUTPUT, SCORES_OUTPUT, KNOWN_OUTPUT, FROM_FEATURES_OUTPUT],
        "metrics": {"validation": result.validation,
                    "validation_scheme": {"time": "each user's latest 20% of interactions held out",
                                          "global_time": "every interaction after the 80% time cut held out",
                                          "random": "a random 20% of each user's interactions held out"
                                          }[result.split]},
        "ensemble": [{"model": result.best.name, "family": model.family, "weight": 1.0,
                      "native": f"{NATIVE_DIR}/{result.best.name}", **model.describe()}],
        "leaderboard": leaderboard,
        "parity": parity,
        "latency": {"predict_1row_us_p50": round(latency * 1e6, 1), "what": f"one user's top-{config.k}"},
        "quality": quality,
        "warnings": [f.message for f in data.findings if f.severity == "warning"],
        "notes": result.notes,
        "lineage": {"rows": data.rows_read, "parent": None, "seed": config.seed, "time_limit": config.time_limit,
                    "libraries": library_versions("scipy")},
        "footprint": footprint,
    }
    ids = {"user_ids": data.user_keys, "item_ids": data.item_keys,
           "users_from_features": result.cold.ids if result.cold else []}

    def write_files(tmp: Path) -> None:
        (tmp / MODEL_FILE).write_bytes(graph.SerializeToString())
        model.save(tmp / NATIVE_DIR / result.best.name)
        (tmp / IDS_FILE).write_text(json.dumps(ids))
        (tmp / PROFILE_FILE).write_text(json.dumps(profile))
        (tmp / REPORT_FILE).write_text(render_report(manifest), encoding="utf-8")

    write_bundle(target, write_files, manifest)
    return json.loads((target / MANIFEST_FILE).read_text())
