"""Benchmark: the study's fold fits as Ray tasks (``--cluster``) against the local study, same run.

Fixed work, so the two runs do the same fits: Adult (10,000 training rows of ``../shared/data``), a fixed list
of configurations (logistic regression, two LightGBM sizes, a small MLP) x 5 folds (bagging forced on), a time
limit far beyond what the work needs (no early deadline). The local study fits the folds one after another
in this process; the Ray study hands each configuration's 5 folds to a two-node cluster started here with
``ray start`` (a head and a worker, one CPU each: "2 worker CPUs"). Reported: each run's wall seconds, the
speedup, how many tasks ran where, Ray's overhead per task (the round trip of an empty task, median of 200,
and the cluster run's seconds beyond the fits' own), and the object store upload.

The honest limit: this machine has 2 cores. The local study's LightGBM already uses both; the cluster's two
one-CPU nodes share the same two cores, so the speedup here is bounded by 2x at best and mostly measures
Ray's overhead. A real cluster's speedup is up to (nodes x cores) / (cores used by one fit).

Run (from the repository root)::

    .venv/bin/pip install -e ".[bench,cluster]" && .venv/bin/python bench/cluster.py     # ~3 minutes
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, git_head, load_dataset, machine, write_atomic  # noqa: E402

CONFIGS = [
    {"name": "linear", "family": "linear", "params": {"C": 1.0}},
    {"name": "lgbm_small", "family": "lightgbm", "params": {"n_estimators": 200, "num_leaves": 15,
                                                            "learning_rate": 0.1}},
    {"name": "lgbm_large", "family": "lightgbm", "params": {"n_estimators": 400, "num_leaves": 63,
                                                            "learning_rate": 0.05}},
    {"name": "mlp", "family": "mlp", "params": {"hidden": [64], "epochs": 10, "patience": 100}},
]


def say(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    import tandem

    train, _ = load_dataset("adult")
    train = train.sample(10_000, random_state=0)
    ray = [str(Path(sys.executable).parent / "ray")]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    port, temp = free_port(), tempfile.mkdtemp(prefix="ray", dir="/tmp")
    common = ["--num-cpus=1", "--disable-usage-stats"]
    runs = {}
    work = Path(tempfile.mkdtemp())
    try:
        say("local study")
        t = time.perf_counter()
        local = tandem.train(train, "income", time_limit=900, configs=CONFIGS, bagging="yes", home=work,
                             name="local", footprint=False)
        runs["local"] = {"seconds": round(time.perf_counter() - t, 2),
                         "fit_seconds": round(sum(r["fit_seconds"] for r in local.leaderboard()), 2)}
        say("starting a two-node Ray cluster (head + worker, 1 CPU each)")
        for args in (["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"],
                     [f"--address=127.0.0.1:{port}"]):
            subprocess.run([*ray, "start", *args, *common], check=True, capture_output=True, env=env, timeout=180)
        import ray as ray_api

        ray_api.init(address=f"127.0.0.1:{port}", log_to_driver=False, logging_level="ERROR")

        @ray_api.remote(num_cpus=1)
        def noop() -> int:
            return 0

        ray_api.get([noop.remote() for _ in range(20)])  # workers started
        trips = []
        for _ in range(200):
            t = time.perf_counter()
            ray_api.get(noop.remote())
            trips.append(time.perf_counter() - t)
        say("the same study on the cluster")
        t = time.perf_counter()
        remote = tandem.train(train, "income", time_limit=900, configs=CONFIGS, bagging="yes", home=work,
                              name="remote", footprint=False, cluster=f"127.0.0.1:{port}")
        seconds = time.perf_counter() - t
        fits = sum(r["fit_seconds"] for r in remote.leaderboard())
        cluster = remote.manifest["cluster"]
        runs["ray"] = {"seconds": round(seconds, 2), "fit_seconds": round(fits, 2), "tasks": cluster["tasks"],
                       "nodes": len(cluster["nodes"])}
        same = abs(remote.manifest["metrics"]["validation"][remote.metric] -
                   local.manifest["metrics"]["validation"][local.metric])
    finally:
        subprocess.run([*ray, "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    out = {"bench": "cluster", "git": git_head(), "machine": machine(), "rows": len(train),
           "configs": [c["name"] for c in CONFIGS], "folds": 5, "runs": runs,
           "speedup": round(runs["local"]["seconds"] / runs["ray"]["seconds"], 3),
           "empty_task_round_trip_ms_p50": round(statistics.median(trips) * 1e3, 3),
           "validation_metric_difference": same,
           "limit": "2 cores: the two one-CPU nodes share them with the driver, so the speedup is bounded by 2x "
                    "and mostly measures Ray's overhead"}
    line = json.dumps(out)
    print(line)
    write_atomic(HERE / "results" / "cluster.json", out)


if __name__ == "__main__":
    main()
