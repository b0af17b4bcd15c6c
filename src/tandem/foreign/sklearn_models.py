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
        arrow = {n: sample.column(n).type for n in names}
        kinds = {n: "float" if pa.types.is_floating(t) else "int" if pa.types.is_integer(t) or pa.types.is_boolean(t)
                 else "str" for n, t in arrow.items()}
    else:
        width = getattr(estimator, "n_features_in_", None)
        if width is None:
            raise ConfigError("the scikit-learn model is not fitted (it has no n_features_in_)")
        kinds = {}
    classifier = hasattr(estimator, "classes_") and hasattr(estimator, "predict_proba")
    options = {id(estimator): {"zipmap": False}} if classifier else None
    # whole-number columns go in as floats (imputers and scalers take them so); a model that needs them as
    # integers (an encoder of int categories) gets a second try
    tries = [{"int": FloatTensorType}, {"int": Int64TensorType}] if "int" in kinds.values() else [{}]
    for i, wanted in enumerate(tries):
        if per_column:
            kind_type = {"float": FloatTensorType, "str": StringTensorType, **wanted}
            types = [(n, kind_type[kinds[n]]([None, 1])) for n in names]
        else:
            types = [("input", FloatTensorType([None, int(width)]))]
        try:
            graph = to_onnx(estimator, initial_types=types, options=options,
                            target_opset={"": OPSET, "ai.onnx.ml": 3})
            break
        except Exception as exc:  # skl2onnx raises many kinds: name the model and keep its words
            if i == len(tries) - 1:
                raise ConfigError(f"skl2onnx could not convert {type(estimator).__name__}: "
                                  f"{' '.join(str(exc).split())[:200]}") from None
    if per_column:
        _rename_inputs(graph, names)  # skl2onnx turns 'education-num' into 'education_num'
    missing_marker = _missing_category(estimator)
    if missing_marker is not _NO_MISSING:
        _missing_category_is_blank(graph)
    output = "probabilities" if classifier else graph.graph.output[0].name

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        if per_column:
            import pandas as pd

            frame = pd.DataFrame({n: _column(feeds[n], kinds[n], missing_marker) for n in names})
        else:
            frame = feeds["input"].astype(np.float64)
        return estimator.predict_proba(frame) if classifier else np.asarray(estimator.predict(frame)).reshape(-1, 1)

    labels = [category_key(c.item() if hasattr(c, "item") else c) for c in estimator.classes_] if classifier else None
    meaning = "probabilities" if classifier else "values"
    return Converted(graph, "sklearn", reference, output, meaning=meaning, labels=labels,
                     columns=names if per_column else None)


def _column(values: np.ndarray, kind: str, missing: object) -> np.ndarray:
    """A feed as the frame column the estimator was fitted on: text with its missing marker, whole numbers as
    integers when none is missing."""
    flat = values.reshape(-1)
    if kind == "str":
        blank = None if missing is _NO_MISSING else missing
        return np.array([blank if v == "" else v for v in flat], dtype=object)
    flat = flat.astype(np.float64)
    if kind == "int" and not np.isnan(flat).any():
        return flat.astype(np.int64)
    return flat


_NO_MISSING = object()


def _missing_category(estimator: object) -> object:
    """What an encoder inside ``estimator`` learnt a missing text as (NaN or None), else ``_NO_MISSING``."""
    found = _NO_MISSING
    for part in [estimator, *_parts(estimator)]:
        for categories in getattr(part, "categories_", None) or []:
            for value in np.asarray(categories, dtype=object):
                if value is None:
                    found = None
                elif isinstance(value, float) and value != value:
                    return np.nan
    return found


def _parts(estimator: object) -> list:
    try:
        params = estimator.get_params(deep=True)
    except Exception:  # not a scikit-learn estimator after all: nothing inside to look at
        return []
    fitted = [t for _, t, _ in getattr(estimator, "transformers_", [])]
    return [v for v in params.values() if hasattr(v, "get_params")] + fitted + [
        t for v in params.values() for _, t, _ in getattr(v, "transformers_", [])]


def _missing_category_is_blank(graph: object) -> None:
    """skl2onnx writes an encoder's missing category as the text 'nan' (or 'None'); tandem sends a missing text
    as ''. The category is renamed so that a missing value lands where scikit-learn puts it."""
    for node in graph.graph.node:
        for attr in node.attribute:
            if attr.name in ("cats_strings", "classes_strings", "keys_strings") and attr.strings:
                attr.strings[:] = [b"" if v in (b"nan", b"None") else v for v in attr.strings]


def _rename_inputs(graph: object, names: list[str]) -> None:
    """The graph's inputs named as the columns again (skl2onnx makes names identifiers), in the given order."""
    rename = {i.name: n for i, n in zip(graph.graph.input, names, strict=True) if i.name != n}
    if not rename:
        return
    for i in graph.graph.input:
        i.name = rename.get(i.name, i.name)
    for node in graph.graph.node:
        node.input[:] = [rename.get(t, t) for t in node.input]


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
