"""tandem optimize: variants of a registered bundle, guarded by labelled rows, with lineage, on real graphs."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import tandem
from helpers import tree_count
from tandem.errors import BundleError, ConfigError, DataError
from tandem.inference import Predictor
from tandem.optimize import METHODS, Variant, optimize
from tandem.registry import Registry

INT8_PARITY = 0.05  # int8 weights and activations move a probability by a few hundredths at most here
NO_TREES = ("trees", "trees keeps fewer trees of LightGBM members; this model has none")
INT8_NO_MATMULS = ("int8", "int8 quantizes dense and convolution layers; this model has none (trees and "
                           "lookups only)")


@pytest.fixture(scope="module")
def mlp(home, frames):
    train, _ = frames
    return tandem.train(train, "churn", time_limit=8, families=["mlp"], name="churn-mlp", home=home, bagging="no",
                        footprint=False)


@pytest.fixture(scope="module")
def trees(home, frames):
    train, _ = frames
    # a fixed number of trees (no early stop), so the cuts' counts do not hang on how loaded the machine is
    trees40 = [{"name": "lgbm", "family": "lightgbm", "params": {"num_leaves": 8, "learning_rate": 0.1,
                                                                 "n_estimators": 40, "early_stopping_rounds": 1000}}]
    return tandem.train(train, "churn", time_limit=8, configs=trees40, name="churn-trees", home=home,
                        bagging="no", footprint=False)


def test_int8_variant_is_scored_registered_and_traced_to_its_parent(mlp, frames, home):
    _, held_out = frames
    result = optimize("churn-mlp", held_out, max_loss=0.05, goal="size", methods="int8,trees", home=home)
    variant, trees = result.variants
    assert (trees.method, trees.skipped) == NO_TREES and not trees.kept and trees.graph is None
    assert variant.bytes < result.parent_figures["bytes"]  # int8 weights: a quarter of float32's
    assert variant.method == "int8" and variant.skipped is None
    assert 0 <= variant.parity <= INT8_PARITY
    assert variant.loss <= 0.05 and variant.kept and variant.version == mlp.version + 1
    assert result.best is variant and result.parent == f"churn-mlp:{mlp.version}"

    registry = Registry(home)
    record = registry.get("churn-mlp@optimized")
    assert record.version == variant.version
    child = Predictor(record.path)  # a verified bundle like any other
    lineage, how = child.manifest["lineage"], child.manifest["optimization"]
    assert lineage["parent"] == f"churn-mlp:{mlp.version}"
    assert lineage["parent_model_sha256"] == mlp.manifest["files"]["model.onnx"]["sha256"]
    assert lineage["data_fingerprint"] == mlp.manifest["lineage"]["data_fingerprint"]
    assert how["method"] == "int8" and how["rows"] == len(held_out) and how["loss"] == variant.loss
    assert child.manifest["files"]["model.onnx"]["sha256"] != mlp.manifest["files"]["model.onnx"]["sha256"]
    # the child's graph is int8 and answers like its parent, within the stated tolerance, on rows never seen
    graph_ops = (record.path / "model.onnx").read_bytes()
    assert b"QuantizeLinear" in graph_ops and b"DequantizeLinear" in graph_ops
    rows = held_out.drop(columns=["churn"])
    gap = np.max(np.abs(child.predict_proba(rows) - mlp.predict_proba(rows)))
    assert gap <= INT8_PARITY and np.isclose(gap, variant.parity, atol=1e-6)
    # its energy per 1,000 one-row predictions, metered in the same run as its parent's, is in its ledger
    assert variant.energy_j_per_1000 > 0 and result.parent_figures["energy_j_per_1000"] > 0
    spent = child.manifest["footprint"]
    assert spent["inference"]["energy_j_per_1000"] == variant.energy_j_per_1000
    assert spent["inference"]["predictions"] >= 1000 and spent["inference"]["method"]
    assert spent["optimize"]["energy_kwh"] > 0 and "2 candidates" not in spent["optimize"]["scope"]
    assert [c["energy_j_per_1000"] > 0 for c in how["candidates"]] == [True, True]


def test_the_guard_refuses_a_variant_that_loses_too_much(mlp, frames, home):
    _, held_out = frames
    before = [r.version for r in Registry(home).list() if r.name == "churn-mlp"]
    # a max loss no variant can meet: every candidate must be listed with its loss and never registered
    result = optimize(f"churn-mlp:{mlp.version}", held_out, max_loss=-1.0, methods="int8,trees", home=home)
    variant, trees = result.variants
    assert (trees.method, trees.skipped) == NO_TREES
    assert not variant.kept and variant.version is None and result.best is None
    assert variant.loss > -1.0 and "beyond --max-loss -1, not registered" in variant.why
    assert [r.version for r in Registry(home).list() if r.name == "churn-mlp"] == before


def test_the_alias_moves_only_to_a_variant_that_beats_its_parent_on_the_goal(mlp, frames, home):
    _, held_out = frames
    registry = Registry(home)
    before = registry.get("churn-mlp@optimized").version
    result = optimize(f"churn-mlp:{mlp.version}", held_out, max_loss=0.05, goal="latency", methods="int8,trees",
                      home=home)
    variant, trees = result.variants
    assert (trees.method, trees.skipped) == NO_TREES
    assert variant.kept and variant.version > before
    # kept is not better: the alias follows the measured one-row latency, whichever way this run measured it
    faster = variant.one_row_us < result.parent_figures["one_row_us"]
    assert (result.best is variant) == faster
    assert registry.get("churn-mlp@optimized").version == (variant.version if faster else before)


def test_an_int8_model_is_not_quantized_again(mlp, frames, home):
    _, held_out = frames
    result = optimize("churn-mlp@optimized", held_out, max_loss=0.05, methods="int8,trees", home=home)
    assert [(v.method, v.skipped) for v in result.variants] == [
        ("int8", "int8: this model's matrix multiplications are already quantized"), NO_TREES]


def test_a_method_that_does_not_apply_says_why(trees, frames, home):
    _, held_out = frames
    before = [r.version for r in Registry(home).list() if r.name == "churn-trees"]
    # a max loss no variant can meet: int8 says why it does not apply, trees is tried and refused
    result = optimize("churn-trees", held_out, max_loss=-1.0, methods="int8,trees", home=home)
    assert [(v.method, v.skipped) for v in result.variants] == [
        INT8_NO_MATMULS, ("trees", None), ("trees", None)]
    assert result.best is None and not any(v.kept for v in result.variants)
    assert all(v.loss is not None and "not registered" in v.why for v in result.variants[1:])
    assert result.parent_figures["one_row_us"] > 0 and result.parent_figures["bytes"] > 0
    assert [r.version for r in Registry(home).list() if r.name == "churn-trees"] == before


def test_trees_does_not_apply_to_a_model_without_lightgbm(mlp, frames, home):
    _, held_out = frames
    result = optimize(f"churn-mlp:{mlp.version}", held_out, methods="trees", home=home)
    assert [(v.method, v.skipped) for v in result.variants] == [NO_TREES]
    assert result.best is None and result.variants[0].to_dict()["settings"] == {}


def test_trees_variants_keep_fewer_trees_and_trace_to_their_parent(trees, frames, home):
    _, held_out = frames
    parent_graph = (trees.path / "model.onnx").read_bytes()
    (member,) = trees.manifest["ensemble"]
    full = tree_count(parent_graph)
    assert member["family"] == "lightgbm" and full == member["trees"] >= 8
    result = optimize(f"churn-trees:{trees.version}", held_out, max_loss=0.05, methods="trees", goal="size",
                      home=home)
    half, quarter = result.variants
    assert [v.settings["keep"] for v in result.variants] == ["1/2 of the trees", "1/4 of the trees"]
    assert [v.label for v in result.variants] == ["trees 1/2", "trees 1/4"]
    assert half.settings["trees"] == {member["model"]: full // 2}
    assert quarter.settings["trees"] == {member["model"]: full // 4}
    registry = Registry(home)
    for variant in result.variants:
        assert variant.method == "trees" and variant.skipped is None and variant.loss is not None
        assert variant.bytes < result.parent_figures["bytes"] and variant.parity > 0  # other trees, other answers
        assert variant.kept and variant.version > trees.version  # within 0.05 of the parent's roc_auc here
        record = registry.get(f"churn-trees:{variant.version}")
        child = Predictor(record.path)  # a verified bundle like any other
        graph = (record.path / "model.onnx").read_bytes()
        assert tree_count(graph) == variant.settings["trees"][member["model"]] == child.manifest["ensemble"][0][
            "trees"]
        lineage, how = child.manifest["lineage"], child.manifest["optimization"]
        assert lineage["parent"] == f"churn-trees:{trees.version}"
        assert lineage["parent_model_sha256"] == trees.manifest["files"]["model.onnx"]["sha256"]
        assert how["method"] == "trees" and how["loss"] == variant.loss and how["settings"] == variant.settings
        # every candidate of the run, for the variant's report: the parent, then both cuts
        assert [(c["variant"], c["kept"]) for c in how["candidates"]] == [
            ("parent", True), ("trees 1/2", True), ("trees 1/4", True)]
        assert how["candidates"][2]["bytes"] == quarter.bytes
        report = (record.path / "report.html").read_text()  # its own report, not the parent's copy
        assert f"v{variant.version}</h1>" in report and "Optimization" in report and "trees 1/4" in report
        # its native files are cut like its graph: the bundle agrees with itself, and differs from its parent
        native = f"{member['native']}/lightgbm.txt"
        assert child.manifest["files"][native]["sha256"] != trees.manifest["files"][native]["sha256"]
        assert child.manifest["parity"]["max_abs_diff"] < 1e-5
        rows = held_out.drop(columns=["churn"])
        gap = np.max(np.abs(child.predict_proba(rows) - trees.predict_proba(rows)))
        assert np.isclose(gap, variant.parity, atol=1e-6)
    assert quarter.bytes < half.bytes
    assert result.best is quarter and registry.get("churn-trees@optimized").version == quarter.version


def test_the_training_data_itself_is_refused(trees, frames, home):
    train, _ = frames
    with pytest.raises(DataError, match="is the data this model was trained on"):
        optimize("churn-trees", train, home=home)


def test_a_tampered_parent_is_refused(home, frames, tmp_path):
    train, held_out = frames
    model = tandem.train(train, "churn", time_limit=3, families=["linear"], name="churn-tampered", home=home,
                         bagging="no", footprint=False)
    graph = model.path / "model.onnx"
    graph.chmod(0o644)
    data = bytearray(graph.read_bytes())
    data[-5] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        optimize("churn-tampered", held_out, home=home)


def test_without_the_meter_there_are_no_energy_figures_and_no_energy_goal(mlp, frames, home):
    _, held_out = frames
    with pytest.raises(ConfigError, match="--goal energy needs the footprint meter, which is off"):
        optimize(f"churn-mlp:{mlp.version}", held_out, goal="energy", footprint=False, home=home)
    result = optimize(f"churn-mlp:{mlp.version}", held_out, max_loss=0.05, methods="int8", footprint=False,
                      home=home)
    (variant,) = result.variants
    assert variant.kept and variant.energy_j_per_1000 is None and "energy_j_per_1000" not in result.parent_figures
    child = Registry(home).get(f"churn-mlp:{variant.version}")
    # its ledger is its parent's (process figures only: trained without the meter); this run metered nothing
    assert Predictor(child.path).manifest.get("footprint") == mlp.manifest.get("footprint")


def test_the_energy_goal_picks_the_variant_that_spends_least(mlp, frames, home):
    _, held_out = frames
    result = optimize(f"churn-mlp:{mlp.version}", held_out, max_loss=0.05, methods="int8", goal="energy", home=home)
    (variant,) = result.variants
    less = variant.energy_j_per_1000 < result.parent_figures["energy_j_per_1000"]
    assert variant.kept and (result.best is variant) == less


def test_name_registers_the_variants_under_another_name(mlp, frames, home):
    _, held_out = frames
    result = optimize(f"churn-mlp:{mlp.version}", held_out, max_loss=0.05, methods="int8", goal="size",
                      name="churn-small", home=home)
    (variant,) = result.variants
    record = Registry(home).get("churn-small@optimized")
    assert variant.kept and record.version == variant.version == 1 and result.best is variant
    manifest = Predictor(record.path).manifest
    assert manifest["name"] == "churn-small" and manifest["lineage"]["parent"] == f"churn-mlp:{mlp.version}"
    with pytest.raises(tandem.TandemError, match="model name"):
        optimize(f"churn-mlp:{mlp.version}", held_out, methods="int8", name="../escape", home=home)


def test_bad_options_and_data_are_one_line_errors(trees, frames, home):
    _, held_out = frames
    with pytest.raises(ConfigError, match="--goal must be one of latency, throughput, size, energy, got 'speed'"):
        optimize("churn-trees", held_out, goal="speed", home=home)
    listed = f"unknown method 'int3' (this tandem has: auto, {', '.join(METHODS)})"
    with pytest.raises(ConfigError, match=re.escape(listed)):
        optimize("churn-trees", held_out, methods="int8,int3", home=home)
    with pytest.raises(ConfigError, match="--max-loss must be a finite number"):
        optimize("churn-trees", held_out, max_loss=float("nan"), home=home)
    with pytest.raises(DataError, match="labelled data has no target column 'churn'"):
        optimize("churn-trees", held_out.drop(columns=["churn"]), home=home)
    train, _ = frames
    with pytest.raises(DataError, match="training data has no target column 'churn': a student or a fine-tune"):
        optimize("churn-trees", held_out, train_data=train.drop(columns=["churn"]), home=home)
    with pytest.raises(DataError, match="no-such-file.csv"):
        optimize("churn-trees", held_out, train_data="/nonexistent/no-such-file.csv", home=home)


def test_the_command_line_prints_the_table_and_json(mlp, frames, home, tmp_path):
    _, held_out = frames
    data = tmp_path / "held_out.csv"
    held_out.to_csv(data, index=False)
    env = {"TANDEM_HOME": str(home), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "tandem.cli", "optimize", f"churn-mlp:{mlp.version}", "--data",
                           str(data), "--max-loss", "0.05", "--goal", "size", "--methods", "int8,trees", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["parent"].startswith("churn-mlp:") and result["best"] == "int8"
    assert [v["method"] for v in result["variants"]] == ["int8", "trees"] and result["variants"][0]["kept"]
    assert result["variants"][1]["skipped"] == NO_TREES[1] and not result["variants"][1]["kept"]
    bad = subprocess.run([sys.executable, "-m", "tandem.cli", "optimize", "churn-mlp", "--data", str(data),
                          "--goal", "speed"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        "tandem: error: --goal must be one of latency, throughput, size, energy, got 'speed'"]


def test_tandem_optimize_is_the_function():
    import tandem.optimize as package

    assert callable(tandem.optimize) and callable(package)
    assert Variant("int8").to_dict()["method"] == "int8"
