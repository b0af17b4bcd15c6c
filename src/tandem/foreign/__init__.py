"""Models trained elsewhere (PyTorch, TensorFlow/Keras, scikit-learn, LightGBM, XGBoost, ONNX) in, verified
bundles out: one ONNX graph between tandem's inputs and outputs, a schema, a parity check, a model card."""

from tandem.foreign.convert import FRAMEWORKS, detect
from tandem.foreign.importer import DEFAULT_MAX_DIFF, ImportRequest, Prepared, prepare
from tandem.foreign.writer import write_import

__all__ = ["DEFAULT_MAX_DIFF", "FRAMEWORKS", "ImportRequest", "Prepared", "detect", "prepare", "write_import"]
