"""Model families behind one protocol, and the portfolio of configurations to try."""

from __future__ import annotations

import json
from importlib import resources

from tandem.learners.base import Learner

FAMILIES = ("lightgbm", "linear", "mlp", "cnn", "minilm_linear", "minilm_finetune", "efficientnet_linear",
            "efficientnet_finetune")
TEXT_ENCODER_FAMILIES = ("minilm_linear", "minilm_finetune")  # they need the study's sentence encoder
TEXT_ENCODER_VIEWS = ("embedding", "tokens")  # the views those families read
IMAGE_ENCODER_FAMILIES = ("efficientnet_linear", "efficientnet_finetune")  # they need the ImageNet backbone
CLASSIFIERS_ONLY = ("cnn", "efficientnet_finetune", "minilm_finetune")  # no regression head
#: Families that train with PyTorch: a tabular install without it (``tandem[tabular]``) has lightgbm and linear.
TORCH_FAMILIES = ("mlp", "cnn", "minilm_linear", "minilm_finetune", "efficientnet_linear", "efficientnet_finetune",
                  "two_tower")


def torch_installed() -> bool:
    """Whether PyTorch can be imported (found without importing it: that takes seconds)."""
    from tandem.errors import installed

    return installed("torch")


# each family's ``Learner.view``, known without importing its module (mlp, cnn and minilm_finetune import torch)
FAMILY_VIEWS = {"lightgbm": "tree", "linear": "dense", "mlp": "dense", "cnn": "image", "minilm_linear": "embedding",
                "minilm_finetune": "tokens", "efficientnet_linear": "embedding", "efficientnet_finetune": "image"}


def learner_class(family: str) -> type[Learner]:
    """The class of a family (imported lazily: torch loads only if an MLP is used)."""
    if family == "lightgbm":
        from tandem.learners.lgbm import LightGBMLearner
        return LightGBMLearner
    if family == "linear":
        from tandem.learners.linear import LinearLearner
        return LinearLearner
    if family == "mlp":
        from tandem.learners.mlp import MLPLearner
        return MLPLearner
    if family == "minilm_linear":
        from tandem.learners.linear import EncoderLinearLearner
        return EncoderLinearLearner
    if family == "minilm_finetune":
        from tandem.learners.minilm import FineTunedEncoderLearner
        return FineTunedEncoderLearner
    if family == "efficientnet_linear":
        from tandem.learners.linear import ImageEmbeddingLinearLearner
        return ImageEmbeddingLinearLearner
    if family == "efficientnet_finetune":
        from tandem.learners.efficientnet import EfficientNetLearner
        return EfficientNetLearner
    if family == "cnn":
        from tandem.learners.cnn import CNNLearner
        return CNNLearner
    raise KeyError(family)


def family_view(family: str) -> str:
    """The preprocessing view a family reads (``learner_class(family).view``), importing nothing."""
    return FAMILY_VIEWS[family]


def load_portfolio() -> list[dict]:
    """The portfolio, best first, as kept in ``portfolio.json``."""
    text = resources.files("tandem.learners").joinpath("portfolio.json").read_text(encoding="utf-8")
    return json.loads(text)["configs"]


def check_configs(configs: object, *, what: str = "configs") -> list[dict]:
    """Validate user-given configurations (the portfolio's shape): a clear ConfigError naming the bad entry."""
    from tandem.errors import ConfigError

    if isinstance(configs, dict) and "configs" in configs:
        configs = configs["configs"]
    if not isinstance(configs, list) or not configs:
        raise ConfigError(f"{what}: expected a non-empty list of {{\"name\", \"family\", \"params\"}} objects")
    names: set[str] = set()
    for i, cfg in enumerate(configs):
        where = f"{what}[{i}]"
        if not isinstance(cfg, dict) or not isinstance(cfg.get("name"), str) or not cfg["name"]:
            raise ConfigError(f"{where}: expected an object with a non-empty string 'name'")
        if cfg.get("family") not in FAMILIES:
            raise ConfigError(f"{where} ('{cfg['name']}'): family must be one of {', '.join(FAMILIES)}, "
                              f"got {cfg.get('family')!r}")
        if not isinstance(cfg.get("params", {}), dict):
            raise ConfigError(f"{where} ('{cfg['name']}'): 'params' must be an object")
        if cfg["name"] in names:
            raise ConfigError(f"{where}: name '{cfg['name']}' is used twice")
        names.add(cfg["name"])
    return [{"name": c["name"], "family": c["family"], "params": dict(c.get("params", {}))} for c in configs]


__all__ = ["CLASSIFIERS_ONLY", "FAMILIES", "FAMILY_VIEWS", "IMAGE_ENCODER_FAMILIES", "TEXT_ENCODER_FAMILIES",
           "TORCH_FAMILIES", "torch_installed",
           "TEXT_ENCODER_VIEWS", "Learner", "check_configs", "family_view", "learner_class", "load_portfolio"]
