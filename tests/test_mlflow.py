"""tandem.mlflow: the tandem and pyfunc flavors round trip through a local MLflow store, the study is run data,
and a changed bundle is refused on load."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")

import tandem  # noqa: E402
import tandem.mlflow as tm  # noqa: E402
from tandem.errors import BundleError, ConfigError, DataError, SchemaError, TandemError  # noqa: E402

# what the MLflow processes (this one, and `mlflow models serve`) must not do: phone home, refuse the file store
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ALLOW_FILE_STORE": "true"}


@pytest.fixture(scope="module")
def frame(make_frame) -> pd.DataFrame:
    return make_frame(200, seed=1)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, frame) -> tandem.api.Model:
    """A binary model with text labels (yes/no) and a categorical column, trained without the meter."""
    return tandem.train(frame, "income", time_limit=2, families=["linear"], footprint=False,
                        path=tmp_path_factory.mktemp("clf") / "b")


@pytest.fixture(scope="module")
def regressor(tmp_path_factory, make_frame) -> tandem.api.Model:
    """A regression model trained with the footprint meter on (its ledger becomes metrics)."""
    return tandem.train(make_frame(200, seed=2, task="regression"), "price", time_limit=2, families=["linear"],
                        path=tmp_path_factory.mktemp("reg") / "b")


@pytest.fixture()
def store(tmp_path, monkeypatch) -> Path:
    """A fresh local file store, as the tracking URI, with a fresh experiment."""
    for key, value in QUIET.items():
        monkeypatch.setenv(key, value)
    root = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", root.as_uri())
    mlflow.set_tracking_uri(root.as_uri())
    mlflow.set_experiment("tandem-test")
    yield root
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["income"])


def test_log_model_round_trip(store, classifier, frame) -> None:
    x = features(frame)
    with mlflow.start_run() as run:
        info = tm.log_model(classifier, name="model", input_example=x.head(3))

    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    labels = pyfunc.predict(x)
    assert list(labels) == list(classifier.predict(x))
    assert set(labels) == {"yes", "no"}
    proba = pyfunc.predict(x, params={"predict_method": "predict_proba"})
    assert list(proba.columns) == ["no", "yes"] == [str(label) for label in classifier.labels]
    np.testing.assert_allclose(proba.to_numpy(), classifier.predict_proba(x), rtol=1e-6)
    # every input form the Predictor takes; whole numbers in a numeric column are not refused by the signature
    assert list(pyfunc.predict(x.head(2).to_dict(orient="records"))) == list(labels[:2])
    assert list(pyfunc.predict(x.assign(x1=x.x1.round().astype("int64")))) == list(
        classifier.predict(x.assign(x1=x.x1.round().astype("int64"))))

    loaded = tm.load_model(info.model_uri)
    assert isinstance(loaded, tandem.api.Model)
    assert loaded.manifest == classifier.manifest
    assert list(loaded.predict(x)) == list(labels)

    conf = mlflow.models.Model.load(info.model_uri).flavors
    assert conf["python_function"]["loader_module"] == "tandem.mlflow"
    assert conf["tandem"]["manifest_sha256"] == classifier.manifest["manifest_sha256"]
    assert conf["tandem"]["task"] == "binary"
    signature = pyfunc.metadata.signature
    assert signature.inputs.input_names() == ["x1", "x2", "color"]
    assert signature.params.params[0].name == "predict_method"
    requirements = (Path(mlflow.artifacts.download_artifacts(info.model_uri)) / "requirements.txt").read_text()
    assert "tandem==" in requirements

    data = mlflow.get_run(run.info.run_id).data
    manifest = classifier.manifest
    assert data.params["task"] == "binary" and data.params["metric"] == manifest["metric"]
    assert data.params["model"] == manifest["ensemble"][0]["model"]
    assert data.params["family"] == "linear"
    assert float(data.params["time_limit"]) == 2.0
    assert data.metrics[f"val_{manifest['metric']}"] == pytest.approx(manifest["metrics"]["validation"][
        manifest["metric"]])
    assert data.tags[tm.STUDY_TAG] == manifest["manifest_sha256"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "tandem")}
    assert artifacts == {"tandem/report.html", "tandem/leaderboard.json", "tandem/manifest.json"}
    table = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="tandem/leaderboard.json")).read_text())
    assert len(table["data"]) == len(manifest["leaderboard"])
    assert "model" in table["columns"]


def test_regression_with_footprint(store, regressor, make_frame) -> None:
    x = make_frame(50, seed=3, task="regression").drop(columns=["price"])
    with mlflow.start_run() as run:
        info = tm.log_model(regressor, name="reg")
    values = mlflow.pyfunc.load_model(info.model_uri).predict(x)
    np.testing.assert_allclose(values, regressor.predict(x), rtol=1e-6)
    metrics = mlflow.get_run(run.info.run_id).data.metrics
    train = regressor.manifest["footprint"]["train"]
    assert metrics["train_energy_kwh"] == pytest.approx(train["energy_kwh"])
    assert metrics["train_co2_kg"] == pytest.approx(train["co2_kg"])
    assert metrics["val_rmse"] == pytest.approx(regressor.manifest["metrics"]["validation"]["rmse"])
    with pytest.raises(DataError, match="regression"):
        mlflow.pyfunc.load_model(info.model_uri).predict(x, params={"predict_method": "predict_proba"})


def test_log_model_outside_a_run(store, classifier, frame) -> None:
    """MLflow 3 logs a model without a run; there is no run for the study then."""
    info = tm.log_model(classifier, name="model")
    assert info.run_id is None and mlflow.active_run() is None
    assert list(mlflow.pyfunc.load_model(info.model_uri).predict(features(frame))) == list(
        classifier.predict(features(frame)))


def test_save_model_to_a_folder_and_load(tmp_path, classifier, frame) -> None:
    target = tmp_path / "saved"
    tm.save_model(classifier.path, target, signature=False, extra_pip_requirements=["polars"])
    assert sorted(p.name for p in (target / "bundle").iterdir()) == sorted(p.name for p in classifier.path.iterdir())
    assert tm.load_model(str(target)).manifest == classifier.manifest
    pyfunc = mlflow.pyfunc.load_model(str(target))
    assert pyfunc.metadata.signature is None
    assert list(pyfunc.predict(features(frame))) == list(classifier.predict(features(frame)))
    assert "polars" in (target / "requirements.txt").read_text()
    csv = tmp_path / "rows.csv"
    features(frame).to_csv(csv, index=False)
    with pytest.raises(DataError, match="takes rows, columns or frames"):  # no file of the server's is read
        pyfunc.predict(str(csv))
    with pytest.raises(mlflow.exceptions.MlflowException, match="already exists"):
        tm.save_model(classifier, target)


def test_registry_references_and_fitted_estimators(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))
    data = {"a": [float(i % 9) for i in range(60)], "b": ["p", "q", "r"] * 20, "y": [i % 7 for i in range(60)]}
    model = tandem.train(data, "y", time_limit=2, families=["linear"], name="tiny", footprint=False)
    tm.save_model("tiny:1", tmp_path / "by_ref")
    assert tm.load_model(str(tmp_path / "by_ref")).manifest == model.manifest
    conf = mlflow.models.Model.load(str(tmp_path / "by_ref")).flavors["tandem"]
    assert (conf["registry_name"], conf["registry_version"]) == ("tiny", 1)

    class Fitted:  # what tandem.sklearn's estimators hold once fitted
        model_ = model
        bundle_path_ = model.path

    tm.save_model(Fitted(), tmp_path / "by_estimator")
    assert tm.load_model(str(tmp_path / "by_estimator")).manifest == model.manifest


def test_what_is_not_a_model_is_refused(tmp_path, classifier) -> None:
    with pytest.raises(ConfigError, match=r"got builtins\.int"):
        tm.save_model(42, tmp_path / "a")

    class Unfitted:
        model_ = None

    with pytest.raises(ConfigError, match="Unfitted"):
        tm.save_model(Unfitted(), tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TandemError, match="not a bundle"):
        tm.save_model(tmp_path / "empty", tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    with pytest.raises(mlflow.exceptions.MlflowException):
        tm.save_model(classifier, tmp_path / "d", input_example=object())
    assert list((tmp_path / "d").iterdir()) == []  # nothing half-written left to block the next try


@pytest.mark.parametrize("changed", ["report.html", "model.onnx", "manifest.json"])
def test_a_changed_bundle_is_refused_at_load(tmp_path, classifier, changed) -> None:
    target = tmp_path / "saved"
    tm.save_model(classifier, target)
    path = target / "bundle" / changed
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"seed": 0', b'"seed": 1') if changed == "manifest.json" else data + b"\0")
    with pytest.raises(BundleError, match="failed verification"):
        tm.load_model(str(target))
    with pytest.raises(BundleError, match="failed verification"):
        mlflow.pyfunc.load_model(str(target))


def test_a_swapped_bundle_is_refused(tmp_path, classifier, regressor) -> None:
    """A whole, valid bundle put in place of the saved one: its own hashes hold, the MLmodel's checksum not."""
    target = tmp_path / "saved"
    tm.save_model(classifier, target)
    shutil.rmtree(target / "bundle")
    shutil.copytree(regressor.path, target / "bundle")
    with pytest.raises(BundleError, match="not the one this MLflow model was saved with"):
        mlflow.pyfunc.load_model(str(target))


def test_a_tampered_logged_model_is_refused(store, classifier) -> None:
    with mlflow.start_run():
        info = tm.log_model(classifier, name="model", study=False)
    stored = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    graph = next(stored.rglob("bundle/model.onnx"))
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="model.onnx"):
        mlflow.pyfunc.load_model(info.model_uri)


def test_log_study_alone_once_per_run(store, classifier, regressor) -> None:
    client = mlflow.MlflowClient()
    with mlflow.start_run() as run:
        assert tm.log_study(classifier) == run.info.run_id
        tm.log_study(classifier)  # the same study again: nothing changes
        assert len(client.get_metric_history(run.info.run_id, f"val_{classifier.metric}")) == 1
        with pytest.raises(ConfigError, match="another study"):
            tm.log_study(regressor)
        tm.log_model(classifier, name="model")  # its study is there already
        tm.log_model(regressor, name="other", study=False)
    data = mlflow.get_run(run.info.run_id).data
    assert data.params["task"] == "binary" and data.tags[tm.STUDY_TAG] == classifier.manifest["manifest_sha256"]


def test_served_errors_keep_their_class() -> None:
    """Through the pyfunc, tandem's errors are also MlflowExceptions (the scoring server answers 400 with the
    message); ``except SchemaError`` still catches them."""
    served = tm._served(SchemaError("input column 'x1' row 1: expected a number, got 'p'"))
    assert isinstance(served, SchemaError) and isinstance(served, mlflow.exceptions.MlflowException)
    assert served.get_http_status_code() == 400
    assert str(served.message) == "input column 'x1' row 1: expected a number, got 'p'"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_mlflow_models_serve(store, classifier, frame) -> None:
    """`mlflow models serve --env-manager local` of a logged model answers POST /invocations as the model does."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "mlflow").exists() or shutil.which("uvicorn", path=str(bin_dir)) is None:
        pytest.skip("the mlflow and uvicorn commands are not installed beside this Python")
    with mlflow.start_run():
        info = tm.log_model(classifier, name="model", study=False)
    port = _free_port()
    # the scoring server is started as `uvicorn ...` through bash: it must be on PATH
    env = dict(os.environ, **QUIET, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    server = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", info.model_uri, "--env-manager",
                               "local", "--host", "127.0.0.1", "-p", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow models serve did not start: {server.stderr.read().decode()[-2000:]}")
                time.sleep(0.2)
        x = features(frame).head(5)
        url = f"http://127.0.0.1:{port}/invocations"
        status, body = _post(url, {"dataframe_split": x.to_dict(orient="split", index=False)})
        assert status == 200 and body["predictions"] == list(classifier.predict(x))
        status, body = _post(url, {"dataframe_records": x.to_dict(orient="records"),
                                   "params": {"predict_method": "predict_proba"}})
        assert status == 200
        np.testing.assert_allclose([[row["no"], row["yes"]] for row in body["predictions"]],
                                   classifier.predict_proba(x), rtol=1e-5)
        status, body = _post(url, {"dataframe_records": [{"x1": "abc", "x2": 1.0, "color": "red"}]})
        assert status == 400 and "expected a number" in body["message"]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=20)
