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
                                                          "int2, prune, members, trees, fast_trees, distill, "
                                                          "encoder (auto: every one)."),
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
    def shown(label: str, value: float | None, loss: float | None, figures: dict, kept: str, why: str) -> dict:
        return {"variant": label, result.metric: _fixed(value, 4), "loss": _fixed(loss, 4),
                "1-row µs": _fixed(figures.get("one_row_us"), 1), "rows/s": figures.get("rows_per_s"),
                "bytes": figures.get("bytes"), "J/1k": _fixed(figures.get("energy_j_per_1000"), 3), "kept": kept,
                "why": why}

    rows = [shown("parent", result.parent_value, 0.0, result.parent_figures, "-", result.parent)]
    rows += [shown(v.label, v.metric_value, v.loss, v.to_dict(), f"version {v.version}" if v.kept else "no",
                   v.why or v.skipped) for v in result.variants]
    out.print(rows_table(rows, f"optimize {result.parent} (goal: {result.goal})"))
    if result.best is None:
        err.print("no variant was kept: the parent stays the best")


def _fixed(value: float | None, places: int) -> str | None:
    """``value`` with ``places`` decimals (a zero never signed), or None."""
    return None if value is None else f"{round(value, places) + 0.0:.{places}f}"
