"""Benchmark: what the footprint meter costs, and what it reports, on Adult.

Each check is the median over repeats of the metered / unmetered ratio of a pair run back to back
(alternating which goes first), so the machine's drift over the run cancels.

Training (wall time, and the process's CPU seconds, which other tenants of a shared machine disturb
less): the same fixed work (``tandem train`` on the Adult training file with three fixed
configurations, no bagging, a time limit that never binds) run as a fresh process with the meter
on and with ``--no-footprint``, alternated ``--repeats`` times; the check is the median wall time
with the meter <= 1.02x without. A fresh process each time, so the meter's one-off start (CodeCarbon's
hardware detection) is in every metered run, as it is in every ``tandem train``.

Serving: ``tandem serve`` of that bundle (pinned to CPU 0) with its prediction meter on and off
(``TANDEM_SERVE_FOOTPRINT``), loaded by wrk (pinned to CPU 1) with one-row requests at concurrency 16,
alternated ``--repeats`` times; the check is the median throughput with the meter >= 0.98x without.
The metered server's own figure, energy per 1,000 predictions over its windows of at least 1,000, is
reported beside the bundle's (1,000 one-row predictions metered at export).

Run (from the repository root)::

    .venv/bin/pip install -e ".[bench]" && apt-get install wrk
    .venv/bin/python bench/footprint.py            # about 12 minutes
    .venv/bin/python bench/footprint.py --quick    # smoke test, writes no results file

The last line on stdout is one JSON object, also written to ``bench/results/footprint.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import HERE, git_head, load_dataset, machine, src_fingerprint, write_atomic
from serve import WRK_SCRIPT, Server, wrk

RESULTS = HERE / "results" / "footprint.json"
PACKAGES = ("codecarbon", "lightgbm", "onnxruntime", "torch", "uvicorn")
CONFIGS = [  # fixed work of about a minute here, the length of tandem train's default time limit
    {"name": "lgbm_4000", "family": "lightgbm",
     "params": {"n_estimators": 4000, "early_stopping_rounds": 4000, "learning_rate": 0.01, "num_leaves": 63}},
    {"name": "lgbm_ordinal_1000", "family": "lightgbm",
     "params": {"categorical": False, "n_estimators": 1000, "early_stopping_rounds": 1000, "learning_rate": 0.03,
                "num_leaves": 48}},
    {"name": "linear", "family": "linear", "params": {"C": 1.0}},
    {"name": "mlp_fixed", "family": "mlp",
     "params": {"hidden": [256, 128], "dropout": 0.1, "lr": 0.001, "weight_decay": 1e-5, "batch_size": 256,
                "epochs": 30, "patience": 100}},
]


def say(message: str) -> None:
    print(f"[footprint] {message}", file=sys.stderr, flush=True)


def train_once(work: Path, data: Path, configs: Path, metered: bool, k: int) -> dict:
    """One fresh ``tandem train`` process; its wall time and, when metered, its ledger's totals."""
    out = work / f"bundle_{'on' if metered else 'off'}_{k}"
    argv = [sys.executable, "-m", "tandem.cli", "train", str(data), "--target", "income", "--configs", str(configs),
            "--bagging", "no", "--time-limit", "900", "--out", str(out), "--country", "FRA"]
    if not metered:
        argv = [a for a in argv if a not in ("--country", "FRA")] + ["--no-footprint"]
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, TANDEM_HOME=str(work / "home")))
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"tandem train failed: {proc.stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    row = {"metered": metered, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}
    if metered:
        t = manifest["footprint"]["train"]
        row.update(energy_kwh=t["energy_kwh"], co2_kg=t["co2_kg"], method=t["method"],
                   extrapolated_s=t["extrapolated_seconds"])
    return row


def training(work: Path, quick: bool, repeats: int) -> dict:
    train, _ = load_dataset("adult")
    if quick:
        train = train.sample(4000, random_state=0)
    data = work / "adult_train.csv"
    train.to_csv(data, index=False)
    configs = work / "configs.json"
    configs.write_text(json.dumps(CONFIGS))
    say("warm-up run (not counted: it fills the page cache with the data and the libraries)")
    train_once(work, data, configs, False, -1)
    runs = []
    for k in range(repeats):
        for metered in ((True, False) if k % 2 == 0 else (False, True)):  # alternate which goes first
            r = train_once(work, data, configs, metered, k)
            say(f"train {'metered' if metered else 'unmetered'} #{k + 1}: {r['wall_s']:.1f} s, {r['cpu_s']:.1f} CPU s")
            runs.append(r)
    on = statistics.median(r["wall_s"] for r in runs if r["metered"])
    off = statistics.median(r["wall_s"] for r in runs if not r["metered"])
    last = next(r for r in reversed(runs) if r["metered"])
    bundle = work / f"bundle_on_{repeats - 1}"
    return {"runs": runs, "median_wall_s_metered": on, "median_wall_s_unmetered": off,
            "wall_ratio": _paired_ratio(runs, "wall_s"), "ratio_of_medians": round(on / off, 4),
            "cpu_ratio": _paired_ratio(runs, "cpu_s"),
            "overhead_s": round(on - off, 3), "ledger": last, "bundle": bundle}


def _paired_ratio(runs: list[dict], key: str) -> float:
    """The median over repeats of metered / unmetered, each pair run back to back: the machine's drift
    over the whole bench (seen here: 4% in a few minutes) cancels within a pair."""
    on = [r[key] for r in runs if r["metered"]]
    off = [r[key] for r in runs if not r["metered"]]
    return round(statistics.median(a / b for a, b in zip(on, off, strict=True)), 4)


def serve_once(bundle: Path, bodies: Path, script: Path, metered: bool, seconds: float) -> dict:
    env = {"TANDEM_SERVE_FOOTPRINT": "1" if metered else "0", "TANDEM_COUNTRY": "FRA"}
    argv = [sys.executable, "-m", "tandem.cli", "serve", str(bundle), "--port", "{port}"]
    name = json.loads((bundle / "manifest.json").read_text())["name"]
    server = Server("metered" if metered else "unmetered", argv, env, f"/v1/models/{name}/predict",
                    "/v2/health/ready")
    try:
        wrk(server, bodies, 16, 2.0, script)  # warm-up
        r = wrk(server, bodies, 16, seconds, script)
        r["metered"] = metered
        if metered:
            time.sleep(1.0)  # the window thread checks twice a second
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/v1/models/{name}/footprint",
                                        timeout=10) as resp:
                r["footprint"] = json.loads(resp.read())["serving"]
    finally:
        server.stop()
    return r


def serving(work: Path, bundle: Path, quick: bool, repeats: int, seconds: float) -> dict:
    _, test = load_dataset("adult")
    rows = test.drop(columns=["income"]).head(200)
    bodies = work / "bodies_1.jsonl"
    with bodies.open("w") as fh:
        for rec in rows.astype(object).where(rows.notna(), None).to_dict(orient="records"):
            fh.write(json.dumps({"instances": [rec]}) + "\n")
    script = work / "load.lua"
    script.write_text(WRK_SCRIPT)
    runs = []
    for k in range(repeats):
        for metered in ((True, False) if k % 2 == 0 else (False, True)):
            r = serve_once(bundle, bodies, script, metered, seconds)
            say(f"serve {'metered' if metered else 'unmetered'} #{k + 1}: {r['throughput_rps']:.0f} req/s, "
                f"p99 {r['p99_ms']:.2f} ms")
            runs.append(r)
    on = statistics.median(r["throughput_rps"] for r in runs if r["metered"])
    off = statistics.median(r["throughput_rps"] for r in runs if not r["metered"])
    last = next(r for r in reversed(runs) if r["metered"])["footprint"]
    return {"runs": [{k: v for k, v in r.items() if k != "footprint"} for r in runs],
            "median_rps_metered": on, "median_rps_unmetered": off,
            "throughput_ratio": _paired_ratio(runs, "throughput_rps"), "ratio_of_medians": round(on / off, 4),
            "cpu_ms_per_request_ratio": _paired_ratio(runs, "cpu_ms_per_request"),
            "served_energy": {k: last[k] for k in ("windows", "predictions", "energy_kwh", "energy_kwh_per_1000",
                                                   "energy_kwh_low_per_1000", "energy_kwh_high_per_1000",
                                                   "co2_kg_per_1000", "method", "scope")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5, help="training runs of each kind (medians)")
    parser.add_argument("--serve-repeats", type=int, default=5, help="serving runs of each kind (medians)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each serving run")
    parser.add_argument("--quick", action="store_true", help="small data, short runs; writes no results file")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        raise SystemExit("bench/footprint.py needs wrk and taskset: apt-get install wrk util-linux")
    repeats = 1 if args.quick else max(args.repeats, 1)
    head, src_start = git_head(), src_fingerprint()
    with tempfile.TemporaryDirectory(prefix="tandem-bench-footprint-") as tmp:
        work = Path(tmp)
        train = training(work, args.quick, repeats)
        bundle = train.pop("bundle")
        manifest = json.loads((bundle / "manifest.json").read_text())
        serve = serving(work, bundle, args.quick, 1 if args.quick else max(args.serve_repeats, 1),
                        3.0 if args.quick else args.seconds)
    fp = manifest["footprint"]
    checks = {"train_overhead_le_2pct": train["wall_ratio"] <= 1.02,
              "serve_overhead_le_2pct": serve["throughput_ratio"] >= 0.98,
              "served_windows_of_1000": serve["served_energy"]["predictions"] >= 1000,
              "training_estimated_or_measured": fp["train"]["method"] in ("estimated", "measured", "partly measured")}
    payload = {"bench": "footprint", "machine": machine(PACKAGES), "quick": args.quick,
               "source": {"git_head": head, "src_sha256_start": src_start,
                          "src_changed_during_run": src_fingerprint() != src_start},
               "settings": {"repeats": repeats, "serve_repeats": args.serve_repeats,
                            "configs": [c["name"] for c in CONFIGS],
                            "serve": "1-row requests, wrk -t1 -c16, server CPU 0, wrk CPU 1",
                            "seconds_per_serve_run": 3.0 if args.quick else args.seconds},
               "checks": checks, "training": train, "serving": serve,
               "bundle_ledger": {k: fp["train"][k] for k in ("energy_kwh", "energy_kwh_low", "energy_kwh_high",
                                                             "co2_kg", "method", "seconds", "cpu_seconds",
                                                             "extrapolated_seconds", "grid", "components",
                                                             "per_learner")},
               "bundle_inference": fp.get("inference")}
    if not args.quick:
        write_atomic(RESULTS, payload)
    say(json.dumps(checks))
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
