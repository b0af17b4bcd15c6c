"""Pruning: the neural members' weights, cut by magnitude or by whole channels, then a short fine-tune.

Two variants of every bundle with MLP or CNN members (other families are left as they are; the
fine-tuned sentence encoder's members too):

- **magnitude** (unstructured): in each ``Linear``/``Conv2d`` weight of each neural member, the
  ``SHARE`` of entries with the smallest ``|w|`` are set to zero, per layer (every layer ends exactly
  that sparse; biases and batch norms are kept). The mask is re-applied after every fine-tune step, so
  the zeros stay. The graph still stores and multiplies every zero: ONNX Runtime's dense CPU kernels
  are no faster and the file is no smaller; only its compressed size shrinks. Both are measured.
- **channels** (structured): the ``SHARE`` of hidden neurons of each MLP layer, and of inner channels
  of each CNN residual block (the output of its first convolution, the input of its second: the
  residual add ties the block's own output to its input) with the smallest score are removed, so
  the layers really are narrower. A neuron's score is the norm of its incoming weights (and bias)
  times the norm of its outgoing weights: ReLU lets a neuron's incoming weights be scaled by ``a`` and
  its outgoing by ``1/a`` without changing the function, and the product does not move. A CNN channel's
  score is the size of its batch norm's affine (``sqrt(gamma^2 + beta^2)``; the convolution's own scale is
  normalised away) times the norm of the second convolution's weights reading it.

The fine-tune trains on the caller's training rows only (``Parent.teach``), never the labelled rows
the variants are scored on, with the learner's own optimiser (AdamW, its weight decay) at a lower,
cosine-annealed rate, for a few epochs; the loss is half the labels' and half the distance to the
unpruned member's own outputs (distillation), and the CNN sees its training augmentation. Without
training rows the pruned members are exported as cut, and the settings say so. The whole graph is
rebuilt by :func:`~tandem.study.graph.build_graph` and the pruned members' native files go with it.
"""

from __future__ import annotations

import copy
import math
import time
import zlib
from typing import TYPE_CHECKING

import numpy as np

from tandem.learners import Learner
from tandem.optimize.explanations import explain_files
from tandem.optimize.natives import load_members, native_files, native_parity
from tandem.optimize.variants import Parent, Variant
from tandem.study.graph import build_graph

if TYPE_CHECKING:  # torch is imported where it is used: a model without neural members never loads it
    import torch
    from torch import nn

FAMILIES = ("mlp", "cnn")
SHARE = 0.5  # of each layer's weights (magnitude) or of its neurons / inner channels (channels) removed
NONE_HERE = "prune removes weights of neural members (MLP, CNN); this model has none"
NO_FINE_TUNE = "none: no --train-data given"
NO_SPEED = ("sparsity brings no speed on ONNX Runtime's dense CPU kernels: the graph stores and multiplies every "
            "zero, so it is as large as the parent's (only its compressed size shrinks)")
# the fine-tune: at least MIN_STEPS optimizer steps, within EPOCHS, stopping after the epoch that passes SECONDS
MIN_STEPS = 300
EPOCHS = (3, 20)
SECONDS = 120.0  # per member and variant
LR_SCALE = 0.3  # of the learner's training rate: the weights are trained already, a full rate would undo them
DISTILL = 0.5  # the loss's share that follows the unpruned member's outputs rather than the labels
# the learners' own optimiser settings (a loaded learner's params hold its sizes only, so their defaults)
_OPTIMISER = {"mlp": {"lr": 1e-3, "weight_decay": 1e-5, "batch_size": 256},
              "cnn": {"lr": 2e-3, "weight_decay": 5e-4, "batch_size": 64}}


def variants(parent: Parent) -> list[Variant] | str:
    """A magnitude-pruned and a channel-pruned variant of the bundle's neural members, or why prune does not
    apply."""
    if not any(m["family"] in FAMILIES for m in parent.manifest.get("ensemble", [])):
        return NONE_HERE
    return [_variant(parent, "magnitude"), _variant(parent, "channels")]


def _variant(parent: Parent, kind: str) -> Variant:
    """One pruned variant: every neural member cut the ``kind`` way and fine-tuned, the graph rebuilt."""
    manifest = parent.manifest
    pre, members = load_members(parent.folder, manifest)
    share = f"{round(SHARE * 100)}%"
    label = f"prune {share} {kind}"
    neural = [(m, learner) for m, learner in members if m["family"] in FAMILIES]
    if kind == "magnitude" and all(_sparsity(learner.net) >= SHARE - 1e-9 for _, learner in neural):
        return Variant("prune", label=label,
                       skipped=f"prune: the neural members' weights are already at least {share} zeros")
    views: dict[str, np.ndarray] = {}
    tuned: dict[str, dict | str] = {}
    sizes: dict[str, dict] = {}
    for m, learner in neural:
        teacher = copy.deepcopy(learner.net).eval()
        before = _parameters(learner.net)
        masks: list[tuple[nn.Parameter, torch.Tensor]] = []
        if kind == "magnitude":
            masks = magnitude_masks(learner.net, SHARE)
        elif learner.family == "mlp":
            sizes[m["model"]] = {"hidden": {"before": list(learner.params["hidden"]),
                                            "after": shrink_mlp(learner, SHARE)}}
        else:
            sizes[m["model"]] = {"inner": {"before": list(learner.params.get("inner") or learner.params["channels"]),
                                           "after": shrink_cnn(learner, SHARE)}}
        if parent.teach is None:
            tuned[m["model"]] = NO_FINE_TUNE
        else:
            if learner.view not in views:
                views[learner.view] = pre.view(learner.view, parent.teach)
            tuned[m["model"]] = fine_tune(learner, teacher, views[learner.view], parent.teach_y, masks)
        sizes.setdefault(m["model"], {})["parameters"] = {"before": before, "after": _parameters(learner.net),
                                                          "nonzero": _nonzero(learner.net)}
    pairs = [(learner, float(m["weight"])) for m, learner in members]
    graph = build_graph(pre, manifest["task"], manifest.get("labels"), pairs,
                        float(manifest.get("threshold", 0.5))).SerializeToString()
    settings: dict = {"kind": kind, "share": SHARE, "members": [m["model"] for m, _ in neural],
                      "fine_tune": _fine_tune_setting(tuned, parent)}
    if kind == "magnitude":
        settings.update(
            scope="per layer: each Linear/Conv weight of each neural member loses its smallest |w| (biases and "
                  "batch norms kept), the zeros held through the fine-tune",
            sparsity={m["model"]: round(_sparsity(learner.net), 4) for m, learner in neural},
            layers={m["model"]: len(_weights(learner.net)) for m, learner in neural},
            speed=NO_SPEED, zlib_bytes=len(zlib.compress(graph, 6)),
            parent_zlib_bytes=len(zlib.compress(parent.graph, 6)))
    else:
        settings.update(
            scope="structured: hidden neurons of each MLP layer, inner channels of each CNN residual block "
                  "(a block's output channels are tied to its input by the residual add and are kept)",
            criterion="neuron: |incoming weights and bias| x |outgoing weights|; CNN channel: "
                      "|batch norm gamma, beta| x |second convolution's weights reading it| (L2 norms)",
            sizes=sizes)
    ensemble = [{**m, **learner.describe(), "nonzero_parameters": _nonzero(learner.net)}
                if m["family"] in FAMILIES else m for m, learner in members]
    return Variant("prune", settings, graph=graph, label=label,
                   native_parity=native_parity(graph, pre, pairs, parent.rows, manifest["task"]),
                   files={**native_files([(m["native"], learner) for m, learner in neural]),
                          **explain_files(parent, [(m["model"], learner, float(m["weight"])) for m, learner in members],
                                          {m["model"] for m, _ in neural})},
                   replaces={"ensemble": ensemble})


def _fine_tune_setting(tuned: dict[str, dict | str], parent: Parent) -> dict | str:
    if parent.teach is None:
        return NO_FINE_TUNE
    return {"rows": parent.teach.n_rows, "loss": f"{1 - DISTILL:g} x the labels' loss + {DISTILL:g} x the distance "
                                                 "to the unpruned member's outputs (distillation)",
            "members": tuned}


# -- cutting ------------------------------------------------------------------------------------------------
def _weights(net: nn.Module) -> list[nn.Parameter]:
    """The weights pruning cuts: every Linear and Conv2d layer's (not their biases, not the batch norms)."""
    from torch import nn

    return [m.weight for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _sparsity(net: nn.Module) -> float:
    """The share of zeros among the prunable weights of ``net``."""
    weights = _weights(net)
    return sum(int((w == 0).sum()) for w in weights) / max(sum(w.numel() for w in weights), 1)


def _parameters(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))


def _nonzero(net: nn.Module) -> int:
    return int(sum(int((p != 0).sum()) for p in net.parameters()))


def magnitude_masks(net: nn.Module, share: float) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Zero the ``share`` of smallest-|w| entries of each Linear/Conv2d weight of ``net`` (exactly that many per
    layer, ties broken by position); return each weight with its mask (1 = kept), to hold the zeros later."""
    import torch

    out = []
    with torch.no_grad():
        for w in _weights(net):
            cut = int(round(share * w.numel()))
            mask = torch.ones(w.numel(), dtype=w.dtype)
            mask[torch.argsort(w.detach().abs().flatten(), stable=True)[:cut]] = 0
            mask = mask.reshape(w.shape)
            w.mul_(mask)
            out.append((w, mask))
    return out


def _keep(score: torch.Tensor, share: float) -> torch.Tensor:
    """The indices (ascending) of the ``1 - share`` highest scores, at least one."""
    import torch

    n = max(1, int(math.ceil(score.numel() * (1 - share))))
    return torch.sort(torch.argsort(score, descending=True, stable=True)[:n]).values


def shrink_mlp(learner: Learner, share: float) -> list[int]:
    """Remove the ``share`` of each hidden layer's neurons with the smallest score from the MLP ``learner``
    (its net rebuilt narrower, its ``hidden`` sizes updated for its native files); return the new sizes."""
    import torch
    from torch import nn

    linears = learner._linears()
    with torch.no_grad():
        kept = []
        for layer, following in zip(linears[:-1], linears[1:], strict=True):
            incoming = torch.cat([layer.weight, layer.bias[:, None]], dim=1).norm(dim=1)
            kept.append(_keep(incoming * following.weight.norm(dim=0), share))
        learner.params["hidden"] = [len(k) for k in kept]
        net = learner._build(linears[0].weight.shape[1])
        rows: list[torch.Tensor | None] = [*kept, None]  # the output layer keeps every row
        cols: list[torch.Tensor | None] = [None, *kept]  # the first layer reads every input
        new = [m for m in net if isinstance(m, nn.Linear)]
        for old, fresh, r, c in zip(linears, new, rows, cols, strict=True):
            w, b = old.weight, old.bias
            if r is not None:
                w, b = w[r], b[r]
            if c is not None:
                w = w[:, c]
            fresh.weight.copy_(w)
            fresh.bias.copy_(b)
    learner.net = net.eval()
    return list(learner.params["hidden"])


def shrink_cnn(learner: Learner, share: float) -> list[int]:
    """Remove the ``share`` of each residual block's inner channels with the smallest score from the CNN
    ``learner`` (its net rebuilt with those widths, ``inner`` recorded for its native files); return them."""
    import torch

    state = {k: v.clone() for k, v in learner.net.state_dict().items()}
    inner = []
    with torch.no_grad():
        for name, block in learner.residual_blocks():
            bn, second = block.body[1], block.body[3]
            reading = second.weight.transpose(0, 1).flatten(1).norm(dim=1)  # per input channel of the second conv
            score = torch.sqrt(bn.weight ** 2 + bn.bias ** 2) * reading
            keep = _keep(score, share)
            inner.append(len(keep))
            state[f"{name}.body.0.weight"] = state[f"{name}.body.0.weight"][keep]
            for part in ("weight", "bias", "running_mean", "running_var"):
                state[f"{name}.body.1.{part}"] = state[f"{name}.body.1.{part}"][keep]
            state[f"{name}.body.3.weight"] = state[f"{name}.body.3.weight"][:, keep]
    learner.params["inner"] = inner
    net = learner._build()
    net.load_state_dict(state)
    learner.net = net.eval()
    return inner


# -- fine-tune ----------------------------------------------------------------------------------------------
def fine_tune(learner: Learner, teacher: nn.Module, X: np.ndarray, y: np.ndarray,
              masks: list[tuple[nn.Parameter, torch.Tensor]], seconds: float = SECONDS) -> dict:
    """Train the pruned ``learner.net`` on (X, y) for a few epochs, half on the labels and half towards
    ``teacher``'s (the unpruned net's) outputs, re-applying ``masks`` after every step; return what it ran.

    It stops after the epoch that passes ``seconds`` (at least one epoch). The CNN computes in bf16 on a CPU
    that multiplies bf16 natively, as its training did (``precision="auto"``); everything else in fp32."""
    import torch
    from torch import nn

    from tandem.learners.torch_loop import cpu_has_native_bf16, pick_device

    started = time.monotonic()
    torch.manual_seed(learner.seed)
    device = pick_device()
    settings = _OPTIMISER[learner.family]
    regression = learner.task == "regression"
    if regression:  # the MLP learns a standardised target
        target = torch.as_tensor((np.asarray(y, dtype=np.float64) - learner.y_mean) / learner.y_std,
                                 dtype=torch.float32).reshape(-1, 1)
    else:
        target = torch.as_tensor(y, dtype=torch.long)
    net, teacher = learner.net.to(device), teacher.to(device).eval()
    held = [(w, mask.to(device)) for w, mask in masks]
    Xt, yt = torch.as_tensor(X, dtype=torch.float32, device=device), target.to(device)
    batch = settings["batch_size"]
    per_epoch = max(1, math.ceil(len(Xt) / batch))
    epochs = int(np.clip(math.ceil(MIN_STEPS / per_epoch), *EPOCHS))
    lr = settings["lr"] * LR_SCALE
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=settings["weight_decay"])
    augment = _augmentation(learner)
    gen = torch.Generator(device="cpu").manual_seed(learner.seed)
    bf16 = learner.family == "cnn" and device.type == "cpu" and cpu_has_native_bf16()
    steps, ran, total = 0, 0, epochs * per_epoch
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(Xt), generator=gen).to(device)
        for start in range(0, len(Xt), batch):
            idx = order[start: start + batch]
            xb = Xt[idx] if augment is None else augment(Xt[idx], gen)
            for group in opt.param_groups:  # cosine to zero over the whole fine-tune
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * steps / total))
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
                out = net(xb).float()
                with torch.no_grad():
                    soft = teacher(xb).float()
            if regression:
                loss = ((1 - DISTILL) * nn.functional.mse_loss(out, yt[idx])
                        + DISTILL * nn.functional.mse_loss(out, soft))
            else:
                loss = ((1 - DISTILL) * nn.functional.cross_entropy(out, yt[idx])
                        + DISTILL * nn.functional.kl_div(torch.log_softmax(out, 1), torch.softmax(soft, 1),
                                                         reduction="batchmean"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for w, mask in held:  # the pruned weights stay zero: AdamW's moments and decay would move them
                    w.mul_(mask)
            steps += 1
        ran += 1
        if time.monotonic() - started >= seconds:
            break
    learner.net = net.to("cpu").eval()
    teacher.to("cpu")
    for w, mask in masks:  # the same Parameters, now on the CPU again
        w.data.mul_(mask)
    return {"epochs": ran, "steps": steps, "lr": lr, "weight_decay": settings["weight_decay"], "batch_size": batch,
            "seconds": round(time.monotonic() - started, 2), "device": device.type,
            "precision": "bf16" if bf16 else "fp32"}


def _augmentation(learner: Learner):
    """The CNN's training augmentation (its own defaults), or None for the MLP."""
    return learner.augmentation() if learner.family == "cnn" else None
