"""Weight-only int4/int2/int8w: MatMulNBits graphs checked against ONNX Runtime's kernel, their fp32 parents and the
registry, on real trained bundles."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import tandem
from tandem.data.readers import read_table
from tandem.errors import ConfigError
from tandem.inference import Predictor
from tandem.optimize import nbits, optimize
from tandem.optimize.quantize import float_matmuls, int8_static
from tandem.optimize.run import METHODS
from tandem.optimize.variants import Parent
from tandem.registry import Registry

# int4 moves a probability by 0.008 to 0.049 on five MLPs trained like the fixture's (five seeds): twice the worst
INT4_PARITY = 0.1
# 8-bit weights (int8-rounded activations inside the kernel): 0.001 to 0.010 on the same five
INT8W_PARITY = 0.03
# the node against numpy's reading of the same integers, scales and zero points: float32 summation order only
KERNEL_EXACT = 1e-4


def no_matmuls(name: str) -> str:
    return f"{name} quantizes matrix multiplications (dense layers); this model has none (trees and lookups only)"


def ops(graph: bytes) -> list[str]:
    return [n.op_type for n in onnx.load_from_string(graph).graph.node]


def run(graph: bytes, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def dense_graph(nodes: list[onnx.NodeProto], weights: dict[str, np.ndarray], k: int, n: int) -> bytes:
    """A float graph ``x [rows, k] -> y [rows, n]`` of the given nodes and float initializers."""
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
                              [numpy_helper.from_array(v.astype(np.float32), name) for name, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def reference(graph: bytes, x: np.ndarray) -> np.ndarray:
    """What a MatMulNBits graph means, in numpy: its integers dequantized, multiplied in float64, bias added."""
    model = onnx.load_from_string(graph)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    h = {"x": x.astype(np.float64)}
    for node in model.graph.node:
        a = {k.name: helper.get_attribute_value(k) for k in node.attribute}
        if node.op_type == "MatMulNBits":
            w = nbits.dequantize_weight(inits[node.input[1]], inits[node.input[2]], inits[node.input[3]], a["bits"],
                                        a["K"])
            out = h[node.input[0]] @ w.astype(np.float64)
            h[node.output[0]] = out + inits[node.input[5]] if len(node.input) > 5 else out
        elif node.op_type == "Relu":
            h[node.output[0]] = np.maximum(h[node.input[0]], 0)
        else:
            raise AssertionError(f"unexpected {node.op_type}")
    return h["y"]


@pytest.fixture(scope="module")
def mlp(home, frames):
    train, _ = frames
    return tandem.train(train, "churn", time_limit=6, families=["mlp"], name="churn-mlp", home=home, bagging="no",
                        footprint=False)


@pytest.fixture(scope="module")
def trees(home, frames):
    train, _ = frames
    return tandem.train(train, "churn", time_limit=3, families=["lightgbm"], name="churn-trees", home=home,
                        bagging="no", footprint=False)


@pytest.fixture(scope="module")
def widths(mlp, frames, home):
    """One run of every width on the MLP bundle, generous enough that each is registered."""
    _, held_out = frames
    return optimize(f"churn-mlp:{mlp.version}", held_out, max_loss=1.0, goal="size", methods="int4,int2,int8w",
                    footprint=False, home=home)


@pytest.mark.parametrize("bits", nbits.KERNEL_BITS)
def test_the_node_computes_what_its_integers_mean(bits):
    rng = np.random.default_rng(bits)
    k, hidden, n = 45, 70, 3  # 45 inputs: two blocks of 32, the second padded; 70 outputs: an odd count of rows
    weights = {"w1": rng.normal(size=(hidden, k)), "b1": rng.normal(size=(1, hidden)),
               "w2": rng.normal(size=(hidden, n)), "w3": rng.normal(size=(n, n))}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2"], ["z"]),
             helper.make_node("MatMul", ["z", "w3"], ["y"])]
    fp32 = dense_graph(nodes, weights, k, n)
    graph, replaced = nbits.to_nbits(fp32, bits)
    assert replaced == 3 and ops(graph) == ["MatMulNBits", "Relu", "MatMulNBits", "MatMulNBits"]
    model = onnx.load_from_string(graph)
    assert not float_matmuls(model) and {i.name for i in model.graph.initializer}.isdisjoint(weights)
    first = model.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in first.attribute}
    assert (attrs["K"], attrs["N"], attrs["bits"], attrs["block_size"]) == (k, hidden, bits, 32)
    assert attrs["accuracy_level"] == nbits.COMPUTE[bits]
    assert model.graph.node[2].input[5:] == [] and len(first.input) == 6  # the Gemm bias rides as the node's bias
    x = rng.normal(size=(9, k)).astype(np.float32)
    got = run(graph, x)
    want = reference(graph, x)
    if nbits.COMPUTE[bits] == 0:
        assert np.max(np.abs(got - want)) <= KERNEL_EXACT * np.max(np.abs(want))
    else:  # the kernel rounds activations to int8: near numpy's reading, not equal to it
        assert np.max(np.abs(got - want)) <= 0.05 * np.max(np.abs(want))
    # alpha, beta and the transposition are folded in: the stored weight is 0.5 * w1.T to within half a step
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    stored = nbits.dequantize_weight(*(inits[i] for i in first.input[1:4]), bits, k)
    folded = 0.5 * weights["w1"].T
    step = (np.maximum(folded.max(axis=0), 0) - np.minimum(folded.min(axis=0), 0)) / (2 ** bits - 1)
    assert np.all(np.abs(stored - folded) <= step / 2 + 1e-5)
    assert np.allclose(inits[first.input[5]], 2.0 * weights["b1"].ravel())
    # a row's answer does not depend on the rows batched with it (beyond float32 summation order: int8-rounded
    # activations are rounded per row, never on a scale fixed by the batch)
    alone = np.vstack([run(graph, x[i:i + 1]) for i in range(len(x))])
    assert np.max(np.abs(alone - got)) <= KERNEL_EXACT * np.max(np.abs(got))


def test_weights_round_trip_within_half_a_step():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(13, 5)).astype(np.float32)
    w[:, 2] = 0.0  # an all-zero output comes back exactly zero
    for bits in nbits.KERNEL_BITS:
        block = nbits.block_size_for(13)
        b, scales, zeros = nbits.quantize_weight(w, bits, block)
        assert block == 16 and b.shape == (5, 1, 16 * bits // 8) and b.dtype == np.uint8
        assert scales.shape == (5,) and zeros.shape == (5,)  # one block per output, its zero point on its own byte
        back = nbits.dequantize_weight(b, scales, zeros, bits, 13)
        assert back.shape == w.shape and np.all(back[:, 2] == 0)
        step = (np.maximum(w.max(axis=0), 0) - np.minimum(w.min(axis=0), 0)) / (2 ** bits - 1)
        assert np.all(np.abs(back - w) <= step / 2 + 1e-6)
    assert nbits.pack(np.array([[1, 2, 3, 0]]), 2).tolist() == [[0b00111001]]
    assert nbits.pack(np.array([[15, 1]]), 4).tolist() == [[0x1F]]
    assert [nbits.block_size_for(k) for k in (1, 13, 16, 17, 32, 300)] == [16, 16, 16, 32, 32, 32]


def test_a_width_without_a_kernel_is_not_offered():
    # the runtime itself refuses a 3-bit node: the widths offered are the ones its CPU kernel runs
    k, n = 32, 4
    node = helper.make_node("MatMulNBits", ["x", "B", "scales"], ["y"], domain=nbits.MS_DOMAIN, K=k, N=n, bits=3,
                            block_size=32)
    graph = helper.make_graph([node], "int3", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
                              [numpy_helper.from_array(np.zeros((n, 1, 12), np.uint8), "B"),
                               numpy_helper.from_array(np.ones(n, np.float32), "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(nbits.MS_DOMAIN,
                                                                                                        1)])
    with pytest.raises(Exception, match="Only 2b, 4b and 8b quantization is supported"):
        run(model.SerializeToString(), np.zeros((1, k), np.float32))
    assert nbits.KERNEL_BITS == (2, 4, 8) and "int3" not in METHODS
    assert {"int4", "int2", "int8w"} <= set(METHODS)
    fp32 = dense_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], {"w": np.ones((k, n))}, k, n)
    with pytest.raises(ValueError, match="runs 2, 4, 8 bits, not 3"):
        nbits.to_nbits(fp32, 3)
    with pytest.raises(ConfigError, match="unknown method 'int3'"):
        optimize("churn-mlp", "unused.csv", methods="int4,int3")


def test_int4_variant_is_smaller_answers_like_its_parent_and_is_registered(widths, mlp, frames, home):
    _, held_out = frames
    int4, int2, int8w = widths.variants
    parent_graph = (mlp.path / "model.onnx").read_bytes()
    dense = ops(parent_graph).count("Gemm")
    assert [v.method for v in widths.variants] == ["int4", "int2", "int8w"] and dense >= 2
    assert all(v.skipped is None and v.kept and v.version > mlp.version for v in widths.variants)
    assert int2.bytes < int4.bytes < int8w.bytes < widths.parent_figures["bytes"]
    assert int4.bytes < widths.parent_figures["bytes"] / 4  # 4-bit weights plus a scale and zero point per 32
    assert 0 <= int4.parity <= INT4_PARITY and 0 <= int8w.parity <= INT8W_PARITY
    assert int2.parity > int8w.parity  # fewer bits, further from the parent
    assert widths.best is int2  # the smallest, within this run's generous --max-loss
    for variant in widths.variants:
        assert variant.settings["matmuls"] == dense and variant.settings["format"] == "MatMulNBits (com.microsoft)"
        speed = variant.settings["speed"]
        assert re.fullmatch(r"saves bytes(, not time| and time| and one-row time, not batch time| and batch time, "
                            r"not one-row time), on this CPU \(one row [\d.]+ µs vs fp32 [\d.]+ µs; batch [\d,]+ "
                            r"rows/s vs fp32 [\d,]+ rows/s, one thread\)", speed), speed

    record = Registry(home).get(f"churn-mlp:{int4.version}")
    graph = (record.path / "model.onnx").read_bytes()
    assert ops(graph).count("MatMulNBits") == dense and "Gemm" not in ops(graph) and "MatMul" not in ops(graph)
    assert not float_matmuls(onnx.load_from_string(graph)) and len(graph) == int4.bytes
    # the string lookups and the rest of the preprocessing are the parent's, node for node
    assert [o for o in ops(graph) if o != "MatMulNBits"] == [o for o in ops(parent_graph) if o != "Gemm"]
    child = tandem.load(f"churn-mlp:{int4.version}", home=home)
    lineage, how = Predictor(record.path).manifest["lineage"], Predictor(record.path).manifest["optimization"]
    assert lineage["parent"] == f"churn-mlp:{mlp.version}"
    assert lineage["parent_model_sha256"] == mlp.manifest["files"]["model.onnx"]["sha256"]
    assert how["method"] == "int4" and how["settings"] == int4.settings and how["rows"] == len(held_out)
    rows = held_out.drop(columns=["churn"])
    proba = child.predict_proba(rows)
    gap = np.max(np.abs(proba - mlp.predict_proba(rows)))
    assert gap <= INT4_PARITY and np.isclose(gap, int4.parity, atol=1e-6)
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert set(child.predict(rows)) <= {"yes", "no"}


def test_a_quantized_model_is_not_quantized_again(widths, mlp, frames, home):
    _, held_out = frames
    int4 = widths.variants[0]
    result = optimize(f"churn-mlp:{int4.version}", held_out, methods="int4,int2,int8w", footprint=False, home=home)
    assert [(v.method, v.skipped) for v in result.variants] == [
        (name, f"{name}: this model's matrix multiplications are already quantized")
        for name in ("int4", "int2", "int8w")]
    # int8's QDQ graph neither: its weights feed the multiplications through DequantizeLinear
    enc = Predictor(mlp.path).encoder.encode_table(read_table(held_out, what="rows"), what="rows")
    qdq = int8_static((mlp.path / "model.onnx").read_bytes(), enc)
    assert nbits.to_nbits(qdq, 4) == "int4: this model's matrix multiplications are already quantized"


def test_a_model_without_dense_layers_says_why(trees, frames, home):
    _, held_out = frames
    before = [r.version for r in Registry(home).list() if r.name == "churn-trees"]
    result = optimize("churn-trees", held_out, methods="int4,int2,int8w", footprint=False, home=home)
    assert [(v.method, v.skipped) for v in result.variants] == [
        ("int4", no_matmuls("int4")), ("int2", no_matmuls("int2")), ("int8w", no_matmuls("int8w"))]
    assert result.best is None and not any(v.kept or v.graph is not None for v in result.variants)
    assert [r.version for r in Registry(home).list() if r.name == "churn-trees"] == before


def test_the_speed_sentence_says_plainly_what_was_saved():
    parent = {"one_row_us": 20.0, "rows_per_s": 200000}
    assert nbits.speed_sentence({"one_row_us": 30.5, "rows_per_s": 150000}, parent) == (
        "saves bytes, not time, on this CPU (one row 30.5 µs vs fp32 20.0 µs; batch 150,000 rows/s vs fp32 "
        "200,000 rows/s, one thread)")
    assert nbits.speed_sentence({"one_row_us": 15.0, "rows_per_s": 300000}, parent).startswith(
        "saves bytes and time, on this CPU")
    assert nbits.speed_sentence({"one_row_us": 19.5, "rows_per_s": 300000}, parent).startswith(
        "saves bytes and batch time, not one-row time")  # 2.5% faster on one row is within the timing's wobble
    assert nbits.speed_sentence({"one_row_us": 10.0, "rows_per_s": 100000}, parent).startswith(
        "saves bytes and one-row time, not batch time")


def test_the_speed_sentence_is_measured_against_the_parent_in_the_same_run(mlp, frames):
    _, held_out = frames
    enc = Predictor(mlp.path).encoder.encode_table(read_table(held_out, what="rows"), what="rows")
    graph = (mlp.path / "model.onnx").read_bytes()
    mine, theirs = nbits.paired_costs(graph, graph, enc, rounds=1)
    assert set(mine) == set(theirs) == {"one_row_us", "rows_per_s"} and mine["one_row_us"] > 0
    assert 0.2 < mine["rows_per_s"] / theirs["rows_per_s"] < 5  # one graph timed twice: the same order of figures
    (variant,) = nbits.int4_variants(Parent(mlp.path, mlp.manifest, graph, enc))
    assert variant.method == variant.label == "int4" and ops(variant.graph).count("MatMulNBits") >= 2
    row, parent_row = map(float, re.findall(r"one row ([\d.]+) µs vs fp32 ([\d.]+) µs", variant.settings["speed"])[0])
    faster = row < parent_row * (1 - nbits.FASTER_BY)
    assert variant.settings["speed"].startswith("saves bytes and time" if faster else "saves bytes")
    assert ("one-row time, not" in variant.settings["speed"] or "and time" in variant.settings["speed"]) == faster
