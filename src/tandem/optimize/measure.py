"""How a graph is scored and timed: on the labelled rows, the way the study times its members.

Every variant and its parent go through the same functions here: a session on one thread, the
outputs on every labelled row, the model's metric, the one-row median over many calls, the batch
throughput, and the graph's bytes. Figures of one run are compared with each other only.
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort

from tandem.bundle.inputs import EncodedInputs
from tandem.inference import run_graph
from tandem.study import metrics as M
from tandem.study.graph import one_row_feeds

ONE_ROW_CALLS = 300
ONE_ROW_FEEDS = 50  # different rows the one-row calls cycle over
BATCH_ROWS = 4096


def session(graph: bytes, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime session of ``graph`` on ``threads`` CPU threads, fully optimised."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])


def declared(sess: ort.InferenceSession, enc: EncodedInputs) -> EncodedInputs:
    """``enc`` without the token ids when the graph does not read them (a student of an encoder model)."""
    if enc.tokens is None or "tokens" in {i.name for i in sess.get_inputs()}:
        return enc
    return EncodedInputs(enc.num, enc.cat, enc.text, enc.image)


def outputs(sess: ort.InferenceSession, enc: EncodedInputs) -> dict[str, np.ndarray]:
    """The graph's outputs on ``enc``, by name."""
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, run_graph(sess.run, names, declared(sess, enc)), strict=True))


def answer(task: str, out: dict[str, np.ndarray]) -> np.ndarray:
    """What the metric reads: the probabilities, or the predicted values."""
    return out["prediction"].reshape(-1, 1) if task == "regression" else out["probabilities"]


def metric_loss(metric: str, y: np.ndarray, pred: np.ndarray, threshold: float) -> tuple[float, float]:
    """(the metric's value, the loss that orders it: lower is better) of ``pred`` against ``y``."""
    value = M.score(metric, y, pred, threshold=threshold)
    return value, (value if metric in M.LOWER_IS_BETTER else -value)


def costs(graph: bytes, enc: EncodedInputs) -> dict:
    """One-row p50 (µs) and batch rows/s on one thread, and the graph's bytes."""
    sess = session(graph)
    enc = declared(sess, enc)
    names = [o.name for o in sess.get_outputs()]
    feeds = one_row_feeds(sess, enc, ONE_ROW_FEEDS)
    for f in feeds[:10]:  # warm-up
        sess.run(names, f)
    times = []
    for k in range(ONE_ROW_CALLS):
        f = feeds[k % len(feeds)]
        start = time.perf_counter()
        sess.run(names, f)
        times.append(time.perf_counter() - start)
    batch = enc.take(np.arange(min(enc.n_rows, BATCH_ROWS)))
    run_graph(sess.run, names, batch)
    start, runs = time.perf_counter(), 0
    while runs < 3 or time.perf_counter() - start < 0.5:
        run_graph(sess.run, names, batch)
        runs += 1
    seconds = (time.perf_counter() - start) / runs
    return {"one_row_us": round(float(np.median(times)) * 1e6, 1), "rows_per_s": round(batch.n_rows / seconds),
            "bytes": len(graph)}
