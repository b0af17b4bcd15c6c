"""tandem: train a model within a time budget, ship it as a verified ONNX bundle, serve it fast."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tandem.errors import TandemError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tandem.api import Model
    from tandem.client import Client


def train(*args: object, **kwargs: object) -> Model:
    """Train a model; see :func:`tandem.api.train`."""
    from tandem.api import train as _train
    return _train(*args, **kwargs)


def load(name_or_path: object, **kwargs: object) -> Model:
    """Load a model; see :func:`tandem.api.load`."""
    from tandem.api import load as _load
    return _load(name_or_path, **kwargs)


def check(*args: object, **kwargs: object) -> object:
    """The quality gate on a table; see :func:`tandem.api.check`."""
    from tandem.api import check as _check
    return _check(*args, **kwargs)


def import_model(*args: object, **kwargs: object) -> Model:
    """Import a model trained elsewhere (PyTorch, TensorFlow/Keras, scikit-learn, LightGBM, XGBoost, ONNX);
    see :func:`tandem.api.import_model`."""
    from tandem.api import import_model as _import_model

    return _import_model(*args, **kwargs)


def __getattr__(name: str) -> object:
    if name == "optimize":  # the package is callable: tandem.optimize(...) runs tandem.optimize.optimize
        import tandem.optimize
        return tandem.optimize
    if name == "Client":  # stdlib-only HTTP client for `tandem serve`, loaded on first use
        from tandem.client import Client
        return Client
    raise AttributeError(f"module 'tandem' has no attribute {name!r}")


__all__ = ["Client", "TandemError", "__version__", "check", "import_model", "load", "optimize", "train"]
