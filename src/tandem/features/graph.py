"""A small builder for ONNX graphs: unique names, constants, nodes, one model out."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 20  # StringConcat
ML_OPSET = 5  # ai.onnx.ml 5 has TreeEnsemble with double thresholds and set membership


class GraphBuilder:
    """Accumulate nodes and initializers; every name is made unique with a prefix."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used: set[str] = set()
        self.memo: dict[str, str] = {}  # tensors shared by several consumers (e.g. a cast of a view)

    def fresh(self, prefix: str) -> str:
        i = 0
        name = prefix
        while name in self._used:
            i += 1
            name = f"{prefix}_{i}"
        self._used.add(name)
        return name

    def reserve(self, *names: str) -> None:
        """Keep names (the graph's inputs) from being handed out to tensors."""
        self._used.update(names)

    def const(self, value: np.ndarray, prefix: str = "const") -> str:
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], *, domain: str = "", n_out: int = 1,
           prefix: str | None = None, **attrs: object) -> str | list[str]:
        outs = [self.fresh(prefix or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, domain=domain or None,
                                           name=self.fresh(f"n_{op_type}"), **attrs))
        return outs[0] if n_out == 1 else outs

    def alias(self, source: str, name: str) -> str:
        """Give ``source`` a fixed graph-output name."""
        self._used.add(name)
        self.nodes.append(helper.make_node("Identity", [source], [name], name=self.fresh("n_out")))
        return name

    def domains(self) -> set[str]:
        return {n.domain for n in self.nodes if n.domain not in ("", "ai.onnx", "ai.onnx.ml")}

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
              doc: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "tandem", inputs, outputs, self.initializers)
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)]
        # ONNX Runtime's own operators, which a grafted quantized graph may use
        opsets += [helper.make_opsetid(d, 1) for d in sorted(self.domains())]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="tandem", doc_string=doc)
        model.ir_version = 9
        onnx.checker.check_model(model)
        return model


def graft(g: GraphBuilder, sub: onnx.ModelProto, inputs: dict[str, str], prefix: str) -> dict[str, str]:
    """Copy the nodes and weights of another model (a torch.onnx export) into ``g``, its inputs wired to
    ``inputs`` (its input name -> a tensor of ``g``), every other name prefixed to stay unique; returns its
    outputs' names in ``g``. The sub-model's opset must not be newer than ``OPSET``."""
    prefix = g.fresh(prefix)
    rename = dict(inputs)

    def name(t: str) -> str:
        if t == "":
            return t
        if t not in rename:
            rename[t] = f"{prefix}/{t}"
            g._used.add(rename[t])
        return rename[t]

    graph = sub.graph
    for init in graph.initializer:
        init.name = name(init.name)
        g.initializers.append(init)
    for node in graph.node:
        node.input[:] = [name(t) for t in node.input]
        node.output[:] = [name(t) for t in node.output]
        node.name = f"{prefix}/{node.name}"
        g.nodes.append(node)
    return {o.name: rename[o.name] for o in graph.output}


def torch_image_graph(net: object, side: int, input_name: str, output_name: str) -> onnx.ModelProto:
    """An image network (a torch module, images [N, 3, side, side] in) through torch.onnx's TorchScript exporter,
    the batch dimension dynamic, opset 18 (graftable: not newer than ``OPSET``)."""
    import io
    import warnings

    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter: no onnxscript needed, and it is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # resize and padding sizes are constants per side
        torch.onnx.export(net.eval(), (torch.zeros(1, 3, side, side),), buf, input_names=[input_name],
                          output_names=[output_name], dynamic_axes={input_name: {0: "N"}, output_name: {0: "N"}},
                          opset_version=18, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def classification_outputs(g: GraphBuilder, probs: str, task: str, n_classes: int,
                           threshold: float) -> list[onnx.ValueInfoProto]:
    """A bundle's classification outputs from class probabilities [N, C]: ``probabilities``, and ``label`` (the
    class index: P(positive) >= ``threshold`` for a binary model, the most probable class otherwise)."""
    g.alias(probs, "probabilities")
    if task == "binary":
        positive = g.op("Gather", [probs, g.const(np.array(1, dtype=np.int64), "pos")], axis=1)
        hit = g.op("GreaterOrEqual", [positive, g.const(np.array(threshold, dtype=np.float32), "threshold")])
        label = g.op("Cast", [hit], to=INT64)
    else:
        label = g.op("ArgMax", [probs], axis=1, keepdims=0)
    g.alias(label, "label")
    return [tensor_info("probabilities", FLOAT, ["N", n_classes]), tensor_info("label", INT64, ["N"])]


def tensor_info(name: str, elem_type: int, shape: list[int | str | None]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


FLOAT = TensorProto.FLOAT
DOUBLE = TensorProto.DOUBLE
STRING = TensorProto.STRING
INT64 = TensorProto.INT64
BOOL = TensorProto.BOOL
