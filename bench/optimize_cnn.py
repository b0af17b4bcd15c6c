"""bench/optimize_cnn.py: what `tandem optimize` (int8, prune) buys on a GTSRB CNN, against its parent.

GTSRB subset (``../shared/data/gtsrb_subset``, 43 classes x 40 images, 32x32, stratified 80/20,
seed 0, as bench/text_image.py splits it): tandem's CNN family alone, trained at a budget (default
120 s) with accuracy as its metric, then optimised with int8 and prune on the test split (the
guard at --max-loss 0.01: one point of accuracy), prune fine-tuning on the training split. For the
parent and every variant: accuracy, graph bytes, one-row p50 (µs) and batch rows/s on one thread
(the optimiser's own timing), and for the pruned ones their sparsity or widths and fine-tune; then
the same cuts without the fine-tune (nothing registered), to show what the training rows buy.

Prints one JSON line (and writes nothing else); progress goes to stderr.

    .venv/bin/python bench/optimize_cnn.py                # ~10 minutes on 2 idle CPU cores
    .venv/bin/python bench/optimize_cnn.py --budget 30    # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gtsrb_subset"
MAX_LOSS = 0.01  # one point of accuracy


def say(message: str) -> None:
    print(f"[optimize_cnn] {message}", file=sys.stderr, flush=True)


def split(folder: Path) -> tuple[Path, Path, int, int]:
    """The subset's train and test splits as image arrays in ``folder`` (paths, row counts)."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    d = np.load(DATA / "gtsrb_test_subset_32x32.npz")
    images, labels = d["images"], d["labels"]
    tr, te = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=0, stratify=labels)
    np.savez(folder / "train.npz", images=images[tr], labels=labels[tr])
    np.savez(folder / "test.npz", images=images[te], labels=labels[te])
    return folder / "train.npz", folder / "test.npz", len(tr), len(te)


def figures(v: object, parent_value: float) -> dict:
    """A variant's row: what it scored and cost, and what pruning did."""
    row = {"variant": v.label, "kept": v.kept, "skipped": v.skipped}
    if v.skipped is None:
        row.update(accuracy=v.metric_value, loss_points=round((parent_value - v.metric_value) * 100, 2),
                   bytes=v.bytes, one_row_us=v.one_row_us, rows_per_s=v.rows_per_s, native_parity=v.native_parity)
    s = v.settings
    if v.method == "prune":
        row["sparsity"] = s.get("sparsity")
        row["sizes"] = s.get("sizes")
        row["fine_tune"] = s.get("fine_tune")
        if "zlib_bytes" in s:
            row.update(zlib_bytes=s["zlib_bytes"], parent_zlib_bytes=s["parent_zlib_bytes"], speed=s["speed"])
    return row


def run(budget: float, home: Path) -> dict:
    """Train the CNN at ``budget`` seconds, optimise it with int8 and prune; the figures as a dict."""
    import tandem

    train, test, n_train, n_test = split(home)
    say(f"GTSRB: the CNN family, {budget:g} s budget, {n_train} training images")
    start = time.perf_counter()
    model = tandem.train(str(train), "label", time_limit=budget, metric="accuracy", families=["cnn"],
                         name="gtsrb", home=home, bagging="no", footprint=False)
    trained = time.perf_counter() - start
    start = time.perf_counter()
    result = tandem.optimize("gtsrb", str(test), methods="int8,prune", train_data=str(train), goal="size",
                             max_loss=MAX_LOSS, home=home, footprint=False, progress=say)
    optimize_s = time.perf_counter() - start
    # the cut alone, without the fine-tune: what the training rows buy (a max loss none meets: nothing registered)
    cut = tandem.optimize(f"gtsrb:{model.version}", str(test), methods="prune", max_loss=-1.0, home=home,
                          footprint=False, progress=say)
    member = model.manifest["ensemble"][0]
    return {"data": "gtsrb_subset 32x32, stratified 80/20 seed 0", "rows_train": n_train, "rows_test": n_test,
            "budget_s": budget, "train_seconds": round(trained, 1), "optimize_seconds": round(optimize_s, 1),
            "parent": {"model": member["model"], "parameters": member.get("parameters"),
                       "epochs": member.get("epochs"), "accuracy": round(result.parent_value, 4),
                       **result.parent_figures},
            "max_loss": MAX_LOSS, "variants": [figures(v, result.parent_value) for v in result.variants],
            "best": None if result.best is None else result.best.label,
            "without_fine_tune": [figures(v, result.parent_value) for v in cut.variants]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=120.0, help="the CNN's training budget in seconds")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tandem-optimize-cnn-") as tmp:
        print(json.dumps(run(args.budget, Path(tmp))))


if __name__ == "__main__":
    main()
