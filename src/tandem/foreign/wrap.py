"""The bundle graph of an imported model: tandem's inputs (``num``, ``cat`` or one tensor per tensor column)
wired to the converted graph's own inputs, and its answer turned into tandem's outputs (``probabilities`` and
``label``, or ``prediction``), so the Predictor, the server, drift and optimisation need nothing new."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, compose, helper

from tandem.errors import ConfigError
from tandem.features.graph import FLOAT, STRING, GraphBuilder, classification_outputs

PREFIX = "m/"
#: names the bundle graph gives its own inputs and outputs
RESERVED = ("num", "cat", "text", "image", "tokens", "probabilities", "label", "prediction")


@dataclass
class InputBinding:
    """Where one input of the converted graph comes from: ``num`` or ``cat`` columns (by index, in the order
    the graph wants them) or a tensor column of the same name."""

    graph_input: str
    source: str  # "num", "cat" or "tensor"
    columns: list[int]
    elem_type: int
    rank: int = 2  # the graph input's rank: 2 for a matrix [N, k]; 1 for a vector [N]


def bundle_graph(converted: onnx.ModelProto, output: str, bindings: list[InputBinding], *, n_num: int, n_cat: int,
                 tensor_specs: dict[str, tuple[int, list]], task: str, meaning: str, n_classes: int,
                 threshold: float) -> onnx.ModelProto:
    """One ONNX model: the converted graph (names prefixed ``m/``) between tandem's inputs and outputs.

    ``tensor_specs``: per tensor column, its ONNX element type and dims (batch first). ``meaning`` is what the
    converted graph's ``output`` holds: ``probabilities`` ([N, C], or [N, 1]/[N] as P(positive) of a binary
    model), ``logits`` (likewise, before softmax or sigmoid) or ``values`` (a regression).
    """
    model = compose.add_prefix(converted, PREFIX)
    g = GraphBuilder()
    g.reserve(*RESERVED, *tensor_specs)
    g.reserve(*(n.name for n in model.graph.node), *(t for n in model.graph.node for t in n.output))
    inputs = []
    if n_num:
        inputs.append(helper.make_tensor_value_info("num", FLOAT, ["N", n_num]))
    if n_cat:
        inputs.append(helper.make_tensor_value_info("cat", STRING, ["N", n_cat]))
    for name, (elem_type, dims) in tensor_specs.items():
        inputs.append(helper.make_tensor_value_info(name, elem_type, dims))
    feeds = []
    for b in bindings:
        if b.source == "tensor":
            src = b.graph_input
        else:
            whole = b.source == "num" and b.columns == list(range(n_num))
            src = b.source if whole else g.op("Gather", [b.source, g.const(np.array(b.columns, dtype=np.int64),
                                                                              "columns")], axis=1)
            if b.rank == 1:
                src = g.op("Reshape", [src, g.const(np.array([-1], dtype=np.int64), "flat")])
            wanted = STRING if b.source == "cat" else FLOAT
            if b.elem_type != wanted:
                src = g.op("Cast", [src], to=b.elem_type)
        feeds.append(helper.make_node("Identity", [src], [PREFIX + b.graph_input], name=g.fresh("n_feed")))
    adapters = len(g.nodes)
    outputs = _outputs(g, PREFIX + output, task, meaning, n_classes, threshold)
    nodes = g.nodes[:adapters] + feeds + list(model.graph.node) + g.nodes[adapters:]
    graph = helper.make_graph(nodes, "tandem_import", inputs, outputs,
                              list(model.graph.initializer) + g.initializers)
    graph.value_info.extend(model.graph.value_info)
    graph.sparse_initializer.extend(model.graph.sparse_initializer)
    opsets = {o.domain: o.version for o in model.opset_import}
    opsets[""] = max(opsets.get("", 13), 13)  # Softmax over the last axis, Gather, Cast as tandem writes them
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
                            producer_name="tandem import", doc_string="an imported model between tandem's inputs "
                            "and outputs")
    out.ir_version = max(model.ir_version, 8)
    out.functions.extend(model.functions)
    onnx.checker.check_model(out)
    return out


def _outputs(g: GraphBuilder, answer: str, task: str, meaning: str, n_classes: int,
             threshold: float) -> list[onnx.ValueInfoProto]:
    x = g.op("Cast", [answer], to=FLOAT)
    if task == "regression":
        g.alias(g.op("Reshape", [x, g.const(np.array([-1, 1], dtype=np.int64), "column")]), "prediction")
        return [helper.make_tensor_value_info("prediction", FLOAT, ["N", 1])]
    if n_classes == 1:  # one number per row: P(positive) or its logit
        p = g.op("Reshape", [x, g.const(np.array([-1, 1], dtype=np.int64), "column")])
        if meaning == "logits":
            p = g.op("Sigmoid", [p])
        q = g.op("Sub", [g.const(np.array([[1.0]], dtype=np.float32), "one"), p])
        probs = g.op("Concat", [q, p], axis=1)
        n_classes = 2
    else:
        x = g.op("Reshape", [x, g.const(np.array([-1, n_classes], dtype=np.int64), "classes")])
        probs = g.op("Softmax", [x], axis=1) if meaning == "logits" else x
    return classification_outputs(g, probs, task, n_classes, threshold)


def check_names(names: list[str], what: str) -> None:
    """Tensor columns take the converted graph's input names; these may not be tandem's own."""
    for name in names:
        if name in RESERVED:
            raise ConfigError(f"{what} has an input named '{name}', a name tandem's bundle graph uses itself "
                              f"({', '.join(RESERVED)}): rename that input before importing")


ELEM_TYPES = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64", TensorProto.FLOAT16: "float16",
              TensorProto.INT64: "int64", TensorProto.INT32: "int32", TensorProto.INT16: "int16",
              TensorProto.INT8: "int8", TensorProto.UINT8: "uint8", TensorProto.BOOL: "bool"}
