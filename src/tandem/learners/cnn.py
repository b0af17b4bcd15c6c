"""A compact ResNet-style CNN for images, trained from scratch by the shared torch loop with augmentation.

Input: the image view (float32 N x 3 x S x S, RGB in [0, 1]); the network brings each image to
zero mean and unit contrast itself (lighting varies more than the objects), so the bundle's graph
takes the pixels as the encoder gives them. Three stages of residual blocks (widths
``channels``), each after the first halving the resolution, global average pooling, a linear
classifier. Training: AdamW with a cosine learning rate, label smoothing, and each batch moved at
random (shift, rotation, zoom) with brightness/contrast jitter; no flips (a mirrored sign or digit
is another one). Exported to ONNX through torch.onnx and grafted into the bundle's graph.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tandem.features.graph import GraphBuilder, graft, torch_image_graph
from tandem.learners.base import Learner
from tandem.learners.torch_loop import LoopConfig, fit


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, inner: int | None = None):
        super().__init__()
        # ``inner``: the channels between the two convolutions (``c_out`` unless pruned); the residual add ties
        # the block's output to its input, the inner width is free
        mid = c_out if inner is None else inner
        self.body = nn.Sequential(
            nn.Conv2d(c_in, mid, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class _Net(nn.Module):
    def __init__(self, channels: list[int], n_out: int, dropout: float, inner: list[int] | None = None):
        super().__init__()
        stem = channels[0]
        layers: list[nn.Module] = [nn.Conv2d(3, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU()]
        c = stem
        for i, width in enumerate(channels):
            layers.append(_Block(c, width, 1 if i == 0 else 2, None if inner is None else inner[i]))
            c = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # each image to zero mean and unit contrast first: lighting varies more than the objects do
        centred = x - x.mean(dim=(1, 2, 3), keepdim=True)
        x = centred / (centred.pow(2).mean(dim=(1, 2, 3), keepdim=True) + 1e-4).sqrt()
        return self.head(self.features(x))


def _augment(shift: float, rotate: float, zoom: float, jitter: float):
    """Random affine moves (shift as a share of the side, rotation in degrees, zoom) and brightness/contrast."""
    def augment(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = batch.shape[0]

        def uniform(scale: float) -> torch.Tensor:
            return (torch.rand(n, generator=gen) * 2 - 1) * scale

        angle = uniform(math.radians(rotate))
        scale = 1 + uniform(zoom)
        theta = torch.stack([torch.stack([scale * torch.cos(angle), -scale * torch.sin(angle), uniform(2 * shift)], 1),
                             torch.stack([scale * torch.sin(angle), scale * torch.cos(angle), uniform(2 * shift)], 1)],
                            1).to(batch.device)
        grid = nn.functional.affine_grid(theta, list(batch.shape), align_corners=False)
        batch = nn.functional.grid_sample(batch, grid, padding_mode="border", align_corners=False)
        if jitter:
            gain = (1 + uniform(jitter)).reshape(n, 1, 1, 1).to(batch.device)
            offset = (uniform(jitter / 2)).reshape(n, 1, 1, 1).to(batch.device)
            batch = (batch * gain + offset).clamp(0, 1)
        return batch.contiguous()

    return augment


def augmentation_from(params: dict) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """The augmentation a family's params ask for (``shift``, ``rotate``, ``zoom``, ``jitter``), as
    ``augment(batch, generator)``; the defaults suit signs and digits."""
    return _augment(float(params.get("shift", 0.1)), float(params.get("rotate", 10.0)),
                    float(params.get("zoom", 0.1)), float(params.get("jitter", 0.2)))


def class_probabilities(net: nn.Module, X: np.ndarray, n_classes: int, *, batch: int) -> np.ndarray:
    """Softmax of an image network's logits over ``X``, ``batch`` images at a time: float64 [N, n_classes]."""
    out = []
    with torch.no_grad():
        for start in range(0, len(X), batch):
            logits = net(torch.as_tensor(X[start: start + batch], dtype=torch.float32))
            out.append(torch.softmax(logits, dim=1).numpy().astype(np.float64))
    return np.concatenate(out) if out else np.zeros((0, n_classes))


class CNNLearner(Learner):
    family = "cnn"
    view = "image"

    def _build(self) -> _Net:
        inner = self.params.get("inner")  # set by channel pruning (tandem optimize): the blocks' inner widths
        return _Net(list(self.params.get("channels", [32, 64, 128])), self.n_outputs,
                    float(self.params.get("dropout", 0.2)), None if inner is None else list(inner))

    def _fit(self, X, y, X_val, y_val, deadline):
        if self.task == "regression":
            raise ValueError("the CNN family classifies images; regression on images is not supported")
        config = LoopConfig(max_epochs=int(self.params.get("epochs", 60)), patience=int(self.params.get("patience", 8)),
                            batch_size=int(self.params.get("batch_size", 64)), lr=float(self.params.get("lr", 2e-3)),
                            weight_decay=float(self.params.get("weight_decay", 5e-4)), seed=self.seed,
                            schedule=str(self.params.get("schedule", "cosine")),
                            precision=str(self.params.get("precision", "auto")))
        side = X.shape[-1]
        augment = self.augmentation()
        result = fit(self._build, X, torch.as_tensor(y, dtype=torch.long), X_val,
                     None if y_val is None else torch.as_tensor(y_val, dtype=torch.long),
                     nn.CrossEntropyLoss(label_smoothing=float(self.params.get("label_smoothing", 0.1))),
                     config, deadline=deadline, checkpoint=self.params.get("checkpoint"), curve_metric="cross-entropy",
                     augment=augment)
        self.net, self.best_epoch, self.curve = result.net, result.best_epoch, result.curve
        self.stopped_by_deadline = result.stopped_by_deadline
        self.side, self.precision = side, result.precision

    def augmentation(self) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
        """What training does to each batch (random shift, rotation, zoom, brightness/contrast), from the params:
        ``augment(batch, generator)``. A fine-tune of a trained net (tandem optimize's prune) uses it too."""
        return augmentation_from(self.params)

    def residual_blocks(self) -> list[tuple[str, nn.Module]]:
        """The net's residual blocks with their state-dict prefixes. Each ``body`` is conv, batch norm, ReLU, conv,
        batch norm: the inner channels (first conv's outputs, second conv's inputs) are free to change width."""
        return [(name, m) for name, m in self.net.named_modules() if isinstance(m, _Block)]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return class_probabilities(self.net, X, self.n_outputs, batch=512)

    def refit_params(self, scale: float) -> dict:
        return {**self.params, "epochs": max(1, int(round(self.best_epoch * min(scale, 1.2))))}

    def to_onnx(self, g: GraphBuilder, x: str) -> str:
        """The network through torch.onnx, its nodes and weights renamed into ``g``; returns the probabilities."""
        logits = graft(g, torch_image_graph(self.net, self.side, "pixels", "logits"), {"pixels": x}, "cnn")["logits"]
        return g.op("Softmax", [logits], axis=1)

    def save(self, folder: Path) -> list[str]:
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(folder / "cnn.safetensors"))
        meta = {"channels": list(self.params.get("channels", [32, 64, 128])),
                "dropout": self.params.get("dropout", 0.2),
                "side": self.side, "epochs": self.best_epoch, "training_precision": self.precision}
        if self.params.get("inner") is not None:  # written only when pruned: other bundles' files stay as they were
            meta["inner"] = list(self.params["inner"])
        (folder / "cnn.json").write_text(json.dumps(meta))
        return ["cnn.safetensors", "cnn.json"]

    def _load(self, folder: Path) -> None:
        meta = json.loads((folder / "cnn.json").read_text())
        self.params.update(channels=meta["channels"], dropout=meta["dropout"], inner=meta.get("inner"))
        self.side, self.best_epoch = meta["side"], meta["epochs"]
        self.precision = meta.get("training_precision", "fp32")
        self.net = self._build()
        self.net.load_state_dict(load_file(str(folder / "cnn.safetensors")))
        self.net.eval()

    def describe(self) -> dict:
        return {"epochs": self.best_epoch, "parameters": int(sum(p.numel() for p in self.net.parameters())),
                "training_precision": self.precision}
