"""Keras, TensorFlow SavedModel, LightGBM and XGBoost models imported (live and from files), then served over REST
and KServe v2 with the answers of the framework that trained them (fp32, <= 1e-5)."""

from __future__ import annotations

import json

import keras
import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import load_breast_cancer, load_wine

import tandem
from helpers import free_port, post, start_server, stop_server
from tandem.registry import Registry

PARITY = 1e-5


def _keras_cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 1), name="pixels")
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="classes")(x))
    images = np.random.default_rng(0).random((60, 12, 12, 1), dtype=np.float32)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images, np.arange(60) % 3, epochs=1, verbose=0)
    return model


def _keras_regressor() -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((5,), name="features")
    x = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, name="value")(x))


@pytest.fixture(scope="module")
def data():
    cancer = load_breast_cancer(as_frame=True)
    x = cancer.data.iloc[:, :8].copy()
    x.columns = [c.replace(" ", "_") for c in x.columns]
    x.iloc[::13, 2] = np.nan
    wine = load_wine(as_frame=True)
    return {"x": x.iloc[:400], "y": cancer.target.iloc[:400], "held_out": x.iloc[400:],
            "held_y": cancer.target.iloc[400:], "wine_x": wine.data.iloc[:150], "wine_y": wine.target.iloc[:150],
            "wine_held": wine.data.iloc[150:]}


@pytest.fixture(scope="module")
def imported(home, data, tmp_path_factory, run_cli):
    work = tmp_path_factory.mktemp("frameworks")
    out = {"work": work}
    cnn = _keras_cnn()
    out["keras"] = cnn
    tandem.import_model(cnn, sample=np.random.default_rng(2).random((16, 12, 12, 1), dtype=np.float32),
                        name="keras-cnn", labels=["a", "b", "c"], home=home)
    regressor = _keras_regressor()
    regressor.export(str(work / "saved"), verbose=False)
    out["regressor"] = regressor
    np.save(work / "rows.npy", np.random.default_rng(3).random((20, 5), dtype=np.float32))
    done = run_cli(["import", work / "saved", "--name", "saved", "--sample", work / "rows.npy", "--json"],
                   home=home, cwd=work)
    assert done.returncode == 0, done.stderr
    out["saved_summary"] = json.loads(done.stdout)
    cnn.save(work / "cnn.keras")
    done = run_cli(["import", work / "cnn.keras", "--name", "keras-file", "--labels", "a,b,c", "--json"],
                   home=home, cwd=work)
    assert done.returncode == 0, done.stderr
    out["keras_file_summary"] = json.loads(done.stdout)

    booster = lgb.train({"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": 0},
                        lgb.Dataset(data["x"], data["y"]), num_boost_round=40)
    out["lightgbm"] = booster
    named = np.array(["benign", "malignant"])[data["held_y"].to_numpy()]
    data["held_out"].assign(target=named).to_csv(work / "held_out.csv", index=False)
    tandem.import_model(booster, sample=work / "held_out.csv", target="target", labels=["benign", "malignant"],
                        name="lightgbm", home=home)
    xgb_model = xgb.XGBClassifier(n_estimators=30, max_depth=3, random_state=0).fit(data["wine_x"], data["wine_y"])
    out["xgboost"] = xgb_model
    xgb_model.get_booster().save_model(str(work / "wine.json"))
    data["wine_held"].to_csv(work / "wine_held.csv", index=False)
    done = run_cli(["import", work / "wine.json", "--name", "xgboost", "--sample", work / "wine_held.csv",
                    "--labels", "0,1,2", "--json"], home=home, cwd=work)
    assert done.returncode == 0, done.stderr
    out["xgboost_summary"] = json.loads(done.stdout)
    return out


def test_keras_and_savedmodel_imports_keep_the_framework_answers(imported, home):
    model = tandem.load("keras-cnn", home=home)
    m = model.manifest
    assert m["imported"]["framework"] == "keras" and m["imported"]["meaning"] == "probabilities"
    assert m["parity"]["max_abs_diff"] <= PARITY
    assert m["schema"]["columns"][0]["name"] == "pixels" and m["schema"]["columns"][0]["shape"] == [12, 12, 1]
    x = np.random.default_rng(9).random((7, 12, 12, 1), dtype=np.float32)
    assert np.abs(model.predict_proba(x) - imported["keras"].predict(x, verbose=0)).max() <= PARITY
    assert imported["keras_file_summary"]["framework"] == "keras"
    assert imported["keras_file_summary"]["parity_max_abs_diff"] <= PARITY
    saved = imported["saved_summary"]
    assert saved["framework"] == "tensorflow" and saved["task"] == "regression" and saved["meaning"] == "values"
    assert saved["parity_max_abs_diff"] <= PARITY and saved["parity_on"] == "20 sample rows"
    rows = np.random.default_rng(4).random((6, 5), dtype=np.float32)
    got = tandem.load("saved", home=home).predict({"features": rows})
    assert np.abs(got - imported["regressor"].predict(rows, verbose=0).reshape(-1)).max() <= PARITY


def test_boosters_import_with_a_table_schema_and_their_own_answers(imported, data, home):
    model = tandem.load("lightgbm", home=home)
    assert model.labels == ["benign", "malignant"] and model.manifest["parity"]["max_abs_diff"] <= PARITY
    assert [c["name"] for c in model.manifest["schema"]["columns"]] == list(data["x"].columns)
    expected = imported["lightgbm"].predict(data["held_out"])
    assert np.abs(model.predict_proba(data["held_out"])[:, 1] - expected).max() <= PARITY
    assert model.manifest["metrics"]["validation"]["roc_auc"] > 0.9
    wine = tandem.load("xgboost", home=home)
    assert imported["xgboost_summary"]["parity_max_abs_diff"] <= PARITY
    assert np.abs(wine.predict_proba(data["wine_held"]) - imported["xgboost"].predict_proba(data["wine_held"])).max() \
        <= PARITY


def test_framework_imports_serve_over_rest_and_v2(imported, data, home):
    port = free_port()
    proc = start_server(home, port, "saved", "lightgbm", "xgboost", ref="keras-cnn")
    try:
        x = np.random.default_rng(12).random((2, 12, 12, 1), dtype=np.float32)
        expected = imported["keras"].predict(x, verbose=0)
        status, body = post(port, "/v1/models/keras-cnn/predict", {"inputs": {"pixels": x.tolist()}})
        assert status == 200 and np.abs(np.array(body["probabilities"]) - expected).max() <= PARITY
        status, body = post(port, "/v2/models/keras-cnn/infer", {"inputs": [
            {"name": "pixels", "shape": [2, 12, 12, 1], "datatype": "FP32", "data": x.reshape(-1).tolist()}]})
        assert status == 200, body
        probs = next(o for o in body["outputs"] if o["name"] == "probabilities")
        assert np.abs(np.array(probs["data"]).reshape(2, 3) - expected).max() <= PARITY

        rows = np.random.default_rng(5).random((3, 5), dtype=np.float32)
        status, body = post(port, "/v2/models/saved/infer", {"inputs": [
            {"name": "features", "shape": [3, 5], "datatype": "FP32", "data": rows.reshape(-1).tolist()}]})
        assert status == 200, body
        want = imported["regressor"].predict(rows, verbose=0).reshape(-1)
        assert np.abs(np.array(body["outputs"][0]["data"]) - want).max() <= PARITY
        status, body = post(port, "/v1/models/saved/predict", {"instances": [{"features": [1.0, 2.0]}]})
        assert status == 422 and "column 'features'" in body["error"] and "[5]" in body["error"]

        held = data["held_out"].head(4)
        instances = held.astype(object).where(held.notna(), None).to_dict(orient="records")
        status, body = post(port, "/v1/models/lightgbm/predict", {"instances": instances})
        assert status == 200 and body["labels"] == ["benign", "malignant"]
        assert np.abs(np.array(body["probabilities"])[:, 1] - imported["lightgbm"].predict(held)).max() <= PARITY
        wine = data["wine_held"].head(3)
        status, body = post(port, "/v2/models/xgboost/infer", {"inputs": [
            {"name": c, "shape": [3], "datatype": "FP32", "data": wine[c].tolist()} for c in wine.columns]})
        assert status == 200, body
        probs = next(o for o in body["outputs"] if o["name"] == "probabilities")
        assert np.abs(np.array(probs["data"]).reshape(3, 3) - imported["xgboost"].predict_proba(wine)).max() <= PARITY
        status, body = post(port, "/v1/models/xgboost/predict", {"instances": [{"alcohol": 13.0}]})
        assert status == 422 and "missing column" in body["error"]
    finally:
        stop_server(proc)


def test_keras_safe_mode_refuses_a_lambda_layer(home, tmp_path, run_cli):
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    done = run_cli(["import", tmp_path / "lambda.keras", "--name", "lambda"], home=home, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "safe mode" in done.stderr
    assert "lambda" not in [r.name for r in Registry(home).list()]

