"""tandem optimize --methods members, and the explanations of variants whose members changed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tandem
from tandem.optimize import optimize
from tandem.optimize.members import NONE_HERE, subsets


def blended_frame(n: int, seed: int) -> pd.DataFrame:
    """A binary target with a linear part, an interaction and a wave: no single model family has it all, so
    the study blends several members."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    logit = 1.5 * x[:, 0] + x[:, 1] - x[:, 2] + 0.8 * x[:, 3] * x[:, 4] + np.sin(3 * x[:, 5])
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(6)])
    frame["y"] = np.where(logit + 0.5 * rng.logistic(size=n) > 0, "yes", "no")
    return frame


@pytest.fixture(scope="module")
def frames():
    frame = blended_frame(1600, seed=0)
    return frame.iloc[:1000], frame.iloc[1000:]


CONFIGS = [{"name": "linear", "family": "linear", "params": {"C": 1.0}},
           {"name": "trees", "family": "lightgbm", "params": {"num_leaves": 8, "learning_rate": 0.1,
                                                              "n_estimators": 200, "early_stopping_rounds": 20}}]


@pytest.fixture(scope="module")
def blend(home, frames):
    """A two-member bundle: the study's own two candidates kept at weights 0.6 and 0.4, exported and registered as
    the study does (on small data its greedy blend keeps to one member within its latency ratio)."""
    from tandem.bundle.frames import as_table
    from tandem.learners import check_configs
    from tandem.registry import Registry
    from tandem.study.export import export
    from tandem.study.runner import StudyConfig, run_study

    train, _ = frames
    config = StudyConfig(target="y", time_limit=20, configs=check_configs(CONFIGS), bagging="no")
    result = run_study(as_table(train, "training data"), config)
    assert len(result.candidates) == 2, [c.name for c in result.candidates]
    (a, b) = result.candidates
    result.members = [(a, a.fold_models[0], 0.6), (b, b.fold_models[0], 0.4)]
    record = Registry(home).add("blend", lambda folder, version: export(result, folder, name="blend",
                                                                        version=version))
    return tandem.load(f"blend:{record.version}", home=home)


def test_subsets_drop_the_costliest_member_per_unit_weight_first():
    manifest = {"ensemble": [{"model": "a", "weight": 0.5}, {"model": "b", "weight": 0.3},
                             {"model": "c", "weight": 0.2}],
                "leaderboard": [{"model": "b", "predict_1row_us": 10.0}, {"model": "a", "predict_1row_us": 40.0},
                                {"model": "c", "predict_1row_us": 30.0}]}
    # per unit weight: a 80, b 33, c 150 -> c goes first, then a; b (first on the leaderboard) is alone already
    assert subsets(manifest) == [("a", "b"), ("b",)]
    manifest["leaderboard"][0]["predict_1row_us"] = 1000.0  # b now costs the most: then c; b alone is added
    assert subsets(manifest) == [("a", "c"), ("a",), ("b",)]


def test_member_variants_drop_members_and_keep_their_explanations_exact(blend, frames, home):
    _, held_out = frames
    members = {m["model"] for m in blend.manifest["ensemble"]}
    result = optimize(f"blend:{blend.version}", held_out, max_loss=1.0, methods="members", goal="size", home=home)
    assert len(result.variants) == len(subsets(blend.manifest)) and all(v.kept for v in result.variants)
    rows = held_out.drop(columns=["y"]).head(200)
    for variant in result.variants:
        kept = set(variant.settings["keep"])
        assert kept < members and set(variant.settings["dropped"]) == members - kept
        child = tandem.load(f"blend:{variant.version}", home=home)  # verified like any bundle
        assert {m["model"] for m in child.manifest["ensemble"]} == kept
        assert sum(m["weight"] for m in child.manifest["ensemble"]) == pytest.approx(1.0, abs=1e-5)
        assert child.manifest["lineage"]["parent"] == f"blend:{blend.version}"
        for name in members - kept:  # the dropped members' native folders are not in the variant's bundle
            assert not (child.path / "native" / name).exists()
        assert child.manifest["parity"]["max_abs_diff"] < 1e-5 and variant.native_parity < 1e-5
        assert variant.bytes < result.parent_figures["bytes"]
        # its contributions add up to its own answers, not its parent's
        e = child.predict(rows, explain=True)
        np.testing.assert_allclose(e["base"] + e["contributions"].sum(axis=1), child.predict_proba(rows)[:, 1],
                                   atol=2e-6)


def test_trees_variants_explain_their_cut_trees(blend, frames, home):
    _, held_out = frames
    result = optimize(f"blend:{blend.version}", held_out, max_loss=1.0, methods="trees", goal="size", home=home)
    rows = held_out.drop(columns=["y"]).head(200)
    for variant in result.variants:
        child = tandem.load(f"blend:{variant.version}", home=home)
        e = child.predict(rows, explain=True)
        np.testing.assert_allclose(e["base"] + e["contributions"].sum(axis=1), child.predict_proba(rows)[:, 1],
                                   atol=2e-6)
        assert np.max(np.abs(child.predict_proba(rows) - blend.predict_proba(rows))) > 1e-4  # other trees


def test_members_does_not_apply_to_a_single_model(home, frames):
    train, held_out = frames
    single = tandem.train(train, "y", time_limit=3, families=["linear"], bagging="no", footprint=False, home=home,
                          name="single")
    result = optimize(f"single:{single.version}", held_out, methods="members", home=home)
    assert [(v.method, v.skipped) for v in result.variants] == [("members", NONE_HERE)]


def test_a_variant_is_served_like_any_bundle(blend, frames, home):
    from helpers import free_port, post, records, start_server, stop_server

    _, held_out = frames
    result = optimize(f"blend:{blend.version}", held_out, max_loss=1.0, methods="members", goal="size", home=home)
    assert result.best is not None  # one member alone is smaller than two
    variant = tandem.load("blend@optimized", home=home)
    assert variant.version == result.best.version
    rows = held_out.drop(columns=["y"]).head(5)
    port = free_port()
    proc = start_server(home, port, ref="blend@optimized")
    try:
        status, answer = post(port, "/v1/models/blend/predict", {"instances": records(rows), "explain": True})
        assert status == 200, answer
        np.testing.assert_allclose(np.array(answer["probabilities"])[:, 1], variant.predict_proba(rows)[:, 1],
                                   atol=1e-6)
        assert len(answer["explanations"]["contributions"]) == 5
    finally:
        stop_server(proc)
