"""The rows an import is checked on, and the schema they give: a table for table models (columns, types,
categories, ranges), arrays for tensor models (one per graph input), or, for a tensor graph whose shapes are all
fixed, a few random rows drawn to its shapes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.compute as pc

from tandem.bundle.inputs import EncodedInputs, InputEncoder
from tandem.errors import ConfigError, DataError
from tandem.foreign.wrap import ELEM_TYPES, InputBinding, check_names
from tandem.schema import ColumnSpec, Schema, categorical_strings

RANDOM_ROWS = 8
MAX_CATEGORIES = 1000  # per categorical column, kept in the schema


@dataclass
class Bound:
    """A converted graph's inputs bound to a schema, with the sample rows in both forms."""

    schema: Schema
    bindings: list[InputBinding]
    tensor_specs: dict[str, tuple[int, list]]
    enc: EncodedInputs  # the rows as the bundle's Predictor encodes them
    feeds: dict[str, np.ndarray]  # the same rows as the converted graph's inputs
    table: pa.Table | None  # a table model's sample as read (its target column included), else None
    rows: str  # what the rows are, for the manifest


def read_sample(sample: object) -> pa.Table | dict[str, np.ndarray] | None:
    """A sample as a table (a file tandem reads, a frame, rows) or as arrays (``.npy``/``.npz`` files, read with
    ``allow_pickle=False``; a numpy array; a dict of arrays or tensors)."""
    if sample is None:
        return None
    if isinstance(sample, (str, os.PathLike)):
        path = Path(sample)
        if path.suffix.lower() in (".npy", ".npz"):
            try:
                loaded = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataError(f"sample '{path}' cannot be read as numpy arrays ({exc}); object arrays are never "
                                "unpickled") from None
            if isinstance(loaded, np.ndarray):
                return {"": loaded}
            with loaded:
                return {k: loaded[k] for k in loaded.files}
        from tandem.data.readers import read_table

        return read_table(path, what="sample")
    if isinstance(sample, np.ndarray):
        return {"": sample}
    if type(sample).__module__.startswith("torch"):
        return {"": sample.detach().cpu().numpy()}
    if isinstance(sample, dict) and sample and all(isinstance(v, np.ndarray) or type(v).__module__.startswith("torch")
                                                   for v in sample.values()):
        return {k: (v if isinstance(v, np.ndarray) else v.detach().cpu().numpy()) for k, v in sample.items()}
    from tandem.inference.predictor import Predictor

    return Predictor.as_table(sample)


def table_inputs(graph: onnx.ModelProto) -> bool:
    """Whether the graph takes table columns (text inputs, or several one-column inputs) rather than tensors."""
    ins = _inputs(graph)
    strings = any(i.type.tensor_type.elem_type == onnx.TensorProto.STRING for i in ins)
    columns = len(ins) > 1 and all(_dims(i)[1:] in ([1], []) for i in ins)
    return strings or columns


def feature_columns(table: pa.Table, target: str | None, columns: list[str] | None) -> list[str]:
    """The sample's feature columns: those the model names, else all but the target."""
    if target is not None and target not in table.column_names:
        raise DataError(f"sample has no target column '{target}' (columns: {', '.join(table.column_names[:20])})")
    if columns is not None:
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise DataError(f"sample is missing column(s) {', '.join(map(repr, missing))} that the model reads")
        return list(columns)
    return [c for c in table.column_names if c != target]


def bind_table(graph: onnx.ModelProto, table: pa.Table, target: str | None, columns: list[str] | None) -> Bound:
    """Bind a table model's inputs: one float matrix [N, F] (every feature numeric) or one input per column."""
    ins = _inputs(graph)
    names = feature_columns(table, target, columns)
    if len(ins) == 1 and _dims(ins[0])[1:] not in ([1], []) or len(ins) == 1 and len(names) == 1:
        only = ins[0]
        width = _dims(only)[1] if len(_dims(only)) == 2 else None
        if width not in (None, -1) and width != len(names):
            raise DataError(f"sample has {len(names)} feature column(s) ({_listed(names)}) but the model takes "
                            f"{width} numbers per row: name the target with --target, or give only its columns")
        specs = [_numeric_spec(table, n, "the model takes one matrix of numbers") for n in names]
        bindings = [InputBinding(only.name, "num", list(range(len(names))), only.type.tensor_type.elem_type,
                                 rank=len(_dims(only)))]
    else:
        by_name = {n: i for i, n in enumerate(names)}
        missing = [i.name for i in ins if i.name not in by_name]
        if missing:
            raise DataError(f"sample has no column(s) {', '.join(map(repr, missing))}: the model's inputs are "
                            f"{_listed([i.name for i in ins])}")
        specs, bindings, n_num, n_cat = [], [], 0, 0
        for i in ins:
            elem = i.type.tensor_type.elem_type
            if elem == onnx.TensorProto.STRING:
                specs.append(_categorical_spec(table, i.name))
                bindings.append(InputBinding(i.name, "cat", [n_cat], elem, rank=len(_dims(i))))
                n_cat += 1
            else:
                specs.append(_numeric_spec(table, i.name, f"model input '{i.name}' takes numbers"))
                bindings.append(InputBinding(i.name, "num", [n_num], elem, rank=len(_dims(i))))
                n_num += 1
    schema = Schema(columns=specs, target=target)
    enc = InputEncoder(schema).encode_table(table, what="sample")
    # the source framework reads the sample's own numbers (float64), the bundle graph tandem's float32: parity
    # then measures what a served row really gets
    exact = np.column_stack([pc.cast(table.column(c.name), pa.float64()).to_numpy(zero_copy_only=False)
                             for c in specs if c.kind == "numeric"]) if enc.num is not None else None
    feeds = {}
    for b in bindings:
        block = exact[:, b.columns].astype(np.float64) if b.source == "num" else enc.cat[:, b.columns]
        if b.rank == 1:
            block = block.reshape(-1)
        if b.source == "num" and np.dtype(_numpy_type(b.elem_type)).kind in "iub":
            block = block.astype(_numpy_type(b.elem_type))
        feeds[b.graph_input] = block
    return Bound(schema, bindings, {}, enc, feeds, table, f"{table.num_rows} sample rows")


def bind_tensors(graph: onnx.ModelProto, arrays: dict[str, np.ndarray] | None, what: str) -> Bound:
    """Bind a tensor model's inputs: one tensor column per graph input, its shape from the graph (a dimension
    the graph leaves free takes the sample's, or stays free: -1); rows from the sample or drawn at random."""
    ins = _inputs(graph)
    check_names([i.name for i in ins], what)
    if arrays is not None and list(arrays) == [""]:
        if len(ins) != 1:
            raise DataError(f"the sample is one array but the model has {len(ins)} inputs "
                            f"({_listed([i.name for i in ins])}): give one array per input name (.npz or a dict)")
        arrays = {ins[0].name: arrays[""]}
    if arrays is not None:
        unknown = [k for k in arrays if k not in {i.name for i in ins}]
        missing = [i.name for i in ins if i.name not in arrays]
        if unknown or missing:
            raise DataError(f"the sample's arrays ({_listed(list(arrays))}) do not match the model's inputs "
                            f"({_listed([i.name for i in ins])})")
    specs, tensors, bindings, tensor_specs = [], {}, [], {}
    rng = np.random.default_rng(0)
    for i in ins:
        elem = i.type.tensor_type.elem_type
        if elem not in ELEM_TYPES:
            raise ConfigError(f"model input '{i.name}' has ONNX element type {onnx.TensorProto.DataType.Name(elem)}:"
                              " a tensor column takes numbers or booleans (a model of table columns needs --sample "
                              "rows)")
        dims = _dims(i)
        dtype = ELEM_TYPES[elem]
        if arrays is None:
            if not dims or any(d < 0 for d in dims[1:]):
                raise ConfigError(f"model input '{i.name}' has shape {_shape_text(dims)}: its dimensions cannot be "
                                  "known without --sample rows")
            block = _random_rows(rng, [RANDOM_ROWS, *dims[1:]], dtype)
        else:
            block = np.asarray(arrays[i.name])
            if block.ndim != len(dims) or any(d >= 0 and d != s for d, s in zip(dims[1:], block.shape[1:],
                                                                               strict=False)):
                raise DataError(f"sample array '{i.name}' has shape {list(block.shape)}: the model takes "
                                f"{_shape_text(dims)}")
            block = block.astype(dtype)
        shape = [d if d >= 0 else -1 for d in dims[1:]]
        specs.append(ColumnSpec(name=i.name, kind="tensor", shape=shape, dtype=dtype))
        tensors[i.name] = np.ascontiguousarray(block)
        bindings.append(InputBinding(i.name, "tensor", [], elem))
        tensor_specs[i.name] = (elem, ["N", *[d if d >= 0 else f"d{k + 1}" for k, d in enumerate(dims[1:])]])
    schema = Schema(columns=specs)
    enc = EncodedInputs(None, None, tensors=tensors)
    rows = f"{enc.n_rows} sample rows" if arrays is not None else (
        f"{RANDOM_ROWS} random rows drawn to the model's input shapes (no --sample given)")
    return Bound(schema, bindings, tensor_specs, enc, dict(tensors), None, rows)


def _random_rows(rng: np.random.Generator, shape: list[int], dtype: str) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if np.dtype(dtype).kind in "iu":
        return rng.integers(0, 10, size=shape).astype(dtype)
    return rng.random(shape).astype(dtype)


def _numeric_spec(table: pa.Table, name: str, why: str) -> ColumnSpec:
    col = table.column(name)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)
            or pa.types.is_null(col.type)):
        raise DataError(f"sample column '{name}' holds {col.type} values: {why}")
    values = pc.cast(col, pa.float64())
    missing = col.null_count + (int(pc.sum(pc.is_nan(values)).as_py() or 0) if pa.types.is_floating(col.type) else 0)
    finite = values.to_numpy(zero_copy_only=False)
    finite = finite[np.isfinite(finite)]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (None, None)
    return ColumnSpec(name=name, kind="numeric", nullable=missing > 0, missing=int(missing), min=low, max=high)


def _categorical_spec(table: pa.Table, name: str) -> ColumnSpec:
    col = table.column(name)
    strings = categorical_strings(col)
    values, counts = np.unique(strings[strings != ""], return_counts=True)
    kept = [str(v) for v in values[np.argsort(-counts, kind="stable")][:MAX_CATEGORIES]]
    missing = int((strings == "").sum())
    return ColumnSpec(name=name, kind="categorical", nullable=missing > 0, missing=missing, categories=sorted(kept))


def _inputs(graph: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in graph.graph.initializer}
    return [i for i in graph.graph.input if i.name not in inits]


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    """Dimensions of a graph input; -1 where the graph leaves one free."""
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else -1 for d in shape.dim]


def _shape_text(dims: list[int]) -> str:
    return "[" + ", ".join("N" if k == 0 else ("?" if d < 0 else str(d)) for k, d in enumerate(dims)) + "]"


def _numpy_type(elem: int) -> np.dtype:
    return np.dtype(ELEM_TYPES.get(elem, "float32"))


def _listed(names: list[str]) -> str:
    return ", ".join(map(repr, names[:10])) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
