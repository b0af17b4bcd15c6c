"""Import a model trained elsewhere: convert it to one ONNX graph, bind its inputs to a schema, check the bundle
graph against the source framework on sample rows, and write a verified bundle that serves like any other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa

from tandem.errors import ConfigError, DataError, TandemError
from tandem.foreign.convert import convert, example_from_table
from tandem.foreign.samples import Bound, bind_table, bind_tensors, feature_columns, read_sample, table_inputs
from tandem.foreign.source import MEANINGS, Converted
from tandem.foreign.wrap import bundle_graph
from tandem.schema import TASKS

DEFAULT_MAX_DIFF = 1e-5


@dataclass
class ImportRequest:
    """What to import and how to read it (the arguments of ``tandem import`` / ``tandem.import_model``)."""

    source: object
    name: str
    framework: str = "auto"
    sample: object = None
    target: str | None = None
    labels: list[str] | None = None
    task: str | None = None
    output: str | None = None  # which output of an ONNX file is the answer
    meaning: str | None = None  # probabilities, logits or values (default: inferred)
    metric: str | None = None
    max_diff: float = DEFAULT_MAX_DIFF
    module: object | None = None  # the architecture of a safetensors file
    threshold: float = 0.5
    train_footprint: dict | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Prepared:
    """An import ready to write: the bundle graph, its schema, the sample rows, and what was measured."""

    request: ImportRequest
    converted: Converted
    bound: Bound
    graph: onnx.ModelProto
    task: str
    labels: list[str] | None
    label_type: str
    meaning: str
    parity: float
    answers: dict[str, np.ndarray]  # the bundle graph's outputs on the sample rows
    notes: list[str]


def prepare(request: ImportRequest, say: Callable[[str], None] = lambda _m: None) -> Prepared:
    """Convert, bind and check ``request``; ConfigError or DataError (one line) on any refusal, parity included."""
    if not (isinstance(request.max_diff, (int, float)) and request.max_diff >= 0):
        raise ConfigError(f"--max-diff must be a number >= 0, got {request.max_diff!r}")
    if request.task is not None and request.task not in TASKS:
        raise ConfigError(f"--task must be one of {', '.join(TASKS)}, got '{request.task}'")
    if request.meaning is not None and request.meaning not in MEANINGS:
        raise ConfigError(f"the output's meaning must be one of {', '.join(MEANINGS)}, got '{request.meaning}'")
    if not (isinstance(request.threshold, (int, float)) and 0 <= request.threshold <= 1):
        raise ConfigError(f"the decision threshold must be a number from 0 to 1, got {request.threshold!r}")
    sample = read_sample(request.sample)
    if sample is not None and (sample.num_rows if isinstance(sample, pa.Table) else
                               min(len(v) for v in sample.values())) == 0:
        raise DataError("the sample has no rows: parity is checked on them")
    example = None
    if isinstance(sample, pa.Table) and _framework_hint(request) == "pytorch":
        example = example_from_table(sample, feature_columns(sample, request.target, None))
    say("converting the model to ONNX")
    converted = convert(request.source, request.framework, sample, module=request.module, output=request.output,
                        example=example)
    what = f"the {converted.framework} model"
    if sample is None and converted.example is not None:
        sample = converted.example
    if isinstance(sample, pa.Table):
        bound = bind_table(converted.graph, sample, request.target, converted.columns)
    elif table_inputs(converted.graph):
        names = ", ".join(i.name for i in converted.graph.graph.input[:10])
        raise ConfigError(f"{what} takes table columns ({names}): give --sample rows (a CSV, Parquet or JSON Lines "
                          "file) so their types, ranges and categories are known")
    else:
        bound = bind_tensors(converted.graph, sample, what)
    say(f"asking {converted.framework} for its answers on {bound.rows}")
    try:
        raw = np.asarray(converted.reference(bound.feeds), dtype=np.float64)
    except TandemError:
        raise
    except Exception as exc:  # the framework's own error: the sample does not fit the model
        raise ConfigError(f"{converted.framework} could not answer the sample rows: "
                          f"{' '.join(str(exc).split())[:300]}") from None
    task, meaning, width = _read_answer(raw, request, converted)
    labels, label_type, label_notes = _labels(request, converted, task, width)
    graph = bundle_graph(converted.graph, converted.output, bound.bindings,
                         n_num=bound.enc.num.shape[1] if bound.enc.num is not None else 0,
                         n_cat=bound.enc.cat.shape[1] if bound.enc.cat is not None else 0,
                         tensor_specs=bound.tensor_specs, task=task, meaning=meaning, n_classes=width,
                         threshold=request.threshold)
    say("checking the bundle graph against the source framework")
    answers = run(graph, bound)
    expected = _expected(raw, task, meaning)
    got = answers["prediction" if task == "regression" else "probabilities"].astype(np.float64)
    gap = np.abs(got - expected)
    if task == "regression":  # float32 answers hold ~7 digits: a value's gap is measured relative to its size
        gap = gap / np.maximum(1.0, np.abs(expected))
    parity = float(np.max(gap)) if got.size else 0.0
    if not parity <= request.max_diff:
        raise ConfigError(f"parity failed: the bundle graph differs from {converted.framework} by up to {parity:.3g} "
                          f"on {bound.rows} (allowed: --max-diff {request.max_diff:g}); nothing was written")
    notes = list(request.notes) + list(converted.notes) + label_notes
    return Prepared(request, converted, bound, graph, task, labels, label_type, meaning, parity, answers, notes)


def _framework_hint(request: ImportRequest) -> str:
    from tandem.foreign.convert import detect

    return request.framework if request.framework != "auto" else detect(request.source)


def run(graph: onnx.ModelProto, bound: Bound) -> dict[str, np.ndarray]:
    """The bundle graph's outputs on the sample rows, in ONNX Runtime as the Predictor runs it."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception classes: the converted graph is the cause
        raise ConfigError(f"ONNX Runtime cannot run the converted graph: {' '.join(str(exc).split())[:300]}") from None
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, bound.enc.feeds()), strict=True))


def _read_answer(raw: np.ndarray, request: ImportRequest, converted: Converted) -> tuple[str, str, int]:
    """(task, meaning, width): what the source's answer is, declared or read from its values."""
    if raw.ndim > 2 or raw.ndim == 0:
        raise ConfigError(f"the model answers an array of shape {list(raw.shape)} per batch: expected [N], [N, 1] "
                          "or [N, classes]")
    width = 1 if raw.ndim == 1 else raw.shape[1]
    task, meaning = request.task, request.meaning or converted.meaning
    n_labels = len(request.labels or converted.labels or []) or None
    in_unit = bool(raw.size) and raw.min() >= 0 and raw.max() <= 1
    sums_to_one = width > 1 and bool(np.allclose(raw.sum(axis=1), 1.0, atol=1e-4))
    if task is None:
        if width > 2 or n_labels and n_labels > 2:
            task = "multiclass"
        elif width == 2 or n_labels == 2:
            task = "binary"
        else:
            task = "regression" if meaning in (None, "values") else "binary"
    if task == "regression":
        if width != 1:
            raise ConfigError(f"the model answers {width} numbers per row: a regression answers one (declare "
                              "--labels or --task for a classifier)")
        return task, "values", 1
    if width == 1 and task == "multiclass":
        raise ConfigError("the model answers one number per row: a multiclass model answers one per class")
    if task == "binary" and width > 2:
        raise ConfigError(f"--task binary, but the model answers {width} numbers per row (one per class)")
    if meaning is None or meaning == "values":
        meaning = "probabilities" if (sums_to_one or width == 1 and in_unit) else "logits"
    return task, meaning, width


def _labels(request: ImportRequest, converted: Converted, task: str, width: int) -> tuple[list[str] | None, str, list]:
    if task == "regression":
        if request.labels:
            raise ConfigError("--labels are for a classifier; this model answers one value per row (a regression)")
        return None, "float", []
    classes = 2 if width == 1 else width
    labels = request.labels or converted.labels
    if labels is not None:
        labels = [str(v) for v in labels]
        if len(labels) != classes:
            raise ConfigError(f"{len(labels)} labels given ({', '.join(labels[:10])}) for a model that answers "
                              f"{classes} classes")
        if len(set(labels)) != len(labels):
            raise ConfigError(f"the labels repeat one: {', '.join(labels)}")
        if set(labels) == {"true", "false"}:
            return labels, "bool", []
        return labels, "int" if all(_is_int(v) for v in labels) else "string", []
    return [str(i) for i in range(classes)], "int", [
        f"labels are the class indices 0..{classes - 1} (no labels were given: pass --labels to name them)"]


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _expected(raw: np.ndarray, task: str, meaning: str) -> np.ndarray:
    """What the bundle graph must answer, computed in float64 from the source's raw answer."""
    if task == "regression":
        return raw.reshape(-1, 1)
    x = raw.reshape(len(raw), -1)
    if x.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-x)) if meaning == "logits" else x
        return np.concatenate([1.0 - p, p], axis=1)
    if meaning == "logits":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return x


def source_description(source: object) -> str:
    """How the manifest names what was imported: the file, or the live object's class."""
    if isinstance(source, (str, Path)):
        return str(source)
    kind = type(source)
    return f"a live {kind.__module__}.{kind.__name__}"
