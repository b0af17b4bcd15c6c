"""explain.json for a variant whose members changed, so its per-prediction contributions add up to its answers.

A variant that only changes the graph's arithmetic (int8, int4) keeps its parent's file: its
contributions are the float members', off by the quantization's parity. A variant that drops,
cuts or replaces members (members, trees, prune, distill) gets its own: kept members' entries
reweighted, rebuilt members' entries made again from the learners.
"""

from __future__ import annotations

import json

import numpy as np

from tandem.bundle.files import EXPLAIN_FILE
from tandem.learners import Learner
from tandem.optimize.variants import Parent


def _dense_means(parent: Parent, old: dict) -> np.ndarray | None:
    """The training means of the dense view: from a linear member's entry of the parent, else None."""
    for entry in old.get("members", []):
        if entry.get("kind") == "linear" and "means" in entry:
            return np.asarray(entry["means"], dtype=np.float64)
    return None


def explain_files(parent: Parent, members: list[tuple[str, Learner, float]], rebuilt: set[str]) -> dict[str, bytes]:
    """The variant's explain.json (by bundle-relative path) for its ``members`` (name, learner, weight), the
    ``rebuilt`` ones made again; empty when the parent has none (the variant keeps what it has)."""
    path = parent.folder / EXPLAIN_FILE
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    if parent.manifest["task"] == "multiclass":
        return {}  # contributions are for binary and regression models: the parent's note stands
    by_name = {e.get("model"): e for e in old.get("members", [])}
    entries = []
    for name, learner, weight in members:
        if name in by_name and name not in rebuilt:
            entries.append({**by_name[name], "weight": weight})
            continue
        data = learner.explainer(_dense_means(parent, old) if learner.view == "dense" else None)
        if data is None or (learner.view == "dense" and _dense_means(parent, old) is None):
            why = (f"member '{name}' ({learner.family}) has no exact attribution here: per-prediction "
                   "contributions need tree (LightGBM) or linear members")
            new = {k: v for k, v in old.items() if k != "members"} | {"members": [], "unavailable": why}
            return {EXPLAIN_FILE: json.dumps(new).encode()}
        entries.append({**data, "model": name, "weight": weight})
    new = {k: v for k, v in old.items() if k not in ("members", "unavailable")} | {"members": entries}
    return {EXPLAIN_FILE: json.dumps(new).encode()}
