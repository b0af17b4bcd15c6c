"""fast_trees: a graph's tree ensembles split into cache-sized parts answer what the whole ensembles answer."""

from __future__ import annotations

import numpy as np
import onnx
import pyarrow as pa
import pytest
from onnx import helper

import tandem
from helpers import mixed_frame
from tandem.bundle.inputs import InputEncoder
from tandem.data.infer import infer_schema, infer_task
from tandem.features.preprocess import Preprocessor
from tandem.inference import Predictor
from tandem.learners import learner_class
from tandem.optimize import fast_trees, measure, optimize
from tandem.registry import Registry
from tandem.schema import categorical_strings
from tandem.study.graph import build_graph


def _ensembles(graph: bytes) -> list[onnx.NodeProto]:
    return [n for n in onnx.load_from_string(graph).graph.node if n.op_type == "TreeEnsemble"]


def _attr(node: onnx.NodeProto, name: str):
    value = helper.get_attribute_value(next(a for a in node.attribute if a.name == name))
    return onnx.numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


@pytest.fixture(scope="module")
def lightgbm_graph():
    """``graph(task)``: a LightGBM member's bundle graph (categorical sets, missing values) and its rows."""
    cache = {}

    def get(task: str):
        if task not in cache:
            frame = mixed_frame(500, task=task, seed=5)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            encoder = InputEncoder(infer_schema(table, "churn"))
            enc = encoder.encode_table(table.drop_columns(["churn"]))
            _, labels = infer_task(table.column("churn"), "churn", task)
            if task == "regression":
                y = frame["churn"].to_numpy(dtype=np.float64)
            else:
                index = {label: i for i, label in enumerate(labels)}
                y = np.array([index[v] for v in categorical_strings(table.column("churn"))])
            pre = Preprocessor.fit(enc, encoder.num_feature_names, encoder.cat_feature_names,
                                   [c.categories or [] for c in encoder.cat_columns])
            learner = learner_class("lightgbm")({"n_estimators": 30, "num_leaves": 8, "min_data_in_leaf": 5},
                                                task=task, n_classes=len(labels) if labels else 1, seed=0,
                                                categorical=pre.tree_categorical_indices)
            learner.fit(pre.view("tree", enc), y, None, None, deadline=None)
            cache[task] = build_graph(pre, task, labels, [(learner, 1.0)], 0.5).SerializeToString(), enc
        return cache[task]

    return get


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_parts_answer_what_the_whole_ensemble_answers(task, lightgbm_graph):
    graph, enc = lightgbm_graph(task)
    (whole,) = _ensembles(graph)
    assert 6 in _attr(whole, "nodes_modes").tolist()  # category sets are in the trees
    split, counts = fast_trees.split_graph(graph, 64)
    parts = _ensembles(split)
    assert counts == [len(parts)] and len(parts) > 2
    assert sum(len(_attr(p, "tree_roots")) for p in parts) == len(_attr(whole, "tree_roots"))
    assert sum(len(_attr(p, "leaf_weights")) for p in parts) == len(_attr(whole, "leaf_weights"))
    # the same leaves in the same order, the same thresholds: only the sum is grouped otherwise
    assert np.array_equal(np.concatenate([_attr(p, "leaf_weights") for p in parts]), _attr(whole, "leaf_weights"))
    assert np.array_equal(np.sort(np.concatenate([_attr(p, "nodes_splits") for p in parts])),
                          np.sort(_attr(whole, "nodes_splits")))
    targets = set(_attr(whole, "leaf_targetids"))
    for p in parts:  # every part reaches every class: no class's sum is left to the runtime's default
        assert set(_attr(p, "leaf_targetids")) == targets
    before = measure.outputs(measure.session(graph), enc)
    after = measure.outputs(measure.session(split), enc)
    for name, value in before.items():
        assert after[name].dtype == value.dtype
        np.testing.assert_allclose(after[name], value, rtol=0, atol=1e-7)


def test_a_small_ensemble_and_other_aggregations_are_left_whole(lightgbm_graph):
    graph, _ = lightgbm_graph("binary")
    assert fast_trees.split_graph(graph, 10**6) is None  # fits one part
    (whole,) = _ensembles(graph)
    averaged = onnx.NodeProto()
    averaged.CopyFrom(whole)
    next(a for a in averaged.attribute if a.name == "aggregate_function").i = 2  # AVERAGE: parts would not sum
    assert fast_trees.split_node(averaged, 64, set()) is None


def test_optimize_registers_a_split_variant_with_the_parents_answers(home):
    frame = mixed_frame(1400, task="binary", seed=6)
    train, held_out = frame.iloc[:1000], frame.iloc[1000:]
    trees60 = [{"name": "lgbm", "family": "lightgbm", "params": {"num_leaves": 8, "learning_rate": 0.1,
                                                                 "n_estimators": 60, "early_stopping_rounds": 1000}}]
    parent = tandem.train(train, "churn", time_limit=8, configs=trees60, name="churn-fast", home=home, bagging="no",
                          footprint=False)
    result = optimize(f"churn-fast:{parent.version}", held_out, max_loss=0.0, methods="fast_trees",
                      goal="throughput", home=home)
    assert result.variants and all(v.method == "fast_trees" for v in result.variants)
    rows = held_out.drop(columns=["churn"])
    for variant in result.variants:
        assert variant.label == f"fast_trees {variant.settings['part_nodes']}"
        assert variant.kept and variant.loss == 0.0 and variant.parity <= 1e-7
        record = Registry(home).get(f"churn-fast:{variant.version}")
        child = Predictor(record.path)  # a verified bundle like any other
        assert len(_ensembles((record.path / "model.onnx").read_bytes())) == variant.settings["parts"][0] > 1
        assert child.manifest["optimization"]["method"] == "fast_trees"
        assert child.manifest["files"]["model.onnx"]["sha256"] != parent.manifest["files"]["model.onnx"]["sha256"]
        np.testing.assert_allclose(child.predict_proba(rows), parent.predict_proba(rows), rtol=0, atol=1e-7)


def test_a_model_without_trees_is_skipped_with_the_reason(home):
    frame = mixed_frame(800, task="binary", seed=7)
    tandem.train(frame.iloc[:600], "churn", time_limit=3, families=["linear"], name="churn-linear", home=home,
                 bagging="no", footprint=False)
    result = optimize("churn-linear", frame.iloc[600:], methods="fast_trees", home=home)
    assert [(v.method, v.skipped) for v in result.variants] == [("fast_trees", fast_trees.NONE_HERE)]
