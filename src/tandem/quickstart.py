"""`tandem quickstart`: the whole journey on scikit-learn's bundled breast-cancer data."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console


def run_quickstart(*, time_limit: float, console: Console, progress_console: Console, bar,
                   country: str | None = None) -> dict:
    """Train, save, reload (verifying hashes), predict held-out rows, and print what happened."""
    import pandas as pd
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from tandem.api import load, train
    from tandem.console import print_model, rows_table

    frame = load_breast_cancer(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    train_rows, test_rows = train_test_split(frame, test_size=0.2, random_state=0, stratify=frame["target"])
    with tempfile.TemporaryDirectory(prefix="tandem-quickstart-") as tmp:
        train_csv = Path(tmp) / "breast_cancer_train.csv"
        test_csv = Path(tmp) / "breast_cancer_test.csv"
        train_rows.to_csv(train_csv, index=False)
        test_rows.to_csv(test_csv, index=False)
        console.print(f"[bold]1. train[/bold] on {len(train_rows)} rows of breast-cancer measurements "
                      f"({frame.shape[1] - 1} features), budget {time_limit:g} s")
        with bar(time_limit) as b:
            model = train(str(train_csv), "target", time_limit=time_limit, name="breast-cancer", progress=b.say,
                          country=country)
        console.print(f"[bold]2. reload[/bold] {model.name}:{model.version} from the registry "
                      "(every file's sha256 verified)")
        reloaded = load(f"{model.name}:{model.version}")
        console.print(f"[bold]3. predict[/bold] {len(test_rows)} held-out rows")
        predicted = reloaded.predict(pd.read_csv(test_csv).drop(columns=["target"]))
        same = np.array_equal(predicted, model.predict(test_rows.drop(columns=["target"])))
        report = reloaded.evaluate(str(test_csv))
    print_model(reloaded, console=console)
    console.print(rows_table([report["metrics"]], f"Held-out metrics ({report['rows']} rows never seen in training)"))
    console.print(rows_table([{"label": k, **v} for k, v in report["per_class"].items()], "Per class"))
    console.print(f"first predictions: {', '.join(map(str, predicted[:5]))}; reloaded model agrees: {same}")
    if not same:
        raise RuntimeError("the reloaded bundle predicts differently from the trained model")
    return report
