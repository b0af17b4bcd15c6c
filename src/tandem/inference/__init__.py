"""In-process inference over ONNX Runtime; never imports the training stack."""

from tandem.inference.predictor import Predictor, default_providers

__all__ = ["Predictor", "default_providers"]
