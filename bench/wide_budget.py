"""Benchmark: does ``tandem.train`` honour its time limit on a wide table (issue 15, finding 1)?

The table: 300 rows x 10,000 random numeric columns (seeded) and a binary target that depends on the
first five columns. ``tandem.train(time_limit=10)`` writes its bundle to a temporary folder; the
whole call, from the call to the loaded ``Model`` (export, permutation importance, drift profile,
report, parity and latency checks, the metered 1,000 predictions, loading and verifying the bundle)
is timed with a monotonic clock, each ``progress`` message stamped on the way. The baseline in the
same run is the time limit itself: ``overrun`` is wall time / time limit (1.0 is on time).

The JSON line also gives how long the steps before the first fit took (reading, the quality gate, the
schema, encoding), how long those after the fits took (from the "ensembling" message to the end), how
many columns the permutation importance scored, with how many shuffles and on which rows, and the size
of ``profile.json``.

Run (from the repository root)::

    .venv/bin/python bench/wide_budget.py            # 300 x 10,000, 10 s; writes bench/results/wide_budget.json
    .venv/bin/python bench/wide_budget.py --rows 300 --cols 2000 --time-limit 5 --quick   # writes no file
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, git_head, machine, src_fingerprint, write_atomic  # noqa: E402

RESULTS = HERE / "results" / "wide_budget.json"


def say(msg: str) -> None:
    print(f"[wide_budget] {msg}", file=sys.stderr, flush=True)


def make_frame(rows: int, cols: int, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, cols))
    y = x[:, :5].sum(axis=1) + rng.normal(0, 1.0, rows) > 0
    frame = pd.DataFrame(x, columns=[f"f{j}" for j in range(cols)])
    frame["target"] = np.where(y, "yes", "no")
    return frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--cols", type=int, default=10_000)
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="write no results file")
    args = ap.parse_args()

    import tandem

    frame = make_frame(args.rows, args.cols, args.seed)
    source = src_fingerprint()
    stamps: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "wide"
        start = time.monotonic()

        def progress(msg: str) -> None:
            stamps.append((time.monotonic() - start, msg))
            say(f"{stamps[-1][0]:7.2f} s  {msg}")

        model = tandem.train(frame, "target", time_limit=args.time_limit, seed=args.seed, path=bundle,
                             progress=progress)
        wall = time.monotonic() - start
        manifest = json.loads((bundle / "manifest.json").read_text())
        profile_bytes = (bundle / "profile.json").stat().st_size
        del model
    first_fit = next((t for t, m in stamps if m.startswith("training ")), None)
    after_fits = next((t for t, m in stamps if m == "ensembling"), None)
    imp = manifest.get("importance") or {}
    payload = {
        "bench": "wide_budget", "rows": args.rows, "columns": args.cols, "time_limit_s": args.time_limit,
        "wall_s": round(wall, 3), "overrun": round(wall / args.time_limit, 4),
        "before_fits_s": None if first_fit is None else round(first_fit, 3),
        "after_fits_s": None if after_fits is None else round(wall - after_fits, 3),
        "fit_seconds": round(sum(r["fit_seconds"] for r in manifest["leaderboard"]), 3),
        "importance": {"columns_scored": len(imp.get("columns", [])), "repeats": imp.get("repeats"),
                       "rows": imp.get("rows"), "scored_on": imp.get("scored_on"), "note": imp.get("note")},
        "profile_json_bytes": profile_bytes,
        "steps": [{"s": round(t, 3), "step": m} for t, m in stamps],
        "machine": machine(), "git_head": git_head(),
        "source": {"sha256": source, "src_changed_during_run": src_fingerprint() != source},
    }
    if not args.quick:
        write_atomic(RESULTS, payload)
    print(json.dumps(payload), flush=True)


if __name__ == "__main__":
    main()
