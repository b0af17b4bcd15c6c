"""Benchmark: the size of each install, in fresh virtual environments, and that each does its job.

Each profile is ``pip install`` of this checkout (copied to a temp folder, so the build leaves nothing here) with
an extra, into a new venv; its size is the bytes pip added to site-packages (the empty venv's own pip and
setuptools subtracted), in MiB, with the largest distributions. Then each install is put to work:

- ``inference`` (``pip install tandem``): a LightGBM bundle (trained here beforehand) predicts one row given as
  a dict and a CSV file through ``tandem predict``; no pyarrow, pandas or training stack is loaded;
- ``serve`` (``tandem[serve]``): the inference install plus the HTTP server (and CodeCarbon for its energy
  figures);
- ``tabular`` (``tandem[tabular]``): trains on scikit-learn's breast-cancer table for 20 s without PyTorch
  (lightgbm and linear) and predicts;
- ``train`` (``tandem[train]``): everything the study can use (PyTorch, Optuna, text and image models).

Goals (issue 22): inference <= 200 MiB, tabular <= 800 MiB; the full install stated. pip's cache makes the
installs fast after the first; the sizes do not depend on it.

Run (from the repository root)::

    .venv/bin/python bench/installs.py      # ~5 minutes
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, ROOT, git_head, machine, write_atomic  # noqa: E402

PROFILES = {"inference": "", "serve": "[serve]", "tabular": "[tabular]", "train": "[train]"}
GOALS_MIB = {"inference": 200, "tabular": 800}
MIB = 1024 * 1024


def tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def site_packages(python: Path) -> Path:
    out = subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  text=True)
    return Path(out.strip())


def largest(site: Path, before: set[str], n: int = 8) -> dict[str, float]:
    """The largest top-level entries pip added, in MiB (a package and its .libs folder counted apart)."""
    sizes = {}
    for entry in site.iterdir():
        if entry.name in before or entry.name.endswith((".dist-info", ".pth")) or entry.name == "__pycache__":
            continue
        sizes[entry.name] = (tree_size(entry) if entry.is_dir() else entry.stat().st_size) / MIB
    return {k: round(v, 1) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:n]}


def install(profile: str, source: Path, work: Path) -> tuple[Path, dict]:
    venv = work / profile
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = site_packages(python)
    empty_bytes, empty_names = tree_size(site), {p.name for p in site.iterdir()}
    started = time.perf_counter()
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"{source}{PROFILES[profile]}"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    added = tree_size(site) - empty_bytes
    dists = subprocess.check_output([python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                                    text=True, stderr=subprocess.DEVNULL)
    return python, {"mib": round(added / MIB, 1), "install_seconds": round(seconds, 1),
                    "distributions": len(json.loads(dists)) - 2, "largest_mib": largest(site, empty_names)}


def check_inference(python: Path, bundle: Path, work: Path) -> dict:
    (work / "rows.csv").write_text("a,b,c\n0.5,0.2,u\n-1,-1,v\n,0.3,\n")
    script = ("import sys, tandem; m = tandem.load(sys.argv[1]); print(m.predict({'a': 0.5, 'b': 0.2, 'c': 'u'})[0]);"
              " print(sorted(x for x in ('pyarrow', 'pandas', 'sklearn', 'torch', 'PIL') if x in sys.modules))")
    row = subprocess.run([python, "-c", script, str(bundle)], capture_output=True, text=True, cwd=work)
    tandem_cli = python.parent / "tandem"
    csv = subprocess.run([tandem_cli, "predict", str(bundle), "rows.csv", "-o", "out.csv"], capture_output=True,
                         text=True, cwd=work)
    lines = (work / "out.csv").read_text().splitlines() if csv.returncode == 0 else []
    return {"dict_row": row.returncode == 0, "row_answer": row.stdout.splitlines()[:1],
            "loaded_heavy_modules": row.stdout.splitlines()[1:2], "csv_file": csv.returncode == 0 and len(lines) == 4,
            "errors": (row.stderr + csv.stderr).strip()[-300:]}


def check_tabular(python: Path, work: Path) -> dict:
    script = """
import json, time, tandem
from sklearn.datasets import load_breast_cancer
frame = load_breast_cancer(as_frame=True).frame
started = time.perf_counter()
model = tandem.train(frame, "target", time_limit=20, path="tabular-bundle", footprint=False)
print(json.dumps({"families": sorted({r["family"] for r in model.leaderboard()}),
                  "score": model.manifest["metrics"]["validation"].get(model.metric), "metric": model.metric,
                  "seconds": round(time.perf_counter() - started, 1),
                  "accuracy": float((model.predict(frame) == frame["target"]).mean())}))
"""
    result = subprocess.run([python, "-c", script], capture_output=True, text=True, cwd=work)
    if result.returncode != 0:
        return {"trained": False, "errors": result.stderr.strip()[-300:]}
    return {"trained": True, **json.loads(result.stdout.strip().splitlines()[-1])}


def main() -> None:
    import numpy as np

    import tandem

    work = Path(tempfile.mkdtemp(prefix="tandem-installs-"))
    try:
        source = work / "source"
        shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info",
                                                                     "__pycache__", "bench", "tests"))
        rng = np.random.default_rng(0)
        a, b = rng.normal(size=400), rng.normal(size=400)
        data = {"a": a, "b": b, "c": np.where(rng.random(400) < 0.5, "u", "v"), "y": (a + b > 0).astype(int)}
        bundle = work / "tree-bundle"
        tandem.train(data, "y", time_limit=5, families=["lightgbm"], path=bundle, footprint=False)
        results: dict[str, dict] = {}
        for profile in PROFILES:
            print(f"installing {profile} ...", file=sys.stderr, flush=True)
            python, results[profile] = install(profile, source, work)
            if profile == "inference":
                results[profile]["works"] = check_inference(python, bundle, work)
            if profile == "tabular":
                results[profile]["works"] = check_tabular(python, work)
            if profile != "train":
                shutil.rmtree(python.parent.parent, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    payload = {
        "bench": "installs", "git": git_head(), "machine": machine(),
        "mib": {p: r["mib"] for p, r in results.items()},
        "goals_mib": GOALS_MIB,
        "goals_met": {p: results[p]["mib"] <= goal for p, goal in GOALS_MIB.items()},
        "profiles": results,
    }
    write_atomic(HERE / "results" / "installs.json", payload)
    print(json.dumps(payload))


if __name__ == "__main__":
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    main()
