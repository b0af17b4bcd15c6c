"""tandem drift: a shifted feature is flagged, a sample of the same distribution is not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.test_quality import clean

import tandem
from tandem.inference.drift import compare, ks_pvalue, numeric_profile, psi


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    home = tmp_path_factory.mktemp("drift_home")
    return tandem.train(clean(3000, seed=0), "y", time_limit=5, home=home, name="drifty", families=["linear"])


def by_feature(result: dict) -> dict:
    return {f["feature"]: f for f in result["features"]}


def test_a_sample_of_the_same_distribution_is_quiet(model):
    for seed in (5, 6, 7):
        result = model.drift(clean(2000, seed=seed).drop(columns=["y"]))
        assert result["moved"] == [] and result["watch"] == []
        assert all(f["psi"] < 0.05 for f in result["features"])
        assert result["rows"] == 2000 and result["training_rows"] == 3000


def test_a_shifted_feature_is_flagged_and_the_others_are_not(model):
    new = clean(2000, seed=5).drop(columns=["y"])
    new["x1"] += 0.8
    result = model.drift(new)
    assert result["moved"] == ["x1"]
    x1 = by_feature(result)["x1"]
    assert x1["psi"] > 0.25 and x1["ks"] > 0.25 and x1["ks_pvalue"] < 1e-10
    assert x1["mean_new"] - x1["mean_train"] == pytest.approx(0.8, abs=0.1)
    assert by_feature(result)["x2"]["verdict"] == "stable"


def test_new_categories_and_missing_values_are_flagged(model):
    new = clean(2000, seed=5).drop(columns=["y"])
    new.loc[:299, "color"] = "purple"
    new.loc[:399, "x2"] = np.nan
    f = by_feature(model.drift(new))
    assert f["color"]["verdict"] == "moved"
    assert f["color"]["new_categories"] == {"share": 0.15, "values": ["purple"]}
    assert f["x2"]["verdict"] == "moved" and f["x2"]["missing_new"] == pytest.approx(0.2)
    assert any("missing 0.0% -> 20.0%" in w for w in f["x2"]["why"])


def test_psi_and_ks_arithmetic():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * np.log(1.8) - 0.4 * np.log(0.2))
    assert ks_pvalue(0.0, 100, 100) == 1.0
    assert ks_pvalue(0.05, 10_000, 10_000) < 1e-9 < ks_pvalue(0.01, 10_000, 10_000)
    prof = numeric_profile(np.arange(1000, dtype=np.float32))
    assert prof["bins"]["fractions"] == [0.1] * 10 and len(prof["percentiles"]) == 101


def test_a_profile_from_before_percentiles_still_works():
    x = np.random.default_rng(0).normal(size=5000)
    full = numeric_profile(x)
    old = {k: v for k, v in full.items() if k not in ("percentiles", "bins")}

    class Enc:
        num = np.random.default_rng(1).normal(1.0, 1.0, size=(3000, 1))
        cat = None
        n_rows = 3000

    for prof in (full, old):
        result = compare({"rows": 5000, "columns": {"x": prof}}, Enc, ["x"], [], {})
        assert result["moved"] == ["x"] and result["features"][0]["psi"] > 0.25


def test_drift_cli(tmp_path, run_cli, model):
    same, shifted = tmp_path / "same.csv", tmp_path / "shifted.csv"
    new = clean(1500, seed=9).drop(columns=["y"])
    new.to_csv(same, index=False)
    new.assign(x2=new["x2"] * 3).to_csv(shifted, index=False)
    home = model.path.parents[2]
    proc = run_cli(["drift", "drifty", shifted, "--json"], home=home, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["moved"] == ["x2"]
    proc = run_cli(["drift", "drifty", shifted, "--strict"], home=home, cwd=tmp_path)
    assert proc.returncode == 1 and "moved: x2" in proc.stdout
    proc = run_cli(["drift", "drifty", same, "--strict"], home=home, cwd=tmp_path)
    assert proc.returncode == 0 and "moved: none" in proc.stdout
    new.drop(columns=["color"]).to_csv(tmp_path / "short.csv", index=False)
    proc = run_cli(["drift", "drifty", tmp_path / "short.csv"], home=home, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "missing column(s) 'color'" in proc.stderr


def test_adult_s_test_file_has_not_moved_but_longer_hours_have(tmp_path):
    from tests.test_quality import load_adult

    train, test = load_adult()
    model = tandem.train(train, "income", time_limit=5, home=tmp_path, families=["linear"])
    new = test.drop(columns=["income"])
    result = model.drift(new)  # the official test file: the same population, counts and point masses included
    assert result["moved"] == [] and result["watch"] == []
    hours = by_feature(result)["hours-per-week"]
    assert hours["ks"] < 0.05  # 47% of people work exactly 40 h: the jump is compared as a jump
    assert model.drift(new.assign(**{"hours-per-week": new["hours-per-week"] + 5}))["moved"] == ["hours-per-week"]
