"""Benchmark: ``tandem serve`` beside hostile clients, and what the HTTP layer's limits cost.

1. **Cost of the limits**: the server's CPU per one-row prediction at concurrency 64 with tandem's HTTP
   protocol as it is now, against the protocol at a base git revision (``--base``, default ``7df8499``,
   before the limits), the same app and model around each: both run through uvicorn with
   ``tandem.serve.app:create_app`` and only ``http=`` differs. The two are alternated ``--repeats`` times
   (fresh servers each time); the figure is the ratio of the medians. The liveness route (the HTTP layer
   and routing without a model) is measured the same way.
2. **Slow clients**: one-row predictions from ``wrk`` at concurrency 16 for ``--seconds`` (60) alone,
   then for as long again beside 200 slow clients (100 that send their headers a byte a second, 100 that
   send whole headers and then a body a byte a second; each reconnects as soon as it is cut). Checked: the
   normal traffic's p99 against the run without them (goal: within 2x), every slow client cut by a 408 within
   a second of its limit (header timeout 10 s, body timeout 30 s: the defaults), no EMFILE and no
   traceback in the server's output.

The server is pinned to CPU 0; wrk and the slow clients to CPU 1. Tree model: LightGBM-default sized on
Adult (as bench/serve.py). Needs ``wrk`` and ``taskset``.

    .venv/bin/python bench/hostile.py            # ~6 minutes; writes bench/results/hostile.json
    .venv/bin/python bench/hostile.py --quick    # smoke test, writes no results file

The last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, ROOT, git_head, load_dataset, machine, src_fingerprint, write_atomic
from serve import DISTINCT_BODIES, LGBM_DEFAULTS, WRK_SCRIPT, Server, wrk

RESULTS = HERE / "results" / "hostile.json"
PACKAGES = ("uvicorn", "uvloop", "httptools", "onnxruntime")
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
RUN_SERVER = ("import uvicorn, sys; uvicorn.run('tandem.serve.app:create_app', factory=True, host='127.0.0.1', "
              "port=int(sys.argv[1]), http=sys.argv[2], log_level='warning', access_log=False)")


def say(message: str) -> None:
    print(f"[hostile] {message}", file=sys.stderr, flush=True)


def prepare(work: Path, quick: bool) -> dict:
    import tandem

    train, test = load_dataset("adult")
    home = work / "home"
    say("training the tree bundle")
    tandem.train(train, "income", time_limit=10 if quick else 30, name="tree", home=home, configs=[LGBM_DEFAULTS],
                 bagging="no", seed=0)
    features = [c for c in train.columns if c != "income"]
    rows = test[features].head(DISTINCT_BODIES)
    records = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")
    bodies = work / "bodies_1.jsonl"
    bodies.write_text("".join(json.dumps({"instances": [r]}) + "\n" for r in records))
    return {"home": home, "bodies": bodies}


def start(setup: dict, protocol: str, path: str, pythonpath: str = "") -> Server:
    """A server of the tree model through uvicorn and ``create_app``, with the HTTP protocol ``protocol``."""
    from tandem.serve.config import ServeConfig

    env = {"TANDEM_HOME": str(setup["home"]), **ServeConfig(models=("tree",), footprint=False).to_env(),
           "PYTHONPATH": os.pathsep.join(p for p in (pythonpath, str(ROOT / "src")) if p)}
    return Server(protocol, [sys.executable, "-c", RUN_SERVER, "{port}", protocol], env, path, "/v2/health/ready")


def cost_of_limits(setup: dict, script: Path, base: str, repeats: int, seconds: float, work: Path) -> dict:
    """CPU per request, protocol now vs at ``base``, alternated; medians and their ratio."""
    old = subprocess.run(["git", "show", f"{base}:src/tandem/serve/http.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    before_dir = work / "before"
    before_dir.mkdir()
    (before_dir / "tandem_http_before.py").write_text(old)
    protocols = {"now": ("tandem.serve.http:TandemHTTP", ""),
                 "before": ("tandem_http_before:TandemHTTP", str(before_dir))}
    out: dict = {}
    for route, path in (("predict", "/v1/models/tree/predict"), ("live", "/v2/health/live")):
        samples: dict[str, list[dict]] = {"now": [], "before": []}
        for i in range(repeats):
            for name in (("before", "now") if i % 2 else ("now", "before")):
                protocol, pythonpath = protocols[name]
                server = start(setup, protocol, path, pythonpath)
                try:
                    wrk(server, setup["bodies"], 16, 1.0, script)  # warm-up
                    r = wrk(server, setup["bodies"], 64, seconds, script)
                finally:
                    server.stop()
                samples[name].append(r)
                say(f"{route:7s} {name:6s} c=64: {r['throughput_rps']:8.0f} req/s  cpu "
                    f"{r['cpu_ms_per_request']:.4f} ms/req  p99 {r['p99_ms']:.2f} ms  codes {r['codes']}")
        med = {k: statistics.median(r["cpu_ms_per_request"] for r in v) for k, v in samples.items()}
        out[route] = {"cpu_ms_per_request_now": med["now"], "cpu_ms_per_request_before": med["before"],
                      "ratio_now_over_before": round(med["now"] / med["before"], 4),
                      "throughput_rps_now": statistics.median(r["throughput_rps"] for r in samples["now"]),
                      "throughput_rps_before": statistics.median(r["throughput_rps"] for r in samples["before"]),
                      "runs": samples}
    return out


SLOW_CLIENTS = r'''
import json, selectors, socket, sys, time

# one thread, non-blocking sockets, one byte to each a second: the attackers cost the load generator's core
# next to nothing
port, seconds, n_head, n_body = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
HEAD = b"POST /v1/models/tree/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
sel = selectors.DefaultSelector()
cuts = {"headers": [], "body": []}
status = {}
connect_errors = 0
end = time.monotonic() + seconds

def connect(kind):
    global connect_errors
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        connect_errors += 1
        return
    first = HEAD + b"Content-Length: 1000\r\n\r\n" if kind == "body" else HEAD.split(b"\r\n")[0] + b"\r\n"
    s.sendall(first)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, [kind, time.monotonic(), b""])

def finish(key, code):
    kind, began, _ = key.data
    status[code] = status.get(code, 0) + 1
    if code == "408":
        cuts[kind].append(time.monotonic() - began)
    sel.unregister(key.fileobj)
    key.fileobj.close()

for i in range(n_head + n_body):
    connect("headers" if i < n_head else "body")
next_drip = time.monotonic() + 1
while time.monotonic() < end:
    for key, _ in sel.select(timeout=max(0.0, min(next_drip, end) - time.monotonic())):
        try:
            chunk = key.fileobj.recv(4096)
        except OSError:
            chunk = b""
        key.data[2] += chunk
        if not chunk:
            answer = key.data[2]
            kind = key.data[0]
            finish(key, answer[9:12].decode() if answer.startswith(b"HTTP/1.1 ") else "closed")
            connect(kind)  # a slow client comes straight back
    if time.monotonic() >= next_drip:
        next_drip += 1
        for key in list(sel.get_map().values()):
            try:
                key.fileobj.send(b"a" if key.data[0] == "headers" else b" ")
            except OSError:
                pass
for key in list(sel.get_map().values()):
    finish(key, "run over")
print(json.dumps({"cuts": cuts, "status": status, "connect_errors": connect_errors}))
'''


def slow_clients(setup: dict, script: Path, seconds: float, n_head: int, n_body: int, work: Path) -> dict:
    """Normal traffic alone, then beside slow clients, on a fresh server each (tandem serve as it ships)."""
    clients = work / "slow_clients.py"
    clients.write_text(SLOW_CLIENTS)
    runs = {}
    for label, slow in (("alone", False), ("beside_slow_clients", True)):
        argv = [sys.executable, "-m", "tandem.cli", "serve", "tree", "--port", "{port}", "--no-footprint"]
        server = Server(label, argv, {"TANDEM_HOME": str(setup["home"])}, "/v1/models/tree/predict",
                        "/v2/health/ready")
        try:
            wrk(server, setup["bodies"], 16, 1.0, script)
            attackers = None
            if slow:
                attackers = subprocess.Popen(["taskset", "-c", "1", sys.executable, str(clients), str(server.port),
                                              str(seconds + 2), str(n_head), str(n_body)], stdout=subprocess.PIPE,
                                             text=True)
                time.sleep(2)  # every slow client connected and dripping before the measured run
            r = wrk(server, setup["bodies"], 16, seconds, script)
            if attackers is not None:
                r["slow_clients"] = json.loads(attackers.communicate(timeout=seconds + 60)[0])
        finally:
            server.stop()
            r_err = server.proc.stderr.read().decode(errors="replace")
        r["server_stderr_has_emfile"] = "Too many open files" in r_err or "EMFILE" in r_err
        r["server_stderr_has_traceback"] = "Traceback" in r_err
        runs[label] = r
        say(f"{label:20s}: {r['throughput_rps']:8.0f} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
            f"codes {r['codes']}")
    slow = runs["beside_slow_clients"]["slow_clients"]
    cuts = {kind: {"n": len(v), "min_s": round(min(v), 2) if v else None, "max_s": round(max(v), 2) if v else None,
                   "median_s": round(statistics.median(v), 2) if v else None} for kind, v in slow["cuts"].items()}
    ratio = runs["beside_slow_clients"]["p99_ms"] / max(runs["alone"]["p99_ms"], 1e-9)
    in_time = all(
        c["n"] and limit <= c["min_s"] and c["max_s"] <= limit + 1.5
        for c, limit in ((cuts["headers"], HEADER_TIMEOUT_S), (cuts["body"], BODY_TIMEOUT_S)))
    return {"runs": runs, "cuts": cuts, "slow_client_answers": slow["status"],
            "p99_ratio_beside_over_alone": round(ratio, 3),
            "checks": {"p99_within_2x": ratio <= 2.0, "slow_clients_cut_in_time": bool(in_time),
                       "no_emfile": not any(r["server_stderr_has_emfile"] for r in runs.values()),
                       "no_traceback": not any(r["server_stderr_has_traceback"] for r in runs.values()),
                       "normal_answers_all_200": all(set(r["codes"]) == {"200"} for r in runs.values())}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each slow-client run")
    parser.add_argument("--cost-seconds", type=float, default=5.0, help="length of each cost run")
    parser.add_argument("--repeats", type=int, default=5, help="cost runs of each protocol")
    parser.add_argument("--base", default="7df8499", help="git revision of the protocol to compare with")
    parser.add_argument("--quick", action="store_true", help="short runs; writes no results file")
    parser.add_argument("--only", choices=("cost", "slow"), help="run one part (writes no results file)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        raise SystemExit("bench/hostile.py needs wrk and taskset: apt-get install wrk util-linux")
    head, src_start = git_head(), src_fingerprint()
    with tempfile.TemporaryDirectory(prefix="tandem-bench-hostile-") as tmp:
        work = Path(tmp)
        script = work / "load.lua"
        script.write_text(WRK_SCRIPT)
        setup = prepare(work, args.quick)
        cost = None if args.only == "slow" else cost_of_limits(
            setup, script, args.base, 1 if args.quick else args.repeats, 2.0 if args.quick else args.cost_seconds, work)
        hostile = None if args.only == "cost" else slow_clients(setup, script, 35.0 if args.quick else args.seconds,
                                                                 100, 100, work)
    payload = {"bench": "hostile", "machine": machine(PACKAGES), "quick": args.quick,
               "source": {"git_head": head, "src_sha256_start": src_start,
                          "src_changed_during_run": src_fingerprint() != src_start},
               "settings": {"base": args.base, "repeats": args.repeats, "cost_seconds": args.cost_seconds,
                            "slow_seconds": args.seconds, "pinning": "server CPU 0; wrk and slow clients CPU 1"},
               "cost": cost, "slow_clients": hostile,
               "checks": {**({"cpu_per_request_within_5pct": cost["predict"]["ratio_now_over_before"] <= 1.05}
                             if cost else {}), **(hostile["checks"] if hostile else {})}}
    if not args.quick and not args.only:
        write_atomic(RESULTS, payload)
    say(json.dumps(payload["checks"]))
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())
