"""The safe file formats beside ONNX: safetensors weights into a given module, skops files behind an allow-list;
and what cannot be converted says so in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

import tandem
from foreign_models import churn_pipeline, churn_table, images, small_cnn
from tandem.errors import ConfigError


def test_safetensors_weights_load_into_the_given_module(home, tmp_path):
    from safetensors.torch import save_file

    trained = small_cnn()
    save_file(trained.state_dict(), str(tmp_path / "cnn.safetensors"))
    torch.manual_seed(99)
    fresh = type(trained)()  # the architecture, with other (random) weights until the file's are read
    model = tandem.import_model(fresh, weights=tmp_path / "cnn.safetensors", sample=images(8, 3), name="weights",
                                home=home, footprint=False)
    x = images(5, 4)
    with torch.no_grad():
        expected = torch.softmax(trained(torch.from_numpy(x)), dim=1).numpy()
    assert np.abs(model.predict_proba(x) - expected).max() <= 1e-5
    assert any("safetensors" in n for n in model.manifest["notes"])
    with pytest.raises(ConfigError, match="does not fit the module"):
        tandem.import_model(torch.nn.Linear(3, 2), weights=tmp_path / "cnn.safetensors", sample=np.ones((2, 3)),
                            name="mismatch", home=home, footprint=False)


def test_a_skops_file_imports_and_a_type_outside_the_allow_list_is_refused(home, tmp_path, run_cli):
    import skops.io as sio

    train, held_out = churn_table(400, 0), churn_table(100, 1)
    sio.dump(churn_pipeline(train), tmp_path / "pipe.skops")
    held_out.to_csv(tmp_path / "held.csv", index=False)
    done = run_cli(["import", tmp_path / "pipe.skops", "--name", "skops", "--sample", tmp_path / "held.csv",
                    "--target", "churn", "--train-kwh", "0.25", "--json"], home=home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["framework"] == "sklearn" and summary["labels"] == ["no", "yes"]
    assert summary["parity_max_abs_diff"] <= 1e-5
    done = run_cli(["footprint", "skops"], home=home, cwd=tmp_path)
    assert done.returncode == 0 and "training" in done.stdout.lower(), done.stderr

    custom = Pipeline([("shift", FunctionTransformer(_shift)), ("model", HistGradientBoostingClassifier(max_iter=5))])
    sio.dump(custom.fit(np.ones((20, 2)) * np.arange(20)[:, None], np.arange(20) % 2), tmp_path / "custom.skops")
    done = run_cli(["import", tmp_path / "custom.skops", "--name", "custom"], home=home, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "outside the allow-list" in done.stderr and "_shift" in done.stderr


def _shift(x: np.ndarray) -> np.ndarray:
    return x + 1


def test_a_model_skl2onnx_cannot_convert_is_refused_in_one_line(home):
    x = np.random.default_rng(0).random((60, 3))
    model = HistGradientBoostingClassifier(max_iter=5).fit(x, (x[:, 0] > 0.5).astype(int))
    with pytest.raises(ConfigError, match="skl2onnx could not convert HistGradientBoostingClassifier"):
        tandem.import_model(model, sample=x.astype(np.float32), name="hist", home=home, footprint=False)


def test_a_pipeline_on_hyphenated_whole_number_columns_with_missing_categories_keeps_parity(home):
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"education-num": rng.integers(1, 16, n), "capital-gain": rng.integers(0, 5000, n),
                          "work class": rng.choice(["Private", "State-gov", None], n),
                          "sex": rng.choice(["M", "F"], n)})
    income = np.where(frame["education-num"] + (frame["sex"] == "M") * 3 + rng.normal(0, 2, n) > 10, ">50K", "<=50K")
    columns = ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]),
         ["education-num", "capital-gain"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["work class", "sex"])])
    pipe = Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=1000))]).fit(frame, income)
    model = tandem.import_model(pipe, sample=frame.assign(income=income), target="income", name="adult", home=home,
                                footprint=False)
    assert [c["name"] for c in model.manifest["schema"]["columns"]] == list(frame.columns)
    assert model.manifest["parity"]["max_abs_diff"] <= 1e-5
    assert np.abs(model.predict_proba(frame) - pipe.predict_proba(frame)).max() <= 1e-5
    # one row with a missing category, as JSON carries it (scikit-learn answers a lone None row as an unknown
    # category, not as the missing one it learnt: its answer in the batch is the one to match)
    i = int(np.flatnonzero(frame["work class"].isna())[0])
    row = {k: (None if v is None else v.item() if hasattr(v, "item") else v) for k, v in frame.iloc[i].items()}
    assert np.abs(model.predict_proba(row) - pipe.predict_proba(frame)[i]).max() <= 1e-5


class _Scorer(torch.nn.Module):
    """One number per row: a logit, or with ``sigmoid`` the probability of the positive class."""

    def __init__(self, sigmoid: bool) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.linear = torch.nn.Linear(3, 1)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x) * 4
        return torch.sigmoid(out) if self.sigmoid else out.reshape(-1)


@pytest.mark.parametrize(("sigmoid", "meaning"), [(True, "probabilities"), (False, "logits")])
def test_one_number_per_row_becomes_two_class_probabilities(home, sigmoid, meaning):
    x = np.random.default_rng(1).normal(size=(30, 3)).astype(np.float32)
    net = _Scorer(sigmoid)
    model = tandem.import_model(net, sample=x, labels=["no", "yes"], name=f"scorer-{meaning}", home=home,
                                footprint=False)
    assert model.task == "binary" and model.manifest["imported"]["meaning"] == meaning
    with torch.no_grad():
        out = net(torch.from_numpy(x)).numpy().reshape(-1)
    p = out if sigmoid else 1 / (1 + np.exp(-out.astype(np.float64)))
    assert np.abs(model.predict_proba(x) - np.stack([1 - p, p], axis=1)).max() <= 1e-5
    assert list(model.predict(x)) == ["yes" if v >= 0.5 else "no" for v in p]


def test_an_answer_that_is_no_class_or_value_is_refused(home):
    x = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(ConfigError, match="answers 3 numbers per row: a regression answers one"):
        tandem.import_model(torch.nn.Linear(3, 3), sample=x, task="regression", name="embed", home=home,
                            footprint=False)
    with pytest.raises(ConfigError, match=r"answers an array of shape \[4, 2, 2\]"):
        tandem.import_model(_Reshaper(), sample=np.ones((4, 4), dtype=np.float32), name="cube", home=home,
                            footprint=False)
    with pytest.raises(ConfigError, match="2 labels given"):
        tandem.import_model(torch.nn.Linear(3, 3), sample=x, labels=["a", "b"], name="labels", home=home,
                            footprint=False)


class _Reshaper(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, 2, 2)


def test_an_empty_sample_and_a_threshold_outside_zero_to_one_are_refused(home):
    from tandem.errors import DataError

    with pytest.raises(DataError, match="the sample has no rows"):
        tandem.import_model(torch.nn.Linear(3, 2), sample=np.ones((0, 3), dtype=np.float32), name="empty",
                            home=home, footprint=False)
    with pytest.raises(ConfigError, match="threshold must be a number from 0 to 1, got 1.5"):
        tandem.import_model(torch.nn.Linear(3, 2), sample=np.ones((2, 3), dtype=np.float32), threshold=1.5,
                            name="threshold", home=home, footprint=False)
