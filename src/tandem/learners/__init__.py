"""Model families behind one protocol, and the portfolio of configurations to try."""

from __future__ import annotations

import json
from importlib import resources

from tandem.learners.base import Learner

FAMILIES = ("lightgbm", "linear", "mlp")


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
    raise KeyError(family)


def load_portfolio() -> list[dict]:
    """The portfolio, best first, as kept in ``portfolio.json``."""
    text = resources.files("tandem.learners").joinpath("portfolio.json").read_text(encoding="utf-8")
    return json.loads(text)["configs"]


__all__ = ["FAMILIES", "Learner", "learner_class", "load_portfolio"]
