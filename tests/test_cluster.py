"""The study on a real Ray cluster of two nodes (a head and a worker, each started by ``ray start`` as its own
processes, one CPU each): the folds' fits run as tasks on both nodes, and the bundle is the one a local study
writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import free_port, mixed_frame

import tandem

LINEAR = [{"name": "linear", "family": "linear", "params": {"C": 1.0}}]


def _ray() -> list[str]:
    beside = Path(sys.executable).parent / "ray"
    return [str(beside)] if beside.exists() else [shutil.which("ray") or "ray"]


@pytest.fixture(scope="module")
def ray_address():
    if not os.environ.get("CI"):  # (CI installs the extra: there a missing Ray fails)
        pytest.importorskip("ray")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    common = ["--num-cpus=1", "--disable-usage-stats"]

    def start(*args: str) -> None:
        proc = subprocess.run([*_ray(), "start", *args, *common], capture_output=True, text=True, env=env,
                              timeout=180)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    try:
        start("--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}")
        start(f"--address=127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([*_ray(), "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _train(tmp_path: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tandem.cli", "train", str(tmp_path / "train.parquet"), "--target",
                           "churn", "--configs", str(tmp_path / "configs.json"), "--bagging", "yes", "--time-limit",
                           "120", "--name", name, "--no-footprint", *extra], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, TANDEM_HOME=str(tmp_path / "home")))


def test_a_study_on_a_two_node_ray_cluster_runs_on_both_and_writes_the_local_bundle(ray_address, tmp_path):
    mixed_frame(500, seed=0).to_parquet(tmp_path / "train.parquet")
    (tmp_path / "configs.json").write_text(json.dumps(LINEAR))
    remote = _train(tmp_path, "remote", "--cluster", ray_address)
    assert remote.returncode == 0, remote.stderr[-3000:]
    local = _train(tmp_path, "local")
    assert local.returncode == 0, local.stderr[-3000:]
    models = {n: tandem.load(n, home=tmp_path / "home") for n in ("remote", "local")}  # hashes verified
    cluster = models["remote"].manifest["cluster"]
    assert cluster["tasks"] == 5 and len(cluster["nodes"]) == 2, cluster  # 5 folds, spread over both nodes
    assert models["local"].manifest["cluster"] is None
    x = mixed_frame(80, seed=4).drop(columns=["churn"])
    np.testing.assert_allclose(models["remote"].predict_proba(x), models["local"].predict_proba(x), atol=1e-9)
    oof = {n: m.manifest["metrics"]["validation"] for n, m in models.items()}
    assert oof["remote"] == pytest.approx(oof["local"])  # the same folds' fits, wherever they ran


def test_a_cluster_that_is_not_there_is_a_one_line_error(tmp_path):
    mixed_frame(100, seed=0).to_parquet(tmp_path / "train.parquet")
    (tmp_path / "configs.json").write_text(json.dumps(LINEAR))
    proc = _train(tmp_path, "nowhere", "--cluster", f"127.0.0.1:{free_port()}")
    assert proc.returncode != 0 and "cannot join the Ray cluster" in proc.stderr and "Traceback" not in proc.stderr


def test_a_study_without_a_cluster_never_imports_ray(tmp_path):
    code = ("import sys, tandem\nfrom tests.helpers import mixed_frame\n"
            "tandem.train(mixed_frame(120, seed=0), 'churn', time_limit=3, home=sys.argv[1], families=['linear'], "
            "footprint=False)\nprint('ray' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False"
