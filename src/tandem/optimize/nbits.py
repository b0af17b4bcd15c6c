"""Weight-only low-bit quantization: each float matrix multiplication's weight in 4, 2 or 8 bits.

Every ``Gemm``/``MatMul`` whose weight is a float initializer becomes one ONNX Runtime ``MatMulNBits``
node (domain ``com.microsoft``): the weight is cut into blocks of ``block_size`` values along its input
dimension, each block rounded to ``bits``-bit integers with its own float scale and zero point
(asymmetric, round to nearest), and the bias rides along as the node's bias input. Nothing is calibrated
and the activations are never fixed to a scale: 4 bits multiply in float32, 2 and 8 bits round each row's
activations to int8 per block inside the kernel (``COMPUTE``), so a row's answer never depends on the rows
batched with it. Tandem's
dense layers are written as ``Gemm(h, W, b, transB=1)``; the rewrite folds ``alpha``/``beta`` and the
transposition into the stored weight. The rest of the graph (string lookups, TF-IDF, trees) is untouched.

Which widths: ONNX Runtime 1.32's CPU ``MatMulNBits`` kernel runs 2, 4 and 8 bits (``KERNEL_BITS``); a
3-bit node is refused when the session starts ("Only 2b, 4b and 8b quantization is supported"), so this
tandem has no int3. The methods are ``int4`` (:func:`int4_variants`), ``int2`` (:func:`int2_variants`)
and ``int8w`` (:func:`int8w_variants`, 8-bit weights with float activations, unlike ``int8``'s static
QDQ). Each variant's ``settings["speed"]`` says in one sentence whether that width saved time, not only
bytes, against the float32 parent on this CPU, from figures measured in the same run.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tandem.bundle.inputs import EncodedInputs
from tandem.optimize import measure
from tandem.optimize.quantize import QUANTIZED_OPS, float_matmuls
from tandem.optimize.variants import Parent, Variant

KERNEL_BITS = (2, 4, 8)  # what ONNX Runtime 1.32's CPU MatMulNBits runs; 3 bits fails at session start
BLOCK_SIZE = 32  # values per scale along the input dimension: a float scale per 32 weights
MIN_BLOCK = 16  # the kernel's smallest block (a power of two, at least 16)
MS_DOMAIN = "com.microsoft"
ALREADY = QUANTIZED_OPS | {"MatMulNBits", "DynamicQuantizeLinear", "QLinearConv", "ConvInteger"}
# a variant is called faster only when it beats the parent by this fraction: one-row medians wobble a few percent
FASTER_BY = 0.05
SPEED_ROUNDS = 2  # measurements of each graph behind the speed sentence, the best of each kept
# how each width computes (the kernel's accuracy_level): 4 bits in float32; 2 and 8 bits with the activations
# rounded to int8 per block inside the kernel (level 4, still one row at a time), because their float32 path
# unpacks the whole weight on every call: 10 to 25 times slower than level 4 on one row, measured on a Xeon
COMPUTE = {4: 0, 2: 4, 8: 4}


def pack(values: np.ndarray, bits: int) -> np.ndarray:
    """``bits``-bit integers packed into bytes along the last axis, the first value in the lowest bits.

    The last axis times ``bits`` must be a multiple of 8 (a block, or a padded row of zero points)."""
    per = 8 // bits
    values = values.astype(np.uint8)
    out = np.zeros((*values.shape[:-1], values.shape[-1] // per), dtype=np.uint8)
    for j in range(per):
        out |= values[..., j::per] << np.uint8(bits * j)
    return out


def block_size_for(k: int) -> int:
    """The block for an input dimension of ``k``: ``BLOCK_SIZE``, or the smallest power of two >= k when k is
    shorter (a 13-feature first layer needs no 32-value block of padding)."""
    return max(MIN_BLOCK, min(BLOCK_SIZE, 1 << max(0, int(k - 1).bit_length())))


def quantize_weight(w: np.ndarray, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A float ``[K, N]`` weight as MatMulNBits stores it: packed ``B`` ``[N, blocks, block_size * bits / 8]``,
    ``scales`` ``[N * blocks]`` and packed ``zero_points`` ``[N * ceil(blocks * bits / 8)]``."""
    k, n = w.shape
    blocks = -(-k // block_size)
    padded = np.zeros((blocks * block_size, n), dtype=np.float32)
    padded[:k] = w
    grid = padded.T.reshape(n, blocks, block_size)
    top = 2 ** bits - 1
    # the range always holds 0, so zero weights (and the padding) come back exactly zero
    lo = np.minimum(grid.min(axis=2), 0.0)
    hi = np.maximum(grid.max(axis=2), 0.0)
    scale = ((hi - lo) / top).astype(np.float32)
    scale[scale == 0] = 1.0  # an all-zero block: any scale reproduces it
    zero = np.clip(np.round(-lo / scale), 0, top)
    q = np.clip(np.round(grid / scale[..., None]) + zero[..., None], 0, top)
    per = 8 // bits
    zeros = np.zeros((n, -(-blocks // per) * per))  # each output's zero points start on a byte of their own
    zeros[:, :blocks] = zero
    return pack(q, bits), scale.reshape(-1), pack(zeros, bits).reshape(-1)


def dequantize_weight(b: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, bits: int, k: int) -> np.ndarray:
    """The float ``[K, N]`` weight a MatMulNBits node multiplies by: what its integers, scales and zero points mean."""
    n, blocks, _ = b.shape
    per = 8 // bits
    mask = np.uint8(2 ** bits - 1)

    def unpack(packed: np.ndarray) -> np.ndarray:
        parts = [(packed >> np.uint8(bits * j)) & mask for j in range(per)]
        return np.stack(parts, axis=-1).reshape(*packed.shape[:-1], -1).astype(np.float32)

    q = unpack(b)
    zero = unpack(zero_points.reshape(n, -1))[:, :blocks]
    grid = (q - zero[..., None]) * scales.reshape(n, blocks)[..., None]
    return grid.reshape(n, -1)[:, :k].T


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _weight_and_bias(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> tuple[np.ndarray, np.ndarray | None]:
    """The node's float ``[K, N]`` weight and ``[N]`` bias with its attributes folded in, or an empty weight when
    the node is not one a MatMulNBits can replace (a transposed input, a bias that is not a constant vector)."""
    skip = np.empty((0, 0), dtype=np.float32), None
    weight = inits.get(node.input[1]) if len(node.input) > 1 else None
    if weight is None or weight.data_type != onnx.TensorProto.FLOAT or len(weight.dims) != 2:
        return skip
    w = numpy_helper.to_array(weight)
    if node.op_type == "MatMul":
        return w, None
    attrs = _attrs(node)
    if attrs.get("transA", 0):
        return skip
    w = (w.T if attrs.get("transB", 0) else w) * np.float32(attrs.get("alpha", 1.0))
    if len(node.input) < 3 or not node.input[2]:
        return w.astype(np.float32), None
    bias = inits.get(node.input[2])
    if bias is None or bias.data_type != onnx.TensorProto.FLOAT:
        return skip
    c = numpy_helper.to_array(bias)
    if c.size != w.shape[1] or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
        return skip  # a per-row or scalar C broadcasts differently from a bias vector
    return w.astype(np.float32), (c.reshape(-1) * np.float32(attrs.get("beta", 1.0))).astype(np.float32)


def to_nbits(graph: bytes, bits: int) -> tuple[bytes, int] | str:
    """The graph with every float-weight Gemm/MatMul as a ``bits``-bit MatMulNBits, and how many it replaced; or
    one line on why ``int{bits}`` does not apply to this graph."""
    if bits not in KERNEL_BITS:
        raise ValueError(f"MatMulNBits on this runtime runs {', '.join(map(str, KERNEL_BITS))} bits, not {bits}")
    name = method_name(bits)
    model = onnx.load_from_string(graph)
    if not float_matmuls(model):
        if {n.op_type for n in model.graph.node} & ALREADY:
            return f"{name}: this model's matrix multiplications are already quantized"
        return f"{name} quantizes matrix multiplications (dense layers); this model has none (trees and lookups only)"
    inits = {i.name: i for i in model.graph.initializer}
    nodes, added, replaced = [], [], 0
    for node in model.graph.node:
        w, bias = _weight_and_bias(node, inits) if node.op_type in ("Gemm", "MatMul") else (np.empty((0, 0)), None)
        if not w.size:
            nodes.append(node)
            continue
        k, n = w.shape
        block = block_size_for(k)
        b, scales, zeros = quantize_weight(w, bits, block)
        stem = f"{node.name or node.output[0]}_q{bits}"
        tensors = [numpy_helper.from_array(b, f"{stem}_B"), numpy_helper.from_array(scales, f"{stem}_scales"),
                   numpy_helper.from_array(zeros, f"{stem}_zero_points")]
        if bias is not None:
            tensors.append(numpy_helper.from_array(bias, f"{stem}_bias"))
        added += tensors
        inputs = [node.input[0], *(t.name for t in tensors[:3])] + ([] if bias is None else ["", tensors[3].name])
        nodes.append(helper.make_node("MatMulNBits", inputs, list(node.output), name=stem, domain=MS_DOMAIN,
                                      K=k, N=n, bits=bits, block_size=block, accuracy_level=COMPUTE[bits]))
        replaced += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input} | {o.name for o in model.graph.output}
    kept = [i for i in model.graph.initializer if i.name in used]
    gone = {i.name for i in model.graph.initializer} - used
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + added)
    inputs = [i for i in model.graph.input if i.name not in gone]  # older graphs list initializers as inputs too
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model.SerializeToString(), replaced


def method_name(bits: int) -> str:
    """The method (and label) of a width: ``int4``, ``int2``, and ``int8w`` (8-bit weights, apart from int8)."""
    return "int8w" if bits == 8 else f"int{bits}"


def speed_sentence(figures: dict, parent: dict) -> str:
    """Whether the variant saved time as well as bytes on this CPU, with the one-row and batch figures."""
    row = figures["one_row_us"] < parent["one_row_us"] * (1 - FASTER_BY)
    batch = figures["rows_per_s"] > parent["rows_per_s"] * (1 + FASTER_BY)
    saved = {(True, True): "saves bytes and time", (True, False): "saves bytes and one-row time, not batch time",
             (False, True): "saves bytes and batch time, not one-row time",
             (False, False): "saves bytes, not time"}[row, batch]
    return (f"{saved}, on this CPU (one row {figures['one_row_us']:.1f} µs vs fp32 {parent['one_row_us']:.1f} µs; "
            f"batch {figures['rows_per_s']:,} rows/s vs fp32 {parent['rows_per_s']:,} rows/s, one thread)")


def paired_costs(parent_graph: bytes, graph: bytes, rows: EncodedInputs,
                 rounds: int = SPEED_ROUNDS) -> tuple[dict, dict]:
    """(the variant's, the parent's) best one-row and batch figures over ``rounds`` back-to-back measurements of
    each, alternating: both see the same moments of a machine whose other work comes and goes."""
    mine, theirs = [], []
    for _ in range(rounds):
        theirs.append(measure.costs(parent_graph, rows))
        mine.append(measure.costs(graph, rows))

    def best(figures: list[dict]) -> dict:
        return {"one_row_us": min(f["one_row_us"] for f in figures),
                "rows_per_s": max(f["rows_per_s"] for f in figures)}
    return best(mine), best(theirs)


def nbits_variants(parent: Parent, bits: int) -> list[Variant] | str:
    """The ``bits``-bit weight-only variant of the parent's graph, or one line on why it does not apply."""
    made = to_nbits(parent.graph, bits)
    if isinstance(made, str):
        return made
    graph, replaced = made
    speed = speed_sentence(*paired_costs(parent.graph, graph, parent.rows))
    name = method_name(bits)
    settings = {"weights": f"{bits}-bit, asymmetric, a float scale and zero point per block of up to {BLOCK_SIZE} "
                           "inputs", "activations": ("float32" if COMPUTE[bits] == 0 else
                                                     "float32, rounded to int8 per block inside the multiplication"),
                "format": "MatMulNBits (com.microsoft)", "accuracy_level": COMPUTE[bits], "matmuls": replaced,
                "speed": speed}
    return [Variant(name, settings, graph=graph, label=name)]


def int4_variants(parent: Parent) -> list[Variant] | str:
    """The 4-bit weight-only variant (``int4``), or why it does not apply."""
    return nbits_variants(parent, 4)


def int2_variants(parent: Parent) -> list[Variant] | str:
    """The 2-bit weight-only variant (``int2``), or why it does not apply."""
    return nbits_variants(parent, 2)


def int8w_variants(parent: Parent) -> list[Variant] | str:
    """The 8-bit weight-only variant (``int8w``: nothing calibrated, unlike int8's static QDQ), or why it does not
    apply."""
    return nbits_variants(parent, 8)
