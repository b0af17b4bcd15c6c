"""LightGBM trees as one ONNX TreeEnsemble (ai.onnx.ml 5), thresholds and sums in double.

Written from LightGBM's own model dump rather than through onnxmltools: it handles categorical
splits as set membership, reproduces LightGBM's missing-value routing exactly, and keeps double
precision, so ONNX and native predictions agree to float rounding.
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from tandem.features.graph import GraphBuilder

BRANCH_LEQ = 0
BRANCH_MEMBER = 6


def tree_ensemble(g: GraphBuilder, x_double: str, dump: dict, n_targets: int) -> str:
    """Add a TreeEnsemble node for a LightGBM ``dump_model()``; return its double [N, n_targets] raw score."""
    feature, splits, modes, true_ids, true_leaf, false_ids, false_leaf, missing_true = ([] for _ in range(8))
    roots, leaf_targets, leaf_weights, members = [], [], [], []

    def add_leaf(value: float, target: int) -> int:
        leaf_targets.append(target)
        leaf_weights.append(value)
        return len(leaf_weights) - 1

    def new_node() -> int:
        for lst in (feature, splits, modes, true_ids, true_leaf, false_ids, false_leaf, missing_true):
            lst.append(0)
        return len(feature) - 1

    def child(node: dict, target: int) -> tuple[int, int]:
        if "leaf_value" in node:
            return add_leaf(float(node["leaf_value"]), target), 1
        return walk(node, target), 0

    def walk(node: dict, target: int) -> int:
        i = new_node()
        feature[i] = int(node["split_feature"])
        if node["decision_type"] == "==":
            modes[i] = BRANCH_MEMBER
            splits[i] = 0.0
            members.extend(float(v) for v in str(node["threshold"]).split("||"))
            members.append(np.nan)
            missing_true[i] = 0  # LightGBM sends missing and unseen categories right
        else:
            thr = float(node["threshold"])
            modes[i] = BRANCH_LEQ
            splits[i] = thr
            missing_type = node.get("missing_type", "None")
            if missing_type == "None":
                missing_true[i] = int(0.0 <= thr)  # NaN is read as 0
            else:
                missing_true[i] = int(bool(node.get("default_left", True)))
        # children after the membership values: ONNX reads member sets in node order
        true_ids[i], true_leaf[i] = child(node["left_child"], target)
        false_ids[i], false_leaf[i] = child(node["right_child"], target)
        return i

    for tree in dump["tree_info"]:
        target = tree["tree_index"] % n_targets
        structure = tree["tree_structure"]
        if "leaf_value" in structure:  # a tree with no split: route both ways to its one leaf
            i = new_node()
            leaf = add_leaf(float(structure["leaf_value"]), target)
            true_ids[i] = false_ids[i] = leaf
            true_leaf[i] = false_leaf[i] = 1
            modes[i] = BRANCH_LEQ
            roots.append(i)
        else:
            roots.append(walk(structure, target))

    return ensemble_node(g, x_double, n_targets=n_targets, roots=roots, feature=feature, splits=splits, modes=modes,
                         true_ids=true_ids, true_leaf=true_leaf, false_ids=false_ids, false_leaf=false_leaf,
                         missing_true=missing_true, leaf_targets=leaf_targets, leaf_weights=leaf_weights,
                         members=members)


def ensemble_node(g: GraphBuilder, x_double: str, *, n_targets: int, roots: list[int], feature: list[int],
                  splits: list[float], modes: list[int], true_ids: list[int], true_leaf: list[int],
                  false_ids: list[int], false_leaf: list[int], missing_true: list[int], leaf_targets: list[int],
                  leaf_weights: list[float], members: list[float] | None = None) -> str:
    """One ai.onnx.ml TreeEnsemble (opset 5) summing its trees' leaves in double: [N, n_targets] from ``x_double``.

    Nodes are given as parallel lists (split feature, threshold, mode, true/false child and whether it is a
    leaf, where a missing value goes), leaves by target and weight; ``members`` are the values of set-membership
    splits, in node order, each set ended by NaN."""
    attrs = dict(
        n_targets=n_targets,
        aggregate_function=1,
        post_transform=0,
        tree_roots=roots,
        nodes_featureids=feature,
        nodes_splits=numpy_helper.from_array(np.asarray(splits, dtype=np.float64)),
        nodes_modes=numpy_helper.from_array(np.asarray(modes, dtype=np.uint8)),
        nodes_truenodeids=true_ids,
        nodes_trueleafs=true_leaf,
        nodes_falsenodeids=false_ids,
        nodes_falseleafs=false_leaf,
        nodes_missing_value_tracks_true=missing_true,
        leaf_targetids=leaf_targets,
        leaf_weights=numpy_helper.from_array(np.asarray(leaf_weights, dtype=np.float64)),
    )
    if members:
        attrs["membership_values"] = numpy_helper.from_array(np.asarray(members, dtype=np.float64))
    return g.op("TreeEnsemble", [x_double], domain="ai.onnx.ml", prefix="trees", **attrs)


def flatten_trees(dump: dict) -> dict:
    """Every node of every tree in flat arrays (leaves included, feature -1), with the routing the ONNX graph
    uses (missing values, category sets) and each node's value: LightGBM's internal value, or the leaf's."""
    feature, threshold, is_cat, missing_left, left, right, value, set_id = ([] for _ in range(8))
    sets: list[list[int]] = []
    roots = []

    def add(node: dict) -> int:
        i = len(feature)
        for lst in (feature, left, right, set_id):
            lst.append(-1)
        for lst in (threshold, is_cat, missing_left):
            lst.append(0)
        value.append(float(node.get("leaf_value", node.get("internal_value", 0.0))))
        if "leaf_value" in node:
            return i
        feature[i] = int(node["split_feature"])
        if node["decision_type"] == "==":
            is_cat[i] = 1
            set_id[i] = len(sets)
            sets.append([int(float(v)) for v in str(node["threshold"]).split("||")])
        else:
            threshold[i] = float(node["threshold"])
            if node.get("missing_type", "None") == "None":
                missing_left[i] = int(0.0 <= threshold[i])  # NaN is read as 0
            else:
                missing_left[i] = int(bool(node.get("default_left", True)))
        left[i] = add(node["left_child"])
        right[i] = add(node["right_child"])
        return i

    for tree in dump["tree_info"]:
        roots.append(add(tree["tree_structure"]))
    return {"roots": roots, "feature": feature, "threshold": threshold, "is_cat": is_cat,
            "missing_left": missing_left, "left": left, "right": right, "value": value, "set_id": set_id,
            "sets": sets}
