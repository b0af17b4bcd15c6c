"""Fewer trees: each LightGBM member cut to its first boosting iterations, the whole graph rebuilt.

The members are loaded from the bundle's native files the way :mod:`tandem.study.native` loads them,
each LightGBM booster is limited to its first ``k`` iterations (a fraction of its own, at least one:
one tree per class), and the bundle's graph is built again by the study's
:func:`~tandem.study.graph.build_graph`, preprocessing and the other members as they were. The
native files of a kept variant are cut the same way, so the bundle's graph and native files agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from tandem.learners import Learner
from tandem.optimize.explanations import explain_files
from tandem.optimize.natives import load_members, n_classes, native_files, native_parity
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


def _per_iteration(manifest: dict) -> int:
    return n_classes(manifest) if manifest["task"] == "multiclass" else 1


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


def _cut_files(members: list[tuple[dict, Learner]], cut: dict[str, int]) -> dict[str, bytes]:
    """The native files of the LightGBM members cut to ``cut`` iterations, by bundle-relative path."""
    for m, learner in members:
        if m["model"] in cut:
            learner.best_iteration = cut[m["model"]]
    return native_files([(m["native"], learner) for m, learner in members if m["model"] in cut])


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
