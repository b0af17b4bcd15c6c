"""LightGBM: gradient-boosted trees on the tree view (native missing values and categories)."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np

from tandem.features.graph import GraphBuilder
from tandem.learners.base import Learner, deadline_passed, probabilities_from_logit, training_curve
from tandem.learners.lgbm_onnx import flatten_trees, tree_ensemble

_CONTROL = {"n_estimators", "early_stopping_rounds", "categorical"}
# binary objectives that keep the booster's sigmoid output: "cross_entropy" also learns from labels in [0, 1]
# (a teacher's probabilities, for a distilled student)
_BINARY_OBJECTIVES = {"cross_entropy": "cross_entropy", "xentropy": "cross_entropy"}


class LightGBMLearner(Learner):
    family = "lightgbm"
    view = "tree"

    def __init__(self, params: dict, **kw: object):
        super().__init__(params, **kw)
        self.booster: lgb.Booster | None = None
        self.best_iteration = 0
        self._weights: tuple[np.ndarray | None, np.ndarray | None] = (None, None)

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
            *, deadline: float | None = None, weight: np.ndarray | None = None,
            weight_val: np.ndarray | None = None) -> LightGBMLearner:
        """:meth:`Learner.fit`, with optional per-row weights of the training and validation rows (a distilled
        multiclass student learns a teacher's probabilities as one weighted row per class)."""
        self._weights = (weight, weight_val)
        try:
            return super().fit(X, y, X_val, y_val, deadline=deadline)
        finally:
            self._weights = (None, None)

    def _lgb_params(self) -> dict:
        p = {k: v for k, v in self.params.items() if k not in _CONTROL}
        if self.task == "binary":
            p.update(objective=_BINARY_OBJECTIVES.get(str(p.get("objective")), "binary"))
        elif self.task == "multiclass":
            p.update(objective="multiclass", num_class=self.n_classes)
        else:
            p.setdefault("objective", "regression")
        p.update(seed=self.seed, verbosity=-1, num_threads=p.get("num_threads", 0), deterministic=True,
                 force_row_wise=True)
        return p

    def _fit(self, X, y, X_val, y_val, deadline):
        params = self._lgb_params()
        n_rounds = int(self.params.get("n_estimators", 2000))
        patience = int(self.params.get("early_stopping_rounds", 50))
        # "categorical": false reads category codes as ordered numbers: other splits, a diverse member
        cat = (self.categorical or "auto") if self.params.get("categorical", True) else []
        weight, weight_val = self._weights
        train = lgb.Dataset(X, label=y, weight=weight, categorical_feature=cat, free_raw_data=False,
                            params={"max_bin": params.get("max_bin", 255)})
        history: dict = {}
        callbacks = [self._stopper(patience if X_val is not None else None, deadline)]
        valid_sets, names = [], None
        if X_val is not None:
            # the training rows as a "valid" set cost only the metric (their scores are kept anyway): the curve
            valid_sets = [train, lgb.Dataset(X_val, label=y_val, weight=weight_val, categorical_feature=cat,
                                             reference=train, params={"max_bin": params.get("max_bin", 255)})]
            names = ["train", "valid"]
            callbacks.append(lgb.record_evaluation(history))
        self.booster = lgb.train(params, train, num_boost_round=n_rounds, valid_sets=valid_sets,
                                 valid_names=names, callbacks=callbacks)
        best = self.booster.best_iteration
        self.best_iteration = int(best) if best and best > 0 else self.booster.current_iteration()
        if history.get("valid"):
            metric = next(iter(history["valid"]))
            self.curve = training_curve(metric, history["train"][metric], history["valid"][metric],
                                        best=self.best_iteration, unit="boosting round")

    def _stopper(self, patience: int | None, deadline: float | None):
        state = {"best": np.inf, "best_iter": 0, "best_list": []}

        def callback(env: lgb.callback.CallbackEnv) -> None:
            valid = [e for e in env.evaluation_result_list if e[0] == "valid"]
            if valid:
                _, _, score, higher_better = valid[0][:4]
                value = -score if higher_better else score
                if value < state["best"]:
                    state.update(best=value, best_iter=env.iteration, best_list=env.evaluation_result_list)
                elif patience is not None and env.iteration - state["best_iter"] >= patience:
                    raise lgb.callback.EarlyStopException(state["best_iter"], state["best_list"])
            if deadline_passed(deadline):
                self.stopped_by_deadline = True
                if valid:
                    raise lgb.callback.EarlyStopException(state["best_iter"], state["best_list"])
                raise lgb.callback.EarlyStopException(env.iteration, [])

        callback.order = 30
        return callback

    def predict(self, X: np.ndarray) -> np.ndarray:
        raw = self.booster.predict(X, num_iteration=self.best_iteration)
        if self.task == "binary":
            return np.column_stack([1.0 - raw, raw])
        if self.task == "multiclass":
            return np.asarray(raw)
        return np.asarray(raw).reshape(-1, 1)

    def refit_params(self, scale: float) -> dict:
        return {**self.params, "n_estimators": max(1, int(round(self.best_iteration * scale)))}

    def to_onnx(self, g: GraphBuilder, x: str) -> str:
        dump = self.booster.dump_model(num_iteration=self.best_iteration)
        n_targets = self.n_classes if self.task == "multiclass" else 1
        key = f"double:{x}"
        if key not in g.memo:
            g.memo[key] = g.op("Cast", [x], to=11)
        raw = tree_ensemble(g, g.memo[key], dump, n_targets)
        if self.task == "binary":
            return g.op("Cast", [probabilities_from_logit(g, raw, np.float64)], to=1)
        if self.task == "multiclass":
            return g.op("Cast", [g.op("Softmax", [raw], axis=1)], to=1)
        return g.op("Cast", [raw], to=1)

    def save(self, folder: Path) -> list[str]:
        name = "lightgbm.txt"
        self.booster.save_model(str(folder / name), num_iteration=self.best_iteration)
        return [name]

    def _load(self, folder: Path) -> None:
        self.booster = lgb.Booster(model_file=str(folder / "lightgbm.txt"))
        self.best_iteration = self.booster.current_iteration()

    def explainer(self, dense_means: np.ndarray | None = None) -> dict | None:
        if self.task == "multiclass":
            return None
        return {"kind": "trees", "view": "tree",
                **flatten_trees(self.booster.dump_model(num_iteration=self.best_iteration))}

    def describe(self) -> dict:
        return {"trees": self.best_iteration * (self.n_classes if self.task == "multiclass" else 1)}
