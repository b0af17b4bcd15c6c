"""The schema: the contract between the two lives of a model.

Training infers it (``tandem.data.infer``), the bundle stores it, and inference checks every
input against it. Plain JSON-able data; imports numpy (and pyarrow when a column is converted).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

#: A ``tensor`` column holds one array per row (an imported model's image, token ids or plain vector), of
#: the column's ``shape`` (per row; -1 = any length) and ``dtype``.
KINDS = ("numeric", "boolean", "categorical", "datetime", "text", "image", "tensor", "id")
TENSOR_DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
TASKS = ("binary", "multiclass", "regression")


@dataclass
class ColumnSpec:
    """One input column as seen in training."""

    name: str
    kind: str
    nullable: bool = False
    missing: int = 0
    categories: list[str] | None = None
    min: float | None = None
    max: float | None = None
    note: str | None = None
    size: int | None = None  # images: the side, in pixels, every image is resized to for the model
    shape: list[int] | None = None  # tensors: the dimensions of one row's array (-1 = any length)
    dtype: str | None = None  # tensors: one of TENSOR_DTYPES

    @property
    def is_feature(self) -> bool:
        return self.kind in ("numeric", "boolean", "categorical", "datetime", "text", "image", "tensor")


@dataclass
class Schema:
    """Every input column, the target and the task."""

    columns: list[ColumnSpec]
    target: str | None = None
    task: str | None = None
    labels: list[str] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def features(self) -> list[ColumnSpec]:
        return [c for c in self.columns if c.is_feature]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Schema:
        cols = [ColumnSpec(**c) for c in d["columns"]]
        return cls(columns=cols, target=d.get("target"), task=d.get("task"), labels=d.get("labels"),
                   notes=list(d.get("notes", [])))


def category_key(value: object) -> str:
    """The canonical string of a categorical value: 3, 3.0 and "3" are one category."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def categorical_strings(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Column values as canonical category strings (object array); nulls become ''."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_floating(t):
        vals = arr.to_numpy(zero_copy_only=False)
        return np.array(["" if v != v else category_key(float(v)) for v in vals], dtype=object)
    if pa.types.is_boolean(t):
        arr = pc.if_else(arr, "true", "false")
    elif not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        arr = pc.cast(arr, pa.string())
    return pc.fill_null(arr, "").to_numpy(zero_copy_only=False).astype(object)
