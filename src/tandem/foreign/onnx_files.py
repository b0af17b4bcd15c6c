"""ONNX files in, as they are: checked by the onnx checker, held to the opsets ONNX Runtime runs, and external
tensor data read only from files inside the model's own folder (then kept inside the bundle's one graph)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from tandem.errors import ConfigError
from tandem.foreign.source import MAX_OPSET, Converted

_NUMPY = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
          "tensor(bool)": np.bool_, "tensor(string)": object}
#: protobuf's own limit on one message
MAX_ONNX_BYTES = 2 << 30


def read_onnx(path: Path) -> onnx.ModelProto:
    """The model in ``path`` with any external tensor data read in; refused when a data file lies outside the
    model's folder, the checker fails, or an opset is newer than ONNX Runtime runs."""
    if path.stat().st_size > MAX_ONNX_BYTES:
        raise ConfigError(f"'{path}' is over 2 GiB: expected an ONNX model (put large weights in external data)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ConfigError(f"'{path}' is not an ONNX model ({' '.join(str(exc).split())[:200]})") from None
    folder = path.resolve().parent
    external = [t for t in _tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    for t in external:
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        where = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not where.is_relative_to(folder) or not where.is_file():
            raise ConfigError(f"'{path}': tensor '{t.name}' keeps its data in '{location}', outside the model's "
                              "folder (or missing): expected external data beside the model, never a path out of it")
    if external:
        onnx.load_external_data_for_model(model, str(folder))
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > MAX_OPSET:
            raise ConfigError(f"'{path}' uses ONNX opset {opset.version}: expected at most {MAX_OPSET}, what "
                              "tandem's ONNX Runtime runs")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ConfigError(f"'{path}' fails the ONNX checker: {' '.join(str(exc).split())[:300]}") from None
    return model


def _tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    from onnx.external_data_helper import _get_all_tensors

    return list(_get_all_tensors(model))


def onnx_converted(model: onnx.ModelProto, output: str | None = None) -> Converted:
    """An ONNX model as it is; its answer is ``output`` (default: the first output that is not an int64 label)
    and the reference is ONNX Runtime on the original graph (parity then checks tandem's wiring)."""
    import onnxruntime as ort

    outputs = [o.name for o in model.graph.output]
    if output is None:
        floats = [o.name for o in model.graph.output if o.type.tensor_type.elem_type in
                  (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)]
        if not floats:
            raise ConfigError(f"the ONNX model has no float output (outputs: {', '.join(outputs)}): expected "
                              "probabilities, logits or values")
        output = floats[-1] if len(floats) > 1 and "prob" in floats[-1].lower() else floats[0]
    elif output not in outputs:
        raise ConfigError(f"the ONNX model has no output '{output}': it has {', '.join(outputs)}")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    types = {i.name: _NUMPY.get(i.type, object) for i in session.get_inputs()}

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return session.run([output], {k: np.asarray(v).astype(types.get(k, object)) for k, v in feeds.items()})[0]

    return Converted(model, "onnx", reference, output)
