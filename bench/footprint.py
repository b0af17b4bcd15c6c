"""Benchmark: what the footprint meter costs, and what it reports, on Adult.

The machine is shared and drifts (the same work took 38.5 to 46 s from one run to the next), so each
check compares a metered run with the mean of the unmetered runs just before and just after it, in a
strict alternation that begins and ends unmetered (off, on, off, on, ..., off): a linear drift over
those three runs cancels. A check is the median of those ratios, with a 90% bootstrap interval.

Training (wall time, and the process's CPU seconds): the same fixed work (``tandem train`` on the Adult
training file with four fixed configurations, no bagging, a time limit that never binds) run as a fresh
process with the meter on and with ``--no-footprint``; the check is the median ratio <= 1.02. A fresh
process each time, so the meter's one-off start (CodeCarbon's import and hardware detection) is in every
metered run, as it is in every ``tandem train``.

The meter's own cost, directly: fresh processes that import what ``tandem train`` has imported when
its meter starts, then sleep, with a meter started and stopped around the sleep and without one
(the libraries' own threads tick in both), alternated. With the main thread asleep, the difference in
CPU is the meter's (its start, CodeCarbon's reading every 15 s, its stop). That CPU, scaled to a
training run's length, plus the export's 1,000 metered predictions (work done only with the meter),
over the training's wall time, bounds the overhead from above: it counts each of the meter's CPU
seconds as a second the training waited, though the training has the other core too.

Serving: ``tandem serve`` of that bundle (pinned to CPU 0) with its prediction meter on and off
(``--no-footprint``), loaded by wrk (pinned to CPU 1) with one-row requests at concurrency 16,
in the same alternation; the check is the median throughput ratio >= 0.98. The metered server's own
figure, energy per 1,000 predictions over its windows of at least 1,000, is reported beside the
bundle's (1,000 one-row predictions metered at export).

Run (from the repository root)::

    .venv/bin/pip install -e ".[bench]" && apt-get install wrk
    .venv/bin/python bench/footprint.py            # about 25 minutes
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
from collections.abc import Callable
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
                   extrapolated_s=t["extrapolated_seconds"],
                   inference_s=manifest["footprint"]["inference"]["seconds"])
    return row


def run_alternated(repeats: int, label: str, run: Callable[[bool, int], dict],
                   describe: Callable[[dict], str]) -> list[dict]:
    """``run(metered, k)`` in the order off, on, off, ..., on, off: ``repeats`` metered runs, each between
    two unmetered ones (what :func:`bracketed` compares); each run's figures said as it ends."""
    runs = []
    for k in range(2 * repeats + 1):
        metered = k % 2 == 1
        r = run(metered, k)
        say(f"{label} {'metered' if metered else 'unmetered'} ({k + 1}/{2 * repeats + 1}): {describe(r)}")
        runs.append(r)
    return runs


def medians(runs: list[dict], key: str) -> tuple[float, float]:
    """The median ``key`` of the metered runs and of the unmetered ones."""
    return (statistics.median(r[key] for r in runs if r["metered"]),
            statistics.median(r[key] for r in runs if not r["metered"]))


def bracketed(runs: list[dict], key: str) -> dict:
    """Each metered run's ``key`` over the mean of the unmetered runs either side of it (a drift that is
    linear over those three runs cancels): the median ratio, a 90% bootstrap interval of that median,
    and every ratio."""
    import numpy as np

    ratios = [runs[i][key] / ((runs[i - 1][key] + runs[i + 1][key]) / 2)
              for i in range(1, len(runs) - 1) if runs[i]["metered"]]
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(ratios, size=(2000, len(ratios))), axis=1)
    return {"median": round(statistics.median(ratios), 4),
            "interval_90": [round(float(q), 4) for q in np.quantile(medians, [0.05, 0.95])],
            "ratios": [round(r, 4) for r in ratios]}


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
    runs = run_alternated(repeats, "train", lambda metered, k: train_once(work, data, configs, metered, k),
                          lambda r: f"{r['wall_s']:.1f} s, {r['cpu_s']:.1f} CPU s")
    on, off = medians(runs, "wall_s")
    last = max(k for k, r in enumerate(runs) if r["metered"])
    return {"runs": runs, "median_wall_s_metered": on, "median_wall_s_unmetered": off,
            "wall_ratio": bracketed(runs, "wall_s"), "cpu_ratio": bracketed(runs, "cpu_s"),
            "ratio_of_medians": round(on / off, 4), "ledger": runs[last], "bundle": work / f"bundle_on_{last}"}


METER_COST = """
import json, sys, time
import tandem.cli, tandem.study.runner  # what tandem train has imported when its meter starts
from tandem.footprint.meter import Meter, MeterSettings

def clocks():
    return time.perf_counter(), time.process_time()

metered = sys.argv[2] == "1"
w0, c0 = clocks()
if metered:
    meter = Meter(MeterSettings(country="FRA")).start()
    meter.wait_ready()
w1, c1 = clocks()
time.sleep(float(sys.argv[1]))
w2, c2 = clocks()
if metered:
    meter.stop()
w3, c3 = clocks()
print(json.dumps({"start_cpu_s": c1 - c0, "idle_cpu_s_per_s": (c2 - c1) / (w2 - w1), "stop_cpu_s": c3 - c2}))
"""


def meter_cost(training_s: float, inference_s: float, repeats: int, seconds: float) -> dict:
    """The meter's own CPU: fresh processes with their main thread asleep, with a meter and without (the
    libraries' own threads tick too), alternated. Scaled to a training run of ``training_s``, plus the
    export's metered predictions (``inference_s``), it bounds the overhead as a share of the training's
    wall time from above."""
    rows: dict[bool, list[dict]] = {True: [], False: []}
    for _ in range(repeats):
        for metered in (False, True):
            proc = subprocess.run([sys.executable, "-c", METER_COST, str(seconds), "1" if metered else "0"],
                                  capture_output=True, text=True, timeout=seconds + 120)
            if proc.returncode != 0:
                raise SystemExit(f"meter cost probe failed: {proc.stderr[-2000:]}")
            rows[metered].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    on = {k: statistics.median(r[k] for r in rows[True]) for k in rows[True][0]}
    off_rate = statistics.median(r["idle_cpu_s_per_s"] for r in rows[False])
    meter_rate = max(0.0, on["idle_cpu_s_per_s"] - off_rate)
    cpu = on["start_cpu_s"] + on["stop_cpu_s"] + meter_rate * training_s
    return {"probes": repeats, "idle_seconds": seconds, "start_cpu_s": round(on["start_cpu_s"], 4),
            "stop_cpu_s": round(on["stop_cpu_s"], 4),
            "idle_cpu_s_per_s_metered": round(on["idle_cpu_s_per_s"], 5),
            "idle_cpu_s_per_s_without": round(off_rate, 5), "meter_cpu_s_per_s": round(meter_rate, 5),
            "meter_cpu_s_per_training_run": round(cpu, 3), "export_metered_predictions_s": round(inference_s, 3),
            "bound_share_of_training_wall": round((cpu + inference_s) / training_s, 4)}


def serve_once(bundle: Path, bodies: Path, script: Path, metered: bool, seconds: float) -> dict:
    env = {"TANDEM_COUNTRY": "FRA"}
    argv = [sys.executable, "-m", "tandem.cli", "serve", str(bundle), "--port", "{port}",
            *([] if metered else ["--no-footprint"])]
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
    runs = run_alternated(repeats, "serve", lambda metered, k: serve_once(bundle, bodies, script, metered, seconds),
                          lambda r: f"{r['throughput_rps']:.0f} req/s, p99 {r['p99_ms']:.2f} ms")
    on, off = medians(runs, "throughput_rps")
    last = next(r for r in reversed(runs) if r["metered"])["footprint"]
    return {"runs": [{k: v for k, v in r.items() if k != "footprint"} for r in runs],
            "median_rps_metered": on, "median_rps_unmetered": off,
            "throughput_ratio": bracketed(runs, "throughput_rps"), "ratio_of_medians": round(on / off, 4),
            "cpu_ms_per_request_ratio": bracketed(runs, "cpu_ms_per_request"),
            "served_energy": {k: last[k] for k in ("windows", "predictions", "energy_kwh", "energy_kwh_per_1000",
                                                   "energy_kwh_low_per_1000", "energy_kwh_high_per_1000",
                                                   "co2_kg_per_1000", "method", "scope")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=12, help="metered training runs (one more unmetered)")
    parser.add_argument("--serve-repeats", type=int, default=5, help="metered serving runs (one more unmetered)")
    parser.add_argument("--probe-seconds", type=float, default=20.0, help="how long each meter-cost probe sleeps")
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
        cost = meter_cost(train["median_wall_s_unmetered"],
                          statistics.median(r["inference_s"] for r in train["runs"] if r["metered"]),
                          1 if args.quick else 3, 2.0 if args.quick else args.probe_seconds)
        manifest = json.loads((bundle / "manifest.json").read_text())
        serve = serving(work, bundle, args.quick, 1 if args.quick else max(args.serve_repeats, 1),
                        3.0 if args.quick else args.seconds)
    fp = manifest["footprint"]
    checks = {"train_overhead_le_2pct": train["wall_ratio"]["median"] <= 1.02,
              "train_meter_cost_bound_le_2pct": cost["bound_share_of_training_wall"] <= 0.02,
              "serve_overhead_le_2pct": serve["throughput_ratio"]["median"] >= 0.98,
              "served_windows_of_1000": serve["served_energy"]["predictions"] >= 1000,
              "training_estimated_or_measured": fp["train"]["method"] in ("estimated", "measured", "partly measured")}
    payload = {"bench": "footprint", "machine": machine(PACKAGES), "quick": args.quick,
               "source": {"git_head": head, "src_sha256_start": src_start,
                          "src_changed_during_run": src_fingerprint() != src_start},
               "settings": {"repeats": repeats, "serve_repeats": args.serve_repeats, "order": "off, on, ..., on, off",
                            "configs": [c["name"] for c in CONFIGS],
                            "serve": "1-row requests, wrk -t1 -c16, server CPU 0, wrk CPU 1",
                            "seconds_per_serve_run": 3.0 if args.quick else args.seconds},
               "checks": checks, "training": train, "meter_cost": cost, "serving": serve,
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
