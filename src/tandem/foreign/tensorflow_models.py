"""TensorFlow and Keras models in: a live ``keras.Model``, a Keras v3 ``.keras`` file (read in safe mode only), or a
SavedModel directory. Each is traced as a ``tf.function`` with an explicit input signature (batch dimension free)
and converted in-process by ``tf2onnx.convert.from_function``.

TensorFlow, Keras and tf2onnx are an optional extra: they are imported inside the functions, never at module
import."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tandem.errors import ConfigError
from tandem.foreign.source import OPSET, Converted

if TYPE_CHECKING:
    import keras
    import onnx

_INSTALL = "pip install 'tandem[tensorflow]'"
#: The symbolic name of every graph input's (and the output's) first dimension.
BATCH = "N"
_PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")


def keras_converted(model: keras.Model) -> Converted:
    """A live ``keras.Model`` (Sequential or functional, with declared inputs and one output) as one ONNX graph.

    The graph's inputs are the model's own, named as its ``keras.Input`` layers, first dimension ``"N"``; its one
    output is named as the model's output layer. ``meaning`` comes from the last layer's activation (softmax or
    sigmoid: "probabilities"; linear: "logits", or "values" when the output is one number per row; else None).
    ``reference(feeds)`` calls the model itself (``training=False``)."""
    tf, keras = _import_tf("a Keras model")
    if not isinstance(model, keras.Model):
        raise ConfigError(f"expected a keras.Model, got {type(model).__name__}")
    if keras.backend.backend() != "tensorflow":
        raise ConfigError(f"Keras runs on the {keras.backend.backend()} backend: tandem converts Keras models "
                          "through TensorFlow; set KERAS_BACKEND=tensorflow")
    try:
        struct = getattr(model, "_inputs_struct", None)
        inputs = list(keras.tree.flatten(model.inputs if struct is None else struct))
        outputs = list(keras.tree.flatten(model.outputs))
    except (AttributeError, ValueError) as exc:
        raise ConfigError(f"the Keras model '{model.name}' declares no inputs ({_one_line(exc)}): build it on "
                          "keras.Input layers (Sequential or functional), or export it as a SavedModel") from None
    if len(outputs) != 1:
        names = ", ".join(_output_names(model, outputs))
        raise ConfigError(f"the Keras model '{model.name}' has {len(outputs)} outputs ({names}): tandem converts "
                          "models with one output (the answer)")
    names = [_clean(t.name) for t in inputs]
    if len(set(names)) != len(names):
        raise ConfigError(f"the Keras model '{model.name}' has inputs with the same name ({', '.join(names)}): "
                          "name each keras.Input")
    specs = [tf.TensorSpec((None, *t.shape[1:]), tf.as_dtype(t.dtype), name=n) for t, n in zip(inputs, names,
                                                                                               strict=True)]
    output = _output_names(model, outputs)[0]
    if output in names:  # an output named as an input would make two graph values of one name
        output = f"{output}_output"

    def pack(xs: list[Any]) -> Any:
        """The model's call argument: its own input structure (one tensor, a list, a dict) filled with ``xs``."""
        struct = getattr(model, "_inputs_struct", None)
        if struct is not None:
            return keras.tree.pack_sequence_as(struct, xs)
        return xs[0] if len(xs) == 1 else xs

    def traced(*xs: Any) -> dict[str, Any]:
        return {output: model(pack(list(xs)), training=False)}

    notes: list[str] = []
    graph = _convert(traced, specs, names, output, f"the Keras model '{model.name}'", notes)

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        xs = _ordered(feeds, names, [s.dtype.as_numpy_dtype for s in specs])
        return np.asarray(keras.ops.convert_to_numpy(model(pack(xs), training=False)))

    width = outputs[0].shape[-1] if len(outputs[0].shape) > 1 else 1
    return Converted(graph, "keras", reference, output, meaning=_keras_meaning(model, outputs[0], width),
                     notes=notes)


def read_keras(path: Path) -> keras.Model:
    """The model in a Keras v3 ``.keras`` file, loaded with ``safe_mode=True`` and without its training setup.

    A file whose layers hold pickled Python code (a ``Lambda`` layer) is refused, as is a legacy ``.h5``/``.hdf5``
    file (HDF5 models can carry such code and Keras reads them without safe mode): both raise ConfigError."""
    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        raise ConfigError(f"'{path}' is a legacy Keras HDF5 file, which tandem does not read (it cannot be loaded "
                          "in safe mode): save the model as a Keras v3 '.keras' file (model.save('model.keras')) "
                          "or export a SavedModel (model.export(dir))")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            raise ConfigError(f"'{path}' is a SavedModel directory, not a '.keras' file: convert it as a SavedModel")
        raise ConfigError(f"'{path}' is a directory: expected a Keras v3 '.keras' file")
    if path.suffix.lower() != ".keras":
        raise ConfigError(f"'{path}' is not a '.keras' file: expected a Keras v3 model saved with "
                          "model.save('model.keras')")
    if not path.is_file():
        raise ConfigError(f"'{path}' does not exist: expected a Keras v3 '.keras' file")
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"'{path}' is not a Keras v3 '.keras' file (not a zip archive)")
    _, keras = _import_tf("reading a '.keras' file")
    try:
        with _forced_safe_mode():
            model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, TypeError and more; the user needs its words, in one line
        words = _one_line(exc)
        if "safe_mode" in words or "safe mode" in words.lower() or "arbitrary code" in words:
            raise ConfigError(f"'{path}' was refused by Keras safe mode: it holds Python code (a Lambda layer or "
                              "a lambda function), which tandem never runs from a file; rebuild the model without "
                              "it, or export a SavedModel") from None
        raise ConfigError(f"'{path}' could not be loaded as a Keras model: {words}") from None
    if not isinstance(model, keras.Model):
        raise ConfigError(f"'{path}' holds a {type(model).__name__}, not a Keras model")
    return model


def savedmodel_converted(path: Path, signature: str | None = None) -> Converted:
    """The TensorFlow SavedModel in directory ``path`` as one ONNX graph, through its ``signature`` (default
    ``serving_default``), which must return one tensor.

    The graph's inputs are the signature's arguments, by name, first dimension ``"N"``; its one output is named
    as the signature's output key. ``meaning`` is read from the graph's last operation (Softmax or Sigmoid:
    "probabilities"; a matrix product: "logits" or "values" by output width; else None). ``reference(feeds)``
    calls the loaded signature itself."""
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise ConfigError(f"'{path}' is not a SavedModel directory (no saved_model.pb): expected a directory "
                          "written by tf.saved_model.save or model.export")
    tf, _ = _import_tf("a SavedModel")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ConfigError(f"'{path}' could not be loaded as a SavedModel: {_one_line(exc)}") from None
    name = signature or "serving_default"
    available = sorted(getattr(loaded, "signatures", {}) or {})
    if name not in available:
        have = ", ".join(available) if available else "none"
        raise ConfigError(f"'{path}' has no signature '{name}' (signatures: {have})")
    fn = loaded.signatures[name]
    args, kwargs = fn.structured_input_signature
    if args or not kwargs:
        raise ConfigError(f"'{path}' signature '{name}' takes no named tensors: expected keyword inputs")
    order = [t.name for t in fn.inputs]
    keys = sorted(kwargs, key=lambda k: order.index(f"{kwargs[k].name}:0") if f"{kwargs[k].name}:0" in order
                  else len(order))
    outputs = fn.structured_outputs
    if not isinstance(outputs, dict) or len(outputs) != 1:
        count = len(outputs) if isinstance(outputs, dict) else "a nested structure of"
        names = ", ".join(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise ConfigError(f"'{path}' signature '{name}' returns {count} outputs ({names}): tandem converts "
                          "models with one output (the answer)")
    key = next(iter(outputs))
    names = [_clean(k) for k in keys]
    output = _clean(key)
    if output in names:
        output = f"{output}_output"
    specs = []
    for k, n in zip(keys, names, strict=True):
        spec = kwargs[k]
        if spec.shape.rank is None or spec.shape.rank == 0:
            raise ConfigError(f"'{path}' signature '{name}' input '{k}' has no batch dimension "
                              f"(shape {spec.shape}): expected [batch, ...]")
        if spec.shape[0] is not None:
            raise ConfigError(f"'{path}' signature '{name}' input '{k}' has a fixed batch dimension (shape "
                              f"{spec.shape.as_list()}): export it with the first dimension None")
        specs.append(tf.TensorSpec((None, *spec.shape[1:]), spec.dtype, name=n))

    def traced(*xs: Any) -> dict[str, Any]:
        return {output: fn(**dict(zip(keys, xs, strict=True)))[key]}

    notes: list[str] = []
    graph = _convert(traced, specs, names, output, f"the SavedModel '{path}'", notes)

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        xs = _ordered(feeds, names, [s.dtype.as_numpy_dtype for s in specs])
        # ``loaded`` is held here on purpose: a signature outlives its SavedModel object only as a dangling weak ref
        result = loaded.signatures[name](**{k: tf.constant(x) for k, x in zip(keys, xs, strict=True)})
        return np.asarray(result[key].numpy())

    return Converted(graph, "tensorflow", reference, output, meaning=_graph_meaning(graph, output), notes=notes)


# --- conversion ------------------------------------------------------------------------------------------------


def _convert(fn: Callable[..., Any], specs: list[Any], names: list[str], output: str, what: str,
             notes: list[str]) -> onnx.ModelProto:
    """``fn`` traced on ``specs`` and converted by tf2onnx at :data:`OPSET`; inputs named ``names`` with batch
    dimension ``"N"``, the one output named ``output``; checked by ONNX (unconverted TF ops: ConfigError). What
    the caller should know is appended to ``notes``."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    function = tf.function(fn, input_signature=specs, autograph=False)
    try:
        with _quiet():
            graph, _ = tf2onnx.convert.from_function(function, input_signature=specs, opset=OPSET)
    except Exception as exc:  # tf2onnx and TF's tracer raise many kinds; the user needs their words, in one line
        raise ConfigError(f"tf2onnx could not convert {what}: {_one_line(exc)}") from None
    got = [i.name for i in graph.graph.input]
    if len(got) != len(names) or len(graph.graph.output) != 1:
        raise ConfigError(f"tf2onnx made {len(got)} inputs and {len(graph.graph.output)} outputs of {what}: "
                          f"expected {len(names)} and one")
    # tf2onnx keeps the traced function's argument order; its names may carry ":0" or TF's sanitising
    for old, new in zip(got, names, strict=True):
        if old != new:
            _rename(graph.graph, old, new)
    if graph.graph.output[0].name != output:
        _rename(graph.graph, graph.graph.output[0].name, output)
    for value in (*graph.graph.input, *graph.graph.output):
        dims = value.type.tensor_type.shape.dim
        for i, dim in enumerate(dims):
            if i == 0 and not dim.HasField("dim_value"):
                dim.dim_param = BATCH
            elif not dim.HasField("dim_value"):
                dim.dim_param = f"{value.name}_{i}"  # tf2onnx's own names ("unk__12") say nothing
    unknown = sorted({f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in graph.graph.node
                      if not onnx.defs.has(n.op_type, n.domain)})
    if unknown:
        raise ConfigError(f"{what} uses TensorFlow operations with no ONNX counterpart: {', '.join(unknown)}")
    try:
        onnx.checker.check_model(graph, full_check=True)
    except Exception as checked:  # the strict checker can refuse what ONNX Runtime runs: then ONNX Runtime decides
        import onnxruntime

        try:
            onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ConfigError(f"tf2onnx's graph for {what} is not valid ONNX: {_one_line(checked)} "
                              f"(ONNX Runtime: {_one_line(exc)})") from None
        notes.append(f"the ONNX checker refused the graph but ONNX Runtime loads it: {_one_line(checked)}")
    return graph


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every use of the value ``old`` in ``graph`` (and the subgraphs of its control-flow nodes) named ``new``."""
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                _rename(sub, old, new)


# --- meaning ---------------------------------------------------------------------------------------------------


def _keras_meaning(model: keras.Model, output: Any, width: int | None) -> str | None:
    """What the model's answer is, from the activation of the layer that makes it."""
    import keras

    history = getattr(output, "_keras_history", None)
    layer = getattr(history, "operation", None) or (model.layers[-1] if model.layers else None)
    if isinstance(layer, keras.layers.Softmax):
        return "probabilities"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    try:
        name = keras.activations.serialize(activation)
    except (TypeError, ValueError):
        name = getattr(activation, "__name__", None)
    if isinstance(name, dict):  # a custom activation serializes as a config
        name = name.get("config") if isinstance(name.get("config"), str) else None
    if name in _PROBABILITY_ACTIVATIONS:
        return "probabilities"
    if name == "linear":
        return _linear_meaning(width)
    return None


def _graph_meaning(graph: onnx.ModelProto, output: str) -> str | None:
    """What a graph's answer is, from the operation that makes it (Identity and Cast looked through)."""
    producers = {o: n for n in graph.graph.node for o in n.output}
    constants = {i.name for i in graph.graph.initializer} | {n.output[0] for n in graph.graph.node
                                                             if n.op_type == "Constant"}
    node = producers.get(output)
    while node is not None and node.op_type in ("Identity", "Cast") and node.input:
        node = producers.get(node.input[0])
    if node is None:
        return None
    if node.op_type in ("Softmax", "Sigmoid"):
        return "probabilities"
    shape = graph.graph.output[0].type.tensor_type.shape.dim
    width = shape[-1].dim_value if len(shape) > 1 and shape[-1].HasField("dim_value") else (1 if len(shape) <= 1
                                                                                           else None)
    if node.op_type in ("Gemm", "MatMul"):
        return _linear_meaning(width)
    if node.op_type == "Add" and len(node.input) == 2:  # a dense layer's bias after its matrix product
        sources = [producers.get(x) for x in node.input]
        if any(x in constants for x in node.input) and any(s is not None and s.op_type in ("Gemm", "MatMul")
                                                           for s in sources):
            return _linear_meaning(width)
    return None


def _linear_meaning(width: int | None) -> str | None:
    if width is None:
        return None
    return "values" if width == 1 else "logits"


# --- helpers ---------------------------------------------------------------------------------------------------


def _import_tf(what: str) -> tuple[Any, Any]:
    """TensorFlow and Keras, imported quietly (ConfigError naming the extra when missing); tf2onnx checked too."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if "tensorflow" not in sys.modules:
            with _quiet_stderr():
                import tensorflow  # noqa: F401
        import keras
        import tensorflow as tf
        import tf2onnx  # noqa: F401
    except ImportError:
        raise ConfigError(f"{what} needs TensorFlow: {_INSTALL}") from None
    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    return tf, keras


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """TF's and tf2onnx's Python loggers silenced while converting: tf2onnx logs each unsupported op at ERROR, and
    the ConfigError raised then names them all, in one line."""
    loggers = [logging.getLogger(n) for n in ("tf2onnx", "tensorflow")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 sent to /dev/null: TF 2.21 logs through absl before absl is initialised, which ignores
    TF_CPP_MIN_LOG_LEVEL, so its import banners (oneDNN, CPU features) reach the terminal otherwise. Left alone
    when the user asked for TF's logs (TF_CPP_MIN_LOG_LEVEL 0 or 1)."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (an embedded interpreter): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _forced_safe_mode() -> Iterator[None]:
    """Keras safe mode on for this thread, whatever the process set: an ambient scope beats ``load_model``'s own
    ``safe_mode=True``, so ``keras.config.enable_unsafe_deserialization()`` anywhere would otherwise switch it off."""
    try:
        from keras.src.saving.serialization_lib import SafeModeScope
    except ImportError:  # a Keras without it: load_model's safe_mode=True is all there is
        yield
        return
    with SafeModeScope(safe_mode=True):
        yield


def _ordered(feeds: dict[str, np.ndarray], names: list[str], dtypes: list[Any]) -> list[np.ndarray]:
    missing = [n for n in names if n not in feeds]
    if missing:
        raise ConfigError(f"no feed for the input(s) {', '.join(missing)}: expected {', '.join(names)}")
    return [np.ascontiguousarray(feeds[n], dtype=d) for n, d in zip(names, dtypes, strict=True)]


def _output_names(model: Any, outputs: list[Any]) -> list[str]:
    """The model's output names: ``output_names`` of a functional model, else the layers that make them."""
    names = getattr(model, "output_names", None)
    if names and len(names) == len(outputs):
        return [_clean(str(n)) for n in names]
    found = []
    for i, out in enumerate(outputs):
        layer = getattr(getattr(out, "_keras_history", None), "operation", None)
        found.append(_clean(layer.name) if layer is not None else f"output_{i}")
    return found


def _clean(name: str) -> str:
    """A TF tensor name as a graph name: without its ``:0`` output index."""
    head, sep, tail = name.rpartition(":")
    return head if sep and tail.isdigit() else name


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
