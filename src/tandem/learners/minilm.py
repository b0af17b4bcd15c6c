"""The sentence encoder fine-tuned end to end: all-MiniLM-L6-v2 (its first layers) and a linear head on each
text column's embedding, trained together on the labels.

Input: the tokens view (int64 N x T x L token ids, 0 = padding). First a linear probe: a logistic
regression on the pretrained embeddings, which becomes the head's starting point (fine-tuning a
random head at an encoder's small learning rate barely moves in the epochs a CPU budget allows:
cross-entropy 0.66 -> 0.57 in two SMS epochs, measured). Then, when the time left fits at least one
epoch (estimated from the probe's forward pass), encoder and head train together on the shared
torch loop (early stopping, a cosine rate planned to the time budget, checkpoints, CUDA when
present), each batch cut to its longest text; otherwise the probe is the model. Once trained, the
encoder is exported and
quantized to int8 exactly as the frozen one is (scales calibrated on training texts), and the
learner predicts through that int8 graph, the one the bundle serves: its validation scores are the
served model's, and its native predictions match the bundle's graph.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

from tandem.features import sentence
from tandem.features.graph import GraphBuilder
from tandem.learners.base import Learner, probabilities_from_logit
from tandem.learners.torch_loop import LoopConfig, fit

ENCODER_GRAPH = "encoder.onnx"


def _cut(batch: torch.Tensor, _gen: torch.Generator | None = None) -> torch.Tensor:
    """A batch of token ids without the padding columns no row of it needs."""
    width = max(int((batch != sentence.PAD_ID).sum(dim=2).max()), 1)
    return batch[:, :, :width]


def _evaluate(net: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``net`` on many rows, in groups of similar length (all at once would not fit in memory)."""
    lengths = (tokens != sentence.PAD_ID).sum(dim=2).amax(dim=1).cpu().numpy()
    return torch.as_tensor(sentence.in_length_order(
        lengths, sentence.GROUP_ROWS, lambda rows: [net(_cut(tokens[torch.as_tensor(rows)])).float().cpu().numpy()]
    )[0]).to(tokens.device)


class _Embed(nn.Module):
    """Token ids [B, T, L] -> each text column's embedding side by side (the head's input)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n, columns, width = tokens.shape
        return self.encoder(tokens.long().reshape(n * columns, width)).reshape(n, columns * 384)


class _Tuned(_Embed):
    """Token ids [B, T, L] (as float32 from the loop, or int64) -> logits [B, C] of a linear head."""

    def __init__(self, encoder: nn.Module, coef: np.ndarray, intercept: np.ndarray):
        super().__init__(encoder)
        self.head = nn.Linear(coef.shape[1], coef.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(coef))
            self.head.bias.copy_(torch.as_tensor(intercept))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(super().forward(tokens))


def _probe(embedded: np.ndarray, y: np.ndarray, n_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A logistic regression on frozen embeddings, as the weights of a head with ``n_out`` logits."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(embedded, y)
    coef, intercept = model.coef_.astype(np.float32), model.intercept_.astype(np.float32)
    if n_out == 2:  # one logit z: softmax over (-z/2, z/2) is sigmoid(z)
        return np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2], dtype=np.float32)
    return coef, intercept


class FineTunedEncoderLearner(Learner):
    family = "minilm_finetune"
    view = "tokens"

    def _fit(self, X, y, X_val, y_val, deadline):
        if self.task == "regression":
            raise ValueError("the minilm_finetune family classifies texts; regression is not supported")
        self.layers = int(self.params.get("layers", sentence.DEFAULT_LAYERS))
        config = LoopConfig(max_epochs=int(self.params.get("epochs", 4)), patience=int(self.params.get("patience", 1)),
                            batch_size=int(self.params.get("batch_size", 32)), lr=float(self.params.get("lr", 1e-4)),
                            weight_decay=float(self.params.get("weight_decay", 0.01)), seed=self.seed,
                            schedule="cosine", precision=str(self.params.get("precision", "auto")))
        torch.manual_seed(self.seed)
        encoder = sentence.encoder_module(self.layers)
        started = time.monotonic()
        with torch.no_grad():
            embedded = _evaluate(_Embed(encoder), torch.as_tensor(X)).numpy()
        per_row = (time.monotonic() - started) / max(len(X), 1)
        coef, intercept = _probe(embedded, y, self.n_outputs, self.seed)
        # an epoch: forward and backward of every training row (~10x a length-sorted forward on CPU: measured
        # 15 ms vs 1.6 ms a row on SMS), then the validation rows; after it, the int8 export and calibration
        epoch_seconds = per_row * (10.0 * len(X) + (0 if X_val is None else len(X_val)))
        export_seconds = 3.0 + 2.0 * per_row * sentence.CALIBRATION_ROWS
        epochs = config.max_epochs
        if deadline is not None:
            epochs = min(epochs, int((deadline - time.monotonic() - export_seconds) / (epoch_seconds * 1.2)))
        self.best_epoch, self.curve, net = 0, None, _Tuned(encoder.eval(), coef, intercept)
        self.precision = "fp32"
        if epochs >= 1:
            config.max_epochs = epochs
            encoder.train()
            loop_deadline = None if deadline is None else deadline - export_seconds
            result = fit(lambda: _Tuned(encoder, coef, intercept), X, torch.as_tensor(y, dtype=torch.long),
                         X_val, None if y_val is None else torch.as_tensor(y_val, dtype=torch.long),
                         nn.CrossEntropyLoss(), config, deadline=loop_deadline,
                         checkpoint=self.params.get("checkpoint"), curve_metric="cross-entropy", augment=_cut,
                         evaluate=_evaluate)
            self.best_epoch, self.curve, net = result.best_epoch, result.curve, result.net
            self.stopped_by_deadline, self.precision = result.stopped_by_deadline, result.precision
        else:
            self.stopped_by_deadline = True  # no time to fine-tune: the linear probe is the model
        calibration = X[: sentence.CALIBRATION_ROWS].reshape(-1, X.shape[2])
        self.graph = sentence.export_onnx(net.encoder.eval(), calibration)
        self.coef = net.head.weight.detach().numpy().astype(np.float32)
        self.intercept = net.head.bias.detach().numpy().astype(np.float32)
        self._session = None

    def _embed(self, X: np.ndarray) -> np.ndarray:
        if self._session is None:
            self._session = sentence.EncoderSession(self.graph)
        return self._session.embed_columns(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = self._embed(X).astype(np.float64) @ self.coef.T.astype(np.float64) + self.intercept.astype(np.float64)
        if self.task == "binary":  # two logits: their difference is the positive class's logit
            p = 1.0 / (1.0 + np.exp(-(z[:, 1] - z[:, 0])))
            return np.column_stack([1.0 - p, p])
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def refit_params(self, scale: float) -> dict:
        return {**self.params, "epochs": self.best_epoch}

    def to_onnx(self, g: GraphBuilder, x: str) -> str:
        embedded = sentence.encode_in_graph(g, x, onnx.load_from_string(self.graph), self.coef.shape[1])
        z = g.op("Gemm", [embedded, g.const(self.coef, "tuned_coef"), g.const(self.intercept, "tuned_intercept")],
                 transB=1)
        if self.task == "binary":
            logit = g.op("Sub", [g.op("Gather", [z, g.const(np.array([1], dtype=np.int64), "pos")], axis=1),
                                 g.op("Gather", [z, g.const(np.array([0], dtype=np.int64), "neg")], axis=1)])
            return probabilities_from_logit(g, logit)
        return g.op("Softmax", [z], axis=1)

    def save(self, folder: Path) -> list[str]:
        (folder / ENCODER_GRAPH).write_bytes(self.graph)
        save_file({"coef": self.coef, "intercept": self.intercept}, str(folder / "head.safetensors"))
        (folder / "minilm.json").write_text(json.dumps({"layers": self.layers, "epochs": self.best_epoch,
                                                          "training_precision": self.precision}))
        return [ENCODER_GRAPH, "head.safetensors", "minilm.json"]

    def _load(self, folder: Path) -> None:
        meta = json.loads((folder / "minilm.json").read_text())
        self.layers, self.best_epoch = meta["layers"], meta["epochs"]
        self.precision = meta.get("training_precision", "fp32")
        self.graph = (folder / ENCODER_GRAPH).read_bytes()
        head = load_file(str(folder / "head.safetensors"))
        self.coef, self.intercept = head["coef"], head["intercept"]
        self._session = None

    def describe(self) -> dict:
        return {"epochs": self.best_epoch, "encoder_layers": self.layers, "training_precision": self.precision}
