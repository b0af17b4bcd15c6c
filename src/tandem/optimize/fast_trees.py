"""Trees in parts: every large TreeEnsemble node of the graph split into small ones whose sum is its output.

What bench/tree_speed.py measured (Adult, LightGBM's default model, 4096-row batches on one thread): ONNX
Runtime's TreeEnsemble already beats LightGBM's own booster on the same trees, and no other single-node
form beats the writer's (double thresholds, set membership): float thresholds, the older
TreeEnsembleRegressor, NaN routing without missing-value tracks, one-hot-like indicators for the
category sets all land within noise of it or below. What does move it is how many trees one node holds.
On one thread ONNX Runtime walks a node's rows in blocks of 128, each block through every tree of the
node, so a node whose trees outgrow the L1 cache reloads them for every block; several nodes of a few
hundred tree nodes each keep their trees cached while they sweep the rows: batch throughput up 1.1-1.25x
(Adult: LightGBM's default 100 trees of 31 leaves, a tandem bundle's 300; 400 trees of 63 leaves). Each node
is one more kernel call, so one row gets slower (11 -> 15 µs with parts of 1024 nodes, 23 µs with 256): a
throughput variant, and ``optimize`` moves ``@optimized`` to it only for a goal it wins.

The split is a rewrite of the parent's graph alone (any bundle whose graph has TreeEnsemble nodes that
sum their trees, whoever wrote it): its trees, thresholds and leaf values are copied as they are, in
their order; only the order of the sum changes (part by part, then the parts), a rounding of the
ensemble's own precision (1e-16 of the raw score in double). The native files are the parent's.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tandem.optimize.variants import Parent, Variant

PART_NODES = (256, 1024)  # tree nodes (splits and leaves) per part: what stays in a core's L1 and L2 caches
NONE_HERE = ("fast_trees splits the graph's tree ensembles into cache-sized parts; this model has none "
             "(no TreeEnsemble node that sums its trees)")
_NODE_ATTRS = ("nodes_featureids", "nodes_splits", "nodes_modes", "nodes_truenodeids", "nodes_trueleafs",
               "nodes_falsenodeids", "nodes_falseleafs", "nodes_missing_value_tracks_true")
_KNOWN = {*_NODE_ATTRS, "tree_roots", "leaf_targetids", "leaf_weights", "membership_values", "n_targets",
          "aggregate_function", "post_transform"}
_MEMBER = 6  # BRANCH_MEMBER


def _attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value
    return out


def _trees(attrs: dict) -> list[tuple[list[int], list[int]]]:
    """Each tree's (splits in depth-first order, leaves) as indices into the node's arrays."""
    true_ids, false_ids = attrs["nodes_truenodeids"], attrs["nodes_falsenodeids"]
    true_leaf, false_leaf = attrs["nodes_trueleafs"], attrs["nodes_falseleafs"]
    out = []
    for root in attrs["tree_roots"]:
        splits, leaves, stack = [], [], [root]
        while stack:
            i = stack.pop()
            splits.append(i)
            for child, is_leaf in ((false_ids[i], false_leaf[i]), (true_ids[i], true_leaf[i])):
                (leaves if is_leaf else stack).append(child)
        out.append((splits, sorted(set(leaves))))
    return out


def _parts(trees: list[tuple[list[int], list[int]]], targets: np.ndarray, budget: int) -> list[list[int]]:
    """Consecutive trees in parts of about ``budget`` nodes, each part reaching every target of the node (a part
    without a target's trees would leave that target's sum to the runtime's default)."""
    everyone = set(targets.tolist())
    parts: list[list[int]] = []
    part, size, seen = [], 0, set()
    for t, (splits, leaves) in enumerate(trees):
        n = len(splits) + len(leaves)
        if part and size + n > budget and seen == everyone:
            parts.append(part)
            part, size, seen = [], 0, set()
        part.append(t)
        size += n
        seen.update(targets[leaves].tolist())
    if part:
        if seen != everyone and parts:
            parts[-1] += part
        else:
            parts.append(part)
    return parts


def _part_node(attrs: dict, trees: list[tuple[list[int], list[int]]], members: dict[int, list[float]],
               part: list[int], x: str, out: str, name: str) -> onnx.NodeProto:
    splits = [i for t in part for i in trees[t][0]]
    leaves = [i for t in part for i in trees[t][1]]
    new_split = {old: k for k, old in enumerate(splits)}
    new_leaf = {old: k for k, old in enumerate(leaves)}
    a = {k: np.asarray(attrs[k]) for k in _NODE_ATTRS if k in attrs}
    idx = np.asarray(splits, dtype=np.int64)

    def remap(ids: str, is_leaf: str) -> list[int]:
        return [new_leaf[c] if leaf else new_split[c] for c, leaf in zip(a[ids][idx], a[is_leaf][idx], strict=True)]

    kw = {k: a[k][idx].tolist() for k in ("nodes_featureids", "nodes_trueleafs", "nodes_falseleafs",
                                          "nodes_missing_value_tracks_true") if k in a}
    kw.update(nodes_truenodeids=remap("nodes_truenodeids", "nodes_trueleafs"),
              nodes_falsenodeids=remap("nodes_falsenodeids", "nodes_falseleafs"),
              nodes_splits=numpy_helper.from_array(a["nodes_splits"][idx]),
              nodes_modes=numpy_helper.from_array(a["nodes_modes"][idx]),
              tree_roots=[new_split[trees[t][0][0]] for t in part],
              leaf_targetids=np.asarray(attrs["leaf_targetids"])[leaves].tolist(),
              leaf_weights=numpy_helper.from_array(np.asarray(attrs["leaf_weights"])[leaves]),
              n_targets=attrs["n_targets"], aggregate_function=1, post_transform=0)
    member_values = [v for i in splits if i in members for v in (*members[i], np.nan)]
    if member_values:  # ONNX reads the sets in node order, each closed by a NaN
        kw["membership_values"] = numpy_helper.from_array(
            np.asarray(member_values, dtype=np.asarray(attrs["membership_values"]).dtype))
    return helper.make_node("TreeEnsemble", [x], [out], domain="ai.onnx.ml", name=name, **kw)


def _members(attrs: dict) -> dict[int, list[float]]:
    """Each set-membership split's values, by node index."""
    values = np.asarray(attrs.get("membership_values", np.zeros(0)))
    ends = np.flatnonzero(np.isnan(values))
    nodes = np.flatnonzero(np.asarray(attrs["nodes_modes"]) == _MEMBER)
    starts = np.concatenate([[0], ends[:-1] + 1]) if len(ends) else np.zeros(0, dtype=np.int64)
    return {int(i): values[s:e].tolist() for i, s, e in zip(nodes, starts, ends, strict=True)}


def split_node(node: onnx.NodeProto, budget: int, taken: set[str]) -> list[onnx.NodeProto] | None:
    """``node`` as parts of about ``budget`` tree nodes and a Sum under its output name, or None when it is not a
    TreeEnsemble that sums its trees or already fits one part."""
    if node.op_type != "TreeEnsemble" or node.domain != "ai.onnx.ml":
        return None
    attrs = _attrs(node)
    if (set(attrs) - _KNOWN or attrs.get("aggregate_function", 1) != 1 or attrs.get("post_transform", 0) != 0
            or "nodes_modes" not in attrs):
        return None  # an average, a min or max, a transform, hit rates: not a plain sum of trees
    trees = _trees(attrs)
    parts = _parts(trees, np.asarray(attrs["leaf_targetids"]), budget)
    if len(parts) < 2:
        return None
    members = _members(attrs)
    out = node.output[0]
    names = []
    for k in range(len(parts)):
        name = f"{out}/part{k}"
        while name in taken:
            name += "_"
        taken.add(name)
        names.append(name)
    base = node.name or out
    nodes = [_part_node(attrs, trees, members, part, node.input[0], name, f"{base}/part{k}")
             for k, (part, name) in enumerate(zip(parts, names, strict=True))]
    return [*nodes, helper.make_node("Sum", names, [out], name=f"{base}/sum")]


def split_graph(graph: bytes, budget: int) -> tuple[bytes, list[int]] | None:
    """The graph with each of its large tree ensembles in parts of about ``budget`` tree nodes, and how many parts
    each got; None when none is split."""
    model = onnx.load_from_string(graph)
    taken = {t for n in model.graph.node for t in (*n.input, *n.output)}
    taken |= {t.name for t in (*model.graph.input, *model.graph.output, *model.graph.initializer)}
    nodes, counts = [], []
    for node in model.graph.node:
        parts = split_node(node, budget, taken)
        if parts is None:
            nodes.append(node)
        else:
            nodes.extend(parts)
            counts.append(len(parts) - 1)
    if not counts:
        return None
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model.SerializeToString(), counts


def variants(parent: Parent) -> list[Variant] | str:
    """A variant per part size that splits the parent's tree ensembles, or why the method does not apply."""
    model = onnx.load_from_string(parent.graph)
    if not any(n.op_type == "TreeEnsemble" and n.domain == "ai.onnx.ml" for n in model.graph.node):
        return NONE_HERE
    out, seen = [], set()
    for budget in PART_NODES:
        made = split_graph(parent.graph, budget)
        if made is None or tuple(made[1]) in seen:
            continue
        seen.add(tuple(made[1]))
        out.append(Variant("fast_trees", {"part_nodes": budget, "parts": made[1]}, graph=made[0],
                           label=f"fast_trees {budget}"))
    if not out:
        return (f"fast_trees: every tree ensemble of this model fits one part of {PART_NODES[0]} tree nodes "
                "already; there is nothing to split")
    return out
