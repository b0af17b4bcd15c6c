"""The search phase: portfolio configurations tried best-first on a seeded split (a holdout fold, or every
fold of a k-fold split when the budget allows it: bagging), then optionally Optuna trials, then the learning
curve of the best candidate, each within what the time plan leaves the search."""

from __future__ import annotations

import time

import numpy as np

from tandem.errors import ConfigError
from tandem.learners import learner_class
from tandem.study import metrics as M
from tandem.study.graph import build_graph, graph_shape, single_row_seconds
from tandem.study.plan import LEARNING_FRACTIONS, Plan, Recorder, worth_trying
from tandem.study.prepare import MIN_ROWS, Prepared
from tandem.study.result import Candidate, Progress, StudyConfig


class Search:
    """The candidates evaluated so far and the folds they are evaluated on (the holdout fold, or all when bagged)."""

    def __init__(self, prep: Prepared, plan: Plan, config: StudyConfig, recorder: Recorder, say: Progress):
        self.prep, self.plan, self.config, self.recorder, self.say = prep, plan, config, recorder, say
        self.candidates: list[Candidate] = []
        self.bagged = config.bagging == "yes"
        self.active_folds = list(range(len(prep.folds))) if self.bagged else [0]
        self.timing_rows = prep.enc.take(prep.folds[0][1][:64])
        self._shapes: dict[str, tuple] = {}  # candidate name -> (family, graph_shape) of its graph
        self._fastest_us: dict[tuple, float] = {}  # (family, graph_shape) -> its fastest one-row time so far
        self.cluster = None
        if config.cluster:  # the folds' fits as Ray tasks (tandem.study.cluster)
            from tandem.study.cluster import RayCluster

            say(f"joining the Ray cluster ({config.cluster})")
            self.cluster = RayCluster.connect(config.cluster)
            self.cluster.share(prep.views, sorted({learner_class(c["family"]).view for c in prep.portfolio}), prep.y)

    def left(self, *, learning_curve: bool = True) -> float:
        """Seconds the search may still spend (see Plan.search_left)."""
        return self.plan.search_left(self.candidates, self.prep.metric, len(self.active_folds),
                                     learning_curve=learning_curve)

    def rows(self) -> np.ndarray:
        """The validation rows of the active folds, sorted."""
        return np.sort(np.concatenate([self.prep.folds[f][1] for f in self.active_folds]))

    def usable(self) -> list[Candidate]:
        """The candidates evaluated on the final scheme."""
        return [c for c in self.candidates if len(c.fold_models) == len(self.active_folds)]

    def run_portfolio(self) -> None:
        """Try the portfolio best-first while the budget lasts; after the first, switch to bagging over every
        fold when ``config.bagging`` is "auto" and three times its fits fit in about half the search budget."""
        n_folds = len(self.prep.folds)
        for i, cfg in enumerate(self.prep.portfolio):
            if self.left() <= 0 and self.candidates:
                break
            if self.candidates and not worth_trying(cfg, self.candidates, self.left(), len(self.active_folds)):
                continue
            n_active = len(self.active_folds)
            self.say(f"training {cfg['name']} ({n_active} fold{'s' if n_active > 1 else ''})")
            cand = self.evaluate(cfg, cfg["name"])
            if cand is None:
                continue
            self.candidates.append(cand)
            if i == 0 and self.config.bagging == "auto" and n_folds > 1:
                per_fit = float(np.mean(cand.fit_seconds))
                if per_fit * n_folds * 3 <= 0.55 * max(self.left(), 0):
                    self.say(f"bagging over {n_folds} folds")
                    self.active_folds = list(range(n_folds))
                    full = self.evaluate(cfg, cfg["name"])
                    if full is not None and len(full.fold_models) == n_folds:
                        self.candidates[0], self.bagged = full, True
                    else:  # the budget ran out after all: stay with the holdout fold
                        self.active_folds = [0]

    def run_optuna(self) -> None:
        """Optuna trials on the best family with what is left of the search budget, when ``config.search`` asks."""
        if self.config.search == "optuna" and self.left() > 1:
            from tandem.study.search import optuna_search
            self.candidates += optuna_search(self.candidates, self.prep.metric, self.prep.y, self.evaluate,
                                             self.left, self.config.seed, self.say, self.config.optuna_storage,
                                             self.config.optuna_study)
        elif self.config.search not in (None, "optuna"):
            raise ConfigError(f"search '{self.config.search}' is not known: expected 'optuna' or none")

    def evaluate(self, cfg: dict, name: str) -> Candidate | None:
        """``cfg`` fit on each active fold and scored out of fold, or None when the budget ran out first."""
        start = self.recorder.mark()
        try:
            return self._evaluate(cfg, name)
        finally:
            self.recorder.span(name, cfg["family"], "trial", start)

    def _evaluate(self, cfg: dict, name: str) -> Candidate | None:
        p, config, active_folds = self.prep, self.config, self.active_folds
        y, metric = p.y, p.metric
        cls = learner_class(cfg["family"])
        cand = Candidate(name=name, family=cfg["family"], params=cfg["params"])
        X = p.views[cls.view]
        oof = np.full((p.n, 1 if p.task == "regression" else p.n_classes), np.nan)
        fits = self._fit_folds_on_cluster(cfg, cls, X) if self.cluster is not None else self._fit_folds(cfg, cls, X)
        if fits is None:
            return None
        for f, (learner, predictions) in zip(active_folds, fits, strict=True):
            cand.fit_seconds.append(learner.fit_seconds)
            cand.stopped_by_deadline |= learner.stopped_by_deadline
            cand.fold_models.append(learner)
            oof[p.folds[f][1]] = predictions
        cand.oof = oof
        rows = self.rows()
        cand.val_score = M.score(metric, y[rows], oof[rows])
        tr0 = p.folds[0][0]
        sample = tr0 if len(tr0) <= 5000 else np.random.default_rng(config.seed).choice(tr0, 5000, replace=False)
        cand.train_score = M.score(metric, y[sample], cand.fold_models[0].predict(X[sample]))
        cand.overfit = _overfits(metric, cand.train_score, cand.val_score)
        graph = build_graph(p.pre, p.task, p.labels, [(cand.fold_models[0], 1.0)], 0.5)
        seconds, _ = single_row_seconds(graph, self.timing_rows, rows=32)
        grows = self.plan.rows_scale if cls.view == "tree" else 1.0  # boosting rounds grow with the refit's rows
        cand.onnx_bytes = graph.ByteSize()
        self._shared_latency(cand, (cand.family, graph_shape(graph)), seconds * 1e6 * grows)
        return cand

    def _shared_latency(self, cand: Candidate, shape: tuple, measured_us: float) -> None:
        """Give ``cand`` and every candidate whose graph has its shape the fastest time measured for that shape.
        Graphs of one shape cost the same; a busy machine only adds to a measurement. Measured apart, two of them
        could land on either side of the latency budget, and the ensemble would lead with the worse one."""
        fastest = min(measured_us, self._fastest_us.get(shape, measured_us))
        self._fastest_us[shape], self._shapes[cand.name] = fastest, shape
        cand.latency_us = fastest
        for other in self.candidates:
            if self._shapes.get(other.name) == shape:
                other.latency_us = fastest

    def _fit_folds(self, cfg: dict, cls: type, X: np.ndarray) -> list[tuple[object, np.ndarray]] | None:
        """Each active fold's learner and its validation predictions, fitted here one after another; None when
        the budget ran out first."""
        p, folds = self.prep, self.active_folds
        out = []
        for k, f in enumerate(folds):
            tr, va = p.folds[f]
            left = self.left()
            if left <= 0 and self.candidates:
                return None
            learner = cls(cfg["params"], task=p.task, n_classes=p.n_classes, seed=self.config.seed + f,
                          categorical=p.cat_idx if cls.view == "tree" else None)
            budget = self.plan.first_fit_budget(left) if not self.candidates else left
            # each fold its share: a learner that plans its epochs to the deadline (the CNN, fine-tuning)
            # would otherwise spend everything on the first fold and leave the others none
            budget /= len(folds) - k
            learner.fit(X[tr], p.y[tr], X[va], p.y[va], deadline=time.monotonic() + budget)
            out.append((learner, learner.predict(X[va])))
        return out

    def _fit_folds_on_cluster(self, cfg: dict, cls: type, X: np.ndarray) -> list[tuple[object, np.ndarray]] | None:
        """The same, every fold at once as a Ray task with the whole budget left (tandem.study.cluster)."""
        p, folds = self.prep, self.active_folds
        left = self.left()
        if left <= 0 and self.candidates:
            return None
        budget = self.plan.first_fit_budget(left) if not self.candidates else left
        fits = self.cluster.fit_folds(cfg, cls.view, [p.folds[f] for f in folds], [self.config.seed + f for f in folds],
                                      p.task, p.n_classes, p.cat_idx if cls.view == "tree" else None, budget,
                                      int(X.nbytes * len(p.folds[folds[0]][0]) / max(p.n, 1)))
        return [(fit.learner, fit.predictions) for fit in fits]

    def learning_curve(self, usable: list[Candidate]) -> dict | None:
        """The best usable candidate's learning curve, when the search budget still has room for its fits."""
        if not usable:
            return None
        metric, n_active = self.prep.metric, len(self.active_folds)
        best = min(usable, key=lambda c: c.loss(metric, n_active))
        cost = 1.3 * float(best.fit_seconds[0]) * sum(LEARNING_FRACTIONS)
        if 0.5 * cost <= self.left(learning_curve=False):  # its reserve, give or take the last fit's overrun
            self.say(f"learning curve of {best.name}")
            start = self.recorder.mark()
            p = self.prep
            learning = _learning_curve(best, p.folds[0], p.views, p.y, p.task, p.n_classes, metric,
                                       self.config.seed, p.cat_idx)
            self.recorder.span(best.name, best.family, "learning curve", start)
            return learning
        self.prep.notes.append("no learning curve: the time limit left no room for the extra fits it needs")
        return None


def _learning_curve(best: Candidate, fold: tuple[np.ndarray, np.ndarray], views: dict, y: np.ndarray, task: str,
                    n_classes: int, metric: str, seed: int, cat_idx: list[int]) -> dict:
    """Validation score of ``best``'s configuration fit on growing shares of the first fold's training rows."""
    tr, va = fold
    cls = learner_class(best.family)
    X = views[cls.view]
    order = np.random.default_rng(seed).permutation(tr)
    sizes, scores = [], []
    for fraction in LEARNING_FRACTIONS:
        sub = order[: max(int(len(tr) * fraction), MIN_ROWS)]
        if task != "regression" and len(np.unique(y[sub])) < n_classes:
            continue  # too few rows to hold every class
        learner = cls(best.params, task=task, n_classes=n_classes, seed=seed,
                      categorical=cat_idx if cls.view == "tree" else None)
        # a share of the full fit's time, as the plan reserved: a learner that plans its epochs to a deadline
        # (the image networks) would otherwise train without end
        budget = 1.3 * float(best.fit_seconds[0]) * fraction + 1.0
        learner.fit(X[sub], y[sub], X[va], y[va], deadline=time.monotonic() + budget)
        sizes.append(int(len(sub)))
        scores.append(M.score(metric, y[va], learner.predict(X[va])))
    sizes.append(int(len(tr)))
    scores.append(M.score(metric, y[va], best.oof[va]))
    gain = [(b - a) * (-1 if metric in M.LOWER_IS_BETTER else 1) for a, b in zip(scores, scores[1:], strict=False)]
    total = sum(gain)
    if len(gain) == 0 or total <= 1e-4 * max(abs(scores[-1]), 1e-12):
        verdict = "flat: more rows of the same kind would hardly help; better features would"
    elif gain[-1] >= 0.25 * total and gain[-1] > 1e-3 * max(abs(scores[-1]), 1e-12):
        verdict = "still rising at the full training set: more data would likely help"
    else:
        verdict = "levelling off: more data would help a little"
    return {"model": best.name, "metric": metric, "rows": sizes, "scores": [round(float(v), 6) for v in scores],
            "verdict": verdict}


def _overfits(metric: str, train: float, val: float) -> bool:
    if train != train or val != val:
        return False
    if metric in M.LOWER_IS_BETTER:
        return val > 1.5 * train + 0.05 * abs(val)
    if metric == "r2":
        return train - val > 0.1
    return train - val > 0.05
