"""``tandem predict`` and ``evaluate``: a model on a file of rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from tandem.cli.common import (
    REQUIRE_SIGNED,
    RUN_COUNTRY,
    OptionalMeter,
    check_ranges,
    doing,
    err,
    out,
    print_run_footprint,
    set_require_signed,
)
from tandem.console import print_fairness, rows_table


def predict(
    model: str = typer.Argument(..., help="Registry reference (name, name:3, name@production) or bundle path."),
    input_path: Path = typer.Argument(..., metavar="INPUT", help="Rows to score (CSV, Parquet, JSON lines, Arrow)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write predictions (.csv or .parquet)."),
    batch_rows: int = typer.Option(65536, help="Rows per chunk: memory stays bounded whatever the input size."),
    escape_formulas: bool = typer.Option(True, "--escape-formulas/--no-escape-formulas",
                                         help="CSV output: put a ' before text that a spreadsheet would run as a "
                                              "formula (starting with = + - @, tab or carriage return)."),
    k: int | None = typer.Option(None, "--k", help="Recommendation models: items per user (default: the k the "
                                 "model was trained for)."),
    country: str | None = RUN_COUNTRY,
    require_signed: bool = REQUIRE_SIGNED,
) -> None:
    """Score a file in chunks; the output appears only when complete. A recommendation model writes each
    user's top k items, one row per (user, rank)."""
    check_ranges(("--batch-rows", batch_rows, batch_rows >= 1, "at least 1"),
                 ("--k", k, k is None or k >= 1, "at least 1"))
    from tandem.batch import predict_file
    from tandem.registry import Registry

    set_require_signed(require_signed)
    bundle = Registry().resolve(model)
    with OptionalMeter(country) as meter, doing("writing the predictions"):
        rows, notes = predict_file(bundle, input_path, output, batch_rows=batch_rows, console=err,
                                   escape_formulas=escape_formulas, k=k)
    for n in notes:
        err.print(f"note: {n}")
    err.print(f"wrote {rows} predictions to {output}")
    print_run_footprint(meter, rows)


def evaluate(
    model: str = typer.Argument(..., help="Registry reference or bundle path."),
    data: Path = typer.Argument(..., help="Labelled data holding the target column."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: metrics and per_class."),
    sensitive: str | None = typer.Option(None, "--sensitive", help="A column of DATA: fairness figures per group."),
    country: str | None = RUN_COUNTRY,
    require_signed: bool = REQUIRE_SIGNED,
) -> None:
    """Metrics of a model on labelled data."""
    from tandem.api import load

    set_require_signed(require_signed)
    m = load(model)
    with OptionalMeter(country) as meter:
        result = m.evaluate(str(data), sensitive=sensitive)
    if meter is not None:
        result["footprint"] = meter.result.to_dict()
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    print_run_footprint(meter, result["rows"])
    out.print(rows_table([result["metrics"]], f"{m.name}:{m.version} on {data} ({result['rows']} rows)"))
    if "per_class" in result:
        out.print(rows_table([{"label": k, **v} for k, v in result["per_class"].items()], "Per class"))
    if "fairness" in result:
        print_fairness(result["fairness"])
