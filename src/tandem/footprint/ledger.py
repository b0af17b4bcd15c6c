"""The training ledger: a study's metered total, cut into phases, trials and learners."""

from __future__ import annotations

from dataclasses import dataclass

from tandem.footprint.meter import Footprint, Mark

_ADDED = ("seconds", "cpu_seconds", "energy_kwh", "energy_kwh_low", "energy_kwh_high", "co2_kg", "co2_kg_low",
          "co2_kg_high")


@dataclass(frozen=True)
class Span:
    """One stretch of a study's work between two meter readings."""

    model: str
    family: str
    kind: str  # trial (a configuration evaluated on the validation folds), refit, learning curve
    start: Mark
    end: Mark


def training_ledger(total: Footprint, phases: list[tuple[str, Mark, Mark]], spans: list[Span]) -> dict:
    """``total`` as the manifest records it, with each phase's, trial's and learner family's share.

    Shares are attributed from the total (:meth:`Footprint.between`), so phases add up to it and a
    family's figure is the sum of its trials, refits and learning-curve fits.
    """
    out = total.to_dict()
    out["phases"] = {name: total.between(a, b).summary() for name, a, b in phases}
    out["trials"] = [{"model": s.model, "family": s.family, **total.between(s.start, s.end).summary()}
                     for s in spans if s.kind == "trial"]
    families: dict[str, dict] = {}
    for s in spans:
        row = families.setdefault(s.family, {"learner": s.family, "trials": 0, "refits": 0,
                                             **{k: 0.0 for k in _ADDED}})
        row["trials"] += s.kind == "trial"
        row["refits"] += s.kind == "refit"
        part = total.between(s.start, s.end).summary()
        for k in _ADDED:
            row[k] += part[k]
    out["per_learner"] = sorted(families.values(), key=lambda r: -r["energy_kwh"])
    return out


def inference_ledger(total: Footprint, start: Mark, end: Mark, predictions: int, where: str) -> dict:
    """The ``predictions`` one-row predictions metered between ``start`` and ``end`` of ``total``, per 1,000, as a
    manifest records them; ``where`` says on which machine and when."""
    part = total.between(start, end)
    return {"predictions": predictions, "mode": f"one row per call (a serving host's worst case), {where}",
            "seconds": round(part.seconds, 3), **part.per_1000(predictions), "method": part.method}
