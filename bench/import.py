"""Benchmark: imported models served by ``tandem serve`` against the hand-written FastAPI server, on loopback.

Two models trained outside tandem, imported with ``tandem.import_model`` into a temporary registry:

- ``cnn``: a PyTorch CNN for 3x32x32 images, GTSRB-sized (three conv + batch-norm + ReLU + max-pool blocks of
  32, 64 and 128 channels, a linear head of 43 classes; random weights, batch-norm running statistics that are
  not the identity; eval mode). Its requests are real GTSRB test images (``../shared/data/gtsrb_subset``),
  scaled to [0, 1], sent as nested lists: ``{"instances": [{"input": [[[...]]]}]}``.
- ``pipe``: a scikit-learn ``Pipeline``: a ``ColumnTransformer`` (``SimpleImputer`` + ``StandardScaler`` on the
  numeric columns, ``OneHotEncoder`` on the categorical ones) and a ``LogisticRegression``, fitted on 4,000 rows
  of the Adult census training file; its requests are rows of the Adult test file (``{"instances": [{col:
  value, ...}]}``, missing values as null).

Servers, each started fresh in its own process pinned to CPU 0 (``taskset``), one after another:

- ``tandem``: ``tandem serve cnn pipe`` (1 worker, defaults otherwise: micro-batching of up to 64 rows on);
- ``fastapi``: what people write by hand, one app per model under uvicorn (1 worker): a pydantic request model
  (for the CNN ``instances: list[Image]`` with ``input: list[list[list[float]]]``, for the pipeline
  ``instances: list[dict[str, Any]]``), ``torch.tensor(...)`` -> ``model(x).softmax(1)`` under
  ``torch.no_grad()``, or ``pd.DataFrame(rows)`` (null as NaN) -> ``pipe.predict_proba``, in a ``def`` route.
  Torch keeps its default thread count, which follows the CPU affinity: 1 thread on the one CPU the server is
  pinned to (the number is read back from the server and recorded), so the default and
  ``torch.set_num_threads(1)`` are the same server here; ``--cnn-threads-2`` adds a run with 2 torch threads
  on that CPU.

Load: ``wrk`` pinned to CPU 1 (bench/serve.py's load generator and its CPU-per-request reading), for each model x
body size (1 row, 100 rows) x concurrency (1, 16, 64). Per cell: requests/s, rows/s, p50/p99 latency, the
server's CPU seconds per request (utime + stime of the server's process tree) and the answers by status code;
per model, size and concurrency the ratio tandem / FastAPI throughput. Both servers answer the same bodies
before the load (the first of each size, and 20 single rows) and their probabilities must agree within 1e-5.

Check (the import issue's acceptance): tandem's throughput >= 3x FastAPI's at c=64, per model and body size.

Run (from the repository root)::

    apt-get install wrk
    .venv/bin/python bench/import.py            # about 5 minutes on 2 cores
    .venv/bin/python bench/import.py --quick    # smoke test, writes no results file

The last line on stdout is one JSON object, also written to ``bench/results/import.json``.
"""

# no `from __future__ import annotations`: the FastAPI apps below define their request models in a function,
# and FastAPI must see the classes, not their names

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import DATA, HERE, ROOT, git_head, load_dataset, machine, src_fingerprint, write_atomic
from serve import WRK_SCRIPT, Server, medians, require_load_tools, wrk

RESULTS = HERE / "results" / "import.json"
PACKAGES = ("uvicorn", "uvloop", "httptools", "fastapi", "pydantic", "torch", "scikit-learn", "onnxruntime",
            "pandas", "orjson")
PARITY = 1e-5
N_CLASSES = 43
FIT_ROWS = 4000
CHECK_ROWS = 20  # single rows each server answers before the load, to compare their probabilities
# distinct bodies wrk cycles through: a 100-image body is ~6 MB of JSON, so fewer of those
DISTINCT = {("cnn", 1): 200, ("cnn", 100): 8, ("pipe", 1): 200, ("pipe", 100): 200}

# what the pipeline's import needed beyond a plain fit on the frame pandas reads (each import fails without it)


def say(message: str) -> None:
    print(f"[import] {message}", file=sys.stderr, flush=True)


def cnn_module():
    """The CNN's class (torch is imported only where it is needed)."""
    import torch
    from torch import nn

    class TrafficSignNet(nn.Module):
        """Three conv blocks (conv 3x3, batch norm, ReLU, 2x2 max-pool) of 32, 64, 128 channels; a linear head."""

        def __init__(self, classes: int = N_CLASSES) -> None:
            super().__init__()
            blocks, width = [], 3
            for out in (32, 64, 128):
                blocks += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(),
                           nn.MaxPool2d(2)]
                width = out
            self.features = nn.Sequential(*blocks)
            self.head = nn.Linear(128 * 4 * 4, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x).flatten(1))

    return TrafficSignNet


def gtsrb_images():
    """The GTSRB test subset as float32 [N, 3, 32, 32] in [0, 1]."""
    import numpy as np

    images = np.load(DATA / "gtsrb_subset" / "gtsrb_test_subset_32x32.npz")["images"]
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255)


# ------------------------------------------------------------------------------------------ setup

def prepare(work: Path) -> dict:
    """Build and fit the two models, save them for the FastAPI apps, import them into tandem, write the bodies."""
    import joblib
    import numpy as np
    import torch
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    import tandem

    home = work / "home"
    torch.manual_seed(0)
    net = cnn_module()()
    with torch.no_grad():  # batch-norm statistics and affine terms that are not the identity, as trained ones
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.8, 1.2)
                m.bias.uniform_(-0.1, 0.1)
    net.eval()
    torch.save(net.state_dict(), work / "cnn.pt")
    images = gtsrb_images()
    t0 = time.perf_counter()
    tandem.import_model(net, sample=images[:64], name="cnn", labels=[f"class_{i}" for i in range(N_CLASSES)],
                        home=home, footprint=False)
    say(f"imported the CNN in {time.perf_counter() - t0:.1f} s")

    # Adult as pandas reads it: hyphenated names, int64 numbers, missing categories (all handled by the import)
    train, test = load_dataset("adult")
    features = [c for c in train.columns if c != "income"]
    numeric = [c for c in features if train[c].dtype.kind in "if"]
    categorical = [c for c in features if c not in numeric]
    columns = ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), numeric),
        ("cat", OneHotEncoder(handle_unknown="ignore"), categorical)])
    fit = train.sample(FIT_ROWS, random_state=0)
    pipe = Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=1000))]).fit(
        fit[features], fit["income"])
    joblib.dump(pipe, work / "pipe.joblib")  # the FastAPI app's copy: our own file, read back by our own app
    t0 = time.perf_counter()
    tandem.import_model(pipe, sample=test.tail(2000), target="income", name="pipe", home=home, footprint=False)
    say(f"imported the pipeline in {time.perf_counter() - t0:.1f} s")

    bodies: dict = {}
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    cnn_rows = [{"input": images[i].tolist()} for i in order[:max(DISTINCT[("cnn", 1)], 100 * DISTINCT[("cnn", 100)])]]
    rows = test[features].head(10_000)
    pipe_rows = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")
    for model, records in (("cnn", cnn_rows), ("pipe", pipe_rows)):
        for size in (1, 100):
            path = work / f"{model}_{size}.jsonl"
            with path.open("w") as fh:
                for i in range(DISTINCT[(model, size)]):
                    start = (i * size) % (len(records) - size)
                    fh.write(json.dumps({"instances": records[start:start + size]}) + "\n")
            bodies[(model, size)] = path
    checks = {model: [{"instances": records[i:i + 1]} for i in range(CHECK_ROWS)]
              for model, records in (("cnn", cnn_rows), ("pipe", pipe_rows))}
    return {"home": home, "work": work, "bodies": bodies, "checks": checks}


# ------------------------------------------------------------------------------------- FastAPI apps

def fastapi_cnn():
    """The hand-written CNN server (a uvicorn factory): pydantic request, torch.tensor, softmax, no_grad."""
    import torch
    from fastapi import FastAPI
    from pydantic import BaseModel

    if os.environ.get("BENCH_TORCH_THREADS"):
        torch.set_num_threads(int(os.environ["BENCH_TORCH_THREADS"]))
    net = cnn_module()()
    net.load_state_dict(torch.load(Path(os.environ["BENCH_IMPORT_WORK"]) / "cnn.pt", weights_only=True))
    net.eval()

    class Image(BaseModel):
        input: list[list[list[float]]]

    class Request(BaseModel):
        instances: list[Image]

    app = FastAPI()

    @app.post("/predict")
    def predict(request: Request) -> dict:
        x = torch.tensor([row.input for row in request.instances])
        with torch.no_grad():
            p = net(x).softmax(1)
        return {"predictions": p.argmax(1).tolist(), "probabilities": p.tolist()}

    @app.get("/info")
    def info() -> dict:
        return {"torch_threads": torch.get_num_threads()}

    return app


def fastapi_pipe():
    """The hand-written scikit-learn server (a uvicorn factory): pydantic request, a frame, predict_proba."""
    from typing import Any

    import joblib
    import numpy as np
    import pandas as pd
    from fastapi import FastAPI
    from pydantic import BaseModel

    pipe = joblib.load(Path(os.environ["BENCH_IMPORT_WORK"]) / "pipe.joblib")

    class Request(BaseModel):
        instances: list[dict[str, Any]]

    app = FastAPI()

    @app.post("/predict")
    def predict(request: Request) -> dict:
        # JSON null arrives as None; the pipeline learnt missing text as NaN (pandas' reading of the training file)
        # and reads a None as an unknown category: a careful server converts, or it answers differently
        frame = pd.DataFrame(request.instances)
        for column in frame.select_dtypes(include="object").columns:
            frame[column] = frame[column].where(frame[column].notna(), np.nan)
        p = pipe.predict_proba(frame)
        return {"predictions": pipe.classes_[p.argmax(1)].tolist(), "probabilities": p.tolist()}

    @app.get("/info")
    def info() -> dict:
        return {}

    return app


# ---------------------------------------------------------------------------------------- servers

def start(kind: str, setup: dict) -> Server:
    if kind == "tandem":
        argv = [sys.executable, "-m", "tandem.cli", "serve", "cnn", "pipe", "--port", "{port}"]
        return Server(kind, argv, {"TANDEM_HOME": str(setup["home"])}, "/v1/models/cnn/predict", "/v2/health/ready")
    app = "fastapi_cnn" if kind.startswith("fastapi_cnn") else "fastapi_pipe"
    argv = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning",
            "--no-access-log", "--factory", f"import:{app}"]
    env = {"BENCH_IMPORT_WORK": str(setup["work"]), "BENCH_TORCH_THREADS": "2" if kind == "fastapi_cnn_2t" else ""}
    return Server(kind, argv, env, "/predict", "/info")


def route(kind: str, model: str) -> str:
    return f"/v1/models/{model}/predict" if kind == "tandem" else "/predict"


def post(port: int, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def answers(server: Server, kind: str, model: str, setup: dict) -> list:
    """The probabilities the server gives the check bodies: CHECK_ROWS single rows, then the first 100-row body."""
    path = route(kind, model)
    out = [post(server.port, path, body)["probabilities"] for body in setup["checks"][model]]
    with setup["bodies"][(model, 100)].open() as fh:
        out.append(post(server.port, path, json.loads(fh.readline()))["probabilities"])
    return out


def settle(server: Server, timeout_s: float = 180.0) -> None:
    """Wait until the server is idle (under 10% of a CPU over 0.3 s): done with what a load run left behind."""
    deadline = time.monotonic() + timeout_s
    before = server.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = server.cpu_seconds()
        if now - before < 0.03:
            return
        before = now
    say(f"{server.label} still busy after {timeout_s:g} s")


def sweep(kind: str, models: tuple[str, ...], setup: dict, script: Path, *, concurrencies: tuple[int, ...],
          seconds: float, max_seconds: float, replies: dict, info: dict) -> list[dict]:
    server = start(kind, setup)
    rows = []
    try:
        if kind != "tandem":
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/info", timeout=10) as resp:
                info[kind] = json.loads(resp.read())
        for model in models:
            replies.setdefault((kind, model), answers(server, kind, model, setup))
            server.path = route(kind, model)
            wrk(server, setup["bodies"][(model, 1)], 16, 1.0, script)  # warm-up: caches, pools, allocators
            settle(server)
            for size in (1, 100):
                service_s = None
                for c in concurrencies:
                    # a window long enough for c requests in flight to be answered several times over: a request
                    # of 100 images takes the FastAPI server ~0.2 s, so 64 of them ~13 s, longer than `seconds`
                    window = seconds if service_s is None else min(max_seconds, max(seconds, 8 * c * service_s))
                    r = wrk(server, setup["bodies"][(model, size)], c, window, script)
                    settle(server)  # requests wrk left in flight are still being computed: not in the next cell
                    service_s = service_s or 1 / max(r["throughput_rps"], 1e-3)
                    r.update(server="tandem" if kind == "tandem" else kind.replace("_cnn", "").replace("_pipe", ""),
                             model=model, rows_per_request=size, rows_per_s=round(r["throughput_rps"] * size, 1),
                             # Little's law (c / p50 latency): a cross-check of wrk's count for the long requests
                             little_rps=round(c / (r["p50_ms"] / 1e3), 1) if r["p50_ms"] else None)
                    say(f"{model:4s} {kind:15s} rows={size:3d} c={c:2d}: {r['throughput_rps']:8.1f} req/s "
                        f"{r['rows_per_s']:9.0f} rows/s  p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
                        f"cpu {r['cpu_ms_per_request']:8.3f} ms/req  codes {r['codes']}")
                    rows.append(r)
    finally:
        server.stop()
    return rows


# ----------------------------------------------------------------------------------------- report

def agreement(replies: dict) -> dict:
    """Max abs difference of probabilities between tandem and each FastAPI server on the same bodies."""
    import numpy as np

    out = {}
    for (kind, model), got in replies.items():
        if kind == "tandem" or ("tandem", model) not in replies:
            continue
        ref = replies[("tandem", model)]
        diff = max(float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())
                   for a, b in zip(ref, got, strict=True))
        out[f"{model}_tandem_vs_{kind}"] = {"max_abs_diff": diff, "bodies": len(ref), "le_1e-5": diff <= PARITY}
    return out


def pick(rows: list[dict], server: str, model: str, size: int, c: int) -> dict | None:
    return next((r for r in rows if r["server"] == server and r["model"] == model
                 and r["rows_per_request"] == size and r["concurrency"] == c), None)


def ratios(rows: list[dict], concurrencies: tuple[int, ...]) -> dict:
    out: dict = {}
    for r in rows:
        if r["server"] == "tandem":
            continue
        t = pick(rows, "tandem", r["model"], r["rows_per_request"], r["concurrency"])
        if t and r["throughput_rps"]:
            key = f"{r['model']}_vs_{r['server']}"
            out.setdefault(key, {}).setdefault(f"rows_{r['rows_per_request']}", {})[f"c{r['concurrency']}"] = round(
                t["throughput_rps"] / r["throughput_rps"], 2)
    return out


def targets(rows: list[dict]) -> dict:
    """tandem >= 3x FastAPI (default torch threads) at c=64, per model and body size."""
    out = {}
    for model in ("cnn", "pipe"):
        for size in (1, 100):
            t, f = pick(rows, "tandem", model, size, 64), pick(rows, "fastapi", model, size, 64)
            ratio = round(t["throughput_rps"] / f["throughput_rps"], 2) if t and f and f["throughput_rps"] else None
            out[f"{model}_rows_{size}"] = {"ratio_c64": ratio, "met": ratio is not None and ratio >= 3}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measured run")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="longest run (runs of slow requests at c=16, 64 last 8 x c x their c=1 time a request)")
    parser.add_argument("--repeats", type=int, default=1, help="measure each point this many times (medians)")
    parser.add_argument("--cnn-threads-2", action="store_true",
                        help="also run the FastAPI CNN server with torch.set_num_threads(2) on its one CPU")
    parser.add_argument("--quick", action="store_true", help="2-second runs; writes no results file")
    args = parser.parse_args(argv)
    require_load_tools("bench/import.py")
    seconds = 2.0 if args.quick else args.seconds
    max_seconds = 10.0 if args.quick else args.max_seconds
    concurrencies = (1, 16, 64)
    head, src_start = git_head(), src_fingerprint()
    began = time.monotonic()
    replies: dict = {}
    info: dict = {}
    with tempfile.TemporaryDirectory(prefix="tandem-bench-import-") as tmp:
        work = Path(tmp)
        script = work / "load.lua"
        script.write_text(WRK_SCRIPT)
        setup = prepare(work)
        rows: list[dict] = []
        kinds = [("tandem", ("cnn", "pipe")), ("fastapi_cnn", ("cnn",)), ("fastapi_pipe", ("pipe",))]
        if args.cnn_threads_2:
            kinds.append(("fastapi_cnn_2t", ("cnn",)))
        for _ in range(max(args.repeats, 1)):
            for kind, models in kinds:
                rows += sweep(kind, models, setup, script, concurrencies=concurrencies, seconds=seconds,
                              max_seconds=max_seconds, replies=replies, info=info)
        rows = medians(rows)
    agree = agreement(replies)
    payload = {
        "bench": "import", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(PACKAGES),
        "quick": args.quick,
        "source": {"git_head": head, "src_sha256_start": src_start,
                   "src_changed_during_run": src_fingerprint() != src_start},
        "settings": {"seconds_per_run": seconds, "max_seconds_per_run": max_seconds, "repeats": args.repeats,
                     "load_generator": "wrk -t1", "pinning": "server CPU 0, wrk CPU 1",
                     "distinct_bodies": {f"{m}_{s}": n for (m, s), n in DISTINCT.items()},
                     "tandem": "tandem serve cnn pipe (1 worker, --max-batch-rows 64 default)",
                     "fastapi_servers": info, "fit_rows": FIT_ROWS, "wall_s": round(time.monotonic() - began, 1)},
        "checks": {"tandem_ge_3x_fastapi_c64": targets(rows), "answers_agree": agree,
                   "answers_agree_le_1e-5": bool(agree) and all(v["le_1e-5"] for v in agree.values()),
                   "throughput_ratio_tandem_over": ratios(rows, concurrencies)},
        "runs": rows,
    }
    if not args.quick:
        write_atomic(RESULTS, payload)
    say(json.dumps(payload["checks"], indent=1))
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())
