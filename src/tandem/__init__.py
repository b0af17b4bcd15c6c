"""tandem: train a model within a time budget, ship it as a verified ONNX bundle, serve it fast."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tandem.errors import TandemError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tandem.api import Model


def train(*args: object, **kwargs: object) -> Model:
    """Train a model; see :func:`tandem.api.train`."""
    from tandem.api import train as _train
    return _train(*args, **kwargs)


def load(name_or_path: object, **kwargs: object) -> Model:
    """Load a model; see :func:`tandem.api.load`."""
    from tandem.api import load as _load
    return _load(name_or_path, **kwargs)


__all__ = ["TandemError", "__version__", "load", "train"]
