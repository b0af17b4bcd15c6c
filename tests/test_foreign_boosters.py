"""LightGBM and XGBoost boosters as one ONNX graph: ONNX Runtime against the booster's own predict, the graph's
contract (one ``input``, one ``probabilities`` or ``values`` output), the save -> read round trip, and the one-line
errors for what is not supported."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import xgboost as xgb
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from tandem.errors import ConfigError, DataError
from tandem.foreign.boosters import (
    booster_of,
    lightgbm_converted,
    read_lightgbm,
    read_xgboost,
    xgboost_converted,
)
from tandem.foreign.source import OPSET, Converted

pytestmark = pytest.mark.filterwarnings("ignore:X does not have valid feature names")

TOL = 1e-5


def with_nan(X: np.ndarray, seed: int = 0, frac: float = 0.1) -> np.ndarray:
    """float32 rows with about ``frac`` of the cells missing, to exercise each split's missing branch."""
    X = np.asarray(X, dtype=np.float32).copy()
    X[np.random.default_rng(seed).random(X.shape) < frac] = np.nan
    return X


@pytest.fixture(scope="module")
def binary() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    return with_nan(X), y


@pytest.fixture(scope="module")
def multiclass() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_wine(return_X_y=True)
    return with_nan(X, seed=1), y


@pytest.fixture(scope="module")
def regression() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_diabetes(return_X_y=True)
    return with_nan(X, seed=2), y


def run_graph(c: Converted, X: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(c.graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([c.output], {"input": X})[0]


def assert_close(got: np.ndarray, want: np.ndarray, values: bool) -> None:
    """Probabilities within TOL; values within TOL of their magnitude: the graph answers in float32, whose
    rounding alone is up to 1.5e-5 at 256 (and XGBoost sums its trees in float32 too)."""
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    bound = TOL * np.maximum(1.0, np.abs(want)) if values else TOL
    assert np.all(np.abs(got.astype(np.float64) - want) <= bound), np.abs(got - want).max()


def check(c: Converted, X: np.ndarray, own: np.ndarray, *, framework: str, n_classes: int | None) -> np.ndarray:
    """The graph's contract and its parity against ``reference`` and the library's own predict (``own``)."""
    onnx.checker.check_model(c.graph, full_check=True)
    graph = c.graph.graph
    assert [i.name for i in graph.input] == ["input"] and len(graph.output) == 1
    dims = graph.input[0].type.tensor_type.shape.dim
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in dims] == ["N", X.shape[1]]
    width = n_classes or 1
    name = "values" if n_classes is None else "probabilities"
    out = graph.output[0]
    assert out.name == name == c.output == c.meaning
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", width]
    assert {o.domain or "": o.version for o in c.graph.opset_import} == {"": OPSET, "ai.onnx.ml": 5}
    assert c.framework == framework
    got = run_graph(c, X)
    assert got.dtype == np.float32 and got.shape == (len(X), width)
    assert np.isnan(X).any()
    values = n_classes is None
    assert_close(got, c.reference({"input": X}), values)
    own = np.asarray(own, dtype=np.float64)
    if n_classes == 2 and own.ndim == 1:
        own = np.column_stack([1 - own, own])
    assert_close(got, own.reshape(len(X), width), values)
    if not values:
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    return got


# LightGBM


LGB = {"verbose": -1, "num_leaves": 15, "min_data_in_leaf": 5}


@pytest.mark.parametrize("objective", ["binary", "cross_entropy"])
def test_lightgbm_binary_booster(binary, objective, tmp_path):
    X, y = binary
    booster = lgb.train({**LGB, "objective": objective}, lgb.Dataset(X, y), 30)
    c = lightgbm_converted(booster)
    got = check(c, X, booster.predict(X), framework="lightgbm", n_classes=2)
    assert c.labels is None and c.columns is None
    path = tmp_path / "model.txt"
    booster.save_model(path)
    again = lightgbm_converted(read_lightgbm(path))
    assert_close(run_graph(again, X), got, values=False)


def test_lightgbm_multiclass_with_feature_names(multiclass):
    X, y = multiclass
    names = [f"f{i}" for i in range(X.shape[1])]
    booster = lgb.train({**LGB, "objective": "multiclass", "num_class": 3},
                        lgb.Dataset(X, y, feature_name=names), 20)
    c = lightgbm_converted(booster)
    check(c, X, booster.predict(X), framework="lightgbm", n_classes=3)
    assert c.columns == names


@pytest.mark.parametrize("params", [
    {"objective": "regression"},
    {"objective": "huber"},
    {"objective": "quantile", "alpha": 0.3},
    {"objective": "regression", "reg_sqrt": True},
    {"objective": "gamma"},
    {"objective": "regression", "boosting": "rf", "bagging_fraction": 0.5, "bagging_freq": 1},
    {"objective": "regression", "boosting": "dart"},
], ids=lambda p: "-".join(str(v) for v in p.values()))
def test_lightgbm_regression_booster(regression, params):
    X, y = regression
    booster = lgb.train({**LGB, **params}, lgb.Dataset(X, y), 25)
    c = lightgbm_converted(booster)
    check(c, X, booster.predict(X), framework="lightgbm", n_classes=None)
    assert c.labels is None


def test_lightgbm_categorical_feature(tmp_path):
    rng = np.random.default_rng(3)
    n = 800
    X = np.column_stack([rng.integers(0, 8, n), rng.normal(size=n), rng.normal(size=n)]).astype(np.float32)
    y = ((X[:, 0] % 3 == 0) ^ (X[:, 1] > 0)).astype(int)
    booster = lgb.train({**LGB, "objective": "binary", "min_data_per_group": 5, "cat_smooth": 1},
                        lgb.Dataset(with_nan(X, seed=4), y, categorical_feature=[0]), 30)
    # unseen (9, 1e9), negative, non-integer (LightGBM reads int(value)) and missing codes, next to seen ones
    codes = np.array([0, 1, 2, 3, 9, 1e9, -1, -0.5, 2.5, 3.99, np.nan], dtype=np.float32)
    T = np.tile(X[:40], (len(codes), 1))
    T[:, 0] = np.repeat(codes, 40)
    T = with_nan(T, seed=5, frac=0.05)
    T[:3, 0] = np.nan
    c = lightgbm_converted(booster)
    assert any(n.op_type == "TreeEnsemble" and any(a.name == "membership_values" for a in n.attribute)
               for n in c.graph.graph.node)
    got = check(c, T, booster.predict(T), framework="lightgbm", n_classes=2)
    path = tmp_path / "categorical.txt"
    booster.save_model(path)
    assert_close(run_graph(lightgbm_converted(read_lightgbm(path)), T), got, values=False)


def test_lightgbm_sklearn_wrappers(binary, regression):
    X, y = binary
    labels = np.where(y == 1, "benign", "malignant")
    clf = lgb.LGBMClassifier(n_estimators=20, num_leaves=15, verbose=-1).fit(X, labels)
    booster, classes = booster_of(clf)
    assert booster is clf.booster_ and classes == ["benign", "malignant"]
    c = lightgbm_converted(clf)
    assert c.labels == ["benign", "malignant"]
    check(c, X, clf.predict_proba(X), framework="lightgbm", n_classes=2)

    Xr, yr = regression
    reg = lgb.LGBMRegressor(n_estimators=20, num_leaves=15, verbose=-1).fit(Xr, yr)
    assert booster_of(reg) == (reg.booster_, None)
    c = lightgbm_converted(reg)
    assert c.labels is None
    check(c, Xr, reg.predict(Xr), framework="lightgbm", n_classes=None)


@pytest.mark.filterwarnings("ignore:The argument 'eval_set' is deprecated")
def test_lightgbm_early_stopping_keeps_the_best_iteration(multiclass):
    X, y = multiclass
    clf = lgb.LGBMClassifier(n_estimators=200, learning_rate=0.3, num_leaves=7, verbose=-1)
    clf.fit(X[::2], y[::2], eval_set=[(X[1::2], y[1::2])], callbacks=[lgb.early_stopping(3, verbose=False)])
    assert 0 < clf.best_iteration_ < 200
    c = lightgbm_converted(clf)
    assert c.labels == ["0", "1", "2"]
    check(c, X, clf.predict_proba(X), framework="lightgbm", n_classes=3)


# XGBoost


XGB = {"max_depth": 4, "eta": 0.3}


def xgb_train(X: np.ndarray, y: np.ndarray, params: dict, rounds: int = 20, **dmatrix: object) -> xgb.Booster:
    return xgb.train({**XGB, **params}, xgb.DMatrix(X, label=y, **dmatrix), rounds)


@pytest.mark.parametrize("objective", ["binary:logistic", "reg:logistic", "binary:logitraw"])
def test_xgboost_binary_booster(binary, objective, tmp_path):
    X, y = binary
    booster = xgb_train(X, y, {"objective": objective})
    c = xgboost_converted(booster)
    own = booster.predict(xgb.DMatrix(X), output_margin=objective == "binary:logitraw")
    if objective == "binary:logitraw":
        own = 1 / (1 + np.exp(-own.astype(np.float64)))
    got = check(c, X, own, framework="xgboost", n_classes=2)
    assert c.labels is None and c.columns is None
    for name in ("model.json", "model.ubj"):
        booster.save_model(tmp_path / name)
        assert_close(run_graph(xgboost_converted(read_xgboost(tmp_path / name)), X), got, values=False)


@pytest.mark.parametrize("params", [
    {"objective": "multi:softprob"},
    {"objective": "multi:softmax"},
    {"objective": "multi:softprob", "num_parallel_tree": 2, "subsample": 0.7},
    {"objective": "multi:softprob", "booster": "dart", "rate_drop": 0.2},
], ids=lambda p: "-".join(str(v) for v in p.values()))
def test_xgboost_multiclass_booster(multiclass, params):
    X, y = multiclass
    booster = xgb_train(X, y, {"num_class": 3, **params})
    c = xgboost_converted(booster)
    margin = booster.predict(xgb.DMatrix(X), output_margin=True).astype(np.float64)
    own = np.exp(margin - margin.max(axis=1, keepdims=True))
    own /= own.sum(axis=1, keepdims=True)
    if params["objective"] == "multi:softprob":
        own = booster.predict(xgb.DMatrix(X))
    check(c, X, own, framework="xgboost", n_classes=3)


@pytest.mark.parametrize("params", [
    {"objective": "reg:squarederror"},
    {"objective": "reg:absoluteerror"},
    {"objective": "reg:pseudohubererror", "huber_slope": 20.0},
    {"objective": "reg:gamma"},
    {"objective": "reg:tweedie"},
    {"objective": "reg:squarederror", "grow_policy": "lossguide", "max_leaves": 8, "max_depth": 0},
], ids=lambda p: "-".join(str(v) for v in p.values()))
def test_xgboost_regression_booster(regression, params):
    X, y = regression
    booster = xgb_train(X, y, params)
    c = xgboost_converted(booster)
    check(c, X, booster.predict(xgb.DMatrix(X)), framework="xgboost", n_classes=None)


def test_xgboost_poisson_counts(regression):
    X, y = regression
    counts = np.round(y / 25)  # small counts: XGBoost's own intercept estimate is sane there
    booster = xgb_train(X, counts, {"objective": "count:poisson"})
    check(xgboost_converted(booster), X, booster.predict(xgb.DMatrix(X)), framework="xgboost", n_classes=None)


def test_xgboost_feature_names_round_trip(regression, tmp_path):
    X, y = regression
    names = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    booster = xgb_train(X, y, {"objective": "reg:squarederror"}, feature_names=names)
    c = xgboost_converted(booster)
    own = booster.predict(xgb.DMatrix(X, feature_names=names))
    got = check(c, X, own, framework="xgboost", n_classes=None)
    assert c.columns == names
    path = tmp_path / "named.json"
    booster.save_model(path)
    again = xgboost_converted(read_xgboost(path))
    assert again.columns == names
    np.testing.assert_array_equal(run_graph(again, X), got)


def test_xgboost_sklearn_wrappers(binary, multiclass, regression):
    X, y = binary
    clf = xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(X, y)
    booster, classes = booster_of(clf)
    assert classes == ["0", "1"]
    c = xgboost_converted(clf)
    assert c.labels == ["0", "1"]
    check(c, X, clf.predict_proba(X), framework="xgboost", n_classes=2)

    Xm, ym = multiclass
    stopped = xgb.XGBClassifier(n_estimators=200, max_depth=2, learning_rate=0.5, early_stopping_rounds=3)
    stopped.fit(Xm[::2], ym[::2], eval_set=[(Xm[1::2], ym[1::2])], verbose=False)
    assert stopped.best_iteration + 1 < stopped.get_booster().num_boosted_rounds()
    booster, _ = booster_of(stopped)
    assert booster.num_boosted_rounds() == stopped.best_iteration + 1
    c = xgboost_converted(stopped)
    assert c.labels == ["0", "1", "2"]
    check(c, Xm, stopped.predict_proba(Xm), framework="xgboost", n_classes=3)

    Xr, yr = regression
    reg = xgb.XGBRegressor(n_estimators=20, max_depth=3).fit(Xr, yr)
    c = xgboost_converted(reg)
    assert c.labels is None
    check(c, Xr, reg.predict(Xr), framework="xgboost", n_classes=None)


# what is not supported


def assert_one_line(convert: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        convert()
    text = str(err.value)
    assert text.startswith(message) and "\n" not in text, text


def test_lightgbm_unsupported_models_are_one_line_config_errors(binary, regression):
    X, y = binary
    Xr, yr = regression
    ranker = lgb.train({**LGB, "objective": "lambdarank"}, lgb.Dataset(X, y, group=[len(X)]), 2)
    assert_one_line(lambda: lightgbm_converted(ranker),
                    "LightGBM objective 'lambdarank' is not supported: expected one of binary, cross_entropy, "
                    "multiclass, regression")
    ova = lgb.train({**LGB, "objective": "multiclassova", "num_class": 2}, lgb.Dataset(X, y), 2)
    assert_one_line(lambda: lightgbm_converted(ova), "LightGBM objective 'multiclassova' is not supported")
    linear = lgb.train({**LGB, "linear_tree": True}, lgb.Dataset(Xr, yr), 2)
    assert_one_line(lambda: lightgbm_converted(linear), "LightGBM linear trees (linear_tree=True) are not supported")
    assert_one_line(lambda: booster_of(object()), "object is not a booster: expected a lightgbm.Booster")
    assert_one_line(lambda: booster_of(lgb.LGBMClassifier()), "LGBMClassifier is not fitted")
    assert_one_line(lambda: lightgbm_converted([1, 2]), "list is not a booster")


def test_xgboost_unsupported_models_are_one_line_config_errors(binary, regression):
    X, y = binary
    Xr, yr = regression
    ranker = xgb_train(X, y, {"objective": "rank:pairwise"}, rounds=2, group=[len(X)])
    assert_one_line(lambda: xgboost_converted(ranker),
                    "XGBoost objective 'rank:pairwise' is not supported: expected one of binary:logistic, ")
    linear = xgb.train({"booster": "gblinear"}, xgb.DMatrix(Xr, label=yr), 2)
    assert_one_line(lambda: xgboost_converted(linear),
                    "XGBoost booster 'gblinear' is not supported: expected gbtree or dart")
    hinge = xgb_train(X, y, {"objective": "binary:hinge"}, rounds=2)
    assert_one_line(lambda: xgboost_converted(hinge), "XGBoost objective 'binary:hinge' is not supported")
    two = xgb_train(Xr, np.column_stack([yr, -yr]), {"objective": "reg:squarederror"}, rounds=2)
    assert_one_line(lambda: xgboost_converted(two), "XGBoost model with 2 targets is not supported")
    missing = xgb.XGBRegressor(n_estimators=2, missing=-1.0).fit(Xr, yr)
    assert_one_line(lambda: booster_of(missing), "XGBRegressor reads -1.0 as missing: converted boosters read NaN")
    lgbm = lgb.train(LGB, lgb.Dataset(Xr, yr), 2)
    assert_one_line(lambda: xgboost_converted(lgbm), "xgboost_converted got lightgbm.basic.Booster: expected")
    assert_one_line(lambda: lightgbm_converted(linear), "lightgbm_converted got xgboost.core.Booster: expected")


def test_xgboost_categorical_splits_are_refused():
    rng = np.random.default_rng(6)
    import pandas as pd

    frame = pd.DataFrame({"color": pd.Categorical(rng.choice(["r", "g", "b"], 300)), "x": rng.normal(size=300)})
    y = (frame["color"] == "r").astype(int) ^ (frame["x"] > 0)
    booster = xgb.train({"tree_method": "hist", "max_cat_to_onehot": 1},
                        xgb.DMatrix(frame, label=y, enable_categorical=True), 3)
    with pytest.raises(ConfigError, match="^XGBoost categorical splits are not supported: expected numeric"):
        xgboost_converted(booster)


def test_lightgbm_reader_refuses_what_is_not_a_model_file(tmp_path):
    with pytest.raises(DataError, match="absent.txt: no such file: expected a LightGBM text model file"):
        read_lightgbm(tmp_path / "absent.txt")
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\n")
    with pytest.raises(DataError, match="junk.txt: not a LightGBM model file"):
        read_lightgbm(junk)


def test_xgboost_reader_refuses_what_is_not_a_model_file(tmp_path, regression):
    X, y = regression
    with pytest.raises(DataError, match="absent.json: no such file"):
        read_xgboost(tmp_path / "absent.json")
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps({"not": "a model"}))
    with pytest.raises(DataError, match="model.pkl: a pickle: expected an XGBoost model saved with save_model"):
        read_xgboost(pickled)
    broken = tmp_path / "broken.json"
    broken.write_text('{"learner": 1}')
    with pytest.raises(DataError, match="broken.json: not an XGBoost model"):
        read_xgboost(broken)
    # the format is read from the content: a UBJSON model under another name still loads
    booster = xgb_train(X, y, {"objective": "reg:squarederror"}, rounds=3)
    booster.save_model(tmp_path / "model.ubj")
    renamed = Path(tmp_path / "model.bin")
    renamed.write_bytes((tmp_path / "model.ubj").read_bytes())
    np.testing.assert_array_equal(read_xgboost(renamed).predict(xgb.DMatrix(X)), booster.predict(xgb.DMatrix(X)))
