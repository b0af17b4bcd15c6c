"""Optional Optuna (TPE) search: spend the spare budget refining the best family."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tandem.study import metrics as M


def _suggest(trial, family: str) -> dict:
    if family == "lightgbm":
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 8, 256, log=True),
            "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 5, 100, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
            "bagging_freq": 1,
            "lambda_l1": trial.suggest_float("lambda_l1", 1e-8, 10.0, log=True),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-8, 10.0, log=True),
            "n_estimators": 3000,
            "early_stopping_rounds": 50,
        }
    if family == "mlp":
        width = trial.suggest_categorical("width", [64, 128, 256, 512])
        depth = trial.suggest_int("depth", 1, 3)
        return {
            "hidden": [width // (2 ** i) for i in range(depth)],
            "dropout": trial.suggest_float("dropout", 0.0, 0.4),
            "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-3, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [128, 256, 512]),
            "epochs": 80,
            "patience": 6,
        }
    c = trial.suggest_float("C", 1e-3, 100.0, log=True)
    return {"C": c, "alpha": 1.0 / c}


def optuna_search(candidates: list, metric: str, y: np.ndarray, evaluate: Callable, search_left: Callable[[], float],
                  seed: int, say: Callable[[str], None]) -> list:
    """Run TPE trials on the best family while the search budget lasts; return the evaluated candidates."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scored = [c for c in candidates if c.val_score == c.val_score]
    if not scored:
        return []
    best = min(scored, key=lambda c: M.loss(metric, y[~np.isnan(c.oof[:, 0])], c.oof[~np.isnan(c.oof[:, 0])]))
    family = best.family
    per_trial = max(float(np.sum(c.fit_seconds)) for c in candidates if c.family == family)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    found = []
    k = 0
    while search_left() > per_trial:
        k += 1
        trial = study.ask()
        params = _suggest(trial, family)
        say(f"optuna trial {k} ({family})")
        cand = evaluate({"family": family, "params": params}, f"{family}_optuna_{k}")
        if cand is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        rows = ~np.isnan(cand.oof[:, 0])
        study.tell(trial, M.loss(metric, y[rows], cand.oof[rows]))
        per_trial = max(per_trial * 0.5, float(np.sum(cand.fit_seconds)))
        found.append(cand)
    return found
