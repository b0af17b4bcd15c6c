"""PyTorch models in: a live ``torch.nn.Module``, a ``torch.export`` program (``.pt2``), or safetensors weights
with the architecture given as a live module. Exported through ``torch.onnx`` with the batch dimension free."""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from tandem.errors import ConfigError
from tandem.foreign.source import OPSET, Converted


def torch_converted(module: object, example: dict[str, np.ndarray], *, framework: str = "pytorch",
                    notes: list[str] | None = None) -> Converted:
    """``module`` (a ``torch.nn.Module``, or an exported program's module) as ONNX; ``example`` holds one array per
    forward argument, in order, named as the graph's inputs will be."""
    import torch

    names = list(example)
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in example.values())
    if hasattr(module, "eval") and not _is_exported(module):
        module.eval()
    buf = io.BytesIO()
    dynamic = {n: {0: "N"} for n in names} | {"output": {0: "N"}}
    try:
        # the TorchScript exporter (deprecated, still the one that takes any module) warns at every call
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module, args, buf, input_names=names, output_names=["output"], dynamic_axes=dynamic,
                              opset_version=OPSET, dynamo=False)
    except Exception as exc:  # torch's exporter raises many kinds; the user needs its words, in one line
        raise ConfigError(f"torch.onnx could not export the model: {' '.join(str(exc).split())[:300]}") from None
    import onnx

    graph = onnx.load_from_string(buf.getvalue())
    if len(graph.graph.output) != 1:
        raise ConfigError(f"the PyTorch model returns {len(graph.graph.output)} tensors: expected one (the answer)")

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.detach().cpu().numpy()

    return Converted(graph, framework, reference, "output", meaning=_last_activation(module), notes=notes or [])


def _is_exported(module: object) -> bool:
    return type(module).__module__.startswith("torch.fx") or type(module).__name__ == "GraphModule"


def _last_activation(module: object) -> str | None:
    """"probabilities" when the module's last layer is a Softmax or Sigmoid, else None (inferred from values)."""
    import torch

    if not isinstance(module, torch.nn.Module) or _is_exported(module):
        return None
    layers = [m for m in module.modules() if not list(m.children())]
    if layers and isinstance(layers[-1], (torch.nn.Softmax, torch.nn.Sigmoid)):
        return "probabilities"
    return None


def read_exported(path: Path) -> tuple[object, dict[str, np.ndarray] | None]:
    """A ``torch.export.save`` program as a module, and the example inputs saved with it (None if absent).

    Safe: an archive holding pickled custom or opaque objects is refused before anything is read, and every
    tensor is read with ``weights_only`` forced on (torch would otherwise fall back to a full unpickle)."""
    import torch
    from torch.export.pt2_archive.constants import CUSTOM_OBJ_FILENAME_PREFIX, OPAQUE_OBJ_FILENAME_PREFIX

    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConfigError(f"'{path}' is not a torch.export program ({exc}): expected a file written by "
                          "torch.export.save") from None
    pickled = [e for e in entries if f"/{CUSTOM_OBJ_FILENAME_PREFIX}" in e or f"/{OPAQUE_OBJ_FILENAME_PREFIX}" in e]
    if pickled:
        raise ConfigError(f"'{path}' holds pickled objects ({pickled[0]}): tandem never unpickles a model file; "
                          "export a program without custom objects")
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ConfigError(f"'{path}' could not be read as a torch.export program with weights only: "
                          f"{' '.join(str(exc).split())[:300]}") from None
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous
    module = program.module()
    module.train = lambda *_a, **_k: module  # an exported module refuses train(); the exporter calls train(False)
    names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    example = None
    if program.example_inputs is not None:
        args, kwargs = program.example_inputs
        if not kwargs and all(isinstance(a, torch.Tensor) for a in args):
            example = {n: a.detach().cpu().numpy() for n, a in zip(names, args, strict=True)}
    return module, example


def load_safetensors(module: object, path: Path) -> object:
    """``module`` with its weights from the safetensors file ``path`` (a format that holds tensors only); every
    parameter and buffer must be present with its shape."""
    import torch
    from safetensors.torch import load_file

    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"'{path}' holds weights only: give the architecture as a live torch.nn.Module "
                          "(tandem.import_model(module, weights=path, ...))")
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise ConfigError(f"'{path}' is not a safetensors file ({' '.join(str(exc).split())[:200]})") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"'{path}' does not fit the module: {' '.join(str(exc).split())[:300]}") from None
    return module
