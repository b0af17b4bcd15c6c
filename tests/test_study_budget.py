"""The study's budget covers everything after the fits (importance, profile, report), and permutation
importance is scored out of fold, never on rows the scoring model trained on (issue 15)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import tandem
from helpers import mixed_frame

# one LightGBM configuration that memorises its training rows: in-sample scores far above out-of-fold ones
OVERFIT = [{"name": "lgbm_overfit", "family": "lightgbm",
            "params": {"learning_rate": 0.1, "num_leaves": 64, "min_data_in_leaf": 2, "lambda_l2": 0.0,
                       "feature_fraction": 1.0, "n_estimators": 300}}]
FEATURES = {"age", "income", "city", "member", "signup"}  # mixed_frame's features (customer_id is an id)


@pytest.mark.parametrize("bagging, folds, rows", [("yes", 5, 600), ("no", 1, 120)])
def test_importance_is_scored_out_of_fold(tmp_path, bagging, folds, rows):
    frame = mixed_frame(600, seed=0)
    model = tandem.train(frame, "churn", time_limit=30, bagging=bagging, configs=OVERFIT, path=tmp_path / "m")
    m = model.manifest
    imp = m["importance"]
    assert imp["scored_on"].startswith("out-of-fold")
    assert imp["folds"] == folds and imp["rows"] == rows
    # every fold's ensemble scores its own validation rows: the baseline is the ensemble's out-of-fold score,
    # which the manifest's validation metrics computed from the same predictions (float64 there, float32 here)
    assert imp["baseline"] == pytest.approx(m["metrics"]["validation"]["roc_auc"], abs=1e-3)
    # the refit model on rows it trained on scores far higher: that is what importance used to be scored on
    in_sample = roc_auc_score(frame["churn"] == "yes", model.predict_proba(frame.drop(columns=["churn"]))[:, 1])
    assert in_sample > imp["baseline"] + 0.03, (in_sample, imp["baseline"])
    # a normal table gets full importance: every column, every repeat, nothing skipped
    assert {c["column"] for c in imp["columns"]} == FEATURES
    assert imp["repeats"] == 3 and imp["columns_total"] == len(FEATURES) and imp["skipped"] == 0
    assert "note" not in imp
    assert imp["columns"][0]["importance"] > 0.01
    report = (model.path / "report.html").read_text(encoding="utf-8")
    assert "out-of-fold" in report and "held-out rows" not in report


def _wide(rows: int, cols: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, cols))
    frame = pd.DataFrame(x, columns=[f"f{j}" for j in range(cols)])
    frame["target"] = np.where(x[:, :5].sum(axis=1) + rng.normal(0, 0.5, rows) > 0, "yes", "no")
    return frame


def test_a_wide_table_gets_importance_capped_to_the_time_left(tmp_path):
    # 1,500 columns x 3 shuffles, each a run of the graph on 120 rows x 1,500 numbers: tens of seconds, far
    # more than the share of a 12 s limit left after the fits on any machine, so importance is cut, and says so
    cols = 1500
    frame = _wide(600, cols)
    model = tandem.train(frame, "target", time_limit=12, families=["lightgbm"], bagging="no", path=tmp_path / "w")
    imp = model.manifest["importance"]
    assert imp["columns_total"] == cols
    assert 0 < len(imp["columns"]) < cols and imp["skipped"] == cols - len(imp["columns"])
    assert "time" in imp["note"] and f"{imp['skipped']:,}" in imp["note"]
    # the cheap ordering puts the columns the model reads first: the five that make the target get scored
    # (at least the first three even on a machine so slow that the fits spent the whole budget)
    signal = {f"f{j}" for j in range(5)}
    scored = [c["column"] for c in imp["columns"]]
    assert (signal <= set(scored)) if len(scored) >= 5 else (set(scored) <= signal), scored
    assert scored[0] in signal and imp["columns"][0]["importance"] > 0.01
    # the drift profile of a wide table keeps deciles, not 101 percentiles per column, and says so
    profile = json.loads((model.path / "profile.json").read_text())
    assert "percentiles" not in profile["columns"]["f0"] and "percentiles" in profile["note"]
    assert (model.path / "profile.json").stat().st_size < 600 * cols  # 3,200 bytes a column with percentiles
    assert any("percentiles" in n for n in model.manifest["notes"])
    shifted = frame.drop(columns=["target"])  # the training rows themselves: only f7 moves
    shifted["f7"] += 3.0
    drift = model.drift(shifted)
    assert drift["moved"] == ["f7"]


def _profile_one_by_one(values: np.ndarray) -> dict:
    """numeric_profile as it was written for one column at a time (np.quantile per column)."""
    ok = values[~np.isnan(values)]
    out = {"kind": "numeric", "missing_fraction": round(1 - len(ok) / max(len(values), 1), 6)}
    if not len(ok):
        return {**out, "mean": None, "std": None, "quantiles": None, "percentiles": None, "bins": None}
    edges = np.unique(np.quantile(ok, np.linspace(0, 1, 11)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, ok, side="right"), minlength=len(edges) + 1)
    return {**out, "mean": float(ok.mean()), "std": float(ok.std()),
            "quantiles": np.quantile(ok, np.linspace(0, 1, 11)).round(6).tolist(),
            "percentiles": np.quantile(ok, np.linspace(0, 1, 101)).tolist(),
            "bins": {"edges": edges.tolist(), "fractions": (counts / len(ok)).round(8).tolist()}}


def test_numeric_profiles_of_a_matrix_equal_each_columns_profile():
    from tandem.inference.drift import numeric_profile, numeric_profiles

    rng = np.random.default_rng(0)
    x = rng.normal(size=(257, 7))
    x[:, 1] = np.round(x[:, 1])  # ties
    x[rng.random(257) < 0.2, 2] = np.nan
    x[:, 3] = np.nan
    x[:, 4] = 7.0
    x[:, 5] = rng.lognormal(10, 2, 257)
    for j, prof in enumerate(numeric_profiles(x)):
        expected = _profile_one_by_one(x[:, j])
        assert prof == expected or _close(prof, expected), j
        assert numeric_profile(x[:, j]) == prof
    assert numeric_profiles(x, percentiles=False)[0] == {
        k: v for k, v in numeric_profiles(x)[0].items() if k != "percentiles"}


def _close(a: dict, b: dict) -> bool:
    """Equal but for the last bits of a mean or std (a column sum in another order)."""
    return a.keys() == b.keys() and all(
        a[k] == b[k] if k not in ("mean", "std") else a[k] == pytest.approx(b[k], rel=1e-12) for k in a)


def test_the_ensemble_keeps_within_max_bytes():
    from tandem.study.ensemble import greedy_ensemble

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    big = np.where(y[:, None] == np.arange(2), 0.9, 0.1)  # the most accurate, and the largest
    small = np.where(y[:, None] == np.arange(2), 0.7, 0.3) + rng.normal(0, 0.05, (400, 2))
    other = np.where(y[:, None] == np.arange(2), 0.6, 0.4) + rng.normal(0, 0.05, (400, 2))
    preds = {"big": big, "small": small, "other": other}
    sizes = {"big": 5_000_000, "small": 20_000, "other": 30_000}
    assert greedy_ensemble(preds, y, "log_loss", sizes=sizes) == {"big": 1.0}
    fitted = greedy_ensemble(preds, y, "log_loss", sizes=sizes, max_size=60_000)
    assert "big" not in fitted and sum(sizes[n] for n in fitted) <= 60_000 and abs(sum(fitted.values()) - 1) < 1e-9
    # when no model fits, the best leads alone rather than nothing
    assert greedy_ensemble(preds, y, "log_loss", sizes=sizes, max_size=100) == {"big": 1.0}


def test_train_max_bytes_bounds_the_members(tmp_path):
    frame = mixed_frame(600, task="binary", seed=3)
    free = tandem.train(frame, "churn", time_limit=8, families=["lightgbm", "linear"], bagging="no",
                        footprint=False, home=tmp_path, name="free")
    sizes = {r["model"]: r["onnx_bytes"] for r in free.leaderboard() if r.get("onnx_bytes")}
    limit = min(sizes.values()) + 1
    capped = tandem.train(frame, "churn", time_limit=8, families=["lightgbm", "linear"], bagging="no",
                          footprint=False, home=tmp_path, name="capped", max_bytes=limit)
    members = [m["model"] for m in capped.manifest["ensemble"]]
    capped_sizes = {r["model"]: r["onnx_bytes"] for r in capped.leaderboard() if r.get("onnx_bytes")}
    assert sum(capped_sizes[m] for m in members) <= limit
    with pytest.raises(tandem.TandemError, match="max_bytes must be a whole number of bytes, at least 1, got 0"):
        tandem.train(frame, "churn", time_limit=2, max_bytes=0, home=tmp_path, footprint=False)


def test_an_energy_budget_per_1k_predictions_becomes_a_latency_cap_at_the_measured_rate():
    from tandem.footprint import Meter, MeterSettings
    from tandem.study.ensemble import energy_latency_cap_us
    from tandem.study.result import StudyConfig

    meter = Meter(MeterSettings(cpu_power_w=20.0, ram_power_w=0.001)).start()
    sum(i * i for i in range(2_000_000))  # some CPU time for the rate
    rate = meter.joules_per_cpu_second()
    meter.stop()
    # a forced 20 W CPU on this process's CPU time (plus the meter's own start-up): about 20 J per CPU second
    assert 5.0 < rate < 40.0
    config = StudyConfig(target="y", energy_per_1k_budget_j=0.5)
    assert energy_latency_cap_us(config, meter) == pytest.approx(0.5 / 1000 / meter.joules_per_cpu_second() * 1e6,
                                                                 rel=0.05)
    assert energy_latency_cap_us(StudyConfig(target="y"), meter) == float("inf")
    assert energy_latency_cap_us(config, None) == float("inf")


def test_train_energy_per_1k_budget_keeps_the_ensemble_to_one_member(tmp_path):
    frame = mixed_frame(600, task="binary", seed=3)
    # a millionth of a joule per 1,000 predictions: no model fits, so the best one leads alone
    said: list[str] = []
    tight = tandem.train(frame, "churn", time_limit=8, families=["lightgbm", "linear"], bagging="no",
                         home=tmp_path, name="tight", energy_per_1k_budget_j=1e-6, progress=said.append)
    assert len(tight.manifest["ensemble"]) == 1
    assert "--energy-per-1k-budget 1e-06 J: one-row predictions of at most 0 µs at this machine's measured rate" in said
    with pytest.raises(tandem.TandemError, match="needs the footprint meter, which is off"):
        tandem.train(frame, "churn", time_limit=2, energy_per_1k_budget_j=1.0, home=tmp_path, footprint=False)
    with pytest.raises(tandem.TandemError, match="must be a positive number of joules, got -1"):
        tandem.train(frame, "churn", time_limit=2, energy_per_1k_budget_j=-1, home=tmp_path)
