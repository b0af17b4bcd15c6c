"""EfficientNet-Lite0 fine-tuned on the images: transfer learning from ImageNet (tandem.features.efficientnet).

Input: the image view (float32 N x 3 x S x S, RGB in [0, 1], S the schema's side, 16 to 64 px). The
network brings each batch to its own side (``side``, 64 to 224 px, bilinear; a Resize node in the
exported graph) and normalises it with the ImageNet mean and standard deviation, then the pretrained
backbone, dropout and a linear head on the pooled 1280 features.

Training runs on the shared torch loop (AdamW, a cosine rate planned to the deadline, early stopping,
checkpoints, CUDA when present) with the CNN's augmentation. The first ``freeze_blocks`` blocks keep
their ImageNet weights (edges and colours transfer as they are; measured 182 -> 214 images/s a step at
64 px with 3 frozen). The side is planned to the budget: training steps timed at 64 and 96 px say how many
epochs each side affords, and the largest side that still affords ``min_epochs`` is used (measured on the GTSRB
subset: 31 epochs at 64 px reached 0.977, 17 at 96 px 0.983, in the same 180 s). ``budget_share`` (default: all
of it) keeps the rest of the time for the next image network. The portfolio gives it all: on the GTSRB
subset, half of the time left the fine-tuned net 0.971 and the CNN in the other half did not blend in.

On a CPU the loop runs in fp32 and channels-last memory: this network is mostly depthwise
convolutions, which bf16 autocast does not speed up (measured on an AMX Xeon: 100 images/s in bf16,
155 in fp32 channels-last, 107 in fp32 NCHW). On CUDA the loop's fp16 autocast applies.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from tandem.features import efficientnet
from tandem.features.graph import GraphBuilder, graft, torch_image_graph
from tandem.learners.base import Learner
from tandem.learners.cnn import augmentation_from, class_probabilities
from tandem.learners.torch_loop import LoopConfig, fit, pick_device

DEFAULT_SIDE = 96  # without a deadline to plan to
CONTINUE_RATE = 0.15  # of the fit's rate, where the epochs a fitted network goes on over all rows start (continued)
SOUP_RUNS = 2  # continuations from the fold model, averaged weight by weight, when the epochs allow two or more each


def average_weights(nets: list[nn.Module]) -> nn.Module:
    """One network whose every floating-point weight and buffer is the mean of ``nets``' (integer buffers, such as
    batch-norm step counts, from the first); ``nets[0]`` itself when there is one. The nets share an architecture
    and, for the mean to make sense, a recent common ancestor (here the fold model they went on from)."""
    if len(nets) == 1:
        return nets[0]
    states = [net.state_dict() for net in nets]
    mean = {name: torch.stack([state[name] for state in states]).mean(0) if value.is_floating_point() else value
            for name, value in states[0].items()}
    out = copy.deepcopy(nets[0])
    out.load_state_dict(mean)
    return out.eval()


class TunedBackbone(nn.Module):
    """Images [N, 3, S, S] in [0, 1] -> logits [N, C]: resized to ``side``, the backbone, dropout, a head."""

    def __init__(self, backbone: efficientnet.EfficientNetLite0, n_out: int, side: int, dropout: float,
                 freeze_blocks: int):
        super().__init__()
        self.backbone, self.side = backbone, side
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(efficientnet.EMBEDDING_DIMS, n_out)
        del self.backbone._fc  # ImageNet's classifier: the head replaces it
        for name, p in self.backbone.named_parameters():
            p.requires_grad_(_block_index(name) >= freeze_blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = efficientnet.to_side(images, self.side)
        if images.device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        return self.head(self.drop(self.backbone.embed(images)))


def _block_index(name: str) -> int:
    """The MBConv block a backbone parameter belongs to: -1 for the stem, a large number for the final conv."""
    if name.startswith("_blocks."):
        return int(name.split(".")[1])
    return -1 if name.startswith(("_conv_stem", "_bn0")) else 1 << 10


def _net(n_out: int, side: int, dropout: float, freeze_blocks: int, pretrained: bool) -> TunedBackbone:
    body = efficientnet.backbone() if pretrained else efficientnet.EfficientNetLite0()
    net = TunedBackbone(body, n_out, side, dropout, freeze_blocks)
    return net.to(memory_format=torch.channels_last) if pick_device().type == "cpu" else net


class EfficientNetLearner(Learner):
    family = "efficientnet_finetune"
    view = "image"

    def _config(self) -> LoopConfig:
        return LoopConfig(max_epochs=int(self.params.get("epochs", 200)), patience=int(self.params.get("patience", 15)),
                          batch_size=int(self.params.get("batch_size", 32)), lr=float(self.params.get("lr", 2e-3)),
                          weight_decay=float(self.params.get("weight_decay", 1e-4)), seed=self.seed,
                          schedule="cosine", precision=str(self.params.get("precision", "fp32")))

    def _fit(self, X, y, X_val, y_val, deadline):
        if self.task == "regression":
            raise ValueError("the efficientnet_finetune family classifies images; regression is not supported")
        efficientnet.require_weights()
        self.dropout = float(self.params.get("dropout", 0.2))
        self.freeze_blocks = int(self.params.get("freeze_blocks", 3))
        share = float(self.params.get("budget_share", 1.0))
        if deadline is not None and share < 1:  # leave the rest to the other image networks, for the ensemble
            deadline = time.monotonic() + share * max(deadline - time.monotonic(), 0.0)
        self.input_side = int(X.shape[-1])  # the schema's side: what the exported graph reads
        torch.manual_seed(self.seed)
        self.side = self._plan_side(len(X), 0 if X_val is None else len(X_val), deadline)
        result = fit(lambda: _net(self.n_outputs, self.side, self.dropout, self.freeze_blocks, True), X,
                     torch.as_tensor(y, dtype=torch.long), X_val,
                     None if y_val is None else torch.as_tensor(y_val, dtype=torch.long),
                     self._loss(),
                     self._config(), deadline=deadline, checkpoint=self.params.get("checkpoint"),
                     curve_metric="cross-entropy", augment=augmentation_from(self.params))
        self.net, self.best_epoch, self.curve = result.net, result.best_epoch, result.curve
        self.stopped_by_deadline, self.precision = result.stopped_by_deadline, result.precision
        self.epochs_run = result.epochs_run

    def _loss(self) -> nn.Module:
        """The fit's loss, the continuation's too: cross-entropy with the params' label smoothing."""
        return nn.CrossEntropyLoss(label_smoothing=float(self.params.get("label_smoothing", 0.1)))

    def epoch_seconds(self) -> float | None:
        return self.fit_seconds / self.epochs_run if getattr(self, "epochs_run", 0) else None

    def continued(self, X: np.ndarray, y: np.ndarray, *, epochs: int, deadline: float) -> EfficientNetLearner | None:
        """The fine-tuned network trained ``epochs`` more epochs on all rows (the validation rows joining), where a
        refit from scratch would not fit the budget; None when the deadline cuts the first run short.

        Each run starts from the fold model, its rate falling linearly from CONTINUE_RATE of the fit's rate to
        nearly zero (ending at a low rate is what makes the gain dependable). With at least ``2 * SOUP_RUNS``
        epochs, the epochs are shared by SOUP_RUNS runs of their own seeds and the runs' weights are averaged (a
        model soup: one network, at one network's price). Measured on the GTSRB subset from a fold model at 0.988
        held-out accuracy: one run of 2-3 epochs 0.986-1.0 (mean 0.9925, 5 of 27 below 0.99); two runs of 2
        epochs averaged 0.991-0.997 (mean 0.995, none of 6 below 0.99); 2 epochs at a constant tenth of the rate,
        mean 0.991."""
        runs = SOUP_RUNS if epochs >= 2 * SOUP_RUNS else 1
        per_run = epochs // runs
        base = self._config()
        started = time.monotonic()
        nets = []
        for run in range(runs):
            net = copy.deepcopy(self.net)
            config = dataclasses.replace(base, max_epochs=per_run, patience=None, lr=base.lr * CONTINUE_RATE,
                                         schedule="linear", seed=self.seed + run)
            result = fit(lambda net=net: net, X, torch.as_tensor(y, dtype=torch.long), None, None,
                         self._loss(), config,
                         deadline=deadline, augment=augmentation_from(self.params))
            if result.epochs_run < per_run:  # cut short: its rate never came down
                break
            nets.append(result.net)
        if not nets:
            return None
        learner = EfficientNetLearner(self.params, task=self.task, n_classes=self.n_classes, seed=self.seed)
        for name in ("side", "input_side", "dropout", "freeze_blocks", "best_epoch", "precision", "curve",
                     "epochs_run"):
            setattr(learner, name, getattr(self, name))
        learner.net = average_weights(nets)
        learner.continued_epochs, learner.continued_runs = per_run, len(nets)
        learner.fit_seconds = time.monotonic() - started
        return learner

    def _plan_side(self, n_train: int, n_val: int, deadline: float | None) -> int:
        """``params["side"]`` when given; else the largest side where ``min_epochs`` epochs fit the time left, from
        training steps timed at 64 and 96 px on images of the input's side (the best of two steps each, after one
        that pays for allocations; tandem.features.efficientnet.largest_side)."""
        if self.params.get("side", "auto") != "auto":
            return int(self.params["side"])
        if deadline is None:
            return DEFAULT_SIDE
        device = pick_device()
        net = _net(self.n_outputs, efficientnet.SIDES[0], self.dropout, self.freeze_blocks, True).to(device).train()
        opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
        batch = torch.rand(int(self.params.get("batch_size", 32)), 3, self.input_side, self.input_side, device=device)
        target = torch.zeros(len(batch), dtype=torch.long, device=device)
        per_image = []
        for side in efficientnet.SIDES[:2]:
            net.side = side
            seconds = []
            for _ in range(3):
                started = time.monotonic()
                opt.zero_grad()
                F.cross_entropy(net(batch), target).backward()
                opt.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds.append(time.monotonic() - started)
            per_image.append(min(seconds[1:]) / len(batch))
        # an epoch: a training step per training image, a forward pass (about a third of one) per validation image
        images = float(self.params.get("min_epochs", 16)) * (n_train + n_val / 3) * 1.15
        return efficientnet.largest_side(per_image[0], images, deadline - time.monotonic(), per_image[1])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return class_probabilities(self.net, X, self.n_outputs, batch=128)  # images upsampled: smaller batches

    def refit_params(self, scale: float) -> dict:
        return {**self.params, "side": self.side, "epochs": max(1, int(round(self.best_epoch * min(scale, 1.2))))}

    def to_onnx(self, g: GraphBuilder, x: str) -> str:
        """The network through torch.onnx (a Resize node first when the side differs), grafted into ``g``."""
        graph = torch_image_graph(self.net.to(memory_format=torch.contiguous_format), self.input_side, "pixels",
                                  "logits")
        logits = graft(g, graph, {"pixels": x}, "efficientnet")["logits"]
        return g.op("Softmax", [logits], axis=1)

    def save(self, folder: Path) -> list[str]:
        state = {k: v.contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(folder / "efficientnet.safetensors"))
        meta = {"side": self.side, "input_side": self.input_side, "dropout": self.dropout,
                "freeze_blocks": self.freeze_blocks, "epochs": self.best_epoch, "training_precision": self.precision,
                "continued_epochs": self.continued_epochs,
                "continued_runs": self.continued_runs}
        (folder / "efficientnet.json").write_text(json.dumps(meta))
        return ["efficientnet.safetensors", "efficientnet.json"]

    def _load(self, folder: Path) -> None:
        meta = json.loads((folder / "efficientnet.json").read_text())
        self.side, self.input_side, self.best_epoch = meta["side"], meta["input_side"], meta["epochs"]
        self.dropout, self.freeze_blocks = meta["dropout"], meta["freeze_blocks"]
        self.precision = meta.get("training_precision", "fp32")
        self.continued_epochs = int(meta.get("continued_epochs", 0))
        self.continued_runs = int(meta.get("continued_runs", 1 if self.continued_epochs else 0))
        self.net = _net(self.n_outputs, self.side, self.dropout, self.freeze_blocks, False)
        self.net.load_state_dict(load_file(str(folder / "efficientnet.safetensors")))
        self.net.eval()

    def describe(self) -> dict:
        out = {"epochs": self.best_epoch, "side": self.side, "frozen_blocks": self.freeze_blocks,
               "parameters": int(sum(p.numel() for p in self.net.parameters())), "training_precision": self.precision}
        if self.continued_epochs:
            out["continued_epochs_on_all_rows"] = self.continued_epochs
            out["continued_runs_averaged"] = self.continued_runs
        return out
