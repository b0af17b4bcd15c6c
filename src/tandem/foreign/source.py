"""What every converter hands over: a model from another framework as one ONNX graph, and how to ask the
framework itself for the same answer (the import's parity check)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

#: What a converted graph's answer means; the bundle's outputs are derived from it.
MEANINGS = ("probabilities", "logits", "values")
#: The opsets ONNX Runtime runs that converters are asked for (and ONNX files are held to).
OPSET = 17
MAX_OPSET = 21


@dataclass
class Converted:
    """A foreign model as one ONNX graph.

    ``graph``: its inputs are the model's own (a table model's one float matrix [N, F] or one tensor per column;
    a tensor model's tensors, first dimension the batch); ``output`` names the graph output that carries the
    answer. ``reference(feeds)`` asks the source framework for that answer on ``feeds`` (numpy arrays keyed by
    the graph's input names), as a numpy array of the same shape. ``example``: rows that came with the model
    (a torch.export program's example inputs), used when no sample is given. ``meaning`` says what the answer is (one of
    :data:`MEANINGS`; None: inferred from its values). ``labels`` are class labels the source knows (a
    scikit-learn classifier's ``classes_``); ``columns`` the feature names of a table model in the order of its
    float matrix, when the source knows them.
    """

    graph: onnx.ModelProto
    framework: str
    reference: Callable[[dict[str, np.ndarray]], np.ndarray]
    output: str
    meaning: str | None = None
    labels: list[str] | None = None
    columns: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    example: dict[str, np.ndarray] | None = None
