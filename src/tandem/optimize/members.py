"""Fewer members: an ensemble with its costliest members dropped, down to its best member alone.

The study blended its members within a latency budget; exam day may want less. The members go in
the order ensemble selection would give them up: the one costing the most one-row latency per unit
of ensemble weight first (the leaderboard's figures, measured by the study on its own rows), the
weights of those left renormalised, until one remains; and the member that scored best on the
study's validation rows, alone. Each subset is a variant (the guard decides on the labelled rows):
its graph rebuilt by the study's :func:`~tandem.study.graph.build_graph`, the dropped members'
native folders left out of its bundle.
"""

from __future__ import annotations

from tandem.optimize.explanations import explain_files
from tandem.optimize.natives import load_members, native_parity
from tandem.optimize.variants import Parent, Variant
from tandem.study.graph import build_graph

NONE_HERE = "members drops members of an ensemble; this model has a single one"


def _latency(manifest: dict) -> dict[str, float]:
    """Each model's one-row latency (µs) from the leaderboard; 1.0 where the study did not time it."""
    return {r["model"]: float(r.get("predict_1row_us") or 1.0) for r in manifest.get("leaderboard", [])}


def _best_alone(manifest: dict) -> str:
    """The member that scored best on the study's validation rows (the leaderboard is in that order)."""
    names = {m["model"] for m in manifest["ensemble"]}
    return next((r["model"] for r in manifest.get("leaderboard", []) if r["model"] in names),
                max(manifest["ensemble"], key=lambda m: m["weight"])["model"])


def subsets(manifest: dict) -> list[tuple[str, ...]]:
    """The member subsets to try, largest first: the costliest per unit weight dropped one at a time, then
    the best validation member alone (when not already among them)."""
    weights = {m["model"]: float(m["weight"]) for m in manifest["ensemble"]}
    latency = _latency(manifest)
    kept, out = list(weights), []
    while len(kept) > 1:
        kept.remove(max(kept, key=lambda n: latency.get(n, 1.0) / max(weights[n], 1e-9)))
        out.append(tuple(kept))
    alone = (_best_alone(manifest),)
    if alone not in out:
        out.append(alone)
    return out


def variants(parent: Parent) -> list[Variant] | str:
    """A variant per subset of the ensemble's members, or why the method does not apply."""
    manifest = parent.manifest
    if len(manifest.get("ensemble", [])) < 2:
        return NONE_HERE
    pre, members = load_members(parent.folder, manifest)
    threshold = float(manifest.get("threshold", 0.5))
    out = []
    for keep in subsets(manifest):
        chosen = [(m, learner) for m, learner in members if m["model"] in keep]
        total = sum(float(m["weight"]) for m, _ in chosen)
        pairs = [(learner, float(m["weight"]) / total) for m, learner in chosen]
        graph = build_graph(pre, manifest["task"], manifest.get("labels"), pairs, threshold).SerializeToString()
        ensemble = [{**m, "weight": round(float(m["weight"]) / total, 6)} for m, _ in chosen]
        dropped = [m["native"] for m, _ in members if m["model"] not in keep]
        out.append(Variant("members", {"keep": list(keep), "dropped": [m["model"] for m, _ in members
                                                                      if m["model"] not in keep]},
                           graph=graph, label=f"members {'+'.join(keep)}", drop=dropped,
                           files=explain_files(parent, [(m["model"], learner, e["weight"])
                                                        for (m, learner), e in zip(chosen, ensemble, strict=True)],
                                               set()),
                           replaces={"ensemble": ensemble},
                           native_parity=native_parity(graph, pre, pairs, parent.rows, manifest["task"])))
    return out
