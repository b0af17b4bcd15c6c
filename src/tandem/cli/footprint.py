"""``tandem footprint``: a model's life, from training's cost to a year of serving."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from tandem.cli.common import REQUIRE_SIGNED, check_ranges, out, set_require_signed


def footprint(
    model: str = typer.Argument(..., help="Registry reference (name, name:3, name@production) or bundle path."),
    predictions_per_day: float | None = typer.Option(None, "--predictions-per-day", help="Serving volume, for a "
                                                     "year's CO2 and the days to break-even."),
    grid_intensity: float | None = typer.Option(None, "--grid-intensity", help="g CO2e per kWh where the model "
                                                "serves (default: the country's, else the training grid's)."),
    country: str | None = typer.Option(None, "--country", help="Where the model serves (ISO 3166-1 alpha-3)."),
    hourly_intensity: Path | None = typer.Option(None, "--hourly-intensity", help="CSV of timestamp,carbon_intensity "
                                                 "(g/kWh) by the hour: when a training run of this size would "
                                                 "have emitted least."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    require_signed: bool = REQUIRE_SIGNED,
) -> None:
    """The model's life: training's cost, the cost per 1,000 predictions, the break-even, a year of serving."""
    check_ranges(("--predictions-per-day", predictions_per_day,
                  predictions_per_day is None or predictions_per_day >= 0, "at least 0"),
                 ("--grid-intensity", grid_intensity, grid_intensity is None or grid_intensity >= 0,
                  "at least 0 g CO2e/kWh"))
    from tandem.bundle.format import read_manifest
    from tandem.footprint import best_start, read_hourly_intensity, resolve_grid
    from tandem.footprint.life import life_lines, life_report
    from tandem.registry import Registry

    set_require_signed(require_signed)
    manifest = read_manifest(Registry().resolve(model))
    grid = resolve_grid(country, grid_intensity) if (country or grid_intensity is not None) else None
    report = life_report(manifest.get("footprint") or {}, predictions_per_day=predictions_per_day, grid=grid)
    if hourly_intensity is not None:
        t = report["training"]
        report["carbon_aware"] = best_start(read_hourly_intensity(hourly_intensity), t["seconds"], t["energy_kwh"])
    report = {"model": f"{manifest['name']}:{manifest.get('version')}", **report}
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    out.print(f"[bold]{report['model']}[/bold]: footprint over its life")
    for line in life_lines(report):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
