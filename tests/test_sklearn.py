"""tandem.sklearn: scikit-learn's estimator checks, and the estimators in pipelines, searches, pickles and bundles.

Fits use the linear family with ``bagging="no"`` and a time limit the study never reaches: it then tries every
configuration and gives the same model for the same data and seed, as sklearn's idempotence checks require
(``bagging="auto"`` decides from measured fit times, and a study cut by its limit depends on the clock).
"""

from __future__ import annotations

import gc
import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import tandem
from tandem.errors import BundleError
from tandem.inference import Predictor
from tandem.sklearn import TandemClassifier, TandemRegressor

FAST = {"families": ["linear"], "time_limit": 60.0, "bagging": "no", "footprint": False}

@parametrize_with_checks([TandemClassifier(**FAST), TandemRegressor(**FAST)])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # metrics on tiny folds, the single-row class's split
        check(estimator)


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def fitted(iris):
    X_train, _, y_train, _ = iris
    return TandemClassifier(**FAST).fit(X_train, y_train)


def _frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A number, a category (pandas categorical dtype) and a free-text review; the label follows the review's words
    and the city."""
    rng = np.random.default_rng(seed)
    good, bad = ["great", "lovely", "excellent", "superb"], ["awful", "poor", "terrible", "dreadful"]
    filler = ["the", "room", "was", "really", "quite", "and", "staff", "food", "view", "stay"]
    positive = rng.random(n) < 0.5
    reviews = [" ".join([*rng.choice(filler, 5), rng.choice(good if p else bad), *rng.choice(filler, 3),
                         f"visit{i}"]) for i, p in enumerate(positive)]
    city = rng.choice(["paris", "rome", "oslo"], n)
    frame = pd.DataFrame({"age": rng.normal(40, 10, n).round(1), "city": pd.Categorical(city), "review": reviews})
    return frame, np.where(positive, "happy", "unhappy")


# -- fitting and predicting ------------------------------------------------------------------------
def test_classifier_accuracy_classes_and_probabilities(iris, fitted):
    _, X_test, _, y_test = iris
    assert fitted.classes_.tolist() == [0, 1, 2]
    assert fitted.n_features_in_ == 4 and not hasattr(fitted, "feature_names_in_")
    assert fitted.score(X_test, y_test) > 0.9
    proba = fitted.predict_proba(X_test)
    assert proba.shape == (len(X_test), 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(fitted.classes_[proba.argmax(axis=1)], fitted.predict(X_test))
    assert fitted.model_.task == "multiclass"
    assert [c["name"] for c in fitted.model_.manifest["schema"]["columns"]] == ["x0", "x1", "x2", "x3"]


def test_predictions_are_the_bundles_own(iris, fitted):
    _, X_test, _, _ = iris
    columns = {f"x{i}": X_test[:, i] for i in range(4)}
    model = tandem.load(fitted.bundle_path_)
    np.testing.assert_array_equal(fitted.predict(X_test), model.predict(columns))
    predictor = Predictor(fitted.bundle_path_)
    assert predictor.predict(columns).tolist() == fitted.predict(X_test).tolist()
    np.testing.assert_allclose(fitted.predict_proba(X_test), predictor.predict_proba(columns), atol=1e-6)


@pytest.mark.parametrize("labels", [np.array(["setosa", "versicolor", "virginica"]), np.array([10, 9, -2]),
                                    np.array(["10", "9", "b"], dtype=object), np.array([2.0, 0.0, -1.0])])
def test_labels_keep_their_values_dtype_and_order(iris, labels):
    X_train, X_test, y_train, y_test = iris
    clf = TandemClassifier(**FAST).fit(X_train, labels[y_train])
    assert clf.classes_.tolist() == sorted(labels.tolist())
    assert clf.classes_.dtype == labels.dtype
    pred = clf.predict(X_test)
    assert pred.dtype == labels.dtype
    assert np.mean(pred == labels[y_test]) > 0.9
    proba = clf.predict_proba(X_test)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], pred)
    # each column is the probability of its class in classes_: high where that class is the truth
    for j, label in enumerate(clf.classes_):
        assert proba[labels[y_test] == label, j].mean() > 0.6


def test_boolean_labels_binary_task():
    X, y = load_breast_cancer(return_X_y=True)
    clf = TandemClassifier(**FAST).fit(X[:400], y[:400] == 1)
    assert clf.classes_.tolist() == [False, True] and clf.model_.task == "binary"
    pred = clf.predict(X[400:])
    assert pred.dtype == bool and np.mean(pred == (y[400:] == 1)) > 0.9


def test_regressor_r2_on_diabetes():
    X, y = load_diabetes(return_X_y=True)
    scores = cross_val_score(TandemRegressor(**FAST), X, y, cv=3, scoring="r2")
    assert scores.mean() > 0.4, scores
    reg = TandemRegressor(**FAST).fit(X, y)
    assert reg.model_.task == "regression" and reg.predict(X).dtype == np.float64
    assert reg.score(X, y) > 0.45


def test_frame_with_categorical_and_text_columns():
    frame, y = _frame(400, seed=0)
    train, test, y_train, y_test = train_test_split(frame, y, test_size=0.25, random_state=0)
    clf = TandemClassifier(**FAST).fit(train, y_train)
    assert clf.feature_names_in_.tolist() == ["age", "city", "review"]
    kinds = {c["name"]: c["kind"] for c in clf.model_.manifest["schema"]["columns"]}
    assert kinds == {"age": "numeric", "city": "categorical", "review": "text"}
    assert clf.model_.target == "y"
    assert clf.score(test, y_test) > 0.9  # the index of a split frame is not a column
    # the frame's own column kinds reach the bundle: strings in, strings answered
    assert set(clf.predict(test)) <= {"happy", "unhappy"}


def test_polars_frame_and_a_feature_named_like_the_target():
    pl = pytest.importorskip("polars")
    frame, labels = _frame(200, seed=1)
    frame = frame.drop(columns=["review"]).assign(y=np.arange(200) % 7)
    y = frame["age"].to_numpy() * 2 + (frame["city"] == "rome").to_numpy() * 10
    reg = TandemRegressor(**FAST).fit(pl.from_pandas(frame), y)
    assert reg.model_.target == "y_" and reg.feature_names_in_.tolist() == ["age", "city", "y"]
    assert reg.score(pl.from_pandas(frame), y) > 0.95
    np.testing.assert_allclose(reg.predict(pl.from_pandas(frame)), reg.predict(frame), rtol=1e-6)


def test_missing_values_are_allowed_and_infinity_is_not(iris):
    X_train, X_test, y_train, _ = iris
    X = X_train.copy()
    X[::7, 2] = np.nan
    clf = TandemClassifier(**FAST).fit(X, y_train)
    X_test = X_test.copy()
    X_test[:5, 1] = np.nan
    assert clf.predict(X_test).shape == (len(X_test),)
    X[0, 0] = np.inf
    with pytest.raises(ValueError, match="Input X contains infinity"):
        TandemClassifier(**FAST).fit(X, y_train)
    frame, y = _frame(60, seed=2)
    frame.loc[3, "age"] = -np.inf
    with pytest.raises(ValueError, match="Input X contains infinity"):
        TandemClassifier(**FAST).fit(frame, y)


# -- sklearn's errors --------------------------------------------------------------------------------
def test_wrong_number_of_features_and_unfitted(iris, fitted):
    _, X_test, _, _ = iris
    with pytest.raises(ValueError, match="X has 3 features, but TandemClassifier is expecting 4 features as input"):
        fitted.predict(X_test[:, :3])
    for method in ("predict", "predict_proba"):
        with pytest.raises(NotFittedError):
            getattr(TandemClassifier(**FAST), method)(X_test)
    with pytest.raises(NotFittedError):
        TandemRegressor(**FAST).save("never")


def test_bad_targets():
    X, y = load_diabetes(return_X_y=True)
    with pytest.raises(ValueError, match="Unknown label type"):
        TandemClassifier(**FAST).fit(X, y + 0.5)
    with pytest.raises(ValueError, match="one class"):
        TandemClassifier(**FAST).fit(X, np.ones(len(X)))
    with pytest.raises(ValueError, match="Input y contains NaN"):
        TandemRegressor(**FAST).fit(X, np.where(np.arange(len(y)) == 3, np.nan, y))
    with pytest.raises(ValueError, match="1 sample"):
        TandemRegressor(**FAST).fit(X[:1], y[:1])
    with pytest.raises(ValueError, match="TandemRegressor: .*single value"):  # tandem's own DataError, as sklearn's
        TandemRegressor(**FAST).fit(X, np.full(len(X), 3.0))
    with pytest.raises(ValueError, match="TandemRegressor: .*metric 'accuracy'"):
        TandemRegressor(**{**FAST, "metric": "accuracy"}).fit(X, y)


# -- scikit-learn's tools ----------------------------------------------------------------------------
def test_pipeline_with_column_transformer_in_cross_validation():
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns=["target"])
    frame["size"] = pd.cut(frame["mean radius"], [0, 12, 16, 100], labels=["small", "medium", "large"]).astype(str)
    numeric = [c for c in frame.columns if c != "size"]
    pipe = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), numeric),
                           ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["size"])]),
        TandemClassifier(**FAST))
    scores = cross_val_score(pipe, frame, data.target, cv=3)
    assert scores.mean() > 0.9, scores


def test_grid_search_over_a_tandem_parameter(iris):
    X_train, X_test, y_train, y_test = iris
    grid = {"tandemclassifier__metric": ["log_loss", "accuracy"]}
    search = GridSearchCV(make_pipeline(StandardScaler().set_output(transform="pandas"), TandemClassifier(**FAST)),
                          grid, cv=3).fit(pd.DataFrame(X_train, columns=list("abcd")), y_train)
    assert search.best_params_["tandemclassifier__metric"] in grid["tandemclassifier__metric"]
    best = search.best_estimator_[-1]
    assert best.model_.metric == search.best_params_["tandemclassifier__metric"]  # refit with the winner
    assert best.feature_names_in_.tolist() == list("abcd")
    assert search.score(pd.DataFrame(X_test, columns=list("abcd")), y_test) > 0.9


# -- the bundle: pickles, saved copies, the registry -------------------------------------------------
def test_pickle_carries_the_bundle_not_a_path(iris, fitted):
    _, X_test, _, _ = iris
    blob = pickle.dumps(fitted)
    assert str(fitted.bundle_path_).encode() not in blob
    clone = pickle.loads(blob)
    assert clone.bundle_path_ != fitted.bundle_path_ and clone.bundle_path_.is_dir()
    np.testing.assert_array_equal(clone.predict(X_test), fitted.predict(X_test))
    np.testing.assert_array_equal(clone.predict_proba(X_test), fitted.predict_proba(X_test))
    assert pickle.loads(pickle.dumps(TandemRegressor(**FAST))).get_params() == TandemRegressor(**FAST).get_params()


def test_unpickling_verifies_the_bundle(fitted):
    state = fitted.__getstate__()
    name = next(n for n in state["_bundle_files"] if n.endswith(".onnx"))
    state["_bundle_files"][name] = state["_bundle_files"][name][:-1] + b"\0"
    with pytest.raises(BundleError, match="sha256|hash"):
        TandemClassifier.__new__(TandemClassifier).__setstate__(state)


def test_temp_bundle_goes_with_the_estimator_or_a_refit(iris):
    X_train, _, y_train, _ = iris
    clf = TandemClassifier(**FAST).fit(X_train, y_train)
    first = clf.bundle_path_.parent
    clf.fit(X_train, y_train)
    assert not first.exists() and clf.bundle_path_.is_dir()
    second = clf.bundle_path_.parent
    del clf
    gc.collect()
    assert not second.exists()


def test_save_writes_a_bundle_tandem_loads(iris, fitted, tmp_path):
    _, X_test, _, _ = iris
    out = fitted.save(tmp_path / "iris-bundle")
    assert out == tmp_path / "iris-bundle"
    model = tandem.load(out)  # every hash verified
    np.testing.assert_array_equal(model.predict({f"x{i}": X_test[:, i] for i in range(4)}), fitted.predict(X_test))
    with pytest.raises(FileExistsError, match="already exists"):
        fitted.save(out)


def test_name_registers_each_fit(iris, tmp_path):
    X_train, X_test, y_train, _ = iris
    clf = TandemClassifier(**FAST, name="iris-sk", home=tmp_path).fit(X_train, y_train)
    assert clf.model_.version == 1 and clf.bundle_path_.is_relative_to(tmp_path)
    clf.fit(X_train, y_train)
    assert clf.model_.version == 2
    model = tandem.load("iris-sk", home=tmp_path)
    assert model.version == 2
    np.testing.assert_array_equal(model.predict({f"x{i}": X_test[:, i] for i in range(4)}), clf.predict(X_test))
    path = clf.bundle_path_
    del clf
    gc.collect()
    assert Path(path).is_dir()  # a registered bundle outlives the estimator
