"""The small installs.

- The inference install: a fresh virtual environment holding exactly the base dependencies of pyproject.toml
  (no pyarrow, Pillow, tokenizers, pandas or training stack) predicts a table model from one row, rows,
  columns and a CSV file, with the answers of the full install; a text or an image model, a Parquet file and a
  bad cell each get one line naming the extra or the cell.
- Without pyarrow, CSV is read and written with Python's csv module: the same missing-value markers, the same
  values, the same escaping as the pyarrow path; datetimes of one row read as Arrow reads them.
- A tabular training install without PyTorch trains with lightgbm and linear, says what it left out, and
  names the extra when a torch family is asked for.
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import tomllib
from PIL import Image

import tandem
from helpers import mixed_frame
from tandem.batch import CSV_NULLS, predict_csv_rows, predict_file
from tandem.bundle.columns import datetime_block
from tandem.bundle.values import datetime_parts
from tandem.inference.predictor import Predictor
from tandem.schema import ColumnSpec

ROOT = Path(__file__).resolve().parents[1]
HIDE = Path(__file__).with_name("without_packages.py")


def base_requirements() -> list[str]:
    """pyproject's base dependencies, pinned to the versions installed here (pip then takes them from its cache)."""
    out = []
    for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0)
        out.append(f"{name}=={metadata.version(name)}")
    return out


@pytest.fixture(scope="module")
def slim_python(tmp_path_factory) -> Path:
    """The python of a fresh venv with the base dependencies alone and this checkout's src on its path."""
    folder = tmp_path_factory.mktemp("slim") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *base_requirements()],
                   check=True, timeout=600)
    site = subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   text=True).strip()
    Path(site, "tandem_checkout.pth").write_text(f"{ROOT / 'src'}\n")
    absent = [m for m in ("pyarrow", "PIL", "tokenizers", "pandas", "sklearn", "torch", "onnx")
              if subprocess.run([python, "-c", f"import {m}"], capture_output=True).returncode == 0]
    assert absent == [], f"the inference install has {absent}"
    return python


def run_slim(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "COLUMNS": "200", "TANDEM_HOME": str(cwd)})


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, object]:
    """A LightGBM bundle over every column kind (numbers with gaps, a category with gaps, a boolean, a date)."""
    frame = mixed_frame(400)
    path = tmp_path_factory.mktemp("tree") / "bundle"
    trees = [{"name": "trees", "family": "lightgbm", "params": {"n_estimators": 60, "num_leaves": 8}}]
    tandem.train(frame, "churn", time_limit=10, configs=trees, bagging="no", path=path, footprint=False)
    return path, mixed_frame(60, seed=7).drop(columns=["churn"])


def read_csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def same_cells(a: list[list[str]], b: list[list[str]]) -> None:
    assert a[0] == b[0] and len(a) == len(b)
    for row_a, row_b in zip(a[1:], b[1:], strict=True):
        for x, y in zip(row_a, row_b, strict=True):
            try:
                assert math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-7), (x, y)
            except ValueError:
                assert x == y


def test_the_inference_install_predicts_rows_columns_and_csv(slim_python, tree, tmp_path) -> None:
    bundle, frame = tree
    records = json.loads(frame.to_json(orient="records"))  # NaN -> null, as a request carries it
    (tmp_path / "rows.json").write_text(json.dumps(records))
    script = f"""
import json, sys
import numpy as np
import tandem
model = tandem.load({str(bundle)!r})
rows = json.load(open('rows.json'))
columns = {{k: [r[k] for r in rows] for k in rows[0]}}
one = model.predict_proba(rows[0]).tolist()
many = model.predict_proba(rows).tolist()
cols = model.predict_proba(columns).tolist()
labels = model.predict(rows).tolist()
print(json.dumps({{"one": one, "many": many, "cols": cols, "labels": labels,
                  "loaded": sorted(m for m in ("pyarrow", "pandas", "PIL", "sklearn") if m in sys.modules)}}))
"""
    result = run_slim(slim_python, "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    slim = json.loads(result.stdout)
    full = tandem.load(bundle)
    expected = full.predict_proba(frame)
    assert slim["loaded"] == []
    np.testing.assert_allclose(slim["one"], expected[:1], atol=1e-6)
    np.testing.assert_allclose(slim["many"], expected, atol=1e-6)
    np.testing.assert_allclose(slim["cols"], expected, atol=1e-6)
    assert slim["labels"] == full.predict(frame).tolist()
    assert set(slim["labels"]) <= {"yes", "no"} and np.ptp(expected[:, 1]) > 0.2  # the rows' answers differ

    frame.to_csv(tmp_path / "rows.csv", index=False)
    result = run_slim(slim_python, "-m", "tandem.cli", "predict", str(bundle), "rows.csv", "-o", "slim.csv",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote 60 predictions" in result.stderr
    predict_file(bundle, tmp_path / "rows.csv", tmp_path / "full.csv")
    slim_rows, full_rows = read_csv_rows(tmp_path / "slim.csv"), read_csv_rows(tmp_path / "full.csv")
    assert slim_rows[0] == ["customer_id", "churn", "proba_no", "proba_yes"]
    same_cells(slim_rows, full_rows)


def test_the_inference_install_names_what_is_missing(slim_python, tree, tmp_path) -> None:
    bundle, frame = tree
    rng = np.random.default_rng(1)
    words = ["late", "bill", "call", "happy", "refund", "upgrade", "router", "slow", "thanks", "cancel", "fee", "app"]
    churn = mixed_frame(60, seed=7)["churn"]
    notes = [" ".join(rng.choice(words, rng.integers(4, 9))) + (" cancel please" if c == "yes" else " thanks")
             for c in churn]
    texts = frame.assign(churn=churn, note=notes)
    text_bundle = tmp_path / "text"
    tandem.train(texts, "churn", time_limit=3, families=["linear"], text_encoder="none", bagging="no",
                 path=text_bundle, footprint=False)
    texts.drop(columns=["churn"]).to_csv(tmp_path / "texts.csv", index=False)
    line = one_line(run_slim(slim_python, "-m", "tandem.cli", "predict", str(text_bundle), "texts.csv",
                             "-o", "out.csv", cwd=tmp_path))
    assert "text column 'note'" in line and "pip install 'tandem[text-models]'" in line
    assert not (tmp_path / "out.csv").exists()

    folder = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for label in ("dark", "light"):
        (folder / label).mkdir(parents=True)
        for i in range(12):
            level = rng.integers(0, 80) if label == "dark" else rng.integers(170, 255)
            Image.fromarray(np.full((12, 12, 3), level, dtype=np.uint8)).save(folder / label / f"{i}.png")
    image_bundle = tmp_path / "image"
    tandem.train(str(folder), "label", time_limit=4, families=["cnn"], bagging="no", path=image_bundle,
                 footprint=False)
    result = run_slim(slim_python, "-c", f"import tandem; tandem.load({str(image_bundle)!r})", cwd=tmp_path)
    assert "MissingExtraError" in result.stderr and "pip install 'tandem[image-models]'" in result.stderr

    frame.head(5).to_parquet(tmp_path / "rows.parquet")
    line = one_line(run_slim(slim_python, "-m", "tandem.cli", "predict", str(bundle), "rows.parquet", "-o", "o.csv",
                             cwd=tmp_path))
    assert ".parquet files needs pyarrow" in line and "pip install 'tandem[files]'" in line

    bad = frame.head(5).astype({"age": object})
    bad.loc[2, "age"] = "forty"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    line = one_line(run_slim(slim_python, "-m", "tandem.cli", "predict", str(bundle), "bad.csv", "-o", "o.csv",
                             cwd=tmp_path))
    assert "'bad.csv' row 3 column 'age': expected a number, got 'forty'" in line
    assert not (tmp_path / "o.csv").exists()


def test_csv_without_pyarrow_reads_and_writes_as_pyarrow_does(tree, tmp_path) -> None:
    bundle, frame = tree
    frame = frame.astype({"customer_id": str, "city": object, "income": object, "member": object})
    frame.loc[0, "customer_id"] = "=HYPERLINK(1)"  # a formula a spreadsheet would run: escaped by both paths
    frame.loc[1, "city"], frame.loc[2, "city"], frame.loc[3, "income"] = "NA", "null", "n/a"
    frame.loc[4, "member"], frame.loc[5, "signup"] = "yes", ""
    frame.to_csv(tmp_path / "in.csv", index=False)
    predictor = Predictor(bundle)
    rows, notes = predict_csv_rows(predictor, tmp_path / "in.csv", tmp_path / "plain.csv", batch_rows=7)
    predict_file(bundle, tmp_path / "in.csv", tmp_path / "arrow.csv")
    plain, arrow = read_csv_rows(tmp_path / "plain.csv"), read_csv_rows(tmp_path / "arrow.csv")
    assert rows == 60 and notes == []
    assert plain[1][0] == "'=HYPERLINK(1)"
    same_cells(plain, arrow)
    # a one-line error naming the row, and nothing written
    frame.loc[9, "member"] = "maybe"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(tandem.errors.SchemaError, match=r"'.*bad.csv' row 10 column 'member': expected true/false"):
        predict_csv_rows(predictor, tmp_path / "bad.csv", tmp_path / "never.csv")
    assert not (tmp_path / "never.csv").exists()


def test_csv_missing_markers_are_pyarrows() -> None:
    assert CSV_NULLS == frozenset(pacsv.ConvertOptions().null_values)


def test_a_rows_datetime_without_pyarrow_reads_as_the_column_path() -> None:
    spec = ColumnSpec("t", "datetime")
    values = ["2020-01-01", "2020-01-01 12:34", "2020-01-01T12:34:56", "1999-12-31 23:59:59", "1969-07-20 20:17:40",
              "2024-02-29T00:00:00", "2038-01-19 03:14:07.250"]
    for v in values:
        column = datetime_block(pa.chunked_array([pa.array([v], pa.string())]), spec, "x")[0]
        assert np.array_equal(np.asarray(datetime_parts(v), dtype=np.float32), column), v
    with pytest.raises(ValueError):
        datetime_parts("the first of may")


def test_tabular_training_without_torch(run_cli, tmp_path) -> None:
    mixed_frame(300).to_csv(tmp_path / "train.csv", index=False)
    env_home = tmp_path / "home"

    def cli(*args: str) -> subprocess.CompletedProcess:
        import os

        env = dict(os.environ, TANDEM_HOME=str(env_home), COLUMNS="200", NO_COLOR="1")
        return subprocess.run([sys.executable, str(HIDE), "torch", "-m", "tandem.cli", *args], capture_output=True,
                              text=True, cwd=tmp_path, env=env, timeout=300)

    result = cli("train", "train.csv", "--target", "churn", "--time-limit", "6", "--name", "plain", "--no-footprint")
    assert result.returncode == 0, result.stderr
    model = tandem.load("plain", home=env_home)
    assert {row["family"] for row in model.leaderboard()} <= {"lightgbm", "linear"}
    assert any("PyTorch is not installed" in n for n in model.manifest["notes"])
    line = one_line(cli("train", "train.csv", "--target", "churn", "--time-limit", "6", "--families", "mlp"))
    assert line.endswith("family mlp needs torch, which is not installed: pip install 'tandem[train]'")
