"""Training a neural learner on several devices: its own ``_fit`` under torchrun, one process per device.

``tandem train --devices N`` sets ``params["devices"]`` on the neural families (:data:`DEVICE_FAMILIES`);
:meth:`Learner.fit` then hands the fit here. The training rows go to a private temp folder (an ``.npz``, the
learner's configuration as JSON), ``torch.distributed.run --standalone`` starts N workers
(:mod:`tandem.learners.ddp_worker`), each trains the same learner under DistributedDataParallel (NCCL on GPUs,
one device each; gloo on CPU) on its share of every batch, and rank 0 writes the learner's native files, which
this process loads back. Nothing is pickled: arrays, JSON and safetensors.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tandem.errors import TandemError

OVERHEAD_S = 120.0  # starting the workers (torch's import, the rendezvous) on top of the fit's own deadline


class DistributedTrainingError(TandemError):
    """The torchrun workers failed; the message carries the end of what they said."""


def workers_error(output: str) -> str:
    """What the workers said of their failure, in one line: the lines that name an error (a Python exception, a
    C++ ``terminate``/``what()``) before torchrun's own summary, else the last three lines."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    summary = next((i for i, line in enumerate(lines) if "ChildFailedError" in line or set(line) == {"="}), len(lines))
    named = [line for line in lines[:summary] if re.search(r"Error|terminate called|what\(\)|Abort|Killed", line)]
    return " | ".join(named[-3:] or lines[-3:])[-600:]


def fit_on_devices(learner: object, devices: int, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None,
                   y_val: np.ndarray | None, deadline: float | None) -> None:
    """Fit ``learner`` under torchrun on ``devices`` processes and load the result into it."""
    with tempfile.TemporaryDirectory(prefix="tandem-ddp-") as tmp:
        folder = Path(tmp)
        arrays = {"X": X, "y": y}
        if X_val is not None:
            arrays.update(X_val=X_val, y_val=y_val)
        np.savez(folder / "data.npz", **arrays)
        (folder / "spec.json").write_text(json.dumps({
            "family": learner.family, "params": learner.params, "task": learner.task,
            "n_classes": learner.n_classes, "seed": learner.seed, "categorical": learner.categorical,
            "deadline": deadline}))
        threads = max(1, (os.cpu_count() or 1) // devices)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0) + OVERHEAD_S
        try:
            proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                   f"--nproc_per_node={devices}", "-m", "tandem.learners.ddp_worker", str(folder)],
                                  capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DistributedTrainingError(f"training {learner.family} on {devices} devices did not finish in "
                                           f"{timeout:.0f} s") from None
        out = folder / "out"
        if proc.returncode != 0 or not (out / "fit.json").exists():
            raise DistributedTrainingError(f"training {learner.family} on {devices} devices failed "
                                           f"(exit {proc.returncode}): {workers_error(proc.stderr or proc.stdout)}")
        learner._load(out)
        learner.restore_fit_state(json.loads((out / "fit.json").read_text()))
