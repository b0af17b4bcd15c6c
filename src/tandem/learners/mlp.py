"""A torch MLP on the dense view; trained on CPU or CUDA, exported layer by layer to ONNX."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tandem.features.graph import GraphBuilder
from tandem.learners.base import Learner, deadline_passed, training_curve


def pick_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
        torch.manual_seed(self.seed)
        device = pick_device()
        self.y_mean, self.y_std = 0.0, 1.0
        if self.task == "regression":
            self.y_mean, self.y_std = float(np.mean(y)), float(np.std(y) or 1.0)
        net = self._build(X.shape[1]).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=float(self.params.get("lr", 1e-3)),
                                weight_decay=float(self.params.get("weight_decay", 1e-5)))
        loss_fn = nn.MSELoss() if self.task == "regression" else nn.CrossEntropyLoss()
        Xt = torch.as_tensor(X, dtype=torch.float32, device=device)
        yt = self._target(y, device)
        if X_val is not None:
            Xv = torch.as_tensor(X_val, dtype=torch.float32, device=device)
            yv = self._target(y_val, device)
        batch = int(self.params.get("batch_size", 256))
        max_epochs = int(self.params.get("epochs", 100))
        patience = int(self.params.get("patience", 6))
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        best, best_state, best_epoch = np.inf, None, 0
        epoch = 0
        train_losses, val_losses = [], []
        for epoch in range(1, max_epochs + 1):
            net.train()
            order = torch.randperm(len(Xt), generator=gen).to(device)
            total = torch.zeros((), device=device)
            for start in range(0, len(Xt), batch):
                idx = order[start: start + batch]
                opt.zero_grad()
                loss = loss_fn(net(Xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                total += loss.detach() * len(idx)
            if X_val is not None:
                net.eval()
                with torch.no_grad():
                    val_loss = float(loss_fn(net(Xv), yv))
                train_losses.append(float(total) / len(Xt))  # the mean over the epoch's batches, as it learned
                val_losses.append(val_loss)
                if val_loss < best - 1e-6:
                    best, best_state, best_epoch = val_loss, copy.deepcopy(net.state_dict()), epoch
                elif epoch - best_epoch >= patience:
                    break
            if deadline_passed(deadline):
                self.stopped_by_deadline = True
                break
        if best_state is not None:
            net.load_state_dict(best_state)
        self.best_epoch = best_epoch if X_val is not None else epoch
        if val_losses:
            name = "mse (standardised target)" if self.task == "regression" else "cross-entropy"
            self.curve = training_curve(name, train_losses, val_losses, best=best_epoch, unit="epoch")
        self.net = net.to("cpu").eval()

    def _target(self, y: np.ndarray, device: torch.device) -> torch.Tensor:
        if self.task == "regression":
            return torch.as_tensor((y - self.y_mean) / self.y_std, dtype=torch.float32, device=device).reshape(-1, 1)
        return torch.as_tensor(y, dtype=torch.long, device=device)

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
