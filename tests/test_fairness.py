"""Fairness by a sensitive column: Adult by sex, checked against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
from tests.test_quality import load_adult

import tandem
from tandem.study.fairness import group_metrics


@pytest.fixture(scope="module")
def adult_model(tmp_path_factory):
    train, test = load_adult()
    model = tandem.train(train, "income", time_limit=10, home=tmp_path_factory.mktemp("fair"), name="adult",
                         families=["lightgbm"], bagging="no", sensitive="sex")
    return model, test


def test_fairness_on_adult_by_sex_matches_a_direct_computation(adult_model):
    model, test = adult_model
    result = model.evaluate(test, sensitive="sex")
    fair = result["fairness"]
    assert fair["column"] == "sex" and fair["rows"] == len(test)
    predicted_rich = model.predict(test) == ">50K"
    rich = (test["income"] == ">50K").to_numpy()
    sex = test["sex"].to_numpy()
    expected = {}
    for group in ("Female", "Male"):
        m = sex == group
        expected[group] = {
            "rows": int(m.sum()),
            "accuracy": float(np.mean(predicted_rich[m] == rich[m])),
            "selection_rate": float(np.mean(predicted_rich[m])),
            "tpr": float(np.mean(predicted_rich[m & rich])),
            "fpr": float(np.mean(predicted_rich[m & ~rich])),
        }
    assert set(fair["groups"]) == {"Female", "Male"}
    for group, want in expected.items():
        got = fair["groups"][group]
        assert got["rows"] == want["rows"]
        for key in ("accuracy", "selection_rate", "tpr", "fpr"):
            assert got[key] == pytest.approx(want[key], abs=1e-12), (group, key)
    f, m = expected["Female"], expected["Male"]
    d = fair["disparity"]
    assert d["demographic_parity_ratio"] == pytest.approx(f["selection_rate"] / m["selection_rate"])
    assert d["demographic_parity_difference"] == pytest.approx(m["selection_rate"] - f["selection_rate"])
    assert d["equalized_odds_difference"] == pytest.approx(max(abs(m["tpr"] - f["tpr"]), abs(m["fpr"] - f["fpr"])))
    assert d["demographic_parity_ratio"] < 0.5  # the model picks women far less often: Adult's known bias


def test_training_with_a_sensitive_column_keeps_validation_fairness_in_the_manifest(adult_model):
    model, _ = adult_model
    fair = model.manifest["fairness"]
    assert fair["column"] == "sex" and "validation rows" in fair["on"]
    groups = fair["groups"]
    assert set(groups) == {"Female", "Male"}
    assert sum(g["rows"] for g in groups.values()) == fair["rows"]
    rates = [g["selection_rate"] for g in groups.values()]
    assert fair["disparity"]["demographic_parity_ratio"] == pytest.approx(min(rates) / max(rates))
    assert "fairness" in model.manifest and model.manifest["quality"]["counts"]["error"] == 0


def test_group_metrics_multiclass_and_regression_by_hand():
    y = np.array([0, 1, 2, 0, 1, 2])
    pred = np.array([0, 1, 1, 0, 2, 2])
    groups = np.array(["a", "a", "a", "b", "b", "b"])
    out = group_metrics("multiclass", y, pred, groups, n_classes=3)
    assert out["groups"]["a"]["accuracy"] == pytest.approx(2 / 3)
    assert out["disparity"]["accuracy_difference"] == pytest.approx(0.0)
    reg = group_metrics("regression", np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 3.0, 2.0]),
                        np.array(["x", "x", "y", "y"]))
    assert reg["groups"]["x"]["mae"] == pytest.approx(0.25) and reg["groups"]["y"]["mae"] == pytest.approx(1.0)
    assert reg["disparity"]["mae_difference"] == pytest.approx(0.75)


def test_an_unknown_sensitive_column_is_a_clear_error(adult_model, tmp_path):
    model, test = adult_model
    with pytest.raises(tandem.TandemError, match="'gender' not found in evaluation data; columns are age"):
        model.evaluate(test, sensitive="gender")
    with pytest.raises(tandem.TandemError, match="sensitive column 'Sexe' not found in training data"):
        tandem.train(test.head(300), "income", time_limit=3, home=tmp_path, sensitive="Sexe")
