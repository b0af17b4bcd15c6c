"""``tandem train --devices N``: the neural learners under torchrun DDP without a script of the user's (gloo on
CPU here; NCCL on GPUs when a machine has them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file
from tests.helpers import mixed_frame

import tandem

MLP = [{"name": "mlp", "family": "mlp", "params": {"hidden": [32], "dropout": 0.0, "lr": 0.003, "batch_size": 64,
                                                   "epochs": 6, "patience": 100}}]


def _train(tmp_path, name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tandem.cli", "train", str(tmp_path / "train.parquet"), "--target",
                           "churn", "--configs", str(tmp_path / "mlp.json"), "--bagging", "no", "--time-limit", "150",
                           "--name", name, "--no-footprint", *extra], capture_output=True, text=True, timeout=400,
                          env=dict(os.environ, TANDEM_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1"))


def test_two_cpu_processes_train_the_same_mlp_as_one_from_the_cli(tmp_path):
    mixed_frame(400, seed=0).to_parquet(tmp_path / "train.parquet")
    (tmp_path / "mlp.json").write_text(json.dumps(MLP))
    one = _train(tmp_path, "one")
    assert one.returncode == 0, one.stderr
    two = _train(tmp_path, "two", "--devices", "2")
    assert two.returncode == 0, two.stderr
    models = {n: tandem.load(n, home=tmp_path / "home") for n in ("one", "two")}
    assert models["two"].leaderboard()[0]["family"] == "mlp"
    weights = {n: load_file(str(m.path / "native" / "mlp" / "mlp.safetensors")) for n, m in models.items()}
    assert weights["one"].keys() == weights["two"].keys()
    for k in weights["one"]:  # the same batches, split over two processes: the same model (to float rounding)
        torch.testing.assert_close(weights["two"][k], weights["one"][k], atol=1e-5, rtol=1e-4)
    frame = mixed_frame(50, seed=3).drop(columns=["churn"])
    assert (models["one"].predict(frame) == models["two"].predict(frame)).all()


def test_devices_must_be_a_positive_count(tmp_path):
    mixed_frame(50, seed=0).to_parquet(tmp_path / "train.parquet")
    (tmp_path / "mlp.json").write_text(json.dumps(MLP))
    proc = _train(tmp_path, "zero", "--devices", "0")
    assert proc.returncode != 0 and "--devices" in proc.stderr and "Traceback" not in proc.stderr
