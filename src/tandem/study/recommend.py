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

from tandem.bundle.files import MODEL_FILE, NATIVE_DIR, PROFILE_FILE, REPORT_FILE
from tandem.bundle.recommend import (
    EXCLUDE_INPUT,
    IDS_FILE,
    ITEMS_OUTPUT,
    K_INPUT,
    KNOWN_OUTPUT,
    SCORES_OUTPUT,
    USER_INPUT,
)
from tandem.data.interactions import Interactions, split_interactions
from tandem.errors import ConfigError
from tandem.features.graph import BOOL, FLOAT, INT64, STRING, GraphBuilder, tensor_info
from tandem.footprint.ledger import Span
from tandem.footprint.meter import Meter
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
]
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


def run_recommend_study(data: Interactions, config: RecommendConfig, *, progress: Progress | None = None,
                        started: float | None = None, meter: Meter | None = None) -> RecommendResult:
    """Search the portfolio within ``config.time_limit`` (counted from ``started``) and refit the best."""
    say = progress or (lambda _m: None)
    started = time.monotonic() if started is None else started
    deadline = started + config.time_limit
    marks = {"prepare": meter.mark()} if meter else {}
    families = _families(config.families)
    notes: list[str] = []
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
        if why:
            notes.append(f"{c['name']} left out: {why}")
            continue
        configs.append(c)
    if marks:
        marks["search"] = meter.mark()
    trials: list[Trial] = []
    spans: list[Span] = []
    reserve = EXPORT_RESERVE * config.time_limit
    tried: set[str] = set()

    def attempt(c: dict) -> None:
        key = json.dumps([c["family"], c["params"]], sort_keys=True)
        if key in tried:
            return
        tried.add(key)
        say(f"fitting {c['name']}")
        start_mark = meter.mark() if meter else None
        model = make_recommender(c["family"], c["params"], config.seed).fit(X, deadline - reserve)
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
    best = max(trials, key=lambda t: _score(t, metric))
    if marks:
        marks["refit"] = meter.mark()
    say(f"refitting {best.name} on every interaction")
    start_mark = meter.mark() if meter else None
    full = data.matrix()
    model = make_recommender(best.family, best.params, config.seed).fit(full, None)
    if meter:
        spans.append(Span(best.name, best.family, "refit", start_mark, meter.mark()))
    return RecommendResult(data, config, best, model, Popularity().fit(full), trials, split, best.metrics, started,
                           notes, meter, spans, marks)


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

def recommend_graph(model: Recommender, popularity: Popularity, data: Interactions) -> onnx.ModelProto:
    """user id -> index (unknown: -1) -> the model's scores (unknown: popularity) -> seen items masked (when
    ``exclude_seen``) -> TopK(k) -> item ids."""
    g = GraphBuilder()
    g.reserve(USER_INPUT, K_INPUT, EXCLUDE_INPUT)
    keys = [str(u) for u in data.user_ids]
    index = g.op("LabelEncoder", [USER_INPUT], domain="ai.onnx.ml", keys_strings=keys,
                 values_int64s=list(range(len(keys))), default_int64=-1)
    known = g.op("GreaterOrEqual", [index, g.const(np.array(0, np.int64), "zero")])
    safe = g.op("Max", [index, g.const(np.array(0, np.int64), "zero")])
    scores = model.to_onnx(g, safe)
    known_col = g.op("Unsqueeze", [known, g.const(np.array([1], np.int64), "axis1")])
    scores = g.op("Where", [known_col, scores, g.const(popularity.row().reshape(1, -1), "popular")])
    seen = (model.X > 0).toarray() if model.X is not None else None
    seen_rows = g.op("Gather", [g.const(seen, "seen"), safe], axis=0)
    hide = g.op("And", [g.op("And", [seen_rows, known_col]), EXCLUDE_INPUT])
    scores = g.op("Where", [hide, g.const(np.array(-np.inf, np.float32), "masked"), scores])
    values, indices = g.op("TopK", [scores, K_INPUT], axis=1, largest=1, sorted=1, n_out=2)
    is_int = data.item_id_type == "int"
    item_table = np.array(data.item_ids, dtype=np.int64 if is_int else object)
    g.alias(g.op("Gather", [g.const(item_table, "item_ids"), indices], axis=0), ITEMS_OUTPUT)
    g.alias(values, SCORES_OUTPUT)
    g.alias(known, KNOWN_OUTPUT)
    inputs = [tensor_info(USER_INPUT, STRING, ["N"]), tensor_info(K_INPUT, INT64, [1]),
              tensor_info(EXCLUDE_INPUT, BOOL, [1])]
    outputs = [tensor_info(ITEMS_OUTPUT, INT64 if is_int else STRING, ["N", "k"]),
               tensor_info(SCORES_OUTPUT, FLOAT, ["N", "k"]), tensor_info(KNOWN_OUTPUT, BOOL, ["N"])]
    return g.model(inputs, outputs, doc=f"tandem recommender ({model.family})")


def _parity(sess, model: Recommender, data: Interactions, k: int, rows: int = 200) -> dict:
    """The graph's top-k against the numpy scorer's on up to ``rows`` users: the largest score difference and
    the share of users whose top-k agree (items swapped between equal scores aside)."""
    users = np.arange(min(rows, data.n_users))
    native = mask_seen(model.scores(users), model.X, users)
    order = top_k(native, k)
    out = sess.run(None, {USER_INPUT: np.array([str(data.user_ids[u]) for u in users], dtype=object),
                          K_INPUT: np.array([k], np.int64), EXCLUDE_INPUT: np.array([True])})
    graph_scores = out[1]
    native_top = np.take_along_axis(native, order, axis=1)
    finite = np.isfinite(native_top)
    diff = float(np.max(np.abs(graph_scores[finite] - native_top[finite]))) if finite.any() else 0.0
    ids = np.array(data.item_ids, dtype=object)[order]
    same = [list(a) == list(b) or np.allclose(np.sort(s), np.sort(t), atol=1e-5)
            for a, b, s, t in zip(out[0].astype(object), ids, graph_scores, native_top, strict=True)]
    return {"max_abs_diff": diff, "users": int(len(users)), "top_k_agree": float(np.mean(same))}


def _latency(sess, data: Interactions, k: int) -> float:
    """p50 seconds of one user's top-k in the graph (one thread)."""
    rng = np.random.default_rng(0)
    feeds = [{USER_INPUT: np.array([str(data.user_ids[u])], dtype=object), K_INPUT: np.array([k], np.int64),
              EXCLUDE_INPUT: np.array([True])} for u in rng.integers(0, data.n_users, LATENCY_CALLS)]
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
    from tandem.study.export import library_versions

    say("exporting to ONNX")
    data, config, model = result.data, result.config, result.model
    graph = recommend_graph(model, result.popularity, data)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    parity = _parity(sess, model, data, config.k)
    latency = _latency(sess, data, config.k)
    spec = data.spec
    metric = f"ndcg@{config.k}"
    leaderboard = [{"model": t.name, "family": t.family, **{f"val_{m}": _r(v) for m, v in t.metrics.items()},
                    "fit_seconds": round(t.fit_seconds, 3), "params": t.params}
                   for t in sorted(result.trials, key=lambda t: -_score(t, metric))]
    quality = _quality(data)
    counts = np.bincount(data.user, minlength=data.n_users)
    profile = {"kind": "interactions", "users": data.n_users, "items": data.n_items, "interactions": len(data),
               "per_user_quantiles": [float(q) for q in np.quantile(counts, [0.1, 0.5, 0.9])],
               "time_span": [float(data.time.min()), float(data.time.max())] if data.has_time else None}
    footprint = _footprint(result)
    manifest = {
        "name": name, "version": version, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": "recommend", "target": spec.item, "metric": metric, "threshold": 0.5, "source": "interactions",
        "schema": {"columns": [{"name": spec.user, "kind": "id", "note": f"{data.user_id_type} user ids"}],
                   "notes": []},
        "recommend": {"user": spec.user, "item": spec.item, "rating": spec.rating, "min_rating": spec.min_rating,
                      "time": spec.time, "user_id_type": data.user_id_type, "item_id_type": data.item_id_type,
                      "users": data.n_users, "items": data.n_items, "interactions": len(data), "k": config.k,
                      "split": result.split, "serves_from": model.serves_from},
        "outputs": [ITEMS_OUTPUT, SCORES_OUTPUT, KNOWN_OUTPUT],
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
        "warnings": [f["message"] for f in data.findings if f["severity"] == "warning"],
        "notes": result.notes,
        "lineage": {"rows": data.rows_read, "parent": None, "seed": config.seed, "time_limit": config.time_limit,
                    "libraries": library_versions("scipy")},
        "footprint": footprint,
    }
    ids = {"user_ids": data.user_ids, "item_ids": data.item_ids, "user_id_type": data.user_id_type,
           "item_id_type": data.item_id_type}

    def write_files(tmp: Path) -> None:
        (tmp / MODEL_FILE).write_bytes(graph.SerializeToString())
        model.save(tmp / NATIVE_DIR / result.best.name)
        (tmp / IDS_FILE).write_text(json.dumps(ids))
        (tmp / PROFILE_FILE).write_text(json.dumps(profile))
        (tmp / REPORT_FILE).write_text(render_report(manifest), encoding="utf-8")

    write_bundle(target, write_files, manifest)
    from tandem.bundle.files import MANIFEST_FILE

    return json.loads((target / MANIFEST_FILE).read_text())


def _quality(data: Interactions) -> dict:
    counts = {s: sum(f["severity"] == s for f in data.findings) for s in ("error", "warning", "info")}
    return {"counts": counts, "rows": data.rows_read, "columns": 2 + bool(data.spec.rating) + bool(data.spec.time),
            "seconds": 0.0, "findings": data.findings}


def _footprint(result: RecommendResult) -> dict:
    import resource

    from tandem.errors import FootprintError
    from tandem.footprint.ledger import training_ledger

    usage = resource.getrusage(resource.RUSAGE_SELF)
    process = {"wall_seconds": round(time.monotonic() - result.started, 3),
               "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
               "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}
    if result.meter is None:
        return {"train": process}
    try:
        total = result.meter.stop()
    except FootprintError as exc:
        return {"train": {**process, "energy": None, "error": str(exc)}}
    m = result.marks
    cuts = [total.start, m.get("search"), m.get("refit"), total.end]
    phases = [(n, a, b) for n, a, b in zip(["prepare", "search", "refit and export"], cuts, cuts[1:], strict=False)
              if a is not None and b is not None]
    return {"train": {**training_ledger(total, phases, result.spans), "wall_seconds": process["wall_seconds"],
                      "peak_rss_mb": process["peak_rss_mb"],
                      "scope": "this process, from the call to train to the manifest (CodeCarbon process mode)"}}


def _r(v: float) -> float | None:
    return None if v != v else round(float(v), 6)
