"""bench/tree_speed.py: ONNX Runtime's tree ensembles against LightGBM's own booster, on the same trees.

Adult (the official train/test files from ../shared/data), encoded as tandem encodes it, and LightGBM's
default model (100 trees of 31 leaves, learning rate 0.1) fitted by tandem's LightGBM learner on tandem's
tree view. On the test file's first 4096 rows, one thread everywhere, every candidate timed in the same
rounds (the order rotating each round; medians and the best round): the booster's ``predict`` on the
tree view and, for reference, the booster of bench/optimize.py's baseline on the pandas frame; then ONNX
graphs of the same trees in each form tried:

- ``writer``: what tandem writes (lgbm_onnx.tree_ensemble: ai.onnx.ml 5 TreeEnsemble, thresholds and sums
  in double, category sets as set membership), on the tree view cast to double;
- ``float``: the same node in float32, each threshold rounded down to a float32 (exact for float32 inputs:
  ``x <= t`` is ``x <= f`` for the largest float32 ``f <= t``), the leaf values rounded;
- ``v3_regressor``: the older TreeEnsembleRegressor (double thresholds and leaves), sets as BRANCH_EQ chains;
- ``no_missing_tracks``: a NaN that goes left reads a negated copy of its column with the sides swapped, so
  no node tracks missing values;
- ``indicators``: each category set as a 0/1 column (a Gather from a table per categorical column), split
  with ``<= 0.5``: one-hot-like instead of set membership;
- ``fast_trees <n>``: the writer's node split into parts of about n tree nodes (tandem.optimize.fast_trees);
- ``gemm``: hummingbird's GEMM form (a Gather of each split's column, the comparisons, a batched MatMul
  against each tree's path matrix, the leaf whose path count matches), numeric splits only, so it is timed
  on a model of the same size fitted without categorical splits, next to the writer's graph of that model;

and the whole bundle graph (preprocessing: the category lookups; then the trees) on the encoded rows, with
and without fast_trees, and the preprocessing alone. One-row p50 (µs) of the writer's and fast_trees'
graphs shows what the parts cost a single row. Every form's ROC-AUC on the whole test file is checked
against the booster's (and its raw scores' largest gap).

Prints one JSON line and writes bench/results/tree_speed.json.

    .venv/bin/python bench/tree_speed.py            # ~1 minute
    .venv/bin/python bench/tree_speed.py --quick    # fewer rounds; writes no results file
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import git_head, load_dataset, machine, src_fingerprint, write_atomic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "tree_speed.json"
BATCH = 4096
MAX_AUC_LOSS = 0.001


def say(message: str) -> None:
    print(f"[tree_speed] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- the data

def prepare():
    """Adult encoded as tandem encodes it, the fitted preprocessing, both tree views and the labels."""
    import pyarrow as pa

    from tandem.bundle.inputs import InputEncoder
    from tandem.data.infer import infer_schema
    from tandem.features.preprocess import Preprocessor

    train, test = load_dataset("adult")
    table = pa.Table.from_pandas(train, preserve_index=False)
    encoder = InputEncoder(infer_schema(table, "income"))
    enc_train = encoder.encode_table(table.drop_columns(["income"]))
    enc_test = encoder.encode_table(pa.Table.from_pandas(test.drop(columns=["income"]), preserve_index=False))
    pre = Preprocessor.fit(enc_train, encoder.num_feature_names, encoder.cat_feature_names,
                           [c.categories or [] for c in encoder.cat_columns])
    y_train = (train["income"] == ">50K").to_numpy().astype(int)
    y_test = (test["income"] == ">50K").to_numpy().astype(int)
    return train, test, pre, enc_test, pre.view("tree", enc_train), y_train, pre.view("tree", enc_test), y_test


def default_learner(pre, x, y, categorical: bool = True):
    """LightGBM's default model (100 trees of 31 leaves) fitted by tandem's learner, without early stopping."""
    from tandem.learners import learner_class

    return learner_class("lightgbm")({"n_estimators": 100, "categorical": categorical}, task="binary", n_classes=2,
                                     seed=0, categorical=pre.tree_categorical_indices).fit(x, y, None, None,
                                                                                          deadline=None)


# ------------------------------------------------------------------------------------------ the forms

def nodes_of(dump: dict) -> list[list[dict]]:
    """Each tree as a list of nodes (the root first): leaves with their value, splits with their routing."""
    trees = []
    for tree in dump["tree_info"]:
        nodes: list[dict] = []

        def walk(node: dict, nodes: list[dict] = nodes) -> int:
            i = len(nodes)
            nodes.append({})
            if "leaf_value" in node:
                nodes[i] = {"kind": "leaf", "value": float(node["leaf_value"])}
                return i
            out = {"feature": int(node["split_feature"])}
            if node["decision_type"] == "==":
                out.update(kind="member", set=[int(float(v)) for v in str(node["threshold"]).split("||")],
                           nan_left=False)
            else:
                thr = float(node["threshold"])
                nan_left = (0.0 <= thr) if node.get("missing_type", "None") == "None" else bool(
                    node.get("default_left", True))
                out.update(kind="leq", thr=thr, nan_left=nan_left)
            nodes[i] = out
            out["left"], out["right"] = walk(node["left_child"]), walk(node["right_child"])
            return i

        walk(tree["tree_structure"])
        trees.append(nodes)
    return trees


def float_below(t: float) -> float:
    """The largest float32 <= t: for a float32 x, x <= t exactly when x <= this."""
    f = np.float32(t)
    return float(np.nextafter(f, np.float32(-np.inf)) if float(f) > t else f)


def v5_attrs(trees, n_features: int, dtype=np.float64, negate: bool = False, columns: dict | None = None) -> dict:
    """An ai.onnx.ml 5 TreeEnsemble. ``negate``: a NaN-left split reads column + n_features (the negated copy),
    its sides swapped; ``columns``: category sets read their indicator column (set -> column) with ``<= 0.5``."""
    from onnx import numpy_helper

    cols: dict[str, list] = {k: [] for k in ("f", "s", "m", "ti", "tl", "fi", "fl", "mt")}
    roots, leaf_t, leaf_w, members = [], [], [], []
    for nodes in trees:
        def emit(i: int, nodes=nodes) -> tuple[int, int]:
            n = nodes[i]
            if n["kind"] == "leaf":
                leaf_t.append(0)
                leaf_w.append(n["value"])
                return len(leaf_w) - 1, 1
            k = len(cols["f"])
            for v in cols.values():
                v.append(0)
            left, right = n["left"], n["right"]
            if n["kind"] == "member" and columns is not None:
                cols["f"][k], cols["s"][k] = columns[(n["feature"], tuple(sorted(n["set"])))], 0.5
                left, right = right, left
            elif n["kind"] == "member":
                cols["f"][k], cols["m"][k] = n["feature"], 6
                members.extend([*map(float, n["set"]), np.nan])
            else:
                t = float_below(n["thr"]) if dtype == np.float32 else n["thr"]
                if negate and n["nan_left"]:
                    below = np.nextafter(dtype(-t), dtype(-np.inf))  # -x < -t is -x <= the value below -t
                    cols["f"][k], cols["s"][k] = n["feature"] + n_features, float(below)
                    left, right = right, left
                else:
                    cols["f"][k], cols["s"][k], cols["mt"][k] = n["feature"], t, int(n["nan_left"])
            cols["ti"][k], cols["tl"][k] = emit(left)
            cols["fi"][k], cols["fl"][k] = emit(right)
            return k, 0

        roots.append(emit(0)[0])
    attrs = dict(n_targets=1, aggregate_function=1, post_transform=0, tree_roots=roots, nodes_featureids=cols["f"],
                 nodes_splits=numpy_helper.from_array(np.asarray(cols["s"], dtype=dtype)),
                 nodes_modes=numpy_helper.from_array(np.asarray(cols["m"], dtype=np.uint8)),
                 nodes_truenodeids=cols["ti"], nodes_trueleafs=cols["tl"], nodes_falsenodeids=cols["fi"],
                 nodes_falseleafs=cols["fl"], nodes_missing_value_tracks_true=cols["mt"], leaf_targetids=leaf_t,
                 leaf_weights=numpy_helper.from_array(np.asarray(leaf_w, dtype=dtype)))
    if members:
        attrs["membership_values"] = numpy_helper.from_array(np.asarray(members, dtype=dtype))
    return attrs


def v3_attrs(trees) -> dict:
    """The older TreeEnsembleRegressor, double thresholds and leaves; a category set as a chain of BRANCH_EQ."""
    from onnx import numpy_helper

    c: dict[str, list] = {k: [] for k in ("t", "n", "f", "m", "v", "tr", "fa", "mt")}
    tt, tn, tw = [], [], []
    for tid, nodes in enumerate(trees):
        start = len(c["t"])

        def new(tid=tid, start=start) -> int:
            for v in c.values():
                v.append(0)
            k = len(c["t"]) - 1
            c["t"][k], c["n"][k] = tid, k - start
            return k

        def emit(i: int, nodes=nodes, tid=tid, start=start) -> int:
            n, k = nodes[i], new()
            if n["kind"] == "leaf":
                c["m"][k] = "LEAF"
                tt.append(tid)
                tn.append(k - start)
                tw.append(n["value"])
                return k
            if n["kind"] == "member":
                chain = [k] + [new() for _ in n["set"][1:]]
                left = emit(n["left"])
                for node, value in zip(chain, n["set"], strict=True):
                    c["m"][node], c["f"][node], c["v"][node], c["tr"][node] = ("BRANCH_EQ", n["feature"],
                                                                               float(value), left - start)
                right = emit(n["right"])
                for j, node in enumerate(chain):
                    c["fa"][node] = (chain[j + 1] if j + 1 < len(chain) else right) - start
                return k
            c["m"][k], c["f"][k], c["v"][k], c["mt"][k] = "BRANCH_LEQ", n["feature"], n["thr"], int(n["nan_left"])
            c["tr"][k] = emit(n["left"]) - start
            c["fa"][k] = emit(n["right"]) - start
            return k

        emit(0)
    return dict(nodes_treeids=c["t"], nodes_nodeids=c["n"], nodes_featureids=c["f"], nodes_modes=c["m"],
                nodes_truenodeids=c["tr"], nodes_falsenodeids=c["fa"], nodes_missing_value_tracks_true=c["mt"],
                nodes_values_as_tensor=numpy_helper.from_array(np.asarray(c["v"], dtype=np.float64)), n_targets=1,
                aggregate_function="SUM", target_treeids=tt, target_nodeids=tn, target_ids=[0] * len(tt),
                target_weights_as_tensor=numpy_helper.from_array(np.asarray(tw, dtype=np.float64)))


def indicator_sets(trees) -> dict:
    """Every distinct category set, by categorical column: {feature: [set, ...]}."""
    per: dict[int, list] = {}
    for nodes in trees:
        for n in nodes:
            key = tuple(sorted(n.get("set", ())))
            if n["kind"] == "member" and key not in per.setdefault(n["feature"], []):
                per[n["feature"]].append(key)
    return per


def graph(nodes: list, n_features: int, out_type: int, inits: list | None = None, ml_opset: int = 5) -> bytes:
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, "trees", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_features])],
                          [helper.make_tensor_value_info("raw", out_type, None)], initializer=inits or [])
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid("ai.onnx.ml", ml_opset)]
    model = helper.make_model(g, opset_imports=opsets)
    model.ir_version = 9
    return model.SerializeToString()


def forms(booster, n_features: int) -> dict[str, bytes]:
    """Graphs from the float32 tree view ``x`` to the raw score ``raw``, one per form tried."""
    from onnx import TensorProto, helper, numpy_helper

    from tandem.features.graph import GraphBuilder, tensor_info
    from tandem.learners.lgbm_onnx import tree_ensemble
    from tandem.optimize.fast_trees import PART_NODES, split_graph

    dump = booster.dump_model()
    trees = nodes_of(dump)
    g = GraphBuilder()
    g.reserve("x")
    g.alias(tree_ensemble(g, g.op("Cast", ["x"], to=TensorProto.DOUBLE), dump, 1), "raw")
    writer = g.model([tensor_info("x", TensorProto.FLOAT, ["N", n_features])],
                     [tensor_info("raw", TensorProto.DOUBLE, ["N", 1])]).SerializeToString()
    cast = helper.make_node("Cast", ["x"], ["xd"], to=TensorProto.DOUBLE)
    negated = [helper.make_node("Neg", ["x"], ["nx"]), helper.make_node("Concat", ["x", "nx"], ["xx"], axis=1),
               helper.make_node("Cast", ["xx"], ["xd"], to=TensorProto.DOUBLE)]
    out = {"writer": writer,
           "float": graph([helper.make_node("TreeEnsemble", ["x"], ["raw"], domain="ai.onnx.ml",
                                            **v5_attrs(trees, n_features, np.float32))], n_features,
                          TensorProto.FLOAT),
           "v3_regressor": graph([cast, helper.make_node("TreeEnsembleRegressor", ["xd"], ["raw"],
                                                         domain="ai.onnx.ml", **v3_attrs(trees))], n_features,
                                 TensorProto.FLOAT, ml_opset=3),  # deprecated from ai.onnx.ml 5 on
           "no_missing_tracks": graph([*negated, helper.make_node(
               "TreeEnsemble", ["xd"], ["raw"], domain="ai.onnx.ml", **v5_attrs(trees, n_features, negate=True))],
               n_features, TensorProto.DOUBLE)}
    per = indicator_sets(trees)
    if per:
        nodes, inits, parts, columns = [], [], ["x"], {}
        for f, sets in sorted(per.items()):
            k = max(max(s) for s in sets) + 1
            table = np.zeros((k + 1, len(sets)), dtype=np.float32)  # row k: NaN, unseen, out of range
            for j, s in enumerate(sets):
                table[list(s), j] = 1.0
                columns[(f, s)] = n_features + sum(len(v) for g_, v in per.items() if g_ < f) + j
            inits += [numpy_helper.from_array(table, f"table{f}"), numpy_helper.from_array(np.array([f]), f"col{f}"),
                      numpy_helper.from_array(np.array(k, dtype=np.float32), f"k{f}")]
            nodes += [helper.make_node("Gather", ["x", f"col{f}"], [f"c{f}"], axis=1),
                      helper.make_node("GreaterOrEqual", [f"c{f}", "zero"], [f"ge{f}"]),
                      helper.make_node("Less", [f"c{f}", f"k{f}"], [f"lt{f}"]),
                      helper.make_node("And", [f"ge{f}", f"lt{f}"], [f"in{f}"]),
                      helper.make_node("Where", [f"in{f}", f"c{f}", f"k{f}"], [f"w{f}"]),
                      helper.make_node("Cast", [f"w{f}"], [f"i{f}"], to=TensorProto.INT64),
                      helper.make_node("Squeeze", [f"i{f}", "axis1"], [f"s{f}"]),
                      helper.make_node("Gather", [f"table{f}", f"s{f}"], [f"ind{f}"], axis=0)]
            parts.append(f"ind{f}")
        inits += [numpy_helper.from_array(np.array(0, dtype=np.float32), "zero"),
                  numpy_helper.from_array(np.array([1]), "axis1")]
        nodes += [helper.make_node("Concat", parts, ["xx"], axis=1),
                  helper.make_node("Cast", ["xx"], ["xd"], to=TensorProto.DOUBLE),
                  helper.make_node("TreeEnsemble", ["xd"], ["raw"], domain="ai.onnx.ml",
                                   **v5_attrs(trees, n_features, columns=columns))]
        out["indicators"] = graph(nodes, n_features, TensorProto.DOUBLE, inits)
    for budget in PART_NODES:
        made = split_graph(writer, budget)
        if made is not None:
            out[f"fast_trees {budget}"] = made[0]
    return out


def gemm_graph(booster, n_features: int) -> bytes:
    """Hummingbird's GEMM form of numeric trees: which way every split goes, for all at once, then per tree the
    leaf whose count of agreeing ancestors is its depth."""
    from onnx import TensorProto, helper, numpy_helper

    trees = nodes_of(booster.dump_model())
    n_splits = max(sum(n["kind"] != "leaf" for n in t) for t in trees)
    n_leaves = max(sum(n["kind"] == "leaf" for n in t) for t in trees)
    n_trees = len(trees)
    feat = np.zeros((n_trees, n_splits), dtype=np.int64)
    thr = np.full((n_trees, n_splits), np.inf)
    nan_left = np.zeros((n_trees, n_splits), dtype=bool)
    paths = np.zeros((n_trees, n_splits, n_leaves), dtype=np.float32)  # +1: leaf left of the split, -1: right
    depth = np.full((n_trees, n_leaves), -1.0, dtype=np.float32)  # unused leaf slots never match
    values = np.zeros((n_trees, n_leaves, 1), dtype=np.float64)
    for t, nodes in enumerate(trees):
        split_id, leaf_id = {}, {}
        for i, n in enumerate(nodes):
            (leaf_id if n["kind"] == "leaf" else split_id)[i] = len(leaf_id if n["kind"] == "leaf" else split_id)

        def down(i: int, path: list, t=t, nodes=nodes, split_id=split_id, leaf_id=leaf_id) -> None:
            n = nodes[i]
            if n["kind"] == "leaf":
                j = leaf_id[i]
                values[t, j, 0] = n["value"]
                depth[t, j] = sum(1 for _, side in path if side > 0)
                for s, side in path:
                    paths[t, s, j] = side
                return
            s = split_id[i]
            feat[t, s], thr[t, s], nan_left[t, s] = n["feature"], n["thr"], n["nan_left"]
            down(n["left"], [*path, (s, 1.0)])
            down(n["right"], [*path, (s, -1.0)])

        down(0, [])
    inits = [numpy_helper.from_array(feat.reshape(-1), "feat"), numpy_helper.from_array(thr.reshape(-1), "thr"),
             numpy_helper.from_array(nan_left.reshape(-1), "nan_left"),
             numpy_helper.from_array(paths, "paths"), numpy_helper.from_array(depth[:, None, :], "depth"),
             numpy_helper.from_array(values, "values"),
             numpy_helper.from_array(np.array([-1, n_trees, n_splits]), "shape"),
             numpy_helper.from_array(np.array([0]), "axis0")]
    nodes = [helper.make_node("Cast", ["x"], ["xd"], to=TensorProto.DOUBLE),
             helper.make_node("Gather", ["xd", "feat"], ["xs"], axis=1),  # N x (trees * splits)
             helper.make_node("LessOrEqual", ["xs", "thr"], ["le"]),
             helper.make_node("IsNaN", ["xs"], ["nan"]),
             helper.make_node("And", ["nan", "nan_left"], ["nan_goes_left"]),
             helper.make_node("Or", ["le", "nan_goes_left"], ["left"]),
             helper.make_node("Cast", ["left"], ["lf"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["lf", "shape"], ["lr"]),
             helper.make_node("Transpose", ["lr"], ["lt"], perm=[1, 0, 2]),  # trees x N x splits
             helper.make_node("MatMul", ["lt", "paths"], ["agree"]),  # trees x N x leaves
             helper.make_node("Equal", ["agree", "depth"], ["hit"]),
             helper.make_node("Cast", ["hit"], ["hd"], to=TensorProto.DOUBLE),
             helper.make_node("MatMul", ["hd", "values"], ["per_tree"]),  # trees x N x 1
             helper.make_node("ReduceSum", ["per_tree", "axis0"], ["raw"], keepdims=0)]
    return graph(nodes, n_features, TensorProto.DOUBLE, inits)


# ----------------------------------------------------------------------------------------- the timing

def interleaved(candidates: dict, rounds: int) -> dict:
    """Each candidate's seconds per call over ``rounds`` rounds, every candidate once a round, the order rotating."""
    keys = list(candidates)
    times: dict[str, list[float]] = {k: [] for k in keys}
    for fn in candidates.values():
        fn()
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            start = time.perf_counter()
            candidates[k]()
            times[k].append(time.perf_counter() - start)
    return times


def figures(times: list[float], rows: int, reference: list[float] | None = None) -> dict:
    med, best = float(np.median(times)), float(np.min(times))
    out = {"rows_per_s": round(rows / med), "best_round_rows_per_s": round(rows / best)}
    if reference is not None:
        out["x_booster"] = round(float(np.median(reference)) / med, 3)
        out["x_booster_best_round"] = round(float(np.min(reference)) / best, 3)
    return out


def one_row_p50_us(sessions: dict, x: np.ndarray, rounds: int) -> dict:
    rows = [np.ascontiguousarray(x[i:i + 1]) for i in range(64)]
    times = {k: [] for k in sessions}
    for sess in sessions.values():
        for r in rows[:8]:
            sess.run(None, {"x": r})
    for _ in range(rounds):
        for k, sess in sessions.items():
            for r in rows:
                start = time.perf_counter()
                sess.run(None, {"x": r})
                times[k].append(time.perf_counter() - start)
    return {k: round(float(np.median(v)) * 1e6, 1) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smoke test only (writes no results)")
    args = parser.parse_args(argv)
    rounds = 5 if args.quick else 21
    head, src_start = git_head(), src_fingerprint()

    from sklearn.metrics import roc_auc_score

    from tandem.features.graph import GraphBuilder, tensor_info
    from tandem.optimize import measure
    from tandem.optimize.fast_trees import PART_NODES, split_graph
    from tandem.study.graph import build_graph
    from train_tabular import as_categories, fit_lightgbm

    train, test, pre, enc, x_train, y_train, x_test, y_test = prepare()
    x_test = np.ascontiguousarray(x_test, dtype=np.float32)
    n_features = x_test.shape[1]
    learner = default_learner(pre, x_train, y_train)
    booster = learner.booster
    say(f"LightGBM default model: {booster.num_trees()} trees; forms on {BATCH} rows, {rounds} rounds, 1 thread")
    raw_native = booster.predict(x_test, raw_score=True, num_threads=1)
    auc_native = roc_auc_score(y_test, raw_native)

    graphs = forms(booster, n_features)
    sessions = {k: measure.session(g) for k, g in graphs.items()}
    quality = {}
    for k, sess in sessions.items():
        raw = sess.run(None, {"x": x_test})[0].reshape(-1).astype(np.float64)
        quality[k] = {"roc_auc": round(roc_auc_score(y_test, raw), 6),
                      "auc_loss": round(auc_native - roc_auc_score(y_test, raw), 6),
                      "max_abs_raw_gap": float(np.max(np.abs(raw - raw_native)))}
    xb = np.ascontiguousarray(x_test[:BATCH])
    lgb_train, lgb_test = as_categories(train.drop(columns=["income"]), test.drop(columns=["income"]))
    frame_booster = fit_lightgbm(lgb_train, y_train).booster_  # bench/optimize.py's baseline, on the frame
    frame_b = lgb_test.iloc[:BATCH]
    candidates = {"booster": lambda: booster.predict(xb, num_threads=1),
                  "booster_on_pandas_frame": lambda: frame_booster.predict(frame_b, num_threads=1)}
    for k, sess in sessions.items():
        candidates[k] = lambda sess=sess: sess.run(None, {"x": xb})
    times = interleaved(candidates, rounds)
    trees_only = {k: {**figures(v, BATCH, times["booster"]), **quality.get(k, {})} for k, v in times.items()}
    say("same trees: " + ", ".join(f"{k} {v['rows_per_s']:,}" for k, v in trees_only.items()))

    # the whole bundle graph: preprocessing and trees, on the encoded rows
    bundle = build_graph(pre, "binary", ["<=50K", ">50K"], [(learner, 1.0)], 0.5).SerializeToString()
    g = GraphBuilder()
    g.reserve("num", "cat")
    g.alias(pre.onnx_view(g, "tree", "num", "cat", None, None), "view")
    preprocessing = g.model([tensor_info("num", 1, ["N", len(pre.num_names)]),
                             tensor_info("cat", 8, ["N", len(pre.cat_names)])],
                            [tensor_info("view", 1, ["N", n_features])]).SerializeToString()
    whole = {"bundle_graph": bundle, "preprocessing_only": preprocessing,
             **{f"bundle_graph fast_trees {b}": split_graph(bundle, b)[0] for b in PART_NODES}}
    whole_sessions = {k: measure.session(v) for k, v in whole.items()}
    feeds = enc.take(np.arange(BATCH)).feeds()
    bundle_quality = {}
    for k, sess in whole_sessions.items():
        if k != "preprocessing_only":
            proba = measure.outputs(sess, enc)["probabilities"][:, 1]
            bundle_quality[k] = {"roc_auc": round(roc_auc_score(y_test, proba), 6),
                                 "auc_loss": round(auc_native - roc_auc_score(y_test, proba), 6)}
    candidates = {"booster": lambda: booster.predict(xb, num_threads=1)}
    for k, sess in whole_sessions.items():
        candidates[k] = lambda sess=sess: sess.run(None, feeds)
    times = interleaved(candidates, rounds)
    whole_graph = {k: {**figures(v, BATCH, times["booster"]), **bundle_quality.get(k, {})}
                   for k, v in times.items()}
    say("bundle graph: " + ", ".join(f"{k} {v['rows_per_s']:,}" for k, v in whole_graph.items()))

    # GEMM, on numeric trees of the same size (its categorical sets would need the indicator columns above)
    numeric = default_learner(pre, x_train, y_train, categorical=False).booster
    gemm = {"writer (numeric model)": forms(numeric, n_features)["writer"], "gemm (numeric model)":
            gemm_graph(numeric, n_features)}
    gemm_sessions = {k: measure.session(v) for k, v in gemm.items()}
    raw_numeric = numeric.predict(x_test, raw_score=True, num_threads=1)
    gemm_gap = float(np.max(np.abs(gemm_sessions["gemm (numeric model)"].run(None, {"x": x_test})[0].reshape(-1)
                                   - raw_numeric)))
    candidates = {"booster (numeric model)": lambda: numeric.predict(xb, num_threads=1)}
    for k, sess in gemm_sessions.items():
        candidates[k] = lambda sess=sess: sess.run(None, {"x": xb})
    times = interleaved(candidates, max(3, rounds // 3))
    gemm_figures = {k: figures(v, BATCH, times["booster (numeric model)"]) for k, v in times.items()}
    gemm_figures["gemm (numeric model)"]["max_abs_raw_gap"] = gemm_gap
    say("gemm: " + ", ".join(f"{k} {v['rows_per_s']:,}" for k, v in gemm_figures.items()))

    latency = one_row_p50_us({k: sessions[k] for k in sessions if k == "writer" or k.startswith("fast_trees")},
                             x_test, max(2, rounds // 4))
    booster_rps = trees_only["booster"]["rows_per_s"]
    best_form = max((k for k in trees_only if k not in ("booster", "booster_on_pandas_frame")),
                    key=lambda k: trees_only[k]["rows_per_s"])
    kept = [v["rows_per_s"] for k, v in whole_graph.items() if k.startswith("bundle_graph")
            and v["auc_loss"] <= MAX_AUC_LOSS]
    checks = {
        "writer_rows_per_s_ge_booster_same_trees": trees_only["writer"]["rows_per_s"] >= booster_rps,
        "bundle_graph_variant_rows_per_s_ge_booster_at_auc_loss_le_0.001": max(kept, default=0) >= booster_rps,
        "best_trees_only_form": best_form,
    }
    payload = {"bench": "tree_speed", "machine": machine(), "quick": args.quick,
               "source": {"git_head": head, "src_sha256_start": src_start,
                          "src_changed_during_run": src_fingerprint() != src_start},
               "setup": {"dataset": "adult", "model": "LightGBM defaults (100 trees, 31 leaves) on tandem's tree view",
                         "trees": booster.num_trees(), "batch_rows": BATCH, "threads": 1, "rounds": rounds,
                         "booster_roc_auc": round(auc_native, 6)},
               "same_trees": trees_only, "bundle_graph": whole_graph, "gemm": gemm_figures,
               "one_row_p50_us": latency, "checks": checks}
    if not args.quick:
        write_atomic(RESULTS, payload)
    say(json.dumps(checks))
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
