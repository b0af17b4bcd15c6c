"""Assemble the bundle's ONNX graph (preprocessing views + weighted members) and time it."""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort

from tandem.bundle.inputs import EncodedInputs
from tandem.features.graph import FLOAT, INT64, STRING, GraphBuilder, classification_outputs, tensor_info
from tandem.features.preprocess import Preprocessor
from tandem.learners import Learner


def build_graph(pre: Preprocessor, task: str, labels: list[str] | None, members: list[tuple[Learner, float]],
                threshold: float) -> onnx.ModelProto:
    """The whole inference pipeline for ``members`` (learner, weight) as one ONNX model."""
    g = GraphBuilder()
    g.reserve("num", "cat", "text", "image", "tokens")
    has_num, has_cat, has_text = bool(pre.num_names), bool(pre.cat_names), bool(pre.text_names)
    num = "num" if has_num else None
    cat = "cat" if has_cat else None
    text = "text" if has_text else None
    view_out: dict[str, str] = {}
    parts = []
    tokens = "tokens" if any(learner.view == "tokens" or (learner.view == "embedding" and pre.text_encoder)
                             for learner, _ in members) else None
    for learner, weight in members:
        if learner.view not in view_out:
            view_out[learner.view] = pre.onnx_view(g, learner.view, num, cat, text, tokens)
        out = learner.to_onnx(g, view_out[learner.view])
        if len(members) > 1:
            out = g.op("Mul", [out, g.const(np.array([[weight]], dtype=np.float32), "weight")])
        parts.append(out)
    total = parts[0] if len(parts) == 1 else g.op("Sum", parts, prefix="ensemble")
    inputs = []
    if has_num:
        inputs.append(tensor_info("num", FLOAT, ["N", len(pre.num_names)]))
    if has_cat:
        inputs.append(tensor_info("cat", STRING, ["N", len(pre.cat_names)]))
    if has_text:
        inputs.append(tensor_info("text", STRING, ["N", 2 * len(pre.text_names)]))  # words, characters
    if any(learner.view == "image" or (learner.view == "embedding" and pre.image_encoder) for learner, _ in members):
        inputs.append(tensor_info("image", FLOAT, ["N", 3, pre.image_size, pre.image_size]))
    if tokens:
        inputs.append(tensor_info("tokens", INT64, ["N", len(pre.text_names), "L"]))  # 0 = padding
    if task == "regression":
        g.alias(total, "prediction")
        outputs = [tensor_info("prediction", FLOAT, ["N", 1])]
    else:
        outputs = classification_outputs(g, total, task, len(labels), threshold)
    return g.model(inputs, outputs, doc="tandem pipeline: preprocessing and ensemble")


def single_row_seconds(model: onnx.ModelProto, enc: EncodedInputs, *, rows: int = 64,
                       threads: int = 1) -> tuple[float, ort.InferenceSession]:
    """Median time of one-row runs cycling over up to ``rows`` different rows.

    One thread by default: steady while the study's other threads work, and what one core of a
    serving host costs; the Predictor's default (a thread per core) is faster still.
    """
    sess = session(model, threads=threads)
    feeds = one_row_feeds(sess, enc, rows)
    for f in feeds[:8]:
        sess.run(None, f)
    times = []
    for _ in range(3):
        for f in feeds:
            t = time.perf_counter()
            sess.run(None, f)
            times.append(time.perf_counter() - t)
    return float(np.median(times)), sess


def graph_shape(model: onnx.ModelProto) -> tuple:
    """What a graph's one-row latency depends on, its weights' values aside: its size, its operators in order and
    its weights' shapes. Two configurations of one family that differ only in a weight's value (a linear model's
    regularisation, say) have the same shape, and so the same latency."""
    g = model.graph
    return (model.ByteSize(), tuple(n.op_type for n in g.node), tuple(tuple(t.dims) for t in g.initializer))


def session(model: onnx.ModelProto, *, threads: int = 1) -> ort.InferenceSession:
    """``model`` in ONNX Runtime on the CPU, on ``threads`` threads."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def one_row_feeds(sess: ort.InferenceSession, enc: EncodedInputs, rows: int = 64) -> list[dict]:
    """The first ``rows`` rows of ``enc`` as one-row feeds of ``sess``."""
    wanted = {i.name for i in sess.get_inputs()}  # a member without the sentence encoder takes no tokens
    return [{k: v for k, v in enc.take(np.arange(i, i + 1)).trimmed().feeds().items() if k in wanted}
            for i in range(min(rows, enc.n_rows))]


def predict_one_row_each(sess: ort.InferenceSession, enc: EncodedInputs, n: int) -> int:
    """Run ``n`` one-row predictions cycling over ``enc``'s first rows (what an energy window meters)."""
    feeds = one_row_feeds(sess, enc)
    for i in range(n):
        sess.run(None, feeds[i % len(feeds)])
    return n
