"""Benchmark: tandem vs LightGBM (defaults) vs FLAML on real tabular data, at equal time budgets.

What it measures, per dataset x time budget x system:

- ``test_metric``: ROC-AUC (adult, on the official test file) or PR-AUC / average precision
  (fraud, on a seeded stratified 30% hold-out), computed here with scikit-learn from the predicted
  probability of the positive class;
- ``train_seconds``: wall time of the fit call (for tandem: ``tandem.train``, bundle export included);
- ``peak_rss_mb``: peak resident memory of the process that trained (each fit runs in its own fresh
  subprocess, ``ru_maxrss`` read right after the fit);
- ``predict_1row_p50_us``: median single-row predict latency in-process (warm-up, then >= 300
  repetitions). tandem: ``Predictor.predict_proba(row_dict)``; also ``predict_1row_frame_p50_us``
  on a one-row pandas frame. LightGBM / FLAML: ``predict_proba(one_row_frame)``;
- ``batch_rows_per_s``: ``predict_proba`` over the whole test set, best of 3;
- ``size_bytes``: tandem bundle directory; LightGBM booster as text; FLAML ``pickle.dumps(automl)``.

LightGBM with default parameters has no time budget: it is fitted once per dataset and reported as
its own row (``budget_s`` null). ``speedup_vs_lightgbm_1row`` on each tandem row is LightGBM 1-row p50
divided by tandem 1-row dict p50, both measured interleaved in the tandem child process (the
LightGBM-default model is refitted there, after tandem's peak memory was read).

The JSON also records the git HEAD and a sha256 of the tandem sources before every tandem fit and
at the end (``source.src_changed_during_run``), since src/ may be edited while the bench runs.

Systems run one after another, never in parallel. Datasets are read from ``../shared/data``
relative to the repository root (never copied). Progress goes to stderr; the last line on stdout
is one JSON object, also written (indented, atomically) to ``bench/results/train_tabular.json``.

Run (from the repository root)::

    .venv/bin/python bench/train_tabular.py                      # budgets 10,60; adult and fraud
    .venv/bin/python bench/train_tabular.py --budgets 30 --datasets adult
    .venv/bin/python bench/train_tabular.py --quick --datasets fraud   # 5 s smoke test, writes no file
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA, HERE, ROOT, git_head, load_dataset, machine, src_fingerprint, write_atomic

RESULTS = HERE / "results" / "train_tabular.json"

DATASETS = {
    # name: (target, positive label, metric name, sklearn metric, FLAML metric)
    "adult": ("income", ">50K", "roc_auc", "roc_auc_score", "roc_auc"),
    "fraud": ("Class", 1, "pr_auc", "average_precision_score", "ap"),
}
SYSTEMS = ("tandem", "lightgbm", "flaml")
PACKAGES = ("lightgbm", "flaml", "onnxruntime", "scikit-learn", "numpy", "pandas")
WARMUP = 50
REPS = 500
LATENCY_ROWS = 100


def say(message: str) -> None:
    print(f"[train_tabular] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- data

def as_categories(train_x, test_x):
    """Copies of the feature frames with string columns as pandas ``category`` (train's categories)."""
    import pandas as pd

    train_x, test_x = train_x.copy(), test_x.copy()
    for col in train_x.columns:
        if not pd.api.types.is_numeric_dtype(train_x[col]):
            cats = sorted(train_x[col].dropna().unique())
            train_x[col] = pd.Categorical(train_x[col], categories=cats)
            test_x[col] = pd.Categorical(test_x[col], categories=cats)
    return train_x, test_x


def row_dict(frame, i: int) -> dict:
    """Row ``i`` of ``frame`` as a plain python dict (python scalars, None for missing)."""
    import pandas as pd

    out = {}
    for key, value in frame.iloc[i].to_dict().items():
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            out[key] = None
        elif hasattr(value, "item"):
            out[key] = value.item()
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------- measurement

def latency_p50_us(fn, inputs: list) -> float:
    """Median wall time in microseconds of ``fn(x)``, cycling over ``inputs``, after a warm-up."""
    for i in range(WARMUP):
        fn(inputs[i % len(inputs)])
    times = []
    for i in range(REPS):
        x = inputs[i % len(inputs)]
        t0 = time.perf_counter_ns()
        fn(x)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000.0


def interleaved_p50_us(fns: dict, inputs: dict, rounds: int = 5) -> dict:
    """Like :func:`latency_p50_us` for several callables, alternated in rounds so drift hits all alike."""
    times = {k: [] for k in fns}
    for k, fn in fns.items():
        for i in range(WARMUP):
            fn(inputs[k][i % len(inputs[k])])
    per_round = max(1, REPS // rounds)
    for _ in range(rounds):
        for k, fn in fns.items():
            xs = inputs[k]
            for i in range(per_round):
                x = xs[i % len(xs)]
                t0 = time.perf_counter_ns()
                fn(x)
                times[k].append(time.perf_counter_ns() - t0)
    return {k: statistics.median(v) / 1000.0 for k, v in times.items()}


def rows_per_s(fn, frame) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        fn(frame)
        best = min(best, time.perf_counter() - t0)
    return len(frame) / best


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def score(dataset: str, y_true, p_pos) -> float:
    import sklearn.metrics

    return float(getattr(sklearn.metrics, DATASETS[dataset][3])(y_true, p_pos))


def fit_lightgbm(train_x, y):
    import lightgbm

    model = lightgbm.LGBMClassifier(verbose=-1, random_state=0)
    model.fit(train_x, y)
    return model


# -------------------------------------------------------------------------------- one fit (child)

def run_tandem(row: dict, budget: float, data: tuple) -> dict:
    """The tandem part of :func:`run_one`, with ``TANDEM_HOME`` already set to a temp dir."""
    import tandem
    dataset, train, train_x, test_x, y_train, y_test, n_lat = data
    target, positive, metric_name = DATASETS[dataset][:3]
    from tandem.inference import Predictor

    t0 = time.perf_counter()
    model = tandem.train(train, target=target, time_limit=budget, metric=metric_name, name=dataset, seed=0)
    row["train_seconds"] = time.perf_counter() - t0
    row["peak_rss_mb"] = peak_rss_mb()
    pos = list(model.labels).index(positive)
    row["test_metric"] = score(dataset, y_test, model.predict_proba(test_x)[:, pos])
    predictor = Predictor(model.path)
    dicts = [row_dict(test_x, i) for i in range(n_lat)]
    frames = [test_x.iloc[[i]] for i in range(n_lat)]
    row["predict_1row_frame_p50_us"] = latency_p50_us(predictor.predict_proba, frames)
    row["batch_rows_per_s"] = rows_per_s(predictor.predict_proba, test_x)
    row["size_bytes"] = dir_size(model.path)
    # Same-process baseline for the speedup: the LightGBM-default model, interleaved with tandem.
    lgb_train_x, lgb_test_x = as_categories(train_x, test_x)
    lgb = fit_lightgbm(lgb_train_x, y_train)
    lgb_frames = [lgb_test_x.iloc[[i]] for i in range(n_lat)]
    p50 = interleaved_p50_us({"tandem": predictor.predict_proba, "lightgbm": lgb.predict_proba},
                             {"tandem": dicts, "lightgbm": lgb_frames})
    row["predict_1row_p50_us"] = p50["tandem"]
    row["lightgbm_1row_p50_us_same_process"] = p50["lightgbm"]
    row["speedup_vs_lightgbm_1row"] = p50["lightgbm"] / p50["tandem"]
    manifest = model.manifest
    board = manifest.get("leaderboard") or []
    row["tandem_models_tried"] = len(board)
    metrics = manifest.get("metrics")
    row["tandem_validation"] = metrics.get("validation") if isinstance(metrics, dict) else None
    row["tandem_leaderboard_top"] = board[:3]
    return row


def measure_fitted(row: dict, model, t0: float, dataset: str, y_test, test_x, frames: list) -> None:
    """Fill ``row`` for a scikit-learn-style classifier fitted since ``t0``: train time, peak memory,
    test metric, 1-row latency and batch throughput (read in this order: memory right after the fit)."""
    row["train_seconds"] = time.perf_counter() - t0
    row["peak_rss_mb"] = peak_rss_mb()
    pos = list(model.classes_).index(1)
    row["test_metric"] = score(dataset, y_test, model.predict_proba(test_x)[:, pos])
    row["predict_1row_p50_us"] = latency_p50_us(model.predict_proba, frames)
    row["batch_rows_per_s"] = rows_per_s(model.predict_proba, test_x)


def run_one(system: str, dataset: str, budget: float | None) -> dict:
    """Fit one system on one dataset (in this fresh process) and measure it."""
    target, positive, metric_name, _, flaml_metric = DATASETS[dataset]
    train, test = load_dataset(dataset)
    train_x, test_x = train.drop(columns=[target]), test.drop(columns=[target])
    y_train = (train[target] == positive).astype(int).to_numpy()
    y_test = (test[target] == positive).astype(int).to_numpy()
    n_lat = min(LATENCY_ROWS, len(test_x))
    row = {"dataset": dataset, "budget_s": budget, "system": system, "metric_name": metric_name}

    if system == "tandem":
        with tempfile.TemporaryDirectory(prefix="tandem_bench_home_") as home:
            os.environ["TANDEM_HOME"] = home
            return run_tandem(row, budget, (dataset, train, train_x, test_x, y_train, y_test, n_lat))

    train_x, test_x = as_categories(train_x, test_x)
    frames = [test_x.iloc[[i]] for i in range(n_lat)]
    if system == "lightgbm":
        t0 = time.perf_counter()
        model = fit_lightgbm(train_x, y_train)
        measure_fitted(row, model, t0, dataset, y_test, test_x, frames)
        row["size_bytes"] = len(model.booster_.model_to_string().encode())
        return row
    if system == "flaml":
        import pickle

        from flaml import AutoML

        automl = AutoML()
        t0 = time.perf_counter()
        automl.fit(train_x, y_train, task="classification", time_budget=budget, metric=flaml_metric, seed=0,
                   verbose=0)
        measure_fitted(row, automl, t0, dataset, y_test, test_x, frames)
        row["size_bytes"] = len(pickle.dumps(automl))
        row["flaml_best_estimator"] = automl.best_estimator
        return row
    raise SystemExit(f"unknown system '{system}' (known: {', '.join(SYSTEMS)})")


def spawn(system: str, dataset: str, budget: float | None) -> dict:
    """Run :func:`run_one` in a fresh subprocess (its own peak memory) and return its row."""
    label = f"{system} / {dataset} / " + (f"{budget:g} s" if budget is not None else "no budget")
    say(f"fit {label} ...")
    with tempfile.TemporaryDirectory(prefix="train_tabular_") as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", system, dataset,
               "none" if budget is None else f"{budget:g}", "--out", str(out)]
        timeout = 600 + 3 * (budget or 0)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  timeout=timeout, cwd=ROOT)
            err = proc.stderr
            failed = proc.returncode != 0 or not out.exists()
        except subprocess.TimeoutExpired as exc:
            err, failed = f"timed out after {timeout} s: {exc}", True
        if failed:
            tail = "\n".join((err or "").strip().splitlines()[-15:])
            say(f"FAILED {label}:\n{tail}")
            return {"dataset": dataset, "budget_s": budget, "system": system,
                    "metric_name": DATASETS[dataset][2], "error": tail[-2000:]}
        row = json.loads(out.read_text())
    say(f"done {label} in {time.perf_counter() - t0:.1f} s: {row['metric_name']}={row['test_metric']:.4f} "
        f"train={row['train_seconds']:.1f}s rss={row['peak_rss_mb']:.0f}MB "
        f"1row={row['predict_1row_p50_us']:.0f}us size={row['size_bytes']}")
    return row


# -------------------------------------------------------------------------------------- report

def checks(results: list[dict], datasets: list[str], budgets: list[float]) -> dict:
    def get(dataset, budget, system):
        for r in results:
            if r["dataset"] == dataset and r["system"] == system and r["budget_s"] == budget and "error" not in r:
                return r
        return None

    def metric(dataset, budget, system):
        r = get(dataset, budget, system)
        return None if r is None else r["test_metric"]

    def both(a, b, op):
        return None if a is None or b is None else bool(op(a, b))

    tandem_rows = [get(d, b, "tandem") for d in datasets for b in budgets]
    ge_lgb = [both(metric(d, b, "tandem"), metric(d, None, "lightgbm"), lambda x, y: x >= y)
              for d in datasets for b in budgets]
    out = {
        "adult_60_tandem_auc_ge_0.929": None,
        "adult_60_tandem_ge_flaml": None,
        "tandem_ge_lightgbm_everywhere": all(v is True for v in ge_lgb) if ge_lgb else None,
        "fraud_60_tandem_prauc_ge_flaml": None,
        "tandem_1row_p50_le_100us": (all(r is not None and r["predict_1row_p50_us"] <= 100 for r in tandem_rows)
                                     if tandem_rows else None),
        "tandem_1row_20x_faster_than_lightgbm": (
            all(r is not None and r["speedup_vs_lightgbm_1row"] >= 20 for r in tandem_rows)
            if tandem_rows else None),
    }
    if 60 in budgets and "adult" in datasets:
        auc = metric("adult", 60, "tandem")
        out["adult_60_tandem_auc_ge_0.929"] = auc is not None and auc >= 0.929
        out["adult_60_tandem_ge_flaml"] = bool(both(auc, metric("adult", 60, "flaml"), lambda x, y: x >= y))
    if 60 in budgets and "fraud" in datasets:
        out["fraud_60_tandem_prauc_ge_flaml"] = bool(
            both(metric("fraud", 60, "tandem"), metric("fraud", 60, "flaml"), lambda x, y: x >= y))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--budgets", default="10,60", help="comma-separated time budgets in seconds")
    parser.add_argument("--datasets", default="adult,fraud", help=f"comma-separated, of {', '.join(DATASETS)}")
    parser.add_argument("--quick", action="store_true", help="budget 5 s, smoke test only (writes no results file)")
    parser.add_argument("--one", nargs=3, metavar=("SYSTEM", "DATASET", "BUDGET"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        system, dataset, budget = args.one
        row = run_one(system, dataset, None if budget == "none" else float(budget))
        Path(args.out).write_text(json.dumps(row, default=str))
        return 0

    budgets = [5.0] if args.quick else [float(b) for b in args.budgets.split(",") if b.strip()]
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for d in datasets:
        if d not in DATASETS:
            parser.error(f"unknown dataset '{d}' (known: {', '.join(DATASETS)})")
    say(f"data from {DATA}; budgets {budgets}; datasets {datasets}; systems run one after another")

    head, src_start = git_head(), src_fingerprint()
    results = []
    for dataset in datasets:
        results.append(spawn("lightgbm", dataset, None))
        for budget in budgets:
            for system in ("tandem", "flaml"):
                src = src_fingerprint()
                results.append(spawn(system, dataset, budget))
                if system == "tandem":
                    results[-1]["tandem_src_sha256"] = src
    src_end = src_fingerprint()
    if src_end != src_start or any(r.get("tandem_src_sha256", src_start) != src_start for r in results):
        say("WARNING: tandem sources changed while the bench ran; tandem rows may come from different code")
    for r in results:  # budgets as ints where whole, for readable JSON
        if isinstance(r.get("budget_s"), float) and r["budget_s"].is_integer():
            r["budget_s"] = int(r["budget_s"])
    source = {"git_head": head, "src_sha256_start": src_start, "src_sha256_end": src_end,
              "src_changed_during_run": src_end != src_start
              or any(r.get("tandem_src_sha256", src_start) != src_start for r in results)}
    payload = {"bench": "train_tabular", "machine": machine(PACKAGES), "source": source, "quick": args.quick,
               "results": results,
               "checks": checks(results, datasets, [int(b) if b.is_integer() else b for b in budgets])}
    if args.quick:
        say("quick mode: results file not written")
    else:
        write_atomic(RESULTS, payload)
        say(f"wrote {RESULTS}")
    print(json.dumps(payload, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
