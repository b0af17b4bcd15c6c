"""Fewer trees: each LightGBM member cut to its first boosting iterations, the whole graph rebuilt.

The members are loaded from the bundle's native files the way :mod:`tandem.study.native` loads them,
each LightGBM booster is limited to its first ``k`` iterations (a fraction of its own, at least one:
one tree per class), and the bundle's graph is built again by the study's
:func:`~tandem.study.graph.build_graph`, preprocessing and the other members as they were. The
native files of a kept variant are cut the same way, so the bundle's graph and native files agree.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tandem.bundle.files import ENCODER_FILE, NATIVE_DIR
from tandem.bundle.inputs import EncodedInputs
from tandem.features.preprocess import Preprocessor
from tandem.learners import Learner, learner_class
from tandem.optimize.explanations import explain_files
from tandem.optimize.variants import Parent, Variant
from tandem.study.graph import build_graph

FAMILY = "lightgbm"
FRACTIONS = ((1, 2), (1, 4))  # of each LightGBM member's boosting iterations
NONE_HERE = "trees keeps fewer trees of LightGBM members; this model has none"


@dataclass
class Candidate:
    """One cut: what was kept, the rebuilt graph, and its gap from its own (cut) native members."""

    keep: str  # "1/2 of the trees"
    fraction: str  # "1/2"
    iterations: dict[str, int]  # LightGBM member -> boosting iterations kept
    trees: dict[str, int]  # LightGBM member -> trees kept (iterations x trees per iteration)
    graph: bytes
    native_parity: float
    files: dict[str, bytes]  # the cut members' native files and the explanations, by bundle-relative path


def _n_classes(manifest: dict) -> int:
    return len(manifest["labels"]) if manifest.get("labels") else 1


def load_members(folder: Path, manifest: dict) -> tuple[Preprocessor, list[tuple[dict, Learner]]]:
    """The bundle's preprocessing and its members (manifest entry, learner) from their native files."""
    pre = Preprocessor.from_dict(manifest["preprocessing"])
    if pre.text_encoder and (folder / NATIVE_DIR / ENCODER_FILE).is_file():
        from tandem.features.sentence import register_graph

        register_graph((folder / NATIVE_DIR / ENCODER_FILE).read_bytes())
    members = [(m, learner_class(m["family"]).load(folder / m["native"], task=manifest["task"],
                                                   n_classes=_n_classes(manifest)))
               for m in manifest["ensemble"]]
    return pre, members


def _per_iteration(manifest: dict) -> int:
    return _n_classes(manifest) if manifest["task"] == "multiclass" else 1


def fewer_trees(parent: Parent) -> list[Candidate] | str:
    """A candidate per fraction that keeps fewer trees, or why trees does not apply to this bundle."""
    folder, manifest, enc = parent.folder, parent.manifest, parent.rows
    if not any(m["family"] == FAMILY for m in manifest.get("ensemble", [])):
        return NONE_HERE
    pre, members = load_members(folder, manifest)
    full = {m["model"]: learner.best_iteration for m, learner in members if m["family"] == FAMILY}
    per = _per_iteration(manifest)
    out, seen = [], set()
    for num, den in FRACTIONS:
        cut = {name: max(1, (n * num) // den) for name, n in full.items()}
        key = tuple(sorted(cut.items()))
        if cut == full or key in seen:
            continue
        seen.add(key)
        for m, learner in members:
            if m["model"] in cut:
                learner.best_iteration = cut[m["model"]]
        pairs = [(learner, float(m["weight"])) for m, learner in members]
        threshold = float(manifest.get("threshold", 0.5))
        graph = build_graph(pre, manifest["task"], manifest.get("labels"), pairs, threshold).SerializeToString()
        out.append(Candidate(f"{num}/{den} of the trees", f"{num}/{den}", cut,
                             {k: v * per for k, v in cut.items()}, graph,
                             native_parity(graph, pre, pairs, enc, manifest["task"]),
                             {**_cut_files(members, cut),
                              **explain_files(parent, [(m["model"], learner, float(m["weight"]))
                                                       for m, learner in members], set(cut))}))
    for m, learner in members:  # as loaded, should the caller look again
        if m["model"] in full:
            learner.best_iteration = full[m["model"]]
    if not out:
        return "trees: every LightGBM member has a single boosting iteration; there is no tree to drop"
    return out


def native_parity(graph: bytes, pre: Preprocessor, pairs: list[tuple[Learner, float]], enc: EncodedInputs,
                   task: str) -> float:
    """Max abs difference of the graph's first output from the cut native members', on ``enc``."""
    from tandem.optimize import measure

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


def _cut_files(members: list[tuple[dict, Learner]], cut: dict[str, int]) -> dict[str, bytes]:
    """The native files of the LightGBM members cut to ``cut`` iterations, by bundle-relative path."""
    files = {}
    with tempfile.TemporaryDirectory(prefix="tandem-trees-") as tmp:
        for m, learner in members:
            if m["model"] not in cut:
                continue
            learner.best_iteration = cut[m["model"]]
            folder = Path(tmp) / m["model"]
            folder.mkdir()
            for name in learner.save(folder):
                files[f"{m['native']}/{name}"] = (folder / name).read_bytes()
    return files


def variants(parent: Parent) -> list[Variant] | str:
    """A variant per fraction of each LightGBM member's trees, or why the method does not apply."""
    made = fewer_trees(parent)
    if isinstance(made, str):
        return made
    out = []
    for c in made:
        ensemble = [{**m, "trees": c.trees[m["model"]]} if m["model"] in c.trees else m
                    for m in parent.manifest["ensemble"]]
        out.append(Variant("trees", {"keep": c.keep, "trees": c.trees, "iterations": c.iterations}, graph=c.graph,
                           native_parity=c.native_parity, label=f"trees {c.fraction}", files=c.files,
                           replaces={"ensemble": ensemble}))
    return out
