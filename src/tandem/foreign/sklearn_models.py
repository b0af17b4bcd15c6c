"""scikit-learn models in: a live estimator or ``Pipeline`` (ColumnTransformer, encoders, scalers, imputers,
linear models, forests...), or a skops file read with an allow-list, converted by ``skl2onnx``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from tandem.errors import ConfigError
from tandem.foreign.source import OPSET, Converted
from tandem.schema import category_key

#: Types a skops file may hold beyond scikit-learn's and numpy's own (everything else is refused unread).
SKOPS_BUILTINS = {"builtins.slice", "builtins.dict", "builtins.list", "builtins.tuple", "builtins.object"}


def sklearn_converted(estimator: object, sample: pa.Table | None) -> Converted:
    """``estimator`` as ONNX. Fitted on a frame (it has ``feature_names_in_``), the graph takes one input per
    column, typed from the ``sample`` (numbers as float32 or int64, text as strings); fitted on an array, one
    float32 matrix ``input`` [N, F]."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    names = getattr(estimator, "feature_names_in_", None)
    per_column = names is not None
    if per_column:
        names = [str(n) for n in names]
        if sample is None:
            raise ConfigError("the scikit-learn model was fitted on named columns: give --sample rows with them "
                              "so their types are known")
        missing = [n for n in names if n not in sample.column_names]
        if missing:
            raise ConfigError(f"the sample has no column(s) {', '.join(map(repr, missing))}, which the "
                              "scikit-learn model reads")
        types = []
        for n in names:
            t = sample.column(n).type
            if pa.types.is_floating(t):
                types.append((n, FloatTensorType([None, 1])))
            elif pa.types.is_integer(t) or pa.types.is_boolean(t):
                types.append((n, Int64TensorType([None, 1])))
            else:
                types.append((n, StringTensorType([None, 1])))
    else:
        width = getattr(estimator, "n_features_in_", None)
        if width is None:
            raise ConfigError("the scikit-learn model is not fitted (it has no n_features_in_)")
        types = [("input", FloatTensorType([None, int(width)]))]
    classifier = hasattr(estimator, "classes_") and hasattr(estimator, "predict_proba")
    options = {id(estimator): {"zipmap": False}} if classifier else None
    try:
        graph = to_onnx(estimator, initial_types=types, options=options,
                        target_opset={"": OPSET, "ai.onnx.ml": 3})
    except Exception as exc:  # skl2onnx raises many kinds: name the model and keep its words
        raise ConfigError(f"skl2onnx could not convert {type(estimator).__name__}: "
                          f"{' '.join(str(exc).split())[:200]}") from None
    output = "probabilities" if classifier else graph.graph.output[0].name
    kinds = {n: ("float" if isinstance(t, FloatTensorType) else "int" if isinstance(t, Int64TensorType) else "str")
             for n, t in types}

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        if per_column:
            import pandas as pd

            frame = pd.DataFrame({n: _column(feeds[n], kinds[n]) for n in names})
        else:
            frame = feeds["input"].astype(np.float64)
        return estimator.predict_proba(frame) if classifier else np.asarray(estimator.predict(frame)).reshape(-1, 1)

    labels = [category_key(c.item() if hasattr(c, "item") else c) for c in estimator.classes_] if classifier else None
    meaning = "probabilities" if classifier else "values"
    return Converted(graph, "sklearn", reference, output, meaning=meaning, labels=labels,
                     columns=names if per_column else None)


def _column(values: np.ndarray, kind: str) -> np.ndarray:
    flat = values.reshape(-1)
    if kind == "str":
        return np.array([None if v == "" else v for v in flat], dtype=object)
    return flat.astype(np.float64) if kind == "float" else flat


def label_type_of(estimator: object) -> str:
    """How a classifier's ``classes_`` read back: int, float, bool or string."""
    kind = np.asarray(estimator.classes_).dtype.kind
    return {"i": "int", "u": "int", "f": "float", "b": "bool"}.get(kind, "string")


def read_skops(path: Path) -> object:
    """A skops file, loaded only if every type in it is scikit-learn's, numpy's or a plain builtin."""
    try:
        import skops.io as sio
    except ImportError:
        raise ConfigError("reading a .skops file needs skops: pip install skops") from None
    try:
        untrusted = sio.get_untrusted_types(file=str(path))
    except Exception as exc:
        raise ConfigError(f"'{path}' is not a skops file ({' '.join(str(exc).split())[:200]})") from None
    refused = [t for t in untrusted
               if not (t.startswith(("sklearn.", "numpy.", "scipy.sparse.")) or t in SKOPS_BUILTINS)]
    if refused:
        raise ConfigError(f"'{path}' holds type(s) outside the allow-list (scikit-learn, numpy, scipy.sparse): "
                          f"{', '.join(refused[:5])}")
    return sio.load(str(path), trusted=untrusted)
