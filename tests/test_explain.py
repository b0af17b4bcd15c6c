"""Per-prediction contributions: exact for trees and linear models, in the API and in the server."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
from tests.helpers import free_port, mixed_frame, post, records, start_server

import tandem
from tandem.features.preprocess import Preprocessor
from tandem.inference.explain import ExplainError


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("explain")


@pytest.fixture(scope="module")
def trees(home):
    frame = mixed_frame(1500, seed=1)  # missing numbers and categories, a boolean, a date
    return frame, tandem.train(frame, "churn", time_limit=8, home=home, name="trees", families=["lightgbm"])


def test_tree_contributions_add_up_to_the_probability_and_to_lightgbm_s_own_raw_score(trees):
    frame, model = trees
    x = frame.drop(columns=["churn"]).head(300)
    e = model.predict(x, explain=True)
    assert e["output"] == "P(yes)" and e["columns"] == ["age", "income", "city", "member", "signup"]
    assert e["contributions"].shape == (300, 5)
    proba = model.predict_proba(x)[:, 1]
    np.testing.assert_allclose(e["base"] + e["contributions"].sum(axis=1), proba, atol=2e-6)
    assert list(e["predictions"]) == list(model.predict(x))
    # each member's logit attribution against LightGBM itself (the native file in the bundle)
    p = model.predictor
    explainer = p._explainer
    view = Preprocessor.from_dict(model.manifest["preprocessing"]).tree_view(p.encode(x)).astype(np.float64)
    for member, entry in zip(explainer.members, model.manifest["ensemble"], strict=True):
        booster = lgb.Booster(model_file=str(model.path / entry["native"] / "lightgbm.txt"))
        bias, contrib = member.attribute(view)
        np.testing.assert_allclose(bias + contrib.sum(axis=1), booster.predict(view, raw_score=True), atol=1e-9)
    # rows where income is missing: its contribution is the missing branch's, not a number's
    assert np.isfinite(e["contributions"]).all()


def test_linear_contributions_move_with_their_own_column_only(home):
    frame = mixed_frame(800, task="regression", seed=2)
    model = tandem.train(frame, "churn", time_limit=5, home=home, name="ridge", families=["linear"])
    row = frame.drop(columns=["churn"]).iloc[[3]].copy()
    older = row.copy()
    older["age"] = row["age"] + 10.0
    a, b = model.predict(row, explain=True), model.predict(older, explain=True)
    assert a["output"] == "prediction"
    delta = b["contributions"][0] - a["contributions"][0]
    assert delta[0] == pytest.approx(b["predictions"][0] - a["predictions"][0], rel=1e-5)
    np.testing.assert_allclose(delta[1:], 0.0, atol=1e-9)
    np.testing.assert_allclose(a["base"] + a["contributions"].sum(), a["predictions"][0], rtol=1e-5)


def test_models_without_exact_attribution_say_why(home):
    frame = mixed_frame(400, task="multiclass", seed=3)
    multi = tandem.train(frame, "churn", time_limit=4, home=home, name="multi", families=["linear"])
    assert multi.manifest["explain"]["available"] is False
    with pytest.raises(ExplainError, match="binary and regression models; this one is multiclass"):
        multi.predict(frame.drop(columns=["churn"]).head(2), explain=True)
    frame = mixed_frame(400, seed=3)
    mlp = tandem.train(frame, "churn", time_limit=6, home=home, name="mlp", families=["mlp"])
    with pytest.raises(ExplainError, match=r"member 'mlp\w*' \(mlp\) has no exact attribution"):
        mlp.predict(frame.drop(columns=["churn"]).head(2), explain=True)


def test_the_server_explains_on_request(home, trees):
    frame, model = trees
    port = free_port()
    proc = start_server(home, port, ref="trees")
    try:
        rows = records(frame.drop(columns=["churn"]).head(3))
        status, plain = post(port, "/v1/models/trees/predict", {"instances": rows})
        assert status == 200 and "explanations" not in plain
        status, answer = post(port, "/v1/models/trees/predict", {"instances": rows, "explain": True})
        assert status == 200, answer
        e = answer["explanations"]
        assert e["output"] == "P(yes)" and len(e["contributions"]) == 3
        for probs, contrib in zip(answer["probabilities"], e["contributions"], strict=True):
            assert set(contrib) == {"age", "income", "member", "signup", "city"}
            assert e["base"] + sum(contrib.values()) == pytest.approx(probs[1], abs=2e-6)
        assert answer["predictions"] == plain["predictions"]
        status, err = post(port, "/v1/models/trees/predict", {"instances": rows, "explain": "yes"})
        assert status == 400 and err["error"] == "field 'explain': expected true or false, got 'yes'"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    proc = start_server(home, port, ref="mlp")
    try:
        one = records(frame.drop(columns=["churn"]).head(1))
        status, err = post(port, "/v1/models/mlp/predict", {"instances": one, "explain": True})
        assert status == 422 and "has no exact attribution" in err["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
