"""TensorFlow and Keras models in: live Keras models, ``.keras`` files (safe mode only), SavedModels; each one ONNX
graph whose answer ONNX Runtime computes as TensorFlow does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf

from tandem.errors import ConfigError
from tandem.foreign.source import OPSET, Converted
from tandem.foreign.tensorflow_models import keras_converted, read_keras, savedmodel_converted

TOL = 1e-5
# Keras's own weight saving (model.save) trips numpy 2's __array__ copy deprecation; nothing of tandem's does
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _run(converted: Converted, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(converted.graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([converted.output], feeds)[0]


def _check_graph(converted: Converted) -> None:
    onnx.checker.check_model(converted.graph, full_check=True)
    assert [o.name for o in converted.graph.graph.output] == [converted.output]
    assert {o.domain: o.version for o in converted.graph.opset_import}.get("", None) == OPSET


def _assert_parity(converted: Converted, model_answer: np.ndarray, feeds: dict[str, np.ndarray]) -> None:
    got = _run(converted, feeds)
    ref = converted.reference(feeds)
    assert got.shape == ref.shape == model_answer.shape
    assert np.abs(got - ref).max() <= TOL
    assert np.abs(got - model_answer).max() <= TOL


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).random((96, 28, 28, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def cnn(images: np.ndarray) -> keras.Model:
    """A small CNN trained one epoch on synthetic images (class: which third of the image is brightest)."""
    keras.utils.set_random_seed(0)
    labels = np.argmax([images[:, :, :9].mean(axis=(1, 2, 3)), images[:, :, 9:18].mean(axis=(1, 2, 3)),
                        images[:, :, 18:].mean(axis=(1, 2, 3))], axis=0)
    pixels = keras.Input((28, 28, 1), name="pixels")
    x = keras.layers.Conv2D(4, 3, activation="relu")(pixels)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(3, activation="softmax", name="classes")(x)
    model = keras.Model(pixels, out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=1, batch_size=32, verbose=0)
    return model


def test_cnn_softmax_is_probabilities_with_batch_free(cnn: keras.Model, images: np.ndarray) -> None:
    converted = keras_converted(cnn)
    _check_graph(converted)
    assert converted.framework == "keras"
    assert converted.meaning == "probabilities"
    assert converted.output == "classes"
    (graph_input,) = converted.graph.graph.input
    assert graph_input.name == "pixels"
    assert _dims(graph_input) == ["N", 28, 28, 1]
    assert _dims(converted.graph.graph.output[0]) == ["N", 3]
    for n in (1, 7):  # the batch dimension really is free
        batch = images[:n]
        _assert_parity(converted, cnn.predict(batch, verbose=0), {"pixels": batch})


def test_mlp_regression_is_values_and_linear_width_three_is_logits() -> None:
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(128, 6)).astype(np.float32)
    y = (x @ rng.normal(size=6) + 0.5).astype(np.float32)
    mlp = keras.Sequential([keras.Input((6,), name="features"), keras.layers.Dense(16, activation="relu"),
                            keras.layers.Dense(1)])
    mlp.compile(optimizer="adam", loss="mse")
    mlp.fit(x, y, epochs=1, batch_size=32, verbose=0)
    converted = keras_converted(mlp)
    _check_graph(converted)
    assert converted.meaning == "values"
    assert [(i.name, _dims(i)) for i in converted.graph.graph.input] == [("features", ["N", 6])]
    _assert_parity(converted, mlp.predict(x[:9], verbose=0), {"features": x[:9]})
    with pytest.raises(ConfigError, match="no feed for the input"):
        converted.reference({"other": x[:2]})

    scorer = keras.Sequential([keras.Input((6,), name="features"), keras.layers.Dense(3)])
    converted = keras_converted(scorer)
    assert converted.meaning == "logits"
    _assert_parity(converted, scorer.predict(x[:4], verbose=0), {"features": x[:4]})

    tanh = keras.Sequential([keras.Input((6,), name="features"), keras.layers.Dense(2, activation="tanh")])
    assert keras_converted(tanh).meaning is None


def _two_input_model() -> keras.Model:
    """A numeric vector and integer token ids (through an embedding), one sigmoid score."""
    keras.utils.set_random_seed(2)
    numbers = keras.Input((5,), name="numbers")
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    embedded = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(tokens))
    joined = keras.layers.Concatenate()([numbers, embedded])
    out = keras.layers.Dense(1, activation="sigmoid", name="score")(keras.layers.Dense(8, activation="relu")(joined))
    return keras.Model({"numbers": numbers, "tokens": tokens}, out)


def _two_input_feeds(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"numbers": rng.normal(size=(n, 5)).astype(np.float32),
            "tokens": rng.integers(0, 20, size=(n, 6)).astype(np.int32)}


def test_two_inputs_keep_their_names_dtypes_and_shapes() -> None:
    model = _two_input_model()
    feeds = _two_input_feeds(11)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(feeds, (feeds["numbers"][:, 0] > 0).astype(np.float32), epochs=1, verbose=0)
    converted = keras_converted(model)
    _check_graph(converted)
    inputs = {i.name: (_dims(i), i.type.tensor_type.elem_type) for i in converted.graph.graph.input}
    assert inputs == {"numbers": (["N", 5], onnx.TensorProto.FLOAT), "tokens": (["N", 6], onnx.TensorProto.INT32)}
    assert converted.meaning == "probabilities"
    assert converted.output == "score"
    _assert_parity(converted, model.predict(feeds, verbose=0), feeds)


def test_keras_file_read_back_converts_like_the_live_model(cnn: keras.Model, images: np.ndarray,
                                                           tmp_path: Path) -> None:
    path = tmp_path / "cnn.keras"
    cnn.save(path)
    model = read_keras(path)
    converted = keras_converted(model)
    _check_graph(converted)
    assert converted.meaning == "probabilities"
    assert [i.name for i in converted.graph.graph.input] == ["pixels"]
    _assert_parity(converted, cnn.predict(images[:5], verbose=0), {"pixels": images[:5]})


def test_lambda_layer_is_refused_by_safe_mode(tmp_path: Path) -> None:
    inp = keras.Input((3,), name="x")
    model = keras.Model(inp, keras.layers.Dense(1)(keras.layers.Lambda(lambda t: t * 2.0)(inp)))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ConfigError) as caught:
        read_keras(path)
    message = str(caught.value)
    assert str(path) in message and "safe mode" in message and "\n" not in message
    # the refusal holds even when the process has switched Keras's safe mode off globally
    from keras.src.saving import serialization_lib

    before = serialization_lib.in_safe_mode()
    keras.config.enable_unsafe_deserialization()
    try:
        with pytest.raises(ConfigError, match="safe mode"):
            read_keras(path)
    finally:
        serialization_lib.global_state.set_global_attribute("safe_mode_saving", before)


def test_legacy_h5_and_other_files_are_refused(cnn: keras.Model, tmp_path: Path) -> None:
    h5 = tmp_path / "cnn.h5"
    cnn.save(h5)
    with pytest.raises(ConfigError) as caught:
        read_keras(h5)
    message = str(caught.value)
    assert str(h5) in message and ".keras" in message and "SavedModel" in message and "\n" not in message
    with pytest.raises(ConfigError, match="does not exist"):
        read_keras(tmp_path / "missing.keras")
    (tmp_path / "fake.keras").write_text("not a zip")
    with pytest.raises(ConfigError, match="not a zip"):
        read_keras(tmp_path / "fake.keras")
    with pytest.raises(ConfigError, match="'.keras' file"):
        read_keras(tmp_path)


def test_savedmodel_from_keras_export(cnn: keras.Model, images: np.ndarray, tmp_path: Path) -> None:
    cnn.export(str(tmp_path / "exported"), verbose=False)
    converted = savedmodel_converted(tmp_path / "exported")
    _check_graph(converted)
    assert converted.framework == "tensorflow"
    assert converted.meaning == "probabilities"
    assert [(i.name, _dims(i)) for i in converted.graph.graph.input] == [("pixels", ["N", 28, 28, 1])]
    _assert_parity(converted, cnn.predict(images[:6], verbose=0), {"pixels": images[:6]})


def test_savedmodel_two_inputs_from_keras_export(tmp_path: Path) -> None:
    model = _two_input_model()
    model.export(str(tmp_path / "two"), verbose=False)
    converted = savedmodel_converted(tmp_path / "two")
    _check_graph(converted)
    assert sorted(i.name for i in converted.graph.graph.input) == ["numbers", "tokens"]
    assert converted.meaning == "probabilities"
    feeds = _two_input_feeds(4)
    _assert_parity(converted, model.predict(feeds, verbose=0), feeds)


class _Scorer(tf.Module):
    """A plain TensorFlow module: a linear score and, on a second signature, two outputs."""

    def __init__(self, width: int) -> None:
        super().__init__()
        rng = np.random.default_rng(4)
        self.w = tf.Variable(rng.normal(size=(4, width)).astype(np.float32))
        self.b = tf.Variable(rng.normal(size=(width,)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
    def score(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"score": tf.matmul(x, self.w) + self.b}

    @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
    def both(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        z = tf.matmul(x, self.w) + self.b
        return {"score": z, "proba": tf.nn.sigmoid(z)}


@pytest.mark.parametrize(("width", "meaning"), [(1, "values"), (3, "logits")])
def test_savedmodel_from_a_tf_module(width: int, meaning: str, tmp_path: Path) -> None:
    module = _Scorer(width)
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.score,
                                                                   "both": module.both})
    converted = savedmodel_converted(tmp_path / "sm")
    _check_graph(converted)
    assert converted.output == "score"
    assert converted.meaning == meaning
    assert [(i.name, _dims(i)) for i in converted.graph.graph.input] == [("x", ["N", 4])]
    x = np.random.default_rng(5).normal(size=(8, 4)).astype(np.float32)
    _assert_parity(converted, module.score(tf.constant(x))["score"].numpy(), {"x": x})

    with pytest.raises(ConfigError, match=r"2 outputs \((proba, score|score, proba)\)"):
        savedmodel_converted(tmp_path / "sm", signature="both")
    with pytest.raises(ConfigError, match=r"no signature 'predict' \(signatures: both, serving_default\)"):
        savedmodel_converted(tmp_path / "sm", signature="predict")
    with pytest.raises(ConfigError, match="not a SavedModel"):
        savedmodel_converted(tmp_path)


class _Odd(tf.Module):
    """Signatures tandem cannot convert (string ops ONNX lacks; a fixed batch) and one with a free length."""

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name="text")])
    def strings(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"n": tf.cast(tf.strings.length(tf.strings.regex_replace(text, "a", "bb")), tf.float32)}

    @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32, name="x")])
    def fixed(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.reduce_sum(x, axis=1)}

    @tf.function(input_signature=[tf.TensorSpec((None, None, 3), tf.float32, name="frames")])
    def lengths(self, frames: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"pooled": tf.nn.softmax(tf.reduce_mean(frames, axis=1))}


def test_savedmodel_refusals_and_free_lengths(tmp_path: Path) -> None:
    module = _Odd()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.lengths,
                                                           "strings": module.strings, "fixed": module.fixed})
    with pytest.raises(ConfigError, match="no ONNX counterpart: StaticRegexReplace, StringLength"):
        savedmodel_converted(tmp_path, signature="strings")
    with pytest.raises(ConfigError, match=r"input 'x' has a fixed batch dimension \(shape \[1, 4\]\)"):
        savedmodel_converted(tmp_path, signature="fixed")
    converted = savedmodel_converted(tmp_path)
    _check_graph(converted)
    assert [(i.name, _dims(i)) for i in converted.graph.graph.input] == [("frames", ["N", "frames_1", 3])]
    assert converted.meaning == "probabilities"
    for length in (2, 9):
        frames = np.random.default_rng(length).random((3, length, 3), dtype=np.float32)
        _assert_parity(converted, module.lengths(tf.constant(frames))["pooled"].numpy(), {"frames": frames})


def test_refusals_of_live_models() -> None:
    inp = keras.Input((4,), name="x")
    two = keras.Model(inp, [keras.layers.Dense(2, name="a")(inp), keras.layers.Dense(1, name="b")(inp)])
    with pytest.raises(ConfigError, match=r"2 outputs \(a, b\)"):
        keras_converted(two)
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ConfigError, match="declares no inputs"):
        keras_converted(unbuilt)
    with pytest.raises(ConfigError, match="expected a keras.Model"):
        keras_converted(object())  # type: ignore[arg-type]


def test_missing_tensorflow_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ConfigError, match=r"needs TensorFlow: pip install 'tandem\[tensorflow\]'"):
        keras_converted(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    (tmp_path / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"needs TensorFlow: pip install 'tandem\[tensorflow\]'"):
        savedmodel_converted(tmp_path)


def test_import_is_lazy_and_conversion_is_quiet(cnn: keras.Model, tmp_path: Path) -> None:
    """Importing the module loads no TensorFlow; converting a SavedModel writes nothing to stderr (as the CLI)."""
    cnn.export(str(tmp_path / "exported"), verbose=False)
    code = ("import sys\n"
            "import tandem.foreign.tensorflow_models as m\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
            f"c = m.savedmodel_converted({str(tmp_path / 'exported')!r})\n"
            "print(c.output, c.meaning)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["output_0", "probabilities"]
    assert done.stderr == ""
