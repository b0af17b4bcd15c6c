"""Infer what each column is (numeric, boolean, categorical, datetime, text, id-like) and the task.

The schema itself (``tandem.schema``) is stored in the bundle's manifest.
"""

from __future__ import annotations

import difflib
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tandem.errors import TargetError
from tandem.schema import TASKS, ColumnSpec, Schema, categorical_strings, category_key

# A categorical column keeps at most this many categories; rarer ones map to "unknown".
MAX_CATEGORIES = 255
_TRUE = {"true", "yes", "y", "t"}
_FALSE = {"false", "no", "n", "f"}
TEXT_NOTE = "free text: read as TF-IDF features (words and word pairs)"
_ID_NAME = re.compile(r"(^|[_\s.-])(id|uuid|guid|key|index)$|^(id|uuid|guid|index)([_\s.-]|$)", re.I)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


def _bool_strings(values: list[str]) -> bool:
    lowered = {v.strip().lower() for v in values}
    return bool(lowered) and lowered <= (_TRUE | _FALSE) and bool(lowered & _TRUE) and bool(lowered & _FALSE)


def _looks_datetime(values: list[str]) -> bool:
    sample = values[:200]
    return bool(sample) and all(_ISO_DATE.match(v.strip()) for v in sample)


IMAGE_SIDES = (16, 64)  # the side images are resized to: their median, within these bounds


def _image_side(values: pa.ChunkedArray) -> int:
    """The median side of a sample of the images (the larger of width and height), within IMAGE_SIDES."""
    import io

    from PIL import Image, UnidentifiedImageError

    sides = []
    for raw in values.slice(0, 200).to_pylist():
        try:
            with Image.open(io.BytesIO(raw)) as img:
                sides.append(max(img.size))
        except (OSError, UnidentifiedImageError):
            continue
    side = int(np.median(sides)) if sides else 32
    return int(min(max(4 * round(side / 4), IMAGE_SIDES[0]), IMAGE_SIDES[1]))


def _infer_column(name: str, arr: pa.ChunkedArray, n_rows: int) -> ColumnSpec:
    missing = arr.null_count
    t = arr.type
    spec = ColumnSpec(name=name, kind="numeric", nullable=missing > 0, missing=missing)
    if pa.types.is_floating(t):
        nan_count = int(pc.sum(pc.is_nan(arr)).as_py() or 0)
        spec.missing += nan_count
        spec.nullable = spec.missing > 0
    if arr.null_count == len(arr):
        spec.kind, spec.note = "id", "all values missing: ignored"
        return spec
    if pa.types.is_boolean(t):
        spec.kind = "boolean"
        return spec
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        spec.kind = "datetime"
        return spec
    non_null = pc.drop_null(arr)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        spec.kind, spec.size = "image", _image_side(non_null)
        spec.note = f"images, resized to {spec.size} x {spec.size} pixels for the model"
        return spec
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        mm = pc.min_max(pc.cast(arr, pa.float64()))
        spec.min, spec.max = mm["min"].as_py(), mm["max"].as_py()
        # only an integer column's distinct values are needed (for the id test): a wide float table skips the hash
        if pa.types.is_integer(t) and n_rows >= 20 and len(pc.unique(non_null)) == n_rows:
            values = np.sort(non_null.to_numpy())
            steps_of_one = bool(np.all(np.diff(values) == 1))
            if steps_of_one or _ID_NAME.search(name):
                spec.kind, spec.note = "id", "unique per row (id-like): excluded from features"
                return spec
        # numbers that were only 0 and 1 in training stay numbers (same encoding), so a 2 later is not an error
        return spec
    # strings (or anything else, read as strings)
    n_unique = len(pc.unique(non_null))
    strings = [category_key(v) for v in pc.unique(non_null).to_pylist()]
    if _bool_strings(strings):
        spec.kind = "boolean"
        return spec
    if _looks_datetime(strings):
        spec.kind = "datetime"
        return spec
    mean_words = float(np.mean([len(s.split()) for s in strings[:2000]]))
    if n_unique == n_rows and n_rows >= 20:
        if mean_words >= 4:
            spec.kind, spec.note = "text", TEXT_NOTE
        else:
            spec.kind, spec.note = "id", "unique per row (id-like): excluded from features"
        return spec
    if mean_words >= 4 and n_unique > max(50, n_rows // 10):
        spec.kind, spec.note = "text", TEXT_NOTE
        return spec
    spec.kind = "categorical"
    values = categorical_strings(arr)
    uniq, freq = np.unique(values[values != ""], return_counts=True)
    order = np.lexsort((uniq, -freq))
    cats = [str(uniq[i]) for i in order]
    if len(cats) > MAX_CATEGORIES:
        spec.note = f"{len(cats)} categories: the {MAX_CATEGORIES} most frequent kept, the rest map to unknown"
        cats = cats[:MAX_CATEGORIES]
    spec.categories = cats
    return spec


def infer_schema(table: pa.Table, target: str | None = None, *, ignore: list[str] | None = None) -> Schema:
    """Infer a :class:`Schema` from a training table; the target column is described separately."""
    ignore = set(ignore or [])
    cols = []
    notes = []
    for name in table.column_names:
        if name == target:
            continue
        if name in ignore:
            cols.append(ColumnSpec(name=name, kind="id", note="ignored on request"))
            continue
        spec = _infer_column(name, table.column(name), table.num_rows)
        if spec.note:
            notes.append(f"column '{name}': {spec.note}")
        cols.append(spec)
    if not any(c.is_feature for c in cols):
        raise TargetError(f"no usable feature columns besides target '{target}': "
                          f"columns are {', '.join(table.column_names)}")
    return Schema(columns=cols, target=target, notes=notes)


def check_column(table: pa.Table, name: str, role: str, *, what: str = "training data") -> pa.ChunkedArray:
    """Return column ``name``, or raise a TargetError that names its ``role`` and suggests the closest names."""
    if name not in table.column_names:
        close = difflib.get_close_matches(name, table.column_names, n=3, cutoff=0.5)
        lowered = [c for c in table.column_names if c.lower() == name.lower()]
        suggestions = list(dict.fromkeys(lowered + close))
        hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else (
            f"; columns are {', '.join(table.column_names[:20])}")
        raise TargetError(f"{role} '{name}' not found in {what}{hint}")
    return table.column(name)


def check_target(table: pa.Table, target: str, *, what: str = "training data") -> pa.ChunkedArray:
    """Return the target column, or raise a TargetError that suggests the closest column names."""
    col = check_column(table, target, "target column", what=what)
    if pa.types.is_floating(col.type):
        col = pc.if_else(pc.is_nan(col), None, col)
    if col.null_count == len(col):
        raise TargetError(f"target column '{target}' is empty: every value is missing")
    return col


def infer_task(target: pa.ChunkedArray, name: str, task: str | None = None) -> tuple[str, list[str] | None]:
    """Infer binary / multiclass / regression from the target values; return (task, labels)."""
    if task is not None and task not in TASKS:
        raise TargetError(f"task '{task}' is not one of {', '.join(TASKS)}")
    non_null = pc.drop_null(target)
    t = non_null.type
    uniq = pc.unique(non_null)
    n_unique = len(uniq)
    numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
    if task is None:
        if numeric and not pa.types.is_integer(t):
            values = non_null.to_numpy(zero_copy_only=False)
            integral = bool(np.all(np.mod(values, 1) == 0))
            task = "regression" if not integral or n_unique > 20 else None
        elif numeric and n_unique > 20:
            task = "regression"
        if task is None:
            task = "binary" if n_unique == 2 else "multiclass"
    if task == "regression":
        if not numeric:
            raise TargetError(f"target column '{name}' has non-numeric values; regression needs numbers")
        if n_unique < 2:
            raise TargetError(f"target column '{name}' has a single value; nothing to learn")
        return task, None
    if n_unique < 2:
        only = category_key(uniq[0].as_py())
        raise TargetError(f"target column '{name}' has one class ('{only}'); classification needs at least two")
    labels = sorted({category_key(v) for v in uniq.to_pylist()}, key=_label_sort_key)
    if task == "binary" and len(labels) != 2:
        raise TargetError(f"target column '{name}' has {len(labels)} classes; binary needs exactly two")
    if task == "multiclass" and len(labels) > 1000:
        raise TargetError(f"target column '{name}' has {len(labels)} classes; at most 1000 are supported")
    return task, labels


def _label_sort_key(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)
