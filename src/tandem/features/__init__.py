"""The preprocessing on the training side: fitted in numpy, written as ONNX nodes.

The public interface:

- :class:`Preprocessor` (:mod:`~tandem.features.preprocess`): fitted from encoded rows; its views (tree,
  dense, embedding) in numpy and as ONNX nodes. The numpy views alone are
  :class:`tandem.bundle.views.PreprocessingViews`, which a serving host uses;
- :mod:`~tandem.features.graph`: :class:`GraphBuilder`, ``graft`` and ``tensor_info``, how tandem writes
  ONNX graphs itself (imports ``onnx``);
- :mod:`~tandem.features.sentence`: the all-MiniLM-L6-v2 sentence encoder (its weights, a torch module
  for fine-tuning, its quantized ONNX graph and sessions).

Only :class:`Preprocessor` is imported here; the other two modules load ``onnx`` or ``torch`` when used.
"""

from tandem.features.preprocess import Preprocessor

__all__ = ["Preprocessor"]
