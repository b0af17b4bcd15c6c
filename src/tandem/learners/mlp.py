"""A torch MLP on the dense view; trained by the shared torch loop (CPU or CUDA), exported layer by layer to ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tandem.features.graph import GraphBuilder
from tandem.learners.base import Learner
from tandem.learners.torch_loop import LoopConfig, fit


class MLPLearner(Learner):
    family = "mlp"
    view = "dense"

    def _build(self, n_in: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        width = n_in
        for h in self.params.get("hidden", [256, 128]):
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(float(self.params.get("dropout", 0.1)))]
            width = h
        layers.append(nn.Linear(width, self.n_outputs))
        return nn.Sequential(*layers)

    def _fit(self, X, y, X_val, y_val, deadline):
        self.y_mean, self.y_std = 0.0, 1.0
        if self.task == "regression":
            self.y_mean, self.y_std = float(np.mean(y)), float(np.std(y) or 1.0)
        config = LoopConfig(max_epochs=int(self.params.get("epochs", 100)),
                            patience=int(self.params.get("patience", 6)),
                            batch_size=int(self.params.get("batch_size", 256)), lr=float(self.params.get("lr", 1e-3)),
                            weight_decay=float(self.params.get("weight_decay", 1e-5)), seed=self.seed)
        loss_fn = nn.MSELoss() if self.task == "regression" else nn.CrossEntropyLoss()
        result = fit(lambda: self._build(X.shape[1]), X, self._target(y), X_val,
                     None if y_val is None else self._target(y_val), loss_fn, config, deadline=deadline,
                     checkpoint=self.params.get("checkpoint"),
                     curve_metric="mse (standardised target)" if self.task == "regression" else "cross-entropy")
        self.net, self.best_epoch, self.curve = result.net, result.best_epoch, result.curve
        self.stopped_by_deadline = result.stopped_by_deadline

    def _target(self, y: np.ndarray) -> torch.Tensor:
        if self.task == "regression":
            return torch.as_tensor((y - self.y_mean) / self.y_std, dtype=torch.float32).reshape(-1, 1)
        return torch.as_tensor(y, dtype=torch.long)

    def predict(self, X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = self.net(torch.as_tensor(X, dtype=torch.float32))
            if self.task == "regression":
                return (out * self.y_std + self.y_mean).numpy().astype(np.float64)
            return torch.softmax(out, dim=1).numpy().astype(np.float64)

    def refit_params(self, scale: float) -> dict:
        return {**self.params, "epochs": max(1, int(round(self.best_epoch * min(scale, 1.2))))}

    def _linears(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def to_onnx(self, g: GraphBuilder, x: str) -> str:
        h = x
        linears = self._linears()
        for i, layer in enumerate(linears):
            w = layer.weight.detach().numpy().astype(np.float32)
            b = layer.bias.detach().numpy().astype(np.float32)
            h = g.op("Gemm", [h, g.const(w, "mlp_w"), g.const(b, "mlp_b")], transB=1)
            if i < len(linears) - 1:
                h = g.op("Relu", [h])
        if self.task == "regression":
            h = g.op("Mul", [h, g.const(np.array([[self.y_std]], dtype=np.float32), "y_std")])
            return g.op("Add", [h, g.const(np.array([[self.y_mean]], dtype=np.float32), "y_mean")])
        return g.op("Softmax", [h], axis=1)

    def save(self, folder: Path) -> list[str]:
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(folder / "mlp.safetensors"))
        meta = {"hidden": self.params.get("hidden", [256, 128]), "y_mean": self.y_mean, "y_std": self.y_std,
                "epochs": self.best_epoch}
        (folder / "mlp.json").write_text(json.dumps(meta))
        return ["mlp.safetensors", "mlp.json"]

    def _load(self, folder: Path) -> None:
        meta = json.loads((folder / "mlp.json").read_text())
        state = load_file(str(folder / "mlp.safetensors"))
        self.params["hidden"] = meta["hidden"]
        self.y_mean, self.y_std = meta["y_mean"], meta["y_std"]
        first = state["0.weight"]
        self.net = self._build(first.shape[1])
        self.net.load_state_dict(state)
        self.net.eval()
        self.best_epoch = meta.get("epochs", 0)

    def describe(self) -> dict:
        return {"epochs": self.best_epoch, "parameters": int(sum(p.numel() for p in self.net.parameters()))}
