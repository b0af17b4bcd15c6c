"""Issue 15, the command line and its files: output onto input, spreadsheet formulas in CSV output, disk
errors, option ranges. A real ``tandem`` subprocess on real files; a full disk is a real RLIMIT_FSIZE."""

from __future__ import annotations

import csv
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tandem
from helpers import mixed_frame
from tandem.batch import predict_file
from tandem.errors import ConfigError

LABELS = ["=cmd|' /C calc'!A0", "-1+1"]
ID = "=ref"  # an id column whose name is a formula too


def cli(args: list[object], *, cwd: Path, home: Path, preexec_fn=None, timeout: float = 120):
    env = dict(os.environ, TANDEM_HOME=str(home), COLUMNS="160", NO_COLOR="1", PYTHONWARNINGS="ignore")
    env.pop("FORCE_COLOR", None)
    env.pop("TANDEM_COUNTRY", None)
    return subprocess.run([sys.executable, "-m", "tandem.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)


def only_line(proc, rc: int = 2) -> str:
    """stderr is exactly one line `tandem: error: ...` and the exit code is ``rc``: its message."""
    assert proc.returncode == rc, f"rc={proc.returncode}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tandem: error: "), repr(proc.stderr)
    return lines[0].removeprefix("tandem: error: ")


def full_disk(limit: int):
    """preexec_fn: files this process writes cannot grow past ``limit`` bytes (writes fail with EFBIG)."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return apply


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def formula(tmp_path_factory) -> SimpleNamespace:
    """A binary model whose labels and id column (name and values) are spreadsheet formulas."""
    root = tmp_path_factory.mktemp("hardening")
    frame = mixed_frame(300).drop(columns=["customer_id"])
    frame[ID] = [f'=HYPERLINK("http://evil.example/{i}","c{i}")' if i % 2 else f"c{i}" for i in range(len(frame))]
    frame["churn"] = frame["churn"].map({"yes": LABELS[0], "no": LABELS[1]})
    model = tandem.train(frame, "churn", time_limit=2, families=["linear"], home=root / "home", name="formula")
    rows = frame.drop(columns=["churn"]).head(9).copy()
    rows[ID] = ['=HYPERLINK("http://evil.example/x","x")', "-12", "+1+cmd|' /C calc'!A0", "@SUM(A1)", "\tx",
                "\rx", "plain", "-3.5e2", "'=already"]
    write_rows(rows, root / "rows.csv")
    return SimpleNamespace(root=root, home=root / "home", model=model, bundle=model.path, rows=rows)


def write_rows(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC)  # a cell may start with a carriage return


def read_csv_cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


# --------------------------------------------------------------------------------------------- 1. -o onto input


@pytest.mark.parametrize("how", ["same", "spelled", "symlink", "hardlink"])
def test_predict_refuses_to_write_onto_its_input(formula, tmp_path, how) -> None:
    data = tmp_path / "in.csv"
    write_rows(formula.rows, data)
    before = data.read_bytes()
    output = {"same": "in.csv", "spelled": "sub/../in.csv"}.get(how, "alias.csv")
    (tmp_path / "sub").mkdir()
    if how == "symlink":
        (tmp_path / output).symlink_to(data)
    elif how == "hardlink":
        os.link(data, tmp_path / output)
    message = only_line(cli(["predict", formula.bundle, "in.csv", "-o", output], cwd=tmp_path, home=formula.home))
    assert message == (f"output '{output}' is the input file 'in.csv': "
                       "write the predictions to another file"), message
    assert data.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_python_predict_file_refuses_its_input_too(formula, tmp_path) -> None:
    data = tmp_path / "in.csv"
    write_rows(formula.rows, data)
    with pytest.raises(ConfigError, match="is the input file"):
        predict_file(formula.bundle, data, data)


# --------------------------------------------------------------------------------------------- 2. formulas


def expected_cells(formula, escape: bool) -> tuple[list[str], list[str]]:
    q = "'" if escape else ""
    header = [q + ID, "churn", *(f"proba_{q}{label}" for label in formula.model.labels)]
    ids = [f"{q}" + '=HYPERLINK("http://evil.example/x","x")', "-12", f"{q}+1+cmd|' /C calc'!A0", f"{q}@SUM(A1)",
           f"{q}\tx", f"{q}\rx", "plain", "-3.5e2", "'=already"]
    return header, ids


@pytest.mark.parametrize("escape", [True, False], ids=["default", "no-escape-formulas"])
def test_csv_output_escapes_formulas_by_default(formula, escape) -> None:
    out = formula.root / f"scored-{escape}.csv"
    args = ["predict", "formula", "rows.csv", "-o", out.name] + ([] if escape else ["--no-escape-formulas"])
    proc = cli(args, cwd=formula.root, home=formula.home)
    assert proc.returncode == 0, proc.stderr
    cells = read_csv_cells(out)
    header, ids = expected_cells(formula, escape)
    assert cells[0] == header
    assert [row[0] for row in cells[1:]] == ids
    labels = formula.model.predict(formula.rows).tolist()
    q = "'" if escape else ""
    assert [row[1] for row in cells[1:]] == [q + label for label in labels]
    for row in cells[1:]:  # probabilities stay plain numbers
        assert all(0 <= float(v) <= 1 for v in row[2:]), row


def test_python_predict_file_escapes_by_default_and_can_be_told_not_to(formula, tmp_path) -> None:
    predict_file(formula.bundle, formula.root / "rows.csv", tmp_path / "on.csv")
    predict_file(formula.bundle, formula.root / "rows.csv", tmp_path / "off.csv", escape_formulas=False)
    assert read_csv_cells(tmp_path / "on.csv")[0] == expected_cells(formula, True)[0]
    assert read_csv_cells(tmp_path / "off.csv")[0] == expected_cells(formula, False)[0]
    assert [r[0] for r in read_csv_cells(tmp_path / "on.csv")[1:]] == expected_cells(formula, True)[1]


def test_numbers_stay_numbers_and_parquet_is_untouched(formula, tmp_path) -> None:
    rows = formula.rows.copy()
    typed = pa.Table.from_pandas(rows, preserve_index=False).set_column(
        list(rows.columns).index(ID), ID, pa.array([-5, -4, 3, 2, 1, 0, -1, 7, 8], pa.int64()))
    pq.write_table(typed, tmp_path / "typed.parquet")
    predict_file(formula.bundle, tmp_path / "typed.parquet", tmp_path / "typed.csv")
    cells = read_csv_cells(tmp_path / "typed.csv")
    assert [r[0] for r in cells[1:]] == ["-5", "-4", "3", "2", "1", "0", "-1", "7", "8"]
    proc = cli(["predict", "formula", "rows.csv", "-o", tmp_path / "scored.parquet"], cwd=formula.root,
               home=formula.home)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_parquet(tmp_path / "scored.parquet")
    assert list(table.columns) == [ID, "churn", *(f"proba_{label}" for label in formula.model.labels)]
    assert table[ID].tolist() == formula.rows[ID].tolist()
    assert set(table["churn"]) <= set(LABELS)


# --------------------------------------------------------------------------------------------- 3. disk errors


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux's sysfs")
def test_predict_into_a_folder_not_even_root_can_write(formula) -> None:
    # tests run as root: sysfs refuses new files to every user (read-only where containers mount it so)
    target = "/sys/tandem-hardening-out.csv"
    proc = cli(["predict", formula.bundle, "rows.csv", "-o", target], cwd=formula.root, home=formula.home)
    message = only_line(proc)
    assert re.fullmatch(re.escape(target) + r": (Permission denied|Read-only file system) "
                        r"\(while writing the predictions\)", message), message
    assert not os.path.exists(target)


def test_predict_on_a_full_disk_is_one_line_and_leaves_nothing(formula, tmp_path) -> None:
    big = pd.concat([formula.rows] * 400, ignore_index=True)  # 3,600 rows: the output outgrows 64 KiB
    write_rows(big, tmp_path / "big.csv")
    home = tmp_path / "home"
    proc = cli(["predict", formula.bundle, "big.csv", "-o", "scored.csv"], cwd=tmp_path, home=home,
               preexec_fn=full_disk(64 * 1024))
    message = only_line(proc)
    assert message == "scored.csv: File too large (while writing the predictions)", message
    assert not (tmp_path / "scored.csv").exists()
    assert leftovers(tmp_path) == []


def test_train_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path) -> None:
    mixed_frame(300).to_csv(tmp_path / "train.csv", index=False)
    proc = cli(["train", "train.csv", "--target", "churn", "--time-limit", 2, "--families", "linear",
                "--out", "bundle"], cwd=tmp_path, home=tmp_path / "home", preexec_fn=full_disk(8 * 1024))
    message = only_line(proc)
    assert message == "bundle: File too large (while training and writing the bundle)", message
    assert not (tmp_path / "bundle").exists()
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------- 5. option ranges


RANGES = [
    (["train", "d.csv", "-t", "y", "--time-limit", "0"], "--time-limit must be greater than 0"),
    (["train", "d.csv", "-t", "y", "--time-limit", "-5"], "--time-limit must be greater than 0"),
    (["train", "d.csv", "-t", "y", "--time-limit", "nan"], "--time-limit must be greater than 0"),
    (["train", "d.csv", "-t", "y", "--seed", "-1"], "--seed must be from 0 to 2147483647"),
    (["train", "d.csv", "-t", "y", "--seed", "2147483648"], "--seed must be from 0 to 2147483647"),
    (["train", "d.csv", "-t", "y", "--latency-budget-us", "0"], "--latency-budget-us must be greater than 0"),
    (["train", "d.csv", "-t", "y", "--encoder-layers", "0"], "--encoder-layers must be from 1 to 6"),
    (["train", "d.csv", "-t", "y", "--encoder-layers", "7"], "--encoder-layers must be from 1 to 6"),
    (["train", "d.csv", "-t", "y", "--pue", "0.9"], "--pue must be at least 1"),
    (["train", "d.csv", "-t", "y", "--pue", "inf"], "--pue must be at least 1"),
    (["train", "d.csv", "-t", "y", "--max-energy-kwh", "0"], "--max-energy-kwh must be greater than 0"),
    (["predict", "m", "d.csv", "-o", "p.csv", "--batch-rows", "0"], "--batch-rows must be at least 1"),
    (["footprint", "m", "--predictions-per-day", "-1"], "--predictions-per-day must be at least 0"),
    (["footprint", "m", "--grid-intensity", "-0.5"], "--grid-intensity must be at least 0"),
    (["quickstart", "--time-limit", "0"], "--time-limit must be greater than 0"),
]


@pytest.mark.parametrize("argv, expect", RANGES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in RANGES])
def test_numeric_options_are_range_checked(tmp_path, argv, expect) -> None:
    message = only_line(cli(argv, cwd=tmp_path, home=tmp_path / "home"))
    assert message.startswith(expect), message
    assert f", got {argv[-1]}" in message, message
    assert not (tmp_path / "home").exists()
