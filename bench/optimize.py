"""bench/optimize.py: what `tandem optimize` buys on real data, with baselines in the same run.

Three parts (``--parts``), each printing its progress on stderr:

- **adult** (UCI, the official train/test files from ../shared/data): a tandem bundle of the default
  portfolio (60 s) and one of the MLP family alone (60 s), each optimised with every method this
  tandem has (``--train-data`` the training file, for distillation and pruning's fine-tune), scored on
  the test file (ROC-AUC, the guard at --max-loss 0.001) and timed by the optimiser (one-row p50 and
  batch rows/s on one thread, graph bytes, joules per 1,000 predictions). The distilled student is
  then optimised once more with ``fast_trees``. Beside them: LightGBM with default parameters, its own
  booster's batch rows/s on one thread on the same test rows (issue 17's first target: a variant at
  least that fast at a loss <= 0.001).
- **sms** (SMS Spam Collection, stratified 80/20, seed 0): a tandem model of the sentence-encoder family
  (today's int8 4-layer graph, ``minilm_linear``) optimised with distillation (a TF-IDF linear student
  and LightGBM students) and ``encoder`` (fewer layers, heads refit); spam F1 of each on the test split
  (target: >= 2x the messages/s of the parent at spam F1 within 0.5 point); then the 4- and 2-layer int8
  encoders themselves against sentence-transformers' fp32 ``encode`` (bench/text_image.py's measure:
  target >= 5x, the head's spam F1 within 0.5 point).
- **cnn** (GTSRB subset): bench/optimize_cnn.py's run (int8 and pruning of tandem's CNN).

Prints one JSON line and writes bench/results/optimize.json (a full run of every part).

    .venv/bin/python bench/optimize.py                    # ~25 minutes on 2 cores
    .venv/bin/python bench/optimize.py --parts adult      # one part
    .venv/bin/python bench/optimize.py --quick            # 15 s budgets; writes no results file
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA, git_head, load_dataset, machine, src_fingerprint, write_atomic  # noqa: E402
from train_tabular import as_categories, fit_lightgbm  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "optimize.json"
MAX_LOSS = 0.001
SMS_MAX_LOSS = 0.005  # on the model's own metric; spam F1 is checked beside it


def say(message: str) -> None:
    print(f"[optimize] {message}", file=sys.stderr, flush=True)


def booster_rows_per_s(test_x, y_train, train_x) -> dict:
    """LightGBM defaults: its booster's batch rows/s on one thread over the test rows (median of 5)."""
    lgb_train_x, lgb_test_x = as_categories(train_x, test_x)
    model = fit_lightgbm(lgb_train_x, y_train)
    booster = model.booster_
    times = []
    for _ in range(5):
        start = time.perf_counter()
        booster.predict(lgb_test_x, num_threads=1)
        times.append(time.perf_counter() - start)
    times.sort()
    return {"rows_per_s": round(len(lgb_test_x) / times[2]), "trees": booster.num_trees()}


def optimize_one(name: str, train, test, budget: float, families: list[str] | None, home: Path,
                 methods: str = "auto") -> dict:
    import tandem

    start = time.perf_counter()
    tandem.train(train, "income", time_limit=budget, metric="roc_auc", name=name, home=home, seed=0,
                 families=families, footprint=False)
    trained = time.perf_counter() - start
    start = time.perf_counter()
    result = tandem.optimize(name, test, goal="throughput", max_loss=MAX_LOSS, methods=methods, train_data=train,
                             home=home, progress=say)
    out = {"model": name, "families": families or "portfolio", "train_seconds": round(trained, 1),
           "optimize_seconds": round(time.perf_counter() - start, 1), **result.to_dict()}
    students = [v for v in result.variants if v.method == "distill" and v.kept]
    if students:  # the fastest student, its trees split for the cache in turn
        student = max(students, key=lambda v: v.rows_per_s)
        chained = tandem.optimize(f"{name}:{student.version}", test, goal="throughput", max_loss=MAX_LOSS,
                                  methods="fast_trees", home=home, progress=say)
        out["then_fast_trees"] = {"parent_variant": student.label, **chained.to_dict()}
    return out


def adult(budget: float, home: Path) -> dict:
    train, test = load_dataset("adult")
    y_train = (train["income"] == ">50K").astype(int).to_numpy()
    baseline = booster_rows_per_s(test.drop(columns=["income"]), y_train, train.drop(columns=["income"]))
    say(f"LightGBM defaults, its booster on one thread: {baseline['rows_per_s']:,} rows/s")
    runs = [optimize_one("adult", train, test, budget, None, home),
            optimize_one("adult_mlp", train, test, budget, ["mlp"], home, methods="int8,int8w,int4,int2,prune")]
    kept = [v for r in runs for v in r["variants"] + r.get("then_fast_trees", {}).get("variants", []) if v["kept"]]
    best = max(kept, key=lambda v: v["rows_per_s"], default=None)
    return {"lightgbm_booster": baseline, "runs": runs,
            "best_kept_by_rows_per_s": None if best is None else {k: best[k] for k in (
                "label", "metric_value", "loss", "rows_per_s", "one_row_us", "bytes")},
            "check_variant_rows_per_s_ge_booster_at_loss_le_0.001":
                best is not None and best["rows_per_s"] >= baseline["rows_per_s"]}


def sms(budget: float, home: Path) -> dict:
    import pandas as pd
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    import tandem

    frame = pd.read_csv(DATA / "sms_spam_collection" / "SMSSpamCollection", sep="\t")
    train, test = train_test_split(frame, test_size=0.2, random_state=0, stratify=frame["Label"])
    say(f"SMS: the sentence-encoder family, {budget:g} s budget")
    tandem.train(train, "Label", time_limit=budget, families=["minilm_linear"], text_encoder="minilm",
                 name="sms", home=home, seed=0, footprint=False)
    result = tandem.optimize("sms", test, goal="throughput", max_loss=SMS_MAX_LOSS, methods="distill,encoder",
                             train_data=train, home=home, progress=say)
    x = test.drop(columns=["Label"])

    def spam_f1(ref: str) -> float:
        return round(float(f1_score(test["Label"], tandem.load(ref, home=home).predict(x), pos_label="spam")), 4)

    parent_f1 = spam_f1(result.parent)
    rows = []
    for v in result.variants:
        row = {"label": v.label, "kept": v.kept, "skipped": v.skipped, "metric_value": v.metric_value,
               "loss": v.loss, "rows_per_s": v.rows_per_s, "one_row_us": v.one_row_us, "bytes": v.bytes,
               "energy_j_per_1000": v.energy_j_per_1000}
        if v.kept:
            row["spam_f1"] = spam_f1(f"sms:{v.version}")
            row["x_parent_messages_per_s"] = round(v.rows_per_s / result.parent_figures["rows_per_s"], 2)
        rows.append(row)
    good = [r for r in rows if r.get("spam_f1") is not None and parent_f1 - r["spam_f1"] <= 0.005]
    # the encoders themselves, as the encoder method cuts them: against sentence-transformers' fp32 encode
    from text_image import sms_encoder

    encoders = {}
    for layers in (4, 2):
        say(f"SMS: the {layers}-layer int8 encoder against sentence-transformers")
        encoders[f"{layers}_layers"] = sms_encoder(layers)
    return {"rows_train": len(train), "rows_test": len(test), "metric": result.metric,
            "parent": {"spam_f1": parent_f1, result.metric: result.parent_value, **result.parent_figures},
            "variants": rows, "check_2x_messages_per_s_at_spam_f1_within_0.5_point":
                any(r["x_parent_messages_per_s"] >= 2 for r in good),
            "encoders": encoders, "check_encoder_5x_sentence_transformers": any(
                e["speedup"] >= 5 and e["f1_difference_points"] >= -0.5 for e in encoders.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="15 s budgets, smoke test only (writes no results)")
    parser.add_argument("--parts", default="adult,sms,cnn", help="comma-separated: adult, sms, cnn")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    budget = 15.0 if args.quick else 60.0
    head, src_start = git_head(), src_fingerprint()
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="tandem-bench-optimize-") as tmp:
        if "adult" in parts:
            out["adult"] = adult(budget, Path(tmp) / "adult")
        if "sms" in parts:
            out["sms"] = sms(budget, Path(tmp) / "sms")
        if "cnn" in parts:
            from optimize_cnn import run as cnn_run

            (Path(tmp) / "cnn").mkdir()
            out["cnn"] = cnn_run(30.0 if args.quick else 120.0, Path(tmp) / "cnn")
    payload = {"bench": "optimize", "machine": machine(), "quick": args.quick, "parts": parts,
               "source": {"git_head": head, "src_sha256_start": src_start,
                          "src_changed_during_run": src_fingerprint() != src_start},
               "max_loss": {"adult": MAX_LOSS, "sms": SMS_MAX_LOSS}, "gpu": "not measured: no GPU on this machine",
               **out}
    if not args.quick and set(parts) == {"adult", "sms", "cnn"}:
        write_atomic(RESULTS, payload)
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
