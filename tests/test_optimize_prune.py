"""tandem optimize's prune: neural members cut by magnitude or by whole neurons/channels, fine-tuned on training
rows only, registered with lineage, the bundle's graph and native files agreeing."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image
from safetensors.numpy import load_file

import tandem
from tandem.learners.cnn import CNNLearner
from tandem.learners.mlp import MLPLearner
from tandem.optimize import optimize, prune
from tandem.registry import Registry

NATIVE_PARITY = 1e-5  # the rebuilt graph against its own (pruned) native members, float32 arithmetic
# one MLP configuration, so the member's name and sizes are known whichever the study would have picked
MLP = [{"name": "mlp", "family": "mlp", "params": {"hidden": [128, 64], "epochs": 40, "patience": 6}}]
# a tiny CNN, so the test trains it in seconds; fp32: the same arithmetic on every CPU
TINY_CNN = [{"name": "cnn", "family": "cnn",
             "params": {"channels": [8, 16, 16], "epochs": 6, "patience": 6, "batch_size": 32, "precision": "fp32"}}]


def zero_share(array: np.ndarray) -> float:
    return float(np.mean(np.asarray(array) == 0))


def initializers(graph_path) -> list[np.ndarray]:
    return [numpy_helper.to_array(t) for t in onnx.load(str(graph_path)).graph.initializer]


@pytest.fixture(scope="module")
def mlp(home, frames):
    train, _ = frames
    return tandem.train(train, "churn", time_limit=8, configs=MLP, name="churn-mlp", home=home, bagging="no",
                        footprint=False)


@pytest.fixture(scope="module")
def pruned(mlp, frames, home):
    train, held_out = frames
    return optimize(f"churn-mlp:{mlp.version}", held_out, methods="prune", train_data=train, max_loss=0.05,
                    goal="size", home=home)


def test_magnitude_pruning_zeroes_half_of_every_layer_in_native_files_and_graph(mlp, pruned, frames, home):
    _, held_out = frames
    magnitude, channels = pruned.variants
    assert [v.label for v in pruned.variants] == ["prune 50% magnitude", "prune 50% channels"]
    assert magnitude.method == channels.method == "prune" and magnitude.skipped is None
    settings = magnitude.settings
    assert settings["kind"] == "magnitude" and settings["sparsity"] == {"mlp": 0.5} and settings["layers"] == {
        "mlp": 3}
    # fine-tuned on the training rows (never the held-out ones), the zeros held through it
    tuned = settings["fine_tune"]
    assert tuned["rows"] == 1000 and tuned["members"]["mlp"]["steps"] > 0 and "distillation" in tuned["loss"]
    assert magnitude.kept and magnitude.version > mlp.version and magnitude.loss <= 0.05

    record = Registry(home).get(f"churn-mlp:{magnitude.version}")
    weights = {k: v for k, v in load_file(str(record.path / "native/mlp/mlp.safetensors")).items()
               if k.endswith(".weight")}
    assert len(weights) == 3 and all(zero_share(w) >= 0.5 for w in weights.values())
    parent_weights = load_file(str(mlp.path / "native/mlp/mlp.safetensors"))
    assert all(zero_share(parent_weights[k]) < 0.01 for k in weights)  # the parent's are dense
    # the graph holds the very same sparse matrices (Gemm with transB: stored as the layers' own weights)
    graph = initializers(record.path / "model.onnx")
    for w in weights.values():
        assert any(g.shape == w.shape and np.array_equal(g, w) for g in graph)
    # ...stored densely: no smaller, and ONNX Runtime's dense kernels do no less work; only compression sees it
    assert abs(magnitude.bytes - pruned.parent_figures["bytes"]) <= 0.01 * pruned.parent_figures["bytes"]
    assert settings["zlib_bytes"] < 0.8 * settings["parent_zlib_bytes"]
    assert "sparsity brings no speed" in settings["speed"]


def test_channel_pruning_makes_the_mlp_narrower_smaller_and_rebuildable(mlp, pruned, frames, home):
    _, held_out = frames
    _, channels = pruned.variants
    parent_hidden = json.loads((mlp.path / "native/mlp/mlp.json").read_text())["hidden"]
    halved = [h // 2 for h in parent_hidden]
    sizes = channels.settings["sizes"]["mlp"]
    assert sizes["hidden"] == {"before": parent_hidden, "after": halved}
    assert sizes["parameters"]["after"] < 0.5 * sizes["parameters"]["before"]
    assert channels.bytes < 0.5 * pruned.parent_figures["bytes"]
    assert channels.kept and channels.settings["fine_tune"]["members"]["mlp"]["epochs"] >= 3

    record = Registry(home).get(f"churn-mlp:{channels.version}")
    assert json.loads((record.path / "native/mlp/mlp.json").read_text())["hidden"] == halved
    learner = MLPLearner.load(record.path / "native/mlp", task="binary", n_classes=2)
    assert [layer.out_features for layer in learner._linears()] == [*halved, 2]
    member = json.loads((record.path / "manifest.json").read_text())["ensemble"][0]
    assert member["parameters"] == sizes["parameters"]["after"] < mlp.manifest["ensemble"][0]["parameters"]


def test_pruned_variants_load_predict_and_trace_to_their_parent(mlp, pruned, frames, home):
    _, held_out = frames
    rows = held_out.drop(columns=["churn"])
    for variant in pruned.variants:
        child = tandem.load(f"churn-mlp:{variant.version}", home=home)
        lineage, how = child.manifest["lineage"], child.manifest["optimization"]
        assert lineage["parent"] == f"churn-mlp:{mlp.version}"
        assert lineage["parent_model_sha256"] == mlp.manifest["files"]["model.onnx"]["sha256"]
        assert how["method"] == "prune" and how["settings"] == variant.settings
        assert variant.native_parity < NATIVE_PARITY and child.manifest["parity"]["max_abs_diff"] < NATIVE_PARITY
        gap = np.max(np.abs(child.predict_proba(rows) - mlp.predict_proba(rows)))
        assert gap > 0 and np.isclose(gap, variant.parity, atol=1e-5)  # pruned: other weights, other answers
        assert list(child.predict(rows[:5])) == list(child.predict(rows[:5]))
        assert set(child.predict(rows)) <= set(mlp.manifest["labels"])


def test_without_training_rows_prune_cuts_but_does_not_fine_tune(mlp, frames, home):
    _, held_out = frames
    before = [r.version for r in Registry(home).list() if r.name == "churn-mlp"]
    result = optimize(f"churn-mlp:{mlp.version}", held_out, methods="prune", max_loss=-1.0, home=home)
    magnitude, channels = result.variants
    assert magnitude.settings["fine_tune"] == channels.settings["fine_tune"] == "none: no --train-data given"
    assert magnitude.settings["sparsity"] == {"mlp": 0.5}
    assert channels.settings["sizes"]["mlp"]["parameters"]["after"] < channels.settings["sizes"]["mlp"][
        "parameters"]["before"]
    assert not magnitude.kept and not channels.kept and "not registered" in channels.why
    assert [r.version for r in Registry(home).list() if r.name == "churn-mlp"] == before


def test_magnitude_pruning_of_an_already_sparse_model_says_so(pruned, frames, home):
    _, held_out = frames
    magnitude = pruned.variants[0]
    result = optimize(f"churn-mlp:{magnitude.version}", held_out, methods="prune", max_loss=-1.0, home=home)
    again, channels = result.variants
    assert again.skipped == "prune: the neural members' weights are already at least 50% zeros"
    assert again.graph is None and channels.skipped is None


def test_prune_does_not_apply_to_a_model_without_neural_members(frames, home):
    train, held_out = frames
    tandem.train(train, "churn", time_limit=4, families=["lightgbm"], name="churn-trees", home=home, bagging="no",
                 footprint=False)
    result = optimize("churn-trees", held_out, methods="prune", home=home)
    assert [(v.method, v.skipped) for v in result.variants] == [
        ("prune", "prune removes weights of neural members (MLP, CNN); this model has none")]
    assert result.best is None


# -- the CNN --------------------------------------------------------------------------------------------------
def picture(kind: str, rng: np.random.Generator, side: int = 16) -> Image.Image:
    """A noisy background with a coloured square, disc-like blob or bar."""
    pixels = rng.integers(90, 160, (side, side, 3)).astype(np.uint8)
    colour = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 70, 220)}[kind]
    x, y = (int(v) for v in rng.integers(1, side // 3, 2))
    size = int(rng.integers(side // 2, side - 3))
    h = size if kind != "blue" else max(3, size // 4)
    pixels[y: y + h, x: x + size] = colour
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune-images")
    rng = np.random.default_rng(0)
    for part, n in (("train", 40), ("held_out", 20)):
        for kind in ("red", "green", "blue"):
            (root / part / kind).mkdir(parents=True)
            for i in range(n):
                picture(kind, rng).save(root / part / kind / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def cnn(images, home):
    return tandem.train(str(images / "train"), "label", time_limit=8, configs=TINY_CNN, name="shapes", home=home,
                        bagging="no", footprint=False)


def test_cnn_blocks_lose_inner_channels_and_conv_weights(cnn, images, home):
    assert "inner" not in json.loads((cnn.path / "native/cnn/cnn.json").read_text())  # unpruned: the old format
    result = optimize("shapes", str(images / "held_out"), methods="prune", max_loss=100.0, home=home)
    magnitude, channels = result.variants
    assert magnitude.settings["fine_tune"] == "none: no --train-data given"
    assert magnitude.settings["layers"] == {"cnn": 10}  # stem, 3 blocks x 2 convs, 2 skip convs, the classifier
    assert magnitude.native_parity < NATIVE_PARITY and channels.native_parity < NATIVE_PARITY
    sparse = Registry(home).get(f"shapes:{magnitude.version}")
    state = load_file(str(sparse.path / "native/cnn/cnn.safetensors"))
    convs = [v for k, v in state.items() if k.endswith(".weight") and v.ndim in (2, 4)]
    assert len(convs) == 10 and all(zero_share(w) >= 0.5 for w in convs)
    # torch.onnx folds each batch norm into its convolution: a per-channel scale, so the zeros survive
    big = [a for a in initializers(sparse.path / "model.onnx") if a.ndim == 4 and a.size >= 8 * 8 * 9]
    assert big and all(zero_share(a) >= 0.5 for a in big)

    narrow = Registry(home).get(f"shapes:{channels.version}")
    meta = json.loads((narrow.path / "native/cnn/cnn.json").read_text())
    assert meta["channels"] == [8, 16, 16] and meta["inner"] == [4, 8, 8]
    assert channels.settings["sizes"]["cnn"]["inner"] == {"before": [8, 16, 16], "after": [4, 8, 8]}
    learner = CNNLearner.load(narrow.path / "native/cnn", task="multiclass", n_classes=3)
    blocks = [block for _, block in learner.residual_blocks()]
    assert [(b.body[0].out_channels, b.body[3].in_channels, b.body[3].out_channels) for b in blocks] == [
        (4, 4, 8), (8, 8, 16), (8, 8, 16)]
    assert channels.bytes < 0.75 * result.parent_figures["bytes"]
    child = tandem.load(f"shapes:{channels.version}", home=home)
    assert child.predict(str(images / "held_out")).shape == (60,)


def test_the_fine_tune_holds_the_zeros_and_leaves_the_teacher_as_it_was(cnn):
    learner = CNNLearner.load(cnn.path / "native/cnn", task="multiclass", n_classes=3)
    teacher = CNNLearner.load(cnn.path / "native/cnn", task="multiclass", n_classes=3).net
    taught = {k: v.clone() for k, v in teacher.state_dict().items()}
    masks = prune.magnitude_masks(learner.net, 0.5)
    first = learner.net.features[0].weight.detach().clone()
    rng = np.random.default_rng(1)
    X = rng.random((48, 3, 16, 16), dtype=np.float32)
    y = rng.integers(0, 3, 48)
    ran = prune.fine_tune(learner, teacher, X, y, masks, seconds=0.0)  # one epoch: stops after the first
    assert ran["epochs"] == 1 and ran["steps"] == 1 and ran["batch_size"] == 64
    after = learner.net.features[0].weight.detach()
    assert torch.equal(after == 0, first == 0) and not torch.equal(after, first)  # moved, zeros kept
    assert all(zero_share(w.detach().numpy()) >= 0.5 for w, _ in masks)
    assert all(torch.equal(v, taught[k]) for k, v in teacher.state_dict().items())  # it only taught
    with pytest.raises(IndexError, match="out of bounds"):  # labels are class indices of the learner's outputs
        prune.fine_tune(learner, teacher, X, np.full(48, 7), masks, seconds=0.0)


def test_int8_quantizes_the_cnn_convolutions_and_what_lies_between_them(cnn, images, home):
    result = optimize(f"shapes:{cnn.version}", str(images / "held_out"), methods="int8", max_loss=100.0, home=home)
    (variant,) = result.variants
    assert variant.kept and {"Conv", "Add", "Relu", "GlobalAveragePool"} <= set(variant.settings["ops"])
    graph = onnx.load(Registry(home).get(f"shapes:{variant.version}").path / "model.onnx")
    floats = {i.name for i in graph.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    # every convolution reads an int8 weight through a DequantizeLinear, none a float initializer
    assert convs and not any(n.input[1] in floats for n in convs)
    assert variant.bytes < result.parent_figures["bytes"]  # a tiny net: the QDQ nodes' own bytes weigh here
    child = tandem.load(f"shapes:{variant.version}", home=home)
    assert np.max(np.abs(child.predict_proba(str(images / "held_out")) - cnn.predict_proba(
        str(images / "held_out")))) == pytest.approx(variant.parity, abs=1e-6)
