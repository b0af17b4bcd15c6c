"""Synthetic tables for tests: every column kind, missing values, a learnable target."""

from __future__ import annotations

import numpy as np
import pandas as pd


def mixed_frame(n: int = 600, *, task: str = "binary", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, n).round(1)
    income = rng.lognormal(10, 0.5, n)
    income[rng.random(n) < 0.1] = np.nan
    city = rng.choice(["paris", "lyon", "nice", "lille", "brest"], n, p=[0.4, 0.25, 0.15, 0.1, 0.1]).astype(object)
    city[rng.random(n) < 0.05] = None
    member = rng.random(n) < 0.3
    signup = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 1000, n), unit="D")
    score = 0.05 * (age - 40) + np.nan_to_num(np.log(income) - 10) + np.where(city == "paris", 1.0, -0.3) + member
    score = score + rng.normal(0, 0.5, n)
    frame = pd.DataFrame({
        "customer_id": np.arange(1000, 1000 + n),
        "age": age,
        "income": income,
        "city": city,
        "member": member,
        "signup": signup.strftime("%Y-%m-%d"),
    })
    if task == "binary":
        frame["churn"] = np.where(score > 0.3, "yes", "no")
    elif task == "multiclass":
        frame["churn"] = np.select([score < -0.3, score < 0.8], ["low", "mid"], "high")
    else:
        frame["churn"] = score * 10 + 50
    return frame


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records(x: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts (missing values as None)."""
    return x.astype(object).where(x.notna(), None).to_dict(orient="records")


def start_server(home, port: int, *args: str, ref: str = "churn", env: dict | None = None,
                 stdout: int | None = None):
    """Run `tandem serve REF` on loopback and wait until /v2/health/ready answers 200."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "tandem.cli", "serve", ref, "--port", str(port), *args],
                            env=dict(os.environ, TANDEM_HOME=str(home), **(env or {})),
                            stdout=subprocess.PIPE if stdout is None else stdout, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("server exited: " + proc.stderr.read().decode())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start: " + proc.stderr.read().decode())


def stop_server(proc, timeout: float = 10) -> None:
    """Stop a server started by ``start_server``: SIGTERM (it drains what is in flight), SIGKILL if it hangs."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def linear_churn(home, rows: int = 300):
    """(frame, train): ``train()`` adds the next version of a quick linear 'churn' model to ``home``."""
    import tandem

    frame = mixed_frame(rows, task="binary", seed=0)
    return frame, lambda: tandem.train(frame, "churn", time_limit=2, name="churn", home=home, families=["linear"])


def post(port: int, path: str, body: dict | bytes, ctype: str = "application/json",
         timeout: float = 20) -> tuple[int, dict]:
    """POST ``body`` (a dict is sent as JSON) to the local server; (status, the JSON answer), errors included."""
    import json
    import urllib.error
    import urllib.request

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers={"content-type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def tree_count(graph: bytes) -> int:
    """How many trees an ONNX graph's TreeEnsemble nodes hold (one root each)."""
    import onnx

    model = onnx.load_from_string(graph)
    return sum(len(next(a for a in n.attribute if a.name == "tree_roots").ints)
               for n in model.graph.node if n.op_type == "TreeEnsemble")
