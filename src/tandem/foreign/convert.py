"""From what the user gives (a live object or a file) to one ONNX graph: which framework, read safely.

Files that would run code when loaded (pickles, joblib, pickled torch files, TorchScript, legacy Keras ``.h5``)
are refused in one line that names the safe alternatives; nothing here ever unpickles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from tandem.errors import ConfigError
from tandem.foreign.source import Converted

FRAMEWORKS = ("auto", "onnx", "pytorch", "tensorflow", "keras", "sklearn", "lightgbm", "xgboost")
SAFE_FORMATS = ("ONNX (.onnx), a torch.export program (.pt2), safetensors with the module given in Python, "
                "Keras v3 (.keras), a TensorFlow SavedModel folder, skops (.skops), a LightGBM text model, "
                "an XGBoost JSON/UBJSON model")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt", ".bin", ".sav", ".dill", ".cloudpkl")
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def detect(source: object) -> str:
    """The framework of a live model or a model file (a ConfigError when it cannot be told, or is unsafe)."""
    if isinstance(source, (str, os.PathLike)):
        return _detect_file(Path(source))
    kind = type(source)
    module = kind.__module__
    mro = {f"{k.__module__}.{k.__name__}" for k in kind.__mro__}
    if any(m.startswith("torch.") for m in mro):
        return "pytorch"
    if any(m.startswith(("keras.", "tf_keras.")) for m in mro):
        return "keras"
    if module.startswith("lightgbm"):
        return "lightgbm"
    if module.startswith("xgboost"):
        return "xgboost"
    if any(m.startswith("sklearn.") for m in mro) or hasattr(source, "fit") and hasattr(source, "predict"):
        return "sklearn"
    if type(source).__name__ == "ModelProto":
        return "onnx"
    raise ConfigError(f"tandem cannot import a {kind.__name__} ({module}): expected a torch.nn.Module, a keras.Model, "
                      "a scikit-learn estimator, a LightGBM or XGBoost booster, an onnx.ModelProto, or a file: "
                      + SAFE_FORMATS)


def _refuse_unsafe(path: Path) -> None:
    """Refuse a missing file, a pickle (by name or first bytes) and a legacy Keras HDF5 file, unread."""
    if not path.exists():
        raise ConfigError(f"model '{path}' not found")
    if path.is_dir():
        return
    if path.suffix.lower() in PICKLE_SUFFIXES or _is_pickle(path):
        raise ConfigError(f"'{path}' is a pickle (or a pickled torch file), which runs code when loaded: tandem "
                          f"never unpickles a model file; save it as {SAFE_FORMATS}")
    if path.suffix.lower() in (".h5", ".hdf5"):
        raise ConfigError(f"'{path}' is a legacy Keras HDF5 file, which can carry code: save it as a Keras v3 "
                          "'.keras' file (loaded in safe mode) or a SavedModel")


def _detect_file(path: Path) -> str:
    _refuse_unsafe(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "tensorflow"
        raise ConfigError(f"'{path}' is a folder without saved_model.pb: expected a TensorFlow SavedModel or a "
                          "model file")
    known = {".onnx": "onnx", ".pt2": "pytorch", ".keras": "keras", ".skops": "sklearn", ".safetensors": "pytorch",
             ".ubj": "xgboost"}
    if suffix in known:
        return known[suffix]
    head = _head(path, 4096)
    if head.lstrip().startswith(b"tree\n") or b"\nversion=v" in head[:200]:
        return "lightgbm"
    if suffix == ".json" and b'"learner"' in head:
        return "xgboost"
    raise ConfigError(f"cannot tell the framework of '{path}' from its name or first bytes: give --framework, "
                      f"and the model as {SAFE_FORMATS}")


def _head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _is_pickle(path: Path) -> bool:
    head = _head(path, 64)
    if head[:2] in _PICKLE_MAGIC:
        return True
    if head.startswith(b"PK\x03\x04"):  # a zip: torch.save files (data.pkl inside) and TorchScript are pickles
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:
                return any(n.endswith((".pkl", "constants.pkl")) for n in z.namelist())
        except zipfile.BadZipFile:
            return False
    return False


def convert(source: object, framework: str, sample: pa.Table | dict[str, np.ndarray] | None, *,
            module: object | None = None, output: str | None = None,
            example: dict[str, np.ndarray] | None = None) -> Converted:
    """``source`` as a :class:`Converted` graph. ``sample`` gives a scikit-learn model its column types;
    ``example`` gives a torch module its example inputs (else the sample's arrays); ``module`` is the
    architecture for a safetensors file. A file is refused unread when it is a pickle, whatever ``framework``."""
    if framework not in FRAMEWORKS:
        raise ConfigError(f"framework '{framework}' is not one of {', '.join(FRAMEWORKS)}")
    path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    if path is not None and framework != "auto":  # the file's name may not tell; its first bytes still may refuse
        _refuse_unsafe(path)
        found = framework
    else:
        found = detect(source)
    if framework not in ("auto", found) and not (framework == "tensorflow" and found == "keras"):
        raise ConfigError(f"--framework {framework} does not fit the model given, which is {found}")
    if found == "onnx":
        from tandem.foreign.onnx_files import onnx_converted, read_onnx

        return onnx_converted(read_onnx(path) if path is not None else source, output)
    if found == "pytorch":
        return _torch(source, path, example or _arrays_example(sample), module)
    if found in ("keras", "tensorflow"):
        from tandem.foreign import tensorflow_models as tf_models

        if path is not None and path.is_dir():
            return tf_models.savedmodel_converted(path)
        return tf_models.keras_converted(tf_models.read_keras(path) if path is not None else source)
    if found == "sklearn":
        from tandem.foreign.sklearn_models import read_skops, sklearn_converted

        estimator = read_skops(path) if path is not None else source
        return sklearn_converted(estimator, sample if isinstance(sample, pa.Table) else None)
    from tandem.foreign import boosters

    if found == "lightgbm":
        if path is not None:
            return boosters.lightgbm_converted(boosters.read_lightgbm(path))
        booster, labels = boosters.booster_of(source)
        converted = boosters.lightgbm_converted(booster)
    else:
        if path is not None:
            return boosters.xgboost_converted(boosters.read_xgboost(path))
        booster, labels = boosters.booster_of(source)
        converted = boosters.xgboost_converted(booster)
    converted.labels = labels or converted.labels
    return converted


def _torch(source: object, path: Path | None, example: dict[str, np.ndarray] | None,
           module: object | None) -> Converted:
    from tandem.foreign import torch_models

    notes = []
    if path is not None and path.suffix.lower() == ".safetensors":
        source = torch_models.load_safetensors(module, path)
        notes.append(f"weights read from '{path.name}' (safetensors) into the given module")
        path = None
    saved = None
    if path is not None:
        source, saved = torch_models.read_exported(path)
        notes.append(f"a torch.export program read from '{path.name}' with weights only")
    if (example or saved) is None:
        raise ConfigError("a PyTorch model's input shapes cannot be known without --sample rows (a table, or "
                          "arrays: .npy/.npz, one per input)")
    converted = torch_models.torch_converted(source, example or saved, notes=notes)
    if example is None:
        converted.example = saved
    return converted


def _arrays_example(sample: object) -> dict[str, np.ndarray] | None:
    """A sample of arrays as a torch module's example inputs (one unnamed array is ``input``)."""
    if not isinstance(sample, dict):
        return None
    return {("input" if k == "" else k): v for k, v in sample.items()}


def example_from_table(table: pa.Table, columns: list[str]) -> dict[str, np.ndarray]:
    """The feature columns of a table as one float32 matrix ``input`` (a torch model of table columns)."""
    import pyarrow.compute as pc

    try:
        matrix = np.column_stack([pc.cast(table.column(c), pa.float64()).to_numpy(zero_copy_only=False)
                                  for c in columns]).astype(np.float32)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConfigError(f"a PyTorch model of table columns reads numbers only: {exc}") from None
    return {"input": matrix}
