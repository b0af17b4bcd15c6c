"""The study's fold fits as Ray tasks (``tandem train --cluster``), for a study that outgrows one machine.

``--cluster local`` starts Ray on this machine; ``auto`` joins the cluster this machine belongs to (``ray
start``, or ``$RAY_ADDRESS``); ``HOST:PORT`` or ``ray://HOST:PORT`` joins that one. The study itself runs as
it does locally (the portfolio, the time plan, bagging, the ensemble, the refit, the bundle) and only the fits
of a configuration's folds leave this process: each is a Ray task with its resources declared (one CPU, a GPU
for the neural families when the cluster has GPUs, memory for its rows), all folds of a configuration run at
once, and each gets the deadline the local study would give (sent as wall-clock time: the nodes' monotonic
clocks differ). Every view of the training rows and the target go to Ray's object store once. A task sends
back the learner's native files (the same safe formats as a bundle's), its out-of-fold predictions and the node
it ran on; nothing of a learner is pickled. Ray is an extra (``pip install 'tandem[cluster]'``), imported only
here.
"""

from __future__ import annotations

import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tandem.errors import ConfigError
from tandem.learners import learner_class
from tandem.learners.base import DEVICE_FAMILIES


@dataclass
class FoldFit:
    """One fold's fit, back from a task: the learner (loaded from its native files) and its predictions."""

    learner: object
    predictions: np.ndarray
    node: str


@dataclass
class RayCluster:
    """A connection to a Ray cluster, the study's arrays in its object store, and what ran where."""

    address: str
    refs: dict = field(default_factory=dict)
    nodes: set = field(default_factory=set)
    tasks: int = 0
    gpus: float = 0.0

    @classmethod
    def connect(cls, address: str) -> RayCluster:
        """Join (or, for ``local``, start) the cluster; a ConfigError when Ray is missing or the cluster is not
        there."""
        try:
            import ray
        except ImportError:
            raise ConfigError("--cluster needs Ray: pip install 'tandem[cluster]'") from None
        target = None if address == "local" else address
        if target not in (None, "auto"):  # Ray retries an absent cluster for minutes: look first
            _check_reachable(target)
        try:
            ray.init(address=target, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            reason = " ".join(str(exc).split())[:300]
            raise ConfigError(f"--cluster {address}: cannot join the Ray cluster ({reason})") from None
        return cls(address, gpus=float(ray.cluster_resources().get("GPU", 0.0)))

    def share(self, views: object, names: list[str], y: np.ndarray) -> None:
        """Put each view the portfolio reads, and the target, in the object store once."""
        import ray

        for name in names:
            if name not in self.refs:
                self.refs[name] = ray.put(np.ascontiguousarray(views[name]))
        if "__y" not in self.refs:
            self.refs["__y"] = ray.put(np.ascontiguousarray(y))

    def fit_folds(self, cfg: dict, view: str, folds: list[tuple[np.ndarray, np.ndarray]], seeds: list[int],
                  task: str, n_classes: int, categorical: list[int] | None, budget_s: float,
                  rows_bytes: int) -> list[FoldFit]:
        """Fit ``cfg`` on every fold at once, one Ray task each; the fits in fold order."""
        import ray

        gpu = 1.0 if cfg["family"] in DEVICE_FAMILIES and self.gpus >= 1 else 0.0
        remote = ray.remote(_fit_fold).options(num_cpus=1, num_gpus=gpu, memory=max(3 * rows_bytes, 64 << 20),
                                               scheduling_strategy="SPREAD", max_retries=0)
        wall_deadline = time.time() + budget_s
        pending = [remote.remote(cfg["family"], cfg["params"], task, n_classes, seed, categorical, self.refs[view],
                                 self.refs["__y"], tr, va, wall_deadline)
                   for (tr, va), seed in zip(folds, seeds, strict=True)]
        cls = learner_class(cfg["family"])
        out = []
        for answer in ray.get(pending):
            with tempfile.TemporaryDirectory(prefix="tandem-fold-") as tmp:
                for name, data in answer["files"].items():
                    path = Path(tmp) / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                learner = cls.load(Path(tmp), task=task, n_classes=n_classes)
            learner.params = {**cfg["params"], **learner.params}
            learner.seed, learner.categorical = answer["seed"], list(categorical or [])
            learner.restore_fit_state(answer["state"])
            self.nodes.add(answer["node"])
            self.tasks += 1
            out.append(FoldFit(learner, answer["predictions"], answer["node"]))
        return out

    def describe(self) -> dict:
        """What the manifest records: the address, the nodes that ran tasks, how many tasks."""
        return {"address": self.address, "nodes": sorted(self.nodes), "tasks": self.tasks}


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A ConfigError unless something listens at ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--cluster {address}: expected local, auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"--cluster {address}: cannot join the Ray cluster (nothing answers there: "
                          f"{exc.strerror or exc})") from None


def _fit_fold(family: str, params: dict, task: str, n_classes: int, seed: int, categorical: list[int] | None,
              X: np.ndarray, y: np.ndarray, tr: np.ndarray, va: np.ndarray, wall_deadline: float) -> dict:
    """A Ray task: fit one fold on whichever node runs it; send back native files, predictions, the node."""
    import ray

    cls = learner_class(family)
    learner = cls(params, task=task, n_classes=n_classes, seed=seed, categorical=categorical)
    deadline = time.monotonic() + (wall_deadline - time.time())  # this node's clock
    learner.fit(X[tr], y[tr], X[va], y[va], deadline=deadline)
    predictions = learner.predict(X[va])
    with tempfile.TemporaryDirectory(prefix="tandem-fold-") as tmp:
        learner.save(Path(tmp))
        files = {f.relative_to(tmp).as_posix(): f.read_bytes() for f in Path(tmp).rglob("*") if f.is_file()}
    return {"files": files, "predictions": predictions, "state": learner.fit_state(), "seed": seed,
            "node": ray.get_runtime_context().get_node_id()}
