"""Benchmark: ``tandem serve`` against the HTTP floor and a hand-written FastAPI server, on loopback.

Servers, each started fresh in its own process pinned to CPU 0 (``taskset``), one after another:

- ``floor``: a bare ASGI handler answering a constant (bench/serve_apps.py), under uvicorn;
- ``naive``: FastAPI + a pydantic row model + pandas + the native LightGBM ``predict``, under uvicorn;
- ``tandem``: ``tandem serve`` with micro-batching on (``batch_on``: ``--max-batch-rows 64``, the
  default) and off (``batch_off``: ``--max-batch-rows 0``);
- ``tandem_http``: ``tandem serve`` answering ``/v2/health/live`` to the same requests: tandem's HTTP
  layer and app without the model, to compare with the floor.

The load generator is ``wrk`` (Debian package ``wrk``), pinned to CPU 1, cycling through 200
different real rows of the Adult test file. For each server x request size (1 row, 100 rows) x
concurrency (1, 16, 64) it reports throughput (requests/s), p50/p95/p99 latency (ms), the server's
CPU seconds per request (utime + stime from /proc of the server and its children, before and after
the run) and the answers by status code.

Models: ``tree`` is ``tandem.train`` on Adult with one LightGBM configuration the size of
LightGBM's defaults (100 trees of 31 leaves); the naive server serves a LightGBM classifier with
default parameters fitted on the same rows. ``wide_mlp`` is a tandem bundle of one wide MLP (2
hidden layers of 2048), a model whose compute dominates a request.

``movielens`` is a recommendation bundle (``tandem.train(task="recommend")`` on MovieLens 100K, ratings >= 4,
15 s), asked ``POST /v1/models/movielens/recommend`` with ``{"user": id, "k": 10}`` for 200 different users
(``--recommend-only``: the floor and this route alone, written to ``serve_recommend.json``).

Checks (the serving issue's acceptance): CPU per 1-row request of tandem as it ships (batching on)
<= 1.5x the floor at every concurrency (the ratio with batching off is reported beside it);
throughput >= 3x naive at concurrency 64 (1-row and 100-row); wide MLP with
batching >= 2x the throughput without it at a p95 no worse (concurrency 64); tree model with
batching loses <= 5% throughput; a saturation run (``--saturation-s``, default 60) at concurrency
256 with 100-row requests has no answer other than 2xx, 429 or 503; with ``--soak N`` the
server's RSS grows < 5% over N requests (after a 50,000-request warm-up).

Run (from the repository root)::

    .venv/bin/pip install -e ".[bench]" && apt-get install wrk
    .venv/bin/python bench/serve.py                  # about 8 minutes
    .venv/bin/python bench/serve.py --soak 1000000   # adds the memory soak (a few minutes more)
    .venv/bin/python bench/serve.py --no-sweep --soak 1000000   # saturation and soak only (serve_soak.json)
    .venv/bin/python bench/serve.py --quick          # smoke test, writes no results file

The last line on stdout is one JSON object, also written to ``bench/results/serve.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import HERE, ROOT, git_head, load_dataset, machine, src_fingerprint, write_atomic

RESULTS = HERE / "results" / "serve.json"
PACKAGES = ("uvicorn", "uvloop", "httptools", "fastapi", "pydantic", "lightgbm", "onnxruntime", "pandas")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DISTINCT_BODIES = 200
# the size of LightGBM's defaults (100 trees of 31 leaves), as the naive server's model
LGBM_DEFAULTS = {"name": "lgbm_defaults", "family": "lightgbm",
                 "params": {"n_estimators": 100, "early_stopping_rounds": 100, "learning_rate": 0.1, "num_leaves": 31}}
WIDE_MLP = {"name": "wide_mlp", "family": "mlp",
            "params": {"hidden": [2048, 2048], "dropout": 0.0, "lr": 0.001, "batch_size": 512, "epochs": 2,
                       "patience": 1}}
WRK_SCRIPT = """
local bodies = {}
for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
local path = os.getenv("BENCH_PATH")
local method = os.getenv("BENCH_METHOD") or "POST"
local headers = {["Content-Type"] = "application/json"}
local i = 0
codes = {}
function request()
  i = i % #bodies + 1
  return wrk.format(method, path, headers, bodies[i])
end
function response(status, hdrs, body)
  codes[status] = (codes[status] or 0) + 1
end
local threads = {}
function setup(thread) threads[#threads + 1] = thread end
function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("codes")) do all[tostring(code)] = (all[tostring(code)] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(all) do parts[#parts + 1] = string.format('"%s": %d', code, n) end
  local e = summary.errors
  io.write(string.format('BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "socket_errors": %d, "codes": {%s}}\\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout, table.concat(parts, ", ")))
end
"""


def say(message: str) -> None:
    print(f"[serve] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ setup

def prepare_recommender(work: Path, home: Path) -> Path:
    """Train the MovieLens recommender into ``home``; write its request bodies (one user each) and return them."""
    import numpy as np
    import pandas as pd

    import tandem
    from common import DATA

    raw = np.loadtxt(DATA / "movielens_100k" / "u.data", dtype=np.int64)
    ratings = work / "ratings.csv"
    pd.DataFrame(raw, columns=["user_id", "item_id", "rating", "ts"]).to_csv(ratings, index=False)
    say("training the MovieLens recommender")
    tandem.train(str(ratings), task="recommend", user="user_id", item="item_id", rating="rating", min_rating=4,
                 time_column="ts", time_limit=15, name="movielens", home=home, seed=0)
    users = np.random.default_rng(0).choice(np.unique(raw[:, 0]), DISTINCT_BODIES, replace=False)
    path = work / "bodies_recommend.jsonl"
    path.write_text("".join(json.dumps({"user": int(u), "k": 10}) + "\n" for u in users))
    return path


def prepare(work: Path, quick: bool) -> dict:
    """Train the models and write the request bodies; return where everything is."""
    import lightgbm as lgb
    import pandas as pd

    import tandem

    train, test = load_dataset("adult")
    features = [c for c in train.columns if c != "income"]
    home = work / "home"
    say("training the tree bundle (LightGBM family)")
    tandem.train(train, "income", time_limit=10 if quick else 30, name="tree", home=home, configs=[LGBM_DEFAULTS],
                 bagging="no", seed=0)
    say("training the wide-MLP bundle")
    tandem.train(train.sample(2000 if quick else 8000, random_state=0), "income", time_limit=20 if quick else 40,
                 name="wide_mlp", home=home, configs=[WIDE_MLP], bagging="no", latency_budget_us=1e6, seed=0)

    say("fitting the naive server's LightGBM (defaults)")
    columns: dict = {}
    x = train[features].copy()
    for c in features:
        if pd.api.types.is_numeric_dtype(x[c]):
            columns[c] = "number"
            x[c] = x[c].astype("float64")
        else:
            columns[c] = sorted(x[c].dropna().unique().tolist())
            x[c] = pd.Categorical(x[c], categories=columns[c])
    clf = lgb.LGBMClassifier(verbose=-1, random_state=0).fit(x, (train["income"] == ">50K").astype(int))
    clf.booster_.save_model(str(work / "naive_lgbm.txt"))
    (work / "naive_columns.json").write_text(json.dumps(columns))

    rows = test[features].head(DISTINCT_BODIES * 100)
    records = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")
    bodies = {}
    for size in (1, 100):
        path = work / f"bodies_{size}.jsonl"
        with path.open("w") as fh:
            for i in range(DISTINCT_BODIES):
                start = (i * size) % (len(records) - size)
                fh.write(json.dumps({"instances": records[start:start + size]}) + "\n")
        bodies[size] = path
    return {"home": home, "bodies": bodies, "naive_model": work / "naive_lgbm.txt",
            "naive_columns": work / "naive_columns.json"}


# ---------------------------------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process pinned to CPU 0, and the readings of its CPU time and memory."""

    def __init__(self, label: str, argv: list[str], env: dict, path: str, ready_path: str):
        self.label, self.path = label, path
        self.port = free_port()
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.proc = subprocess.Popen(["taskset", "-c", "0", *argv], env=dict(os.environ, **env), cwd=HERE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server {label} exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{ready_path}", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit(f"server {label} did not become ready in 60 s")

    def pids(self) -> list[int]:
        """The server and every descendant (uvicorn workers)."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, []))
        return out

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLOCK_TICKS

    def rss_mb(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total / 1024

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start(kind: str, setup: dict, model: str = "tree") -> Server:
    uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning",
               "--no-access-log"]
    if kind == "floor":
        return Server(kind, [*uvicorn, "serve_apps:floor"], {}, "/", "/")
    if kind == "naive":
        env = {"BENCH_NAIVE_MODEL": str(setup["naive_model"]),
               "BENCH_NAIVE_COLUMNS": setup["naive_columns"].read_text()}
        return Server(kind, [*uvicorn, "--factory", "serve_apps:naive"], env, "/predict", "/docs")
    batching = ["--max-batch-rows", "64"] if kind in ("batch_on", "tandem_http") else ["--max-batch-rows", "0"]
    argv = [sys.executable, "-m", "tandem.cli", "serve", model, "--port", "{port}", *batching]
    # tandem_http: tandem serve answering its liveness route (the request's body is read and ignored), the
    # cost of tandem's HTTP layer and app without a model
    path = "/v2/health/live" if kind == "tandem_http" else f"/v1/models/{model}/" + (
        "recommend" if model == "movielens" else "predict")
    return Server(kind, argv, {"TANDEM_HOME": str(setup["home"])}, path, "/v2/health/ready")


# ------------------------------------------------------------------------------------------- load

def wrk(server: Server, bodies: Path, concurrency: int, seconds: float, script: Path) -> dict:
    """Run wrk (pinned to CPU 1) against ``server``; its summary plus the server's CPU per request."""
    # the liveness route takes GET (the body, sent all the same, is read and ignored)
    env = dict(os.environ, BENCH_BODIES=str(bodies), BENCH_PATH=server.path,
               BENCH_METHOD="GET" if server.path == "/v2/health/live" else "POST")
    seconds = max(1, round(seconds))  # wrk takes whole seconds
    cpu0 = server.cpu_seconds()
    proc = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s",
                           "--timeout", "30s", "-s", str(script), f"http://127.0.0.1:{server.port}"],
                          env=env, capture_output=True, text=True, timeout=seconds + 120)
    cpu = server.cpu_seconds() - cpu0
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise SystemExit(f"wrk gave no summary: {proc.stdout[-1000:]} {proc.stderr[-1000:]}")
    out = json.loads(line.removeprefix("BENCH_JSON "))
    n = max(out["requests"], 1)
    seconds_run = out["duration_us"] / 1e6
    ok = sum(v for k, v in out["codes"].items() if k.startswith("2"))
    return {"concurrency": concurrency, "requests": out["requests"], "ok": ok, "codes": out["codes"],
            "socket_errors": out["socket_errors"], "throughput_rps": round(ok / seconds_run, 1),
            "p50_ms": out["p50_us"] / 1e3, "p95_ms": out["p95_us"] / 1e3, "p99_ms": out["p99_us"] / 1e3,
            "cpu_ms_per_request": round(1e3 * cpu / n, 4), "server_cpu_s": round(cpu, 2),
            "seconds": round(seconds_run, 2)}


def sweep(kind: str, setup: dict, script: Path, *, model: str, sizes: tuple[int, ...],
          concurrencies: tuple[int, ...], seconds: float) -> list[dict]:
    server = start(kind, setup, model)
    rows = []
    try:
        bodies = {1: setup["bodies"]["recommend"]} if model == "movielens" else setup["bodies"]
        wrk(server, bodies[1], 16, 1.0, script)  # warm-up: JIT-free, but caches, pools, allocators
        for size in sizes:
            for c in concurrencies:
                r = wrk(server, bodies[size], c, seconds, script)
                r.update(server=kind, model=model, rows_per_request=size)
                say(f"{model:9s} {kind:9s} rows={size:3d} c={c:2d}: {r['throughput_rps']:8.0f} req/s  "
                    f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  cpu {r['cpu_ms_per_request']:.3f} "
                    f"ms/req  codes {r['codes']}")
                rows.append(r)
    finally:
        server.stop()
    return rows


def saturation(setup: dict, script: Path, seconds: float) -> dict:
    """Far more load than one core can take: every answer must be 2xx or a deliberate 429/503."""
    server = start("batch_on", setup, "tree")
    try:
        r = wrk(server, setup["bodies"][100], 256, seconds, script)
    finally:
        server.stop()
    r.update(server="batch_on", model="tree", rows_per_request=100)
    bad = {k: v for k, v in r["codes"].items() if not (k.startswith("2") or k in ("429", "503"))}
    r["unexpected_codes"] = bad
    say(f"saturation {seconds:g} s at c=256: {r['codes']}, socket errors {r['socket_errors']}")
    return r


def soak(setup: dict, script: Path, n_requests: int) -> dict:
    """RSS of the server after a warm-up and after ``n_requests`` more 1-row requests."""
    server = start("batch_on", setup, "tree")
    try:
        warm = wrk(server, setup["bodies"][1], 64, 10.0, script)
        rate = max(warm["throughput_rps"], 1.0)
        extra = max(0, 50_000 - warm["requests"])
        if extra:
            wrk(server, setup["bodies"][1], 64, extra / rate, script)
        before = server.rss_mb()
        done, samples = 0, [before]
        while done < n_requests:
            chunk = min(60.0, (n_requests - done) / rate + 1)
            r = wrk(server, setup["bodies"][1], 64, chunk, script)
            done += r["requests"]
            samples.append(server.rss_mb())
            say(f"soak: {done:,} requests, RSS {samples[-1]:.1f} MB")
        after = samples[-1]
    finally:
        server.stop()
    return {"requests": done, "rss_mb_before": round(before, 1), "rss_mb_after": round(after, 1),
            "rss_growth": round(after / before - 1, 4), "rss_samples_mb": [round(s, 1) for s in samples]}


# ----------------------------------------------------------------------------------------- report

def pick(rows: list[dict], server: str, model: str, size: int, c: int) -> dict | None:
    return next((r for r in rows if r["server"] == server and r["model"] == model
                 and r["rows_per_request"] == size and r["concurrency"] == c), None)


def checks(rows: list[dict], sat: dict | None, soaked: dict | None, concurrencies: tuple[int, ...]) -> dict:
    def ratio(a: dict | None, b: dict | None, key: str) -> float | None:
        return None if not a or not b or not b[key] else round(a[key] / b[key], 3)

    cpu = {c: ratio(pick(rows, "batch_on", "tree", 1, c), pick(rows, "floor", "tree", 1, c), "cpu_ms_per_request")
           for c in concurrencies}  # tandem serve as it ships: batching on (64 rows)
    cpu_off = {c: ratio(pick(rows, "batch_off", "tree", 1, c), pick(rows, "floor", "tree", 1, c),
                        "cpu_ms_per_request") for c in concurrencies}
    vs_naive = {size: ratio(pick(rows, "batch_on", "tree", size, 64), pick(rows, "naive", "tree", size, 64),
                            "throughput_rps") for size in (1, 100)}
    mlp_on, mlp_off = pick(rows, "batch_on", "wide_mlp", 1, 64), pick(rows, "batch_off", "wide_mlp", 1, 64)
    tree_on = {c: ratio(pick(rows, "batch_on", "tree", 1, c), pick(rows, "batch_off", "tree", 1, c),
                        "throughput_rps") for c in concurrencies}
    out = {
        "cpu_per_1row_request_vs_floor": cpu,
        "cpu_per_1row_request_le_1.5x_floor": all(v is not None and v <= 1.5 for v in cpu.values()),
        "cpu_per_1row_request_vs_floor_batching_off": cpu_off,
        "cpu_per_request_of_tandem_http_layer_vs_floor": {
            c: ratio(pick(rows, "tandem_http", "tree", 1, c), pick(rows, "floor", "tree", 1, c), "cpu_ms_per_request")
            for c in concurrencies},
        "throughput_vs_naive_c64": vs_naive,
        "throughput_ge_3x_naive_c64": all(v is not None and v >= 3 for v in vs_naive.values()),
        "wide_mlp_batching_throughput_ratio_c64": ratio(mlp_on, mlp_off, "throughput_rps"),
        "wide_mlp_batching_p95_ratio_c64": ratio(mlp_on, mlp_off, "p95_ms"),
        "tree_batching_throughput_ratio": tree_on,
    }
    out["wide_mlp_batching_ge_2x_at_p95_no_worse"] = (
        out["wide_mlp_batching_throughput_ratio_c64"] is not None
        and out["wide_mlp_batching_throughput_ratio_c64"] >= 2 and out["wide_mlp_batching_p95_ratio_c64"] <= 1)
    out["tree_batching_costs_le_5pct"] = all(v is not None and v >= 0.95 for v in tree_on.values())
    recommend = {c: pick(rows, "batch_on", "movielens", 1, c) for c in concurrencies}
    if any(recommend.values()):
        out["recommend_route"] = {c: {k: r[k] for k in ("throughput_rps", "p50_ms", "p99_ms", "cpu_ms_per_request")}
                                  for c, r in recommend.items() if r}
        out["recommend_cpu_per_request_vs_floor"] = {
            c: ratio(r, pick(rows, "floor", "tree", 1, c), "cpu_ms_per_request") for c, r in recommend.items() if r}
        out["recommend_only_2xx"] = all(set(r["codes"]) <= {"200"} for r in recommend.values() if r)
    if sat is not None:
        out["saturation_only_2xx_429_503"] = not sat["unexpected_codes"] and sat["socket_errors"] == 0
    if soaked is not None:
        out["soak_rss_growth_lt_5pct"] = soaked["rss_growth"] < 0.05
    return out


def require_load_tools(script: str) -> None:
    """Stop with one line unless wrk, taskset and two CPUs (server and load generator pinned apart) are here."""
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        raise SystemExit(f"{script} needs wrk and taskset: apt-get install wrk util-linux")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit(f"{script} pins the server and the load generator to CPUs 0 and 1: needs 2 CPUs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each measured run")
    parser.add_argument("--saturation-s", type=float, default=60.0, help="length of the saturation run (0: skip)")
    parser.add_argument("--soak", type=int, default=0, help="requests of the memory soak (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="measure each point this many times (medians)")
    parser.add_argument("--no-sweep", action="store_true", help="only the saturation run and the soak")
    parser.add_argument("--quick", action="store_true", help="short runs, small models; writes no results file")
    parser.add_argument("--focus", action="store_true",
                        help="only the floor and tandem as it ships, one-row tree requests at c=64 (writes "
                             "serve_focus.json): the CPU-per-request check, e.g. before and after a refactor")
    parser.add_argument("--recommend-only", action="store_true",
                        help="only the floor and the recommendation route, at c=1/16/64 (writes serve_recommend.json)")
    args = parser.parse_args(argv)
    require_load_tools("bench/serve.py")
    seconds = 2.0 if args.quick else args.seconds
    concurrencies = (64,) if args.focus else (1, 16, 64)
    head, src_start = git_head(), src_fingerprint()
    with tempfile.TemporaryDirectory(prefix="tandem-bench-serve-") as tmp:
        work = Path(tmp)
        script = work / "load.lua"
        script.write_text(WRK_SCRIPT)
        if args.recommend_only:
            setup = {"home": work / "home", "bodies": {}}
            args.no_sweep, args.saturation_s = True, 0
            for size in (1, 100):  # the floor's bodies (it answers a constant whatever it is sent)
                (work / f"bodies_{size}.jsonl").write_text('{"instances": [{}]}\n')
                setup["bodies"][size] = work / f"bodies_{size}.jsonl"
        else:
            setup = prepare(work, args.quick)
        setup["bodies"]["recommend"] = prepare_recommender(work, setup["home"])
        rows: list[dict] = []
        for _ in range(0 if args.no_sweep or not args.focus else max(args.repeats, 1)):
            for kind in ("floor", "batch_on"):
                rows += sweep(kind, setup, script, model="tree", sizes=(1,), concurrencies=concurrencies,
                              seconds=seconds)
        for _ in range(0 if args.no_sweep or args.focus else max(args.repeats, 1)):
            for kind in ("floor", "naive", "batch_off", "batch_on"):
                rows += sweep(kind, setup, script, model="tree", sizes=(1, 100), concurrencies=concurrencies,
                              seconds=seconds)
            rows += sweep("tandem_http", setup, script, model="tree", sizes=(1,), concurrencies=concurrencies,
                          seconds=seconds)
            for kind in ("batch_off", "batch_on"):
                rows += sweep(kind, setup, script, model="wide_mlp", sizes=(1,), concurrencies=(16, 64),
                              seconds=seconds)
        for _ in range(max(args.repeats, 1) if args.recommend_only or not (args.no_sweep or args.focus) else 0):
            if args.recommend_only:
                rows += sweep("floor", setup, script, model="tree", sizes=(1,), concurrencies=concurrencies,
                              seconds=seconds)
            rows += sweep("batch_on", setup, script, model="movielens", sizes=(1,), concurrencies=concurrencies,
                          seconds=seconds)
        rows = medians(rows)
        sat = (saturation(setup, script, 5.0 if args.quick else args.saturation_s)
               if args.saturation_s > 0 and not args.focus else None)
        soaked = soak(setup, script, args.soak) if args.soak else None
    payload = {"bench": "serve", "machine": machine(PACKAGES), "quick": args.quick,
               "source": {"git_head": head, "src_sha256_start": src_start,
                          "src_changed_during_run": src_fingerprint() != src_start},
               "settings": {"seconds_per_run": seconds, "repeats": args.repeats, "load_generator": "wrk -t1",
                            "pinning": "server CPU 0, wrk CPU 1", "distinct_bodies": DISTINCT_BODIES},
               "checks": checks(rows, sat, soaked, concurrencies), "runs": rows, "saturation": sat, "soak": soaked}
    if args.recommend_only:  # the tree and MLP checks have no runs to judge here
        payload["checks"] = {k: v for k, v in payload["checks"].items() if k.startswith("recommend")}
    if not args.quick:
        name = ("serve_recommend.json" if args.recommend_only else "serve_soak.json" if args.no_sweep else
                "serve_focus.json" if args.focus else RESULTS.name)
        write_atomic(RESULTS.with_name(name), payload)
    say(json.dumps(payload["checks"], indent=1))
    print(json.dumps(payload))
    return 0


def medians(rows: list[dict]) -> list[dict]:
    """One row per point: the run with the median throughput of its repeats."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["server"], r["model"], r["rows_per_request"], r["concurrency"]), []).append(r)
    out = []
    for group in groups.values():
        target = statistics.median_low([r["throughput_rps"] for r in group])
        chosen = dict(next(r for r in group if r["throughput_rps"] == target))
        chosen["repeats_throughput_rps"] = [r["throughput_rps"] for r in group]
        out.append(chosen)
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())
