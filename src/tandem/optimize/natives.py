"""A bundle's native members, for the methods that rewrite them (prune, members, trees, distill, encoder).

They load the members from the bundle's native files, change or replace some, and hand back the
native files of the ones they changed (by bundle-relative path, for the variant's bundle) and how far
the rebuilt graph is from those members (the variant's own parity claim).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from tandem.bundle.files import NATIVE_DIR
from tandem.bundle.inputs import EncodedInputs
from tandem.features.preprocess import Preprocessor
from tandem.learners import Learner, learner_class
from tandem.optimize import measure


def n_classes(manifest: dict) -> int:
    """The number of classes a bundle's learners were built for (1 for regression)."""
    return len(manifest["labels"]) if manifest.get("labels") else 1


def load_members(folder: Path, manifest: dict) -> tuple[Preprocessor, list[tuple[dict, Learner]]]:
    """The bundle's preprocessing and its members (manifest entry, learner) from their native files."""
    pre = Preprocessor.from_dict(manifest["preprocessing"])
    pre.register_native_graphs(folder / NATIVE_DIR)
    members = [(m, learner_class(m["family"]).load(folder / m["native"], task=manifest["task"],
                                                   n_classes=n_classes(manifest)))
               for m in manifest["ensemble"]]
    return pre, members


def native_files(learners: list[tuple[str, Learner]]) -> dict[str, bytes]:
    """Each learner's native files (its own ``save``) under its bundle-relative folder, by bundle-relative path."""
    files = {}
    with tempfile.TemporaryDirectory(prefix="tandem-natives-") as tmp:
        for i, (native, learner) in enumerate(learners):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            files.update({f"{native}/{name}": (folder / name).read_bytes() for name in learner.save(folder)})
    return files


def native_parity(graph: bytes, pre: Preprocessor, pairs: list[tuple[Learner, float]], enc: EncodedInputs,
                  task: str) -> float:
    """Max abs difference of the graph's answers from the weighted native members' (``pairs``), on ``enc``."""
    if not enc.n_rows:
        return 0.0
    views: dict[str, np.ndarray] = {}
    total = 0.0
    for learner, weight in pairs:
        if learner.view not in views:
            views[learner.view] = pre.view(learner.view, enc)
        total = total + weight * learner.predict(views[learner.view])
    got = measure.answer(task, measure.outputs(measure.session(graph), enc))
    return float(np.max(np.abs(got.astype(np.float64) - np.asarray(total, dtype=np.float64))))
