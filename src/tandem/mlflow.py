"""MLflow models of tandem bundles: the ``tandem`` flavor and the ``pyfunc`` flavor over it.

The module has the shape of MLflow's built-in flavors (``mlflow.sklearn`` and the others)::

    import tandem, tandem.mlflow, mlflow

    model = tandem.train("churn.csv", "churned", time_limit=60)
    with mlflow.start_run():
        info = tandem.mlflow.log_model(model, name="model")   # the model, and the study as run data
    mlflow.pyfunc.load_model(info.model_uri).predict(frame)   # labels or values, as model.predict(frame)
    tandem.mlflow.load_model(info.model_uri)                  # a tandem Model, every hash verified

An MLflow model directory holds the bundle as it is (``bundle/``, its manifest listing the sha256 of every
file), the MLmodel file and the environment files. Nothing is pickled: loading (by either flavor) is
:func:`tandem.load`'s, which verifies every hash, and ``pyfunc`` names this module as its loader
(``loader_module: tandem.mlflow``): loading runs tandem's installed code, never code the model carries.

:func:`log_study` logs what the study found to a run: params, metrics (validation scores, energy and CO2),
the leaderboard and the HTML report; :func:`log_model` calls it when it logs into a run.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import Model as MlflowModel
from mlflow.models import ModelSignature
from mlflow.models.model import MLMODEL_FILE_NAME, ModelInfo
from mlflow.models.utils import _save_example
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import AnyType
from mlflow.utils.environment import (
    _CONDA_ENV_FILE_NAME,
    _CONSTRAINTS_FILE_NAME,
    _PYTHON_ENV_FILE_NAME,
    _REQUIREMENTS_FILE_NAME,
    _mlflow_conda_env,
    _process_pip_requirements,
    _PythonEnv,
    _validate_env_arguments,
)
from mlflow.utils.file_utils import get_total_file_size, write_to
from mlflow.utils.model_utils import _validate_and_prepare_target_save_path
from mlflow.utils.requirements_utils import _get_pinned_requirement

from tandem.api import Model, load
from tandem.bundle.files import MANIFEST_FILE, MODEL_FILE, REPORT_FILE
from tandem.bundle.format import read_manifest
from tandem.errors import BundleError, ConfigError, TandemError

if TYPE_CHECKING:
    import pandas as pd

FLAVOR_NAME = "tandem"
#: The bundle's folder inside an MLflow model directory (the pyfunc flavor's ``data``).
BUNDLE_SUBPATH = "bundle"
#: The pyfunc's inference parameter: ``predict`` (labels or values) or ``predict_proba`` (a frame of
#: probabilities, one column per label).
PREDICT_METHODS = ("predict", "predict_proba")
#: Where :func:`log_study` puts its artifacts in the run, by default.
STUDY_ARTIFACT_PATH = "tandem"
#: The run tag that names the study a run holds (its bundle's manifest checksum).
STUDY_TAG = "tandem.manifest_sha256"
# MLflow's names of params and metrics: letters, digits, _ - . space / :
_UNSAFE_KEY = re.compile(r"[^\w.\- /:]")
_MAX_PARAM_CHARS = 6000
# the MLflow type of a prediction, by the manifest's label_type
_LABEL_TYPES = {"string": "string", "int": "long", "float": "double", "bool": "boolean"}
_PARAMS = ParamSchema([ParamSpec("predict_method", "string", "predict")])


# -- saving --------------------------------------------------------------------------------------
def save_model(model: object, path: str | os.PathLike, *, mlflow_model: MlflowModel | None = None,
               signature: ModelSignature | bool | None = None, input_example: Any = None,
               pip_requirements: list[str] | str | None = None,
               extra_pip_requirements: list[str] | str | None = None, metadata: dict | None = None,
               home: str | Path | None = None) -> None:
    """Save ``model`` as an MLflow model in the new (or empty) directory ``path``.

    ``model`` is a fitted tandem estimator (``tandem.sklearn``), a :class:`tandem.api.Model`, or a bundle
    reference as :func:`tandem.load` takes it (a registry reference ``name``, ``name:3``, ``name@alias`` in
    the registry under ``home``, or a bundle folder). The bundle is copied to ``path/bundle`` and checked
    there; the MLmodel file gets a ``tandem`` flavor (tandem version, bundle subpath, task, registry name and
    version, manifest checksum) and a ``pyfunc`` flavor loaded by this module.

    Without ``signature``, one is made from the bundle's schema: every feature column by name, of MLflow
    type ``any`` (tandem checks the values itself, and takes more than MLflow's types would: whole numbers
    for a numeric column, numbers for a categorical one, date strings for a datetime), the prediction's
    type, and the ``predict_method`` parameter. ``signature=False`` saves none (then the pyfunc takes no
    parameters). A given signature without parameters gets ``predict_method`` added. ``input_example`` is
    saved beside the model. ``pip_requirements`` replaces and ``extra_pip_requirements`` extends
    :func:`get_default_pip_requirements`. ``metadata`` goes into the MLmodel file.
    """
    _validate_env_arguments(None, pip_requirements, extra_pip_requirements)
    tandem_model = _as_model(model, home)
    path = os.fspath(path)
    _validate_and_prepare_target_save_path(path)
    try:
        _write_model_dir(tandem_model, Path(path), mlflow_model=mlflow_model, signature=signature,
                         input_example=input_example, pip_requirements=pip_requirements,
                         extra_pip_requirements=extra_pip_requirements, metadata=metadata)
    except BaseException:
        # a half-written folder would make the next try fail with 'already exists'
        for child in Path(path).iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        raise


def _write_model_dir(tandem_model: Model, path: Path, *, mlflow_model: MlflowModel | None,
                     signature: ModelSignature | bool | None, input_example: Any,
                     pip_requirements: list[str] | str | None, extra_pip_requirements: list[str] | str | None,
                     metadata: dict | None) -> None:
    """The MLflow model directory's files, in the empty folder ``path`` (see :func:`save_model`)."""
    bundle = path / BUNDLE_SUBPATH
    shutil.copytree(tandem_model.path, bundle)
    copied = read_manifest(bundle, verify=True)  # what is saved is what the caller holds, byte for byte
    if copied.get("manifest_sha256") != tandem_model.manifest.get("manifest_sha256"):
        raise BundleError(f"bundle '{tandem_model.path}' changed while it was copied to '{bundle}'")

    if mlflow_model is None:
        mlflow_model = MlflowModel()
    _save_example(mlflow_model, input_example, str(path))
    if signature is None:
        signature = infer_signature(tandem_model)
    elif signature is False:
        signature = None
    elif isinstance(signature, ModelSignature) and signature.params is None:
        signature = ModelSignature(signature.inputs, signature.outputs, _PARAMS)
    if signature is not None:
        mlflow_model.signature = signature
    if metadata is not None:
        mlflow_model.metadata = metadata

    manifest = tandem_model.manifest
    mlflow.pyfunc.add_to_model(mlflow_model, loader_module=__name__, data=BUNDLE_SUBPATH,
                               conda_env=_CONDA_ENV_FILE_NAME, python_env=_PYTHON_ENV_FILE_NAME)
    mlflow_model.add_flavor(FLAVOR_NAME, tandem_version=_tandem_version(), bundle=BUNDLE_SUBPATH,
                            task=manifest["task"], registry_name=manifest.get("name"),
                            registry_version=manifest.get("version"),
                            manifest_sha256=manifest.get("manifest_sha256"),
                            format_version=manifest.get("format_version"))
    if size := get_total_file_size(path):
        mlflow_model.model_size_bytes = size
    mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))

    conda_env, pip_requirements, pip_constraints = _process_pip_requirements(
        get_default_pip_requirements() if pip_requirements is None else None,
        pip_requirements, extra_pip_requirements)
    with open(os.path.join(path, _CONDA_ENV_FILE_NAME), "w") as f:
        yaml.safe_dump(conda_env, stream=f, default_flow_style=False)
    if pip_constraints:
        write_to(os.path.join(path, _CONSTRAINTS_FILE_NAME), "\n".join(pip_constraints))
    write_to(os.path.join(path, _REQUIREMENTS_FILE_NAME), "\n".join(pip_requirements))
    _PythonEnv.current().to_yaml(os.path.join(path, _PYTHON_ENV_FILE_NAME))


def log_model(model: object, artifact_path: str | None = None, *, name: str | None = None,
              signature: ModelSignature | bool | None = None, input_example: Any = None,
              pip_requirements: list[str] | str | None = None,
              extra_pip_requirements: list[str] | str | None = None, metadata: dict | None = None,
              registered_model_name: str | None = None, params: dict[str, Any] | None = None,
              tags: dict[str, Any] | None = None, study: bool = True, home: str | Path | None = None,
              **kwargs: Any) -> ModelInfo:
    """Log ``model`` as an MLflow model (see :func:`save_model` for ``model`` and the options), and return
    MLflow's :class:`~mlflow.models.model.ModelInfo` (``info.model_uri`` loads it back).

    When it logs into a run (the active one, or ``run_id=`` passed through to MLflow), the study goes to
    that run first, with :func:`log_study`, unless ``study`` is false; its params and metrics are then the
    logged model's too. ``name`` (``artifact_path`` is MLflow's deprecated spelling), ``registered_model_name``
    (also registers it as a version of that registered model), ``params``, ``tags`` and the other keyword
    arguments (``model_type``, ``step``, ``model_id``, ``run_id``, ``await_registration_for``...) are
    MLflow's own, passed to :meth:`mlflow.models.Model.log`.
    """
    tandem_model = _as_model(model, home)
    run_id = kwargs.get("run_id") or ((run := mlflow.active_run()) and run.info.run_id)
    if study and run_id:
        log_study(tandem_model, run_id=run_id)
    return MlflowModel.log(artifact_path=artifact_path, name=name, flavor=sys.modules[__name__],
                           model=tandem_model, signature=signature, input_example=input_example,
                           pip_requirements=pip_requirements, extra_pip_requirements=extra_pip_requirements,
                           metadata=metadata, registered_model_name=registered_model_name, params=params,
                           tags=tags, **kwargs)


def get_default_pip_requirements() -> list[str]:
    """What a model of this flavor needs to load and predict: tandem (its base install: a bundle needs
    nothing more at inference), pandas (the pyfunc's frames) and the MLflow package installed here
    (``mlflow-skinny`` when only that is; MLflow pins its own ``mlflow`` otherwise)."""
    requirements = [_get_pinned_requirement("tandem"), _get_pinned_requirement("pandas")]
    if not _installed("mlflow") and _installed("mlflow-skinny"):
        requirements.insert(0, _get_pinned_requirement("mlflow-skinny", module="mlflow"))
    return requirements


def get_default_conda_env() -> dict:
    """The conda environment of :func:`get_default_pip_requirements`."""
    return _mlflow_conda_env(additional_pip_deps=get_default_pip_requirements(), install_mlflow=False)


def infer_signature(model: object, *, home: str | Path | None = None) -> ModelSignature | None:
    """The MLflow signature :func:`save_model` gives ``model`` (see there); None for a recommender, whose
    pyfunc does not predict."""
    manifest = _as_model(model, home).manifest
    if manifest["task"] not in ("binary", "multiclass", "regression"):
        return None
    # tandem's own checks are looser than MLflow's types and say more: a double column refuses int64
    # frames, a string one refuses numbers and pandas categoricals, a datetime one refuses date strings
    inputs = Schema([ColSpec(AnyType(), c["name"]) for c in manifest["schema"]["columns"]
                     if c["kind"] != "id"])
    label_type = "double" if manifest["task"] == "regression" else _LABEL_TYPES[manifest.get("label_type",
                                                                                            "string")]
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec(label_type)]), params=_PARAMS)


# -- loading -------------------------------------------------------------------------------------
def load_model(model_uri: str, dst_path: str | None = None) -> Model:
    """The :class:`tandem.api.Model` of the MLflow model at ``model_uri`` (``runs:/<run>/<name>``,
    ``models:/<id or name>/<version>``, a local folder, any artifact URI MLflow reads), downloaded to
    ``dst_path`` (an existing folder; default a temporary one) and loaded with every hash verified."""
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dst_path)
    return _load_bundle(Path(local))


def _load_pyfunc(path: str) -> TandemPyfunc:
    """MLflow's pyfunc loader (``loader_module: tandem.mlflow``): ``path`` is the model's bundle folder."""
    bundle = Path(path)
    if (bundle.parent / MLMODEL_FILE_NAME).is_file():
        return TandemPyfunc(_load_bundle(bundle.parent))
    return TandemPyfunc(Model(bundle))


def _load_bundle(model_dir: Path) -> Model:
    """The bundle of the MLflow model in ``model_dir``, loaded; it must be the bundle that was saved."""
    conf = MlflowModel.load(model_dir / MLMODEL_FILE_NAME).flavors.get(FLAVOR_NAME)
    if conf is None:
        raise BundleError(f"MLflow model '{model_dir}' has no '{FLAVOR_NAME}' flavor: it was not saved by "
                          "tandem.mlflow")
    bundle = model_dir / conf.get("bundle", BUNDLE_SUBPATH)
    model = Model(bundle)
    expected = conf.get("manifest_sha256")
    if expected and model.manifest.get("manifest_sha256") != expected:
        raise BundleError(f"bundle '{bundle}' is not the one this MLflow model was saved with: its manifest_sha256 "
                          f"is {model.manifest.get('manifest_sha256')}, the MLmodel file says {expected}")
    return model


class TandemPyfunc:
    """The pyfunc flavor's model: :meth:`predict` answers as :meth:`tandem.api.Model.predict` does."""

    def __init__(self, model: Model):
        self.model = model

    def get_raw_model(self) -> Model:
        """The :class:`tandem.api.Model` behind it."""
        return self.model

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray | pd.DataFrame:
        """Labels (classification) or values (regression) for every row of ``model_input`` (a pandas frame,
        a dict of columns or one row, a list of rows, an Arrow table); with ``params={"predict_method":
        "predict_proba"}``, class probabilities as a pandas frame with one column per label (the label as
        text, in the order of ``model.labels``).

        It answers as the :class:`~tandem.inference.predictor.Predictor` does, which takes data and never a
        file name: a served model reads no file of the server's that a request names."""
        predictor = self.model.predictor
        try:
            method = (params or {}).get("predict_method") or "predict"
            if method == "predict":
                return predictor.predict(model_input)
            if method == "predict_proba":
                import pandas as pd

                return pd.DataFrame(predictor.predict_proba(model_input), columns=list(predictor.labels))
            raise ConfigError(f"predict_method {method!r} is not one of {', '.join(PREDICT_METHODS)}")
        except TandemError as exc:
            raise _served(exc) from exc


def _served(exc: TandemError) -> TandemError:
    """``exc`` as an instance of a subclass of both its class and MlflowException: ``except SchemaError`` still
    catches it, and MLflow's scoring server answers 400 with its one-line message (not 'unexpected error' and a
    stack trace)."""
    cls = _SERVED.get(type(exc))
    if cls is None:
        cls = _SERVED[type(exc)] = type(type(exc).__name__, (type(exc), MlflowException),
                                        {"__module__": type(exc).__module__})
    return cls(str(exc), error_code=INVALID_PARAMETER_VALUE)


_SERVED: dict[type, type] = {}


# -- the study as run data -----------------------------------------------------------------------
def log_study(model: object, *, run_id: str | None = None, artifact_path: str = STUDY_ARTIFACT_PATH,
              home: str | Path | None = None) -> str:
    """Log what the study behind ``model`` found to an MLflow run, and return the run's id.

    The run is ``run_id``, else the active run, else a new one (left active, as ``mlflow.log_param`` does).
    ``model`` is what :func:`save_model` takes. Logged:

    - params: ``task``, ``target``, ``metric``, ``model`` and ``family`` (the ensemble's members and their
      families, ``+``-joined), ``ensemble`` (members, weights and sizes as JSON), ``time_limit``, ``seed``,
      ``search``, ``validation_scheme``, ``rows``, ``columns``, ``threshold`` (binary), ``data_fingerprint``,
      ``source``, ``tandem_version`` (those the manifest has);
    - metrics: ``val_<metric>`` for every validation metric; ``train_seconds``, ``train_energy_kwh``,
      ``train_co2_kg``, ``inference_energy_kwh_per_1000``, ``inference_co2_kg_per_1000`` (the footprint
      ledger, when it was metered), ``predict_1row_us_p50``, ``parity_max_abs_diff``, ``onnx_bytes``,
      ``bundle_bytes``;
    - tags: ``tandem.name``, ``tandem.version``, ``tandem.manifest_sha256`` (the study's identity);
    - artifacts under ``artifact_path``: ``report.html``, ``leaderboard.json`` (a table: every model tried)
      and ``manifest.json``.

    A run that already holds this study is left as it is; one whose params say another study is refused
    (MLflow params never change) with a ConfigError: log each study in its own run.
    """
    tandem_model = _as_model(model, home)
    manifest = tandem_model.manifest
    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    if run_id is None:
        run_id = (mlflow.active_run() or mlflow.start_run()).info.run_id
    run = client.get_run(run_id)
    sha = manifest.get("manifest_sha256")
    if sha and run.data.tags.get(STUDY_TAG) == sha:
        return run_id
    params = study_params(manifest)
    clashes = [k for k, v in params.items() if k in run.data.params and run.data.params[k] != v]
    if clashes:
        shown = ", ".join(f"{k}={run.data.params[k]!r} (this study: {params[k]!r})" for k in clashes[:3])
        raise ConfigError(f"run {run_id} already holds another study's params ({shown}): log each tandem study "
                          "in its own run (or pass study=False to log_model)")
    tags = {"tandem.name": manifest.get("name"), "tandem.version": manifest.get("version"), STUDY_TAG: sha}
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in study_metrics(manifest).items()],
                     params=[Param(k, v) for k, v in params.items()],
                     tags=[RunTag(k, str(v)) for k, v in tags.items() if v is not None])
    for file in (REPORT_FILE, MANIFEST_FILE):
        if (tandem_model.path / file).is_file():
            client.log_artifact(run_id, str(tandem_model.path / file), artifact_path)
    if manifest.get("leaderboard"):
        import pandas as pd

        client.log_table(run_id, pd.DataFrame(manifest["leaderboard"]), f"{artifact_path}/leaderboard.json")
    return run_id


def study_params(manifest: dict) -> dict[str, str]:
    """The params :func:`log_study` logs, from a bundle's manifest (MLflow params are text)."""
    lineage = manifest.get("lineage") or {}
    ensemble = manifest.get("ensemble") or []
    members = [{k: v for k, v in m.items() if k not in ("native", "refit_on_all_rows")} for m in ensemble]
    families = list(dict.fromkeys(m.get("family") for m in ensemble if m.get("family")))
    schema = manifest.get("schema") or {}
    params = {
        "task": manifest.get("task"), "target": manifest.get("target"), "metric": manifest.get("metric"),
        "model": "+".join(m["model"] for m in ensemble if m.get("model")) or None,
        "family": "+".join(families) or None,
        "ensemble": json.dumps(members, separators=(",", ":")) if members else None,
        "time_limit": lineage.get("time_limit"), "seed": lineage.get("seed"), "search": lineage.get("search"),
        "validation_scheme": (manifest.get("metrics") or {}).get("validation_scheme"),
        "rows": lineage.get("rows"),
        "columns": len([c for c in schema.get("columns", []) if c.get("kind") != "id"]) or None,
        "threshold": manifest.get("threshold") if manifest.get("task") == "binary" else None,
        "data_fingerprint": lineage.get("data_fingerprint"), "source": manifest.get("source"),
        "tandem_version": (lineage.get("libraries") or {}).get("tandem"),
    }
    return {k: str(v)[:_MAX_PARAM_CHARS] for k, v in params.items() if v is not None}


def study_metrics(manifest: dict) -> dict[str, float]:
    """The metrics :func:`log_study` logs, from a bundle's manifest (finite numbers only)."""
    metrics: dict[str, object] = {}
    for name, value in ((manifest.get("metrics") or {}).get("validation") or {}).items():
        metrics[_metric_key(f"val_{name}")] = value
    footprint = manifest.get("footprint") or {}
    train = footprint.get("train") or {}
    inference = footprint.get("inference") or {}
    metrics.update({
        "train_seconds": train.get("seconds"), "train_energy_kwh": train.get("energy_kwh"),
        "train_co2_kg": train.get("co2_kg"),
        "inference_energy_kwh_per_1000": inference.get("energy_kwh_per_1000"),
        "inference_co2_kg_per_1000": inference.get("co2_kg_per_1000"),
        "predict_1row_us_p50": (manifest.get("latency") or {}).get("predict_1row_us_p50"),
        "parity_max_abs_diff": (manifest.get("parity") or {}).get("max_abs_diff"),
    })
    files = manifest.get("files") or {}
    if MODEL_FILE in files:
        metrics["onnx_bytes"] = files[MODEL_FILE].get("bytes")
    metrics["bundle_bytes"] = sum(f.get("bytes", 0) for f in files.values()) or None
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


# -- helpers -------------------------------------------------------------------------------------
def _as_model(model: object, home: str | Path | None) -> Model:
    """A loaded tandem Model from what the caller gave: a Model, a fitted estimator, a reference."""
    if isinstance(model, Model):
        return model
    fitted = getattr(model, "model_", None)
    if isinstance(fitted, Model):
        return fitted
    if isinstance(model, (str, os.PathLike)):
        return load(model, home=home)
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    if kind.startswith("tandem.") and hasattr(model, "fit"):
        raise ConfigError(f"{kind} is not fitted: call fit first, then log or save it")
    raise ConfigError(f"tandem.mlflow takes a fitted tandem estimator, a tandem Model (tandem.train or tandem.load) "
                      f"or a bundle reference (registry name or bundle folder); got {kind}")


def _metric_key(key: str) -> str:
    return _UNSAFE_KEY.sub("_", key.replace("@", "_at_"))


def _tandem_version() -> str:
    # the package root is loaded (this module is in it); the layering rules keep its import out of here
    return sys.modules["tandem"].__version__


def _installed(distribution: str) -> bool:
    try:
        importlib_metadata.version(distribution)
    except importlib_metadata.PackageNotFoundError:
        return False
    return True


__all__ = ["FLAVOR_NAME", "TandemPyfunc", "get_default_conda_env", "get_default_pip_requirements",
           "infer_signature", "load_model", "log_model", "log_study", "save_model", "study_metrics",
           "study_params"]
