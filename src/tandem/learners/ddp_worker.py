"""One torchrun worker of a multi-device fit (see tandem.learners.distributed): ``python -m
tandem.learners.ddp_worker FOLDER`` under ``torch.distributed.run``. It trains the learner described in
FOLDER on the rows there; rank 0 writes the learner's native files to FOLDER/out."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from tandem.learners import learner_class


def main(folder: Path) -> None:
    torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        spec = json.loads((folder / "spec.json").read_text())
        with np.load(folder / "data.npz") as data:
            X, y = data["X"], data["y"]
            X_val, y_val = (data["X_val"], data["y_val"]) if "X_val" in data else (None, None)
        learner = learner_class(spec["family"])(spec["params"], task=spec["task"], n_classes=spec["n_classes"],
                                                seed=spec["seed"], categorical=spec["categorical"])
        learner._fit(X, y, X_val, y_val, spec["deadline"])
        if torch.distributed.get_rank() == 0:
            out = folder / "out"
            out.mkdir(exist_ok=True)
            learner.save(out)
            (out / "fit.json").write_text(json.dumps(learner.fit_state()))
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # Done and written: leave without C++ static destructors. A worker died in CI with SIGABRT and "terminate called
    # without an active exception" (a std::thread left joinable, as at interpreter exit) only within the whole
    # suite, never alone; this rules out the exit path. A failure before this line still raises and fails the run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
