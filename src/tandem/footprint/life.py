"""A model's life: what training cost, what each 1,000 predictions cost, and when inference overtakes.

Figures come from the bundle's footprint ledger (``manifest["footprint"]``). Training's CO2 is at
the grid it was trained on; inference's at the grid given here (the serving host's), else the same.
"""

from __future__ import annotations

import math

from tandem.errors import BundleError, ConfigError
from tandem.footprint.grid import Grid

DAYS_A_YEAR = 365


def life_report(footprint: dict, *, predictions_per_day: float | None = None, grid: Grid | None = None) -> dict:
    """The life of a model from its ledger: training, per 1,000 predictions, break-even, a year of serving.

    The break-even is the number of predictions whose CO2 equals the training's (its low and high
    from the ranges: low training and high inference give the earliest). ``grid`` is where the
    predictions run (default: the training grid).
    """
    train = footprint.get("train") or {}
    inference = footprint.get("inference")
    if "energy_kwh" not in train:
        raise BundleError("this bundle has no footprint ledger (trained before tandem metered energy, or with "
                          "the meter off): nothing to report")
    if inference is None:
        raise BundleError("this bundle's ledger has no inference figure (no held-out rows were metered)")
    if predictions_per_day is not None and not (math.isfinite(predictions_per_day) and predictions_per_day >= 0):
        raise ConfigError(f"--predictions-per-day must be a number >= 0, got {predictions_per_day}")
    train_g = float(train["grid"]["intensity_g_per_kwh"])
    serve_grid = grid.to_dict() if grid is not None else dict(train["grid"])
    serve_g = float(serve_grid["intensity_g_per_kwh"])

    def co2(kwh: float, g: float) -> float:
        return kwh * g / 1000.0

    t_kwh, t_low, t_high = train["energy_kwh"], train["energy_kwh_low"], train["energy_kwh_high"]
    p_kwh, p_low, p_high = (inference["energy_kwh_per_1000"], inference["energy_kwh_low_per_1000"],
                            inference["energy_kwh_high_per_1000"])
    training = {"energy_kwh": t_kwh, "energy_kwh_low": t_low, "energy_kwh_high": t_high,
                "co2_kg": co2(t_kwh, train_g), "co2_kg_low": co2(t_low, train_g), "co2_kg_high": co2(t_high, train_g),
                "seconds": train["seconds"], "method": train["method"], "grid": train["grid"]}
    per_1000 = {"energy_kwh": p_kwh, "energy_kwh_low": p_low, "energy_kwh_high": p_high,
                "co2_kg": co2(p_kwh, serve_g), "co2_kg_low": co2(p_low, serve_g), "co2_kg_high": co2(p_high, serve_g),
                "method": inference["method"], "mode": inference["mode"], "grid": serve_grid}

    def break_even(train_kg: float, per_1000_kg: float) -> float | None:
        return train_kg / per_1000_kg * 1000 if per_1000_kg > 0 else None

    even = {"predictions": break_even(training["co2_kg"], per_1000["co2_kg"]),
            "predictions_low": break_even(training["co2_kg_low"], per_1000["co2_kg_high"]),
            "predictions_high": break_even(training["co2_kg_high"], per_1000["co2_kg_low"])}
    out = {"training": training, "per_1000_predictions": per_1000, "break_even": even}
    if predictions_per_day is not None:
        yearly = predictions_per_day * DAYS_A_YEAR / 1000
        out["year"] = {"predictions_per_day": predictions_per_day, "predictions": predictions_per_day * DAYS_A_YEAR,
                       "energy_kwh": yearly * p_kwh, "co2_kg": yearly * per_1000["co2_kg"],
                       "co2_kg_low": yearly * per_1000["co2_kg_low"], "co2_kg_high": yearly * per_1000["co2_kg_high"],
                       "inference_over_training": (yearly * per_1000["co2_kg"] / training["co2_kg"]
                                                   if training["co2_kg"] > 0 else None)}
        if even["predictions"] is not None and predictions_per_day > 0:
            out["break_even"]["days"] = even["predictions"] / predictions_per_day
    return out


def life_lines(report: dict) -> list[str]:
    """The life report as text, one figure a line."""
    t, p, even = report["training"], report["per_1000_predictions"], report["break_even"]
    lines = [f"training: {_kwh(t['energy_kwh'])} ({_kwh(t['energy_kwh_low'])} to {_kwh(t['energy_kwh_high'])}), "
             f"{_kg(t['co2_kg'])} CO2e ({_kg(t['co2_kg_low'])} to {_kg(t['co2_kg_high'])}) in {t['seconds']:.1f} s, "
             f"{t['method']}; grid {_grid(t['grid'])}",
             f"per 1,000 predictions: {_kwh(p['energy_kwh'])}, {_kg(p['co2_kg'])} CO2e ({_kg(p['co2_kg_low'])} to "
             f"{_kg(p['co2_kg_high'])}), {p['method']}, {p['mode']}; grid {_grid(p['grid'])}"]
    if even["predictions"] is None:
        lines.append("break-even: never (a prediction's CO2e is 0 here: no energy metered, or a 0 g/kWh grid)")
    else:
        when = f", {_days(even['days'])} at this volume" if "days" in even else ""
        lines.append(f"break-even: after {_count(even['predictions'])} predictions (from "
                     f"{_count(even['predictions_low'])} to {_count(even['predictions_high'])}) inference has "
                     f"emitted more than training{when}")
    if "year" in report:
        y = report["year"]
        ratio = y["inference_over_training"]
        lines.append(f"a year at {_count(y['predictions_per_day'])} predictions a day: {_kwh(y['energy_kwh'])}, "
                     f"{_kg(y['co2_kg'])} CO2e ({_kg(y['co2_kg_low'])} to {_kg(y['co2_kg_high'])})"
                     + (f", {ratio:,.1f}x the training" if ratio is not None else ""))
    if "carbon_aware" in report:
        c = report["carbon_aware"]
        lines.append(f"carbon-aware: of {c['starts_tried']} start hours, {c['best']['start']} would have emitted least "
                     f"({_kg(c['best']['co2_kg'])}, {c['saving_vs_mean']:.0%} under the mean start, "
                     f"{c['saving_vs_worst']:.0%} under the worst, {c['worst']['start']})")
    return lines


def _grid(g: dict) -> str:
    return f"{g['country']} {g['intensity_g_per_kwh']:g} g/kWh ({g['source']})"


def _kwh(v: float) -> str:
    return _si(v * 1000, "Wh")


def _kg(v: float) -> str:
    return _si(v * 1000, "g")


def _si(v: float, unit: str) -> str:
    """``v`` (in ``unit``) with the prefix that puts it between 1 and 1,000: 0.0021 Wh is 2.1 mWh."""
    for factor, prefix in ((1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n")):
        if abs(v) >= factor:
            return f"{v / factor:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}"


def _count(v: float) -> str:
    return f"{v:,.0f}"


def _days(d: float) -> str:
    return f"{d * 24:.1f} hours" if d < 1 else f"{d:,.1f} days"
