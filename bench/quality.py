"""Benchmark: the quality gate on 1M rows x 50 columns (target: under 10 s), against pandas doing less.

The table is generated (seeded): 50 feature columns (33 floats, 5% missing in a quarter of them;
3 integers; 10 text columns of 3 to 5,000 categories; a boolean; an id; a constant) and a binary target,
with problems planted (a leaked copy of the target, 2% duplicated rows, a 1% share of test rows
copied from the training rows). A test table of 100k rows goes with it.

In the same run, the baseline is what a user writes by hand in pandas for a fraction of the checks:
``isna().mean()``, ``duplicated().sum()``, ``nunique()``, the top value's share of every column and a
train/test overlap by ``merge`` on every column. Both are timed three times (median); the pandas
frame is built before its clock starts (the gate's Arrow table too). The JSON reports both medians,
their ratio, what the gate found, and whether it met the target.

Run (from the repository root)::

    .venv/bin/python bench/quality.py            # 1M rows; writes bench/results/quality.json
    .venv/bin/python bench/quality.py --quick    # 100k rows, writes no file
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, git_head, machine, write_atomic  # noqa: E402

TARGET_SECONDS = 10.0


def say(msg: str) -> None:
    print(f"[quality] {msg}", file=sys.stderr, flush=True)


def make_table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array] = {}
    signal = np.zeros(n)
    for j in range(33):
        x = rng.normal(size=n)
        signal += x * (0.3 if j < 5 else 0.0)
        if j % 4 == 0:
            x[rng.random(n) < 0.05] = np.nan
        cols[f"num_{j}"] = pa.array(x, from_pandas=True)
    for j in range(3):
        cols[f"int_{j}"] = pa.array(rng.integers(0, 100, n))
    for j, k in enumerate((3, 10, 50, 200, 1000, 5000, 20, 7, 100, 30)):
        vocab = pa.array([f"cat{j}_{i}" for i in range(k)])
        codes = rng.integers(0, k, n)
        cols[f"text_{j}"] = pc.take(vocab, pa.array(codes))
        signal += (codes % 2) * (0.2 if j < 3 else 0.0)
    cols["flag"] = pa.array(rng.random(n) < 0.3)
    cols["row_id"] = pa.array(np.arange(n))
    cols["source"] = pa.array(np.full(n, "web"))
    y = signal + rng.normal(size=n) > 0.5
    cols["leak"] = pa.array(np.where(y, "yes", "no"))
    cols["target"] = pa.array(y)
    table = pa.table(cols)
    k = n // 50  # the last 2% of the rows repeat earlier ones
    dup = rng.choice(n - k, k, replace=False)
    return pa.concat_tables([table.slice(0, n - k), table.take(pa.array(dup))]).combine_chunks()


def run_gate(train: pa.Table, test: pa.Table) -> tuple[float, dict]:
    from tandem.data.quality import check_quality

    t = time.perf_counter()
    report = check_quality(train, "target", test=test)
    return time.perf_counter() - t, report.to_dict()


def run_pandas(train_df, test_df) -> float:
    t = time.perf_counter()
    train_df.isna().mean()
    train_df.duplicated().sum()
    train_df.nunique()
    for c in train_df.columns:
        train_df[c].value_counts(normalize=True, dropna=True).head(1)
    features = [c for c in train_df.columns if c != "target"]
    train_df[features].drop_duplicates().merge(test_df[features].drop_duplicates(), how="inner")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="100k rows, one repeat, no results file")
    args = ap.parse_args()
    rows = 100_000 if args.quick else args.rows
    repeats = 1 if args.quick else args.repeats
    say(f"generating {rows} rows x 50 columns")
    train = make_table(rows, seed=0)
    test = make_table(rows // 10, seed=1)
    test = pa.concat_tables([test.slice(0, len(test) - rows // 100), train.slice(0, rows // 100)])
    train_df, test_df = train.to_pandas(), test.to_pandas()
    gate_s, pandas_s, report = [], [], None
    for i in range(repeats):
        say(f"round {i + 1}/{repeats}: the gate")
        s, report = run_gate(train, test)
        gate_s.append(s)
        say(f"  {s:.2f} s; pandas")
        pandas_s.append(run_pandas(train_df, test_df))
        say(f"  {pandas_s[-1]:.2f} s")
    gate, base = statistics.median(gate_s), statistics.median(pandas_s)
    found = sorted({(f["check"], f["severity"], f["column"]) for f in report["findings"]
                    if f["severity"] != "info"}, key=str)
    out = {
        "bench": "quality", "machine": machine(("pyarrow", "numpy", "pandas")), "git_head": git_head(),
        "rows": train.num_rows, "columns": train.num_columns, "test_rows": test.num_rows, "repeats": repeats,
        "gate_seconds_median": round(gate, 3), "gate_seconds": [round(s, 3) for s in gate_s],
        "pandas_subset_seconds_median": round(base, 3), "gate_vs_pandas_subset": round(gate / base, 3),
        "target_seconds": TARGET_SECONDS, "meets_target": gate < TARGET_SECONDS,
        "counts": report["counts"], "errors_and_warnings": [list(f) for f in found],
    }
    line = json.dumps(out)
    if not args.quick:
        write_atomic(HERE / "results" / "quality.json", out)
    print(line)


if __name__ == "__main__":
    main()
