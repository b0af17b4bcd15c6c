"""Helpers shared by the benchmarks: the datasets, the machine, the code a run measured, atomic output."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = (ROOT / ".." / "shared" / "data").resolve()

ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
                 "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
                 "native-country", "income"]

def load_dataset(name: str):
    """(train frame, test frame) with the target column, strings as plain str columns."""
    import pandas as pd

    if name == "adult":
        folder = DATA / "adult_census_income"
        kw = dict(header=None, names=ADULT_COLUMNS, skipinitialspace=True, na_values="?")
        train = pd.read_csv(folder / "adult-train.csv", **kw)
        test = pd.read_csv(folder / "adult-test.csv", **kw)
        for frame in (train, test):
            frame["income"] = frame["income"].str.strip().str.rstrip(".")
        return train.reset_index(drop=True), test.reset_index(drop=True)
    if name == "fraud":
        from sklearn.model_selection import train_test_split

        frame = pd.read_csv(DATA / "creditcard_fraud_sample" / "creditcard_sample.csv")
        train, test = train_test_split(frame, test_size=0.3, random_state=0, stratify=frame["Class"])
        return train.reset_index(drop=True), test.reset_index(drop=True)
    raise SystemExit(f"unknown dataset '{name}' (known: adult, fraud)")


def src_fingerprint() -> str:
    """sha256 over the tandem package sources, to tell whether they changed while the bench ran."""
    import hashlib

    spec = importlib.util.find_spec("tandem")
    folder = Path(spec.origin).parent if spec and spec.origin else ROOT / "src" / "tandem"
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def git_head() -> str | None:
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None


def machine(packages: tuple[str, ...] = ("lightgbm", "onnxruntime", "numpy")) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(),
            "versions": {d: version(d) for d in ("tandem", *packages)}}


def write_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
