"""``tandem import``: a model trained elsewhere in, a verified bundle in the registry out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from tandem.cli.common import COUNTRY, doing, err, out


def import_(
    source: Path = typer.Argument(..., help="The model: ONNX, torch.export .pt2, Keras .keras, a SavedModel folder, "
                                            ".skops, a LightGBM text or XGBoost JSON/UBJSON model. Pickles are "
                                            "refused."),
    name: str = typer.Option(..., "--name", help="Registry name of the imported model."),
    framework: str = typer.Option("auto", "--framework", help="auto, onnx, pytorch, tensorflow, keras, sklearn, "
                                                              "lightgbm or xgboost (auto: from the file)."),
    sample: Path | None = typer.Option(None, "--sample", help="Rows the model reads: a table (CSV, Parquet, JSON "
                                                              "Lines) for a table model, .npy/.npz arrays for a "
                                                              "tensor model. Gives the schema, the drift profile "
                                                              "and the rows parity is checked on."),
    target: str | None = typer.Option(None, "--target", help="The sample's target column (left out of the "
                                                             "inputs; metrics and the quality gate use it)."),
    labels: str | None = typer.Option(None, "--labels", help="Class labels in the order of the model's outputs, "
                                                             "comma-separated (default: the model's own, else "
                                                             "0..C-1)."),
    task: str | None = typer.Option(None, "--task", help="binary, multiclass or regression (default: from the "
                                                         "model's answer)."),
    output: str | None = typer.Option(None, "--graph-output", help="Which output of an ONNX file is the answer "
                                                                   "(default: a float output named like "
                                                                   "probabilities, else the first float one)."),
    meaning: str | None = typer.Option(None, "--meaning", help="What the answer is: probabilities, logits or "
                                                               "values (default: from its values)."),
    max_diff: float = typer.Option(1e-5, "--max-diff", help="The most the bundle graph may differ from the source "
                                                            "framework on the sample rows; over it, nothing is "
                                                            "written."),
    train_kwh: float | None = typer.Option(None, "--train-kwh", help="Energy the training took elsewhere, in kWh "
                                                                     "(recorded in the footprint ledger)."),
    country: str | None = COUNTRY,
    no_footprint: bool = typer.Option(False, "--no-footprint", help="Do not meter the energy of predictions."),
    as_json: bool = typer.Option(False, "--json", help="Print the bundle's manifest summary as one JSON object."),
) -> None:
    """Import SOURCE as a verified bundle: converted to ONNX, schema-checked, parity-checked, registered."""
    from tandem.api import import_model

    with doing("importing"):
        model = import_model(str(source), name=name, framework=framework,
                             sample=None if sample is None else str(sample), target=target,
                             labels=[v.strip() for v in labels.split(",")] if labels else None, task=task,
                             output=output, meaning=meaning, max_diff=max_diff, train_kwh=train_kwh,
                             country=country, footprint=not no_footprint,
                             progress=lambda m: err.print(m, markup=False, highlight=False))
    m = model.manifest
    summary = {"name": m["name"], "version": m.get("version"), "path": str(model.path), "task": m["task"],
               "framework": m["imported"]["framework"], "meaning": m["imported"]["meaning"], "labels": m["labels"],
               "inputs": [{k: c[k] for k in ("name", "kind", "shape", "dtype") if c.get(k) is not None}
                          for c in m["schema"]["columns"]],
               "parity_max_abs_diff": m["parity"]["max_abs_diff"], "parity_on": m["parity"]["on"],
               "predict_1row_us_p50": m["latency"]["predict_1row_us_p50"], "sample_metrics": m["metrics"]["validation"]}
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    out.print(f"imported {summary['framework']} model as {m['name']}:{m.get('version')} ({m['task']}, "
              f"{len(summary['inputs'])} input(s)); parity {summary['parity_max_abs_diff']:.2g} on "
              f"{summary['parity_on']}; 1-row p50 {summary['predict_1row_us_p50']} µs", markup=False, highlight=False)
