"""Shared helpers for the CLI and bad-input tests: generated data, a real ``tandem`` subprocess, file snapshots."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# -- two at a time where that is safe ------------------------------------------------------------------------------
#: Files whose tests may run beside another file's: servers, registries, readers, refusals, imports. Their checks
#: hold on a shared CPU (answers, errors, exact sums, generous deadlines). The test command runs them first on two
#: pytest-xdist workers (``-m shared``), then every other test one by one: a study's accuracy at a time limit, a
#: fit's deadline, a latency or a timeout measured to the second needs the whole machine. A test in one of these
#: files can still ask to run with the others, alone, with ``@pytest.mark.solo``.
SHARED_FILES = frozenset({
    "test_serve.py", "test_serve_app_hardening.py", "test_serve_fuzz.py", "test_serve_http.py",
    "test_serve_routes.py", "test_registry.py", "test_registry_hygiene.py", "test_cli.py", "test_cli_hardening.py",
    "test_bad_inputs.py", "test_signing.py", "test_import.py", "test_import_formats.py", "test_import_frameworks.py",
    "test_foreign_tensorflow.py", "test_foreign_boosters.py", "test_installs.py", "test_layering.py",
    "test_readers_limits.py", "test_data_readers.py", "test_bundle_integrity.py", "test_batching.py",
    "test_deploy.py", "test_drift.py", "test_mlflow.py", "test_tensor_columns.py", "test_quality.py",
    "test_explain.py", "test_fairness.py"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``shared`` the tests of SHARED_FILES that do not ask to run alone (``solo``)."""
    for item in items:
        if item.path.name in SHARED_FILES and item.get_closest_marker("solo") is None:
            item.add_marker(pytest.mark.shared)


FEATURES = ["x1", "x2", "color"]
TARGETS = {"binary": "income", "multiclass": "tier", "regression": "price"}


def _make_frame(n: int = 300, *, seed: int = 0, task: str = "binary", target: bool = True) -> pd.DataFrame:
    """Two numeric columns, one categorical column and a learnable target (yes/no, low/mid/high or a float)."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n).round(4)
    x2 = rng.normal(size=n).round(4)
    color = rng.choice(["red", "green", "blue"], n)
    score = x1 + 0.5 * x2 + (color == "red") + rng.normal(scale=0.4, size=n)
    df = pd.DataFrame({"x1": x1, "x2": x2, "color": color})
    if target:
        if task == "binary":
            df["income"] = np.where(score > 0.3, "yes", "no")
        elif task == "multiclass":
            df["tier"] = np.select([score < -0.2, score < 0.9], ["low", "mid"], "high")
        else:
            df["price"] = (10 + 3 * x1 - 2 * x2 + 4 * (color == "red") + rng.normal(scale=0.3, size=n)).round(3)
    return df


def _run_cli(args: list[str], *, home: Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m tandem.cli ARGS`` as a user would, with TANDEM_HOME=home."""
    env = dict(os.environ, TANDEM_HOME=str(home), COLUMNS="160", NO_COLOR="1", PYTHONWARNINGS="ignore")
    env.pop("FORCE_COLOR", None)
    return subprocess.run([sys.executable, "-m", "tandem.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (hidden temp files included)."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def make_frame() -> Callable[..., pd.DataFrame]:
    return _make_frame


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    return _run_cli


@pytest.fixture(scope="session")
def snapshot() -> Callable[[Path], dict[str, str]]:
    return _snapshot


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A registry home of the test module's own (module-scoped: a module trains its models once)."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A churn table (numbers, categories, a boolean, a date): 1,000 training rows and 600 held out."""
    from helpers import mixed_frame

    frame = mixed_frame(1600, task="binary", seed=4)
    return frame.iloc[:1000], frame.iloc[1000:]
