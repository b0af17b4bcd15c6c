"""``tandem optimize``: faster or smaller variants of a registered model, each guarded by labelled rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from tandem.cli.common import COUNTRY, doing, err, out
from tandem.console import rows_table


def optimize(
    model: str = typer.Argument(..., help="Registry reference (name, name:3, name@production)."),
    data: Path = typer.Option(..., "--data", help="Labelled rows the model never trained on (held out)."),
    goal: str = typer.Option("latency", "--goal", help="What the alias 'optimized' picks among the kept variants: "
                                                        "latency, throughput, size or energy (per 1,000 "
                                                        "predictions)."),
    max_loss: float = typer.Option(0.002, "--max-loss", help="How much worse than the parent a variant may score "
                                                             "on the model's metric and still be kept."),
    methods: str = typer.Option("auto", "--methods", help="Comma-separated methods to try: int8, int8w, int4, "
                                                          "int2, prune, members, trees, fast_trees, distill (auto: "
                                                          "every one)."),
    train_data: Path | None = typer.Option(None, "--train-data", help="Labelled rows the methods that learn (the "
                                                                      "fine-tune after pruning, distillation's "
                                                                      "student) train on: the model's training file."),
    name: str | None = typer.Option(None, "--name", help="Register the variants under this name instead of the "
                                                          "model's own."),
    country: str | None = COUNTRY,
    no_footprint: bool = typer.Option(False, "--no-footprint", help="Do not meter the energy of each variant's "
                                                                    "predictions."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: the parent and every variant."),
) -> None:
    """Try each method on MODEL; register the variants within --max-loss as new versions, the best as @optimized."""
    from tandem.footprint import MeterSettings
    from tandem.optimize import optimize as run

    with doing("optimizing"):
        result = run(model, str(data), goal=goal, max_loss=max_loss, methods=methods,
                     train_data=None if train_data is None else str(train_data),
                     name=name, footprint=False if no_footprint else MeterSettings.from_env(country=country),
                     progress=lambda m: err.print(m, markup=False, highlight=False))
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return
    rows = [{"variant": "parent", result.metric: round(result.parent_value, 4), "loss": 0.0,
             "1-row µs": result.parent_figures["one_row_us"], "rows/s": result.parent_figures["rows_per_s"],
             "bytes": result.parent_figures["bytes"], "J/1k": result.parent_figures.get("energy_j_per_1000"),
             "kept": "-", "why": result.parent}]
    rows += [{"variant": v.label, result.metric: v.metric_value, "loss": v.loss, "1-row µs": v.one_row_us,
              "rows/s": v.rows_per_s, "bytes": v.bytes, "J/1k": v.energy_j_per_1000,
              "kept": f"version {v.version}" if v.kept else "no", "why": v.why or v.skipped} for v in result.variants]
    out.print(rows_table(rows, f"optimize {result.parent} (goal: {result.goal})"))
    if result.best is None:
        err.print("no variant was kept: the parent stays the best")
