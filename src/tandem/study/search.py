"""Optional Optuna (TPE) search: spend the spare budget refining the best family."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tandem.errors import ConfigError, need
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


def storage_url(url: str) -> str:
    """An RDB storage URL as SQLAlchemy takes it: ``postgresql://`` through psycopg (3) unless psycopg2 is there."""
    import importlib.util

    if url.startswith(("postgresql://", "postgres://")) and importlib.util.find_spec("psycopg2") is None:
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _shared_study(optuna: object, storage: str, study_name: str | None, sampler: object) -> object:
    """Create or join the study in an RDB storage. Two machines starting at once may both try to create the
    storage's tables or the study, and one of them then fails on the other's rows: it tries again, and joins."""
    import time

    def create() -> object:
        return optuna.create_study(direction="minimize", sampler=sampler, storage=storage_url(storage),
                                   study_name=study_name, load_if_exists=True)

    for attempt in range(3):
        try:
            return create()
        except Exception:  # SQLAlchemy's and the driver's own errors: perhaps the race above; the last try says
            time.sleep(0.5 * (attempt + 1))
    try:
        return create()
    except Exception as exc:  # a wrong URL, a server that cannot be reached
        reason = " ".join(str(exc).split())[:300]
        raise ConfigError(f"Optuna storage cannot be used ({type(exc).__name__}: {reason})") from None


def optuna_search(candidates: list, metric: str, y: np.ndarray, evaluate: Callable, search_left: Callable[[], float],
                  seed: int, say: Callable[[str], None], storage: str | None = None,
                  study_name: str | None = None) -> list:
    """Run TPE trials on the best family while the search budget lasts; return the evaluated candidates.

    With ``storage`` (an Optuna RDB URL) the trials go to study ``study_name`` there, created or joined: studies
    on several machines then share what each has tried, and each trial records its worker (pid@host)."""
    import os
    import socket

    optuna = need("optuna", "optuna", "--search optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scored = [c for c in candidates if c.val_score == c.val_score]
    if not scored:
        return []
    best = min(scored, key=lambda c: M.loss(metric, y[~np.isnan(c.oof[:, 0])], c.oof[~np.isnan(c.oof[:, 0])]))
    family = best.family
    per_trial = max(float(np.sum(c.fit_seconds)) for c in candidates if c.family == family)
    sampler = optuna.samplers.TPESampler(seed=seed)
    if storage is None:
        study = optuna.create_study(direction="minimize", sampler=sampler)
    else:
        study = _shared_study(optuna, storage, study_name, sampler)
    worker = f"{os.getpid()}@{socket.gethostname()}"
    found = []
    k = 0
    while search_left() > per_trial:
        k += 1
        trial = study.ask()
        trial.set_user_attr("worker", worker)
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
