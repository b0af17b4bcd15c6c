"""Predict with a bundle's native files (LightGBM text, safetensors) instead of its ONNX graph.

The reference side of the parity checks, and a way to inspect or reuse the learners themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tandem.bundle.files import NATIVE_DIR
from tandem.bundle.format import read_manifest
from tandem.features.preprocess import Preprocessor
from tandem.inference.predictor import bundle_input_encoder
from tandem.learners import learner_class


def native_predict(bundle: str | Path, table: object) -> np.ndarray:
    """The ensemble's output ([N, C] probabilities or [N, 1] values) computed by the native learners."""
    from tandem.inference.predictor import Predictor

    folder = Path(bundle)
    manifest = read_manifest(folder)
    encoder = bundle_input_encoder(folder, manifest)
    enc = encoder.encode_table(Predictor.as_table(table))
    pre = Preprocessor.from_dict(manifest["preprocessing"])
    pre.register_native_graphs(folder / NATIVE_DIR)  # the frozen encoders, when a member reads their embeddings
    n_classes = len(manifest["labels"]) if manifest["labels"] else 1
    views: dict[str, np.ndarray] = {}
    total = 0.0
    for member in manifest["ensemble"]:
        cls = learner_class(member["family"])
        learner = cls.load(folder / member["native"], task=manifest["task"], n_classes=n_classes)
        if cls.view not in views:
            views[cls.view] = pre.view(cls.view, enc)
        total = total + member["weight"] * learner.predict(views[cls.view])
    return np.asarray(total)
