"""A compact ResNet-style CNN for images, trained from scratch by the shared torch loop with augmentation.

Input: the image view (float32 N x 3 x S x S, RGB in [0, 1]); the network standardises the
channels itself (training means and deviations are buffers), so the bundle's graph takes the
pixels as the encoder gives them. Three stages of residual blocks (widths ``channels``), each
after the first halving the resolution, global average pooling, a linear classifier. Training
augments each batch with random shifts (padding and cropping) and brightness/contrast jitter; no
flips (a mirrored sign or digit is another one). Exported to ONNX through torch.onnx and grafted
into the bundle's graph.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tandem.features.graph import GraphBuilder
from tandem.learners.base import Learner
from tandem.learners.torch_loop import LoopConfig, fit


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class _Net(nn.Module):
    def __init__(self, channels: list[int], n_out: int, dropout: float):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.register_buffer("std", torch.ones(1, 3, 1, 1))
        stem = channels[0]
        layers: list[nn.Module] = [nn.Conv2d(3, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU()]
        c = stem
        for i, width in enumerate(channels):
            layers.append(_Block(c, width, 1 if i == 0 else 2))
            c = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - self.mean) / self.std))


def _augment(shift: int, jitter: float):
    def augment(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = batch.shape
        if shift:
            padded = nn.functional.pad(batch, (shift, shift, shift, shift), mode="replicate")
            dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
            dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
            rows = (dy[:, None] + torch.arange(h)[None, :]).to(batch.device)  # [n, h]
            cols = (dx[:, None] + torch.arange(w)[None, :]).to(batch.device)  # [n, w]
            idx = torch.arange(n, device=batch.device)[:, None, None]
            batch = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        if jitter:
            scale = (1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * jitter).to(batch.device)
            offset = ((torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * jitter / 2).to(batch.device)
            batch = (batch * scale + offset).clamp(0, 1)
        return batch.contiguous()

    return augment


class CNNLearner(Learner):
    family = "cnn"
    view = "image"

    def _build(self) -> _Net:
        return _Net(list(self.params.get("channels", [32, 64, 128])), self.n_outputs,
                    float(self.params.get("dropout", 0.2)))

    def _fit(self, X, y, X_val, y_val, deadline):
        if self.task == "regression":
            raise ValueError("the CNN family classifies images; regression on images is not supported")
        mean = torch.as_tensor(X.mean(axis=(0, 2, 3)), dtype=torch.float32).reshape(1, 3, 1, 1)
        std = torch.as_tensor(X.std(axis=(0, 2, 3)) + 1e-3, dtype=torch.float32).reshape(1, 3, 1, 1)

        def build() -> _Net:
            net = self._build()
            net.mean.copy_(mean)
            net.std.copy_(std)
            return net

        config = LoopConfig(max_epochs=int(self.params.get("epochs", 60)), patience=int(self.params.get("patience", 8)),
                            batch_size=int(self.params.get("batch_size", 64)), lr=float(self.params.get("lr", 2e-3)),
                            weight_decay=float(self.params.get("weight_decay", 5e-4)), seed=self.seed)
        side = X.shape[-1]
        augment = _augment(int(self.params.get("shift", max(1, side // 8))), float(self.params.get("jitter", 0.2)))
        result = fit(build, X, torch.as_tensor(y, dtype=torch.long), X_val,
                     None if y_val is None else torch.as_tensor(y_val, dtype=torch.long), nn.CrossEntropyLoss(),
                     config, deadline=deadline, checkpoint=self.params.get("checkpoint"), curve_metric="cross-entropy",
                     augment=augment)
        self.net, self.best_epoch, self.curve = result.net, result.best_epoch, result.curve
        self.stopped_by_deadline = result.stopped_by_deadline
        self.side = side

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(X), 512):
                logits = self.net(torch.as_tensor(X[start: start + 512], dtype=torch.float32))
                out.append(torch.softmax(logits, dim=1).numpy().astype(np.float64))
        return np.concatenate(out) if out else np.zeros((0, self.n_outputs))

    def refit_params(self, scale: float) -> dict:
        return {**self.params, "epochs": max(1, int(round(self.best_epoch * min(scale, 1.2))))}

    def to_onnx(self, g: GraphBuilder, x: str) -> str:
        """The network through torch.onnx, its nodes and weights renamed into ``g``; returns the probabilities."""
        buf = io.BytesIO()
        dummy = torch.zeros(1, 3, self.side, self.side)
        with warnings.catch_warnings():  # the TorchScript exporter: no onnxscript needed, and it is deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(self.net.eval(), (dummy,), buf, input_names=["pixels"], output_names=["logits"],
                              dynamic_axes={"pixels": {0: "N"}, "logits": {0: "N"}}, opset_version=18, dynamo=False)
        sub = onnx.load_from_string(buf.getvalue()).graph
        prefix = g.fresh("cnn")
        rename = {"pixels": x}

        def name(t: str) -> str:
            if t == "":
                return t
            if t not in rename:
                rename[t] = f"{prefix}/{t}"
                g._used.add(rename[t])
            return rename[t]

        for init in sub.initializer:
            init.name = name(init.name)
            g.initializers.append(init)
        for node in sub.node:
            node.input[:] = [name(t) for t in node.input]
            node.output[:] = [name(t) for t in node.output]
            node.name = f"{prefix}/{node.name}"
            g.nodes.append(node)
        return g.op("Softmax", [rename["logits"]], axis=1)

    def save(self, folder: Path) -> list[str]:
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(folder / "cnn.safetensors"))
        meta = {"channels": list(self.params.get("channels", [32, 64, 128])),
                "dropout": self.params.get("dropout", 0.2),
                "side": self.side, "epochs": self.best_epoch}
        (folder / "cnn.json").write_text(json.dumps(meta))
        return ["cnn.safetensors", "cnn.json"]

    def _load(self, folder: Path) -> None:
        meta = json.loads((folder / "cnn.json").read_text())
        self.params.update(channels=meta["channels"], dropout=meta["dropout"])
        self.side, self.best_epoch = meta["side"], meta["epochs"]
        self.net = self._build()
        self.net.load_state_dict(load_file(str(folder / "cnn.safetensors")))
        self.net.eval()

    def describe(self) -> dict:
        return {"epochs": self.best_epoch, "parameters": int(sum(p.numel() for p in self.net.parameters()))}
