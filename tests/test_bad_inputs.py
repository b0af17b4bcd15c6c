"""Bad inputs, through the Python API and the real ``tandem`` command.

Every bad input must give a clear one-line error naming the file, column, field or row and what was
expected; the CLI prints exactly one ``tandem: error:`` line on stderr, exits non-zero without a
traceback, and writes nothing: no output file, no half-written file, no new bundle or registry version.
A changed column order and extra columns in prediction input are not errors: they must work.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tandem
from tandem.errors import BundleError, DataError, SchemaError, TandemError, TargetError

TIME_LIMIT = 3
NAME = "churn"
TARGET = "income"

# --------------------------------------------------------------------------------------------- bad files
# Each writer puts one input file into ``folder`` (named as a user would name it) and returns its name.


def _features(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[TARGET])


def w_missing(folder: Path, df: pd.DataFrame) -> str:
    return "missing.csv"  # never written


def w_unsupported(folder: Path, df: pd.DataFrame) -> str:
    (folder / "data.xlsx").write_bytes(b"PK\x03\x04 not a table tandem reads")
    return "data.xlsx"


def w_empty(folder: Path, df: pd.DataFrame) -> str:
    (folder / "empty.csv").write_bytes(b"")
    return "empty.csv"


def w_ragged(folder: Path, df: pd.DataFrame) -> str:
    lines = df.head(30).to_csv(index=False).splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0]  # line 4 loses its last field
    (folder / "ragged.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return "ragged.csv"


def w_not_utf8(folder: Path, df: pd.DataFrame) -> str:
    d = df.head(30).copy()
    d.loc[1, "color"] = "grün"  # data row 2 = line 3
    (folder / "latin1.csv").write_bytes(d.to_csv(index=False).encode("latin-1"))
    return "latin1.csv"


def w_duplicate(folder: Path, df: pd.DataFrame) -> str:
    text = df.head(30).to_csv(index=False)
    header, rest = text.split("\n", 1)
    assert header == "x1,x2,color,income"
    (folder / "dup.csv").write_text("x1,x2,x1,income\n" + rest, encoding="utf-8")
    return "dup.csv"


def w_train(folder: Path, df: pd.DataFrame) -> str:
    df.to_csv(folder / "train.csv", index=False)
    return "train.csv"


def w_one_class(folder: Path, df: pd.DataFrame) -> str:
    df.head(60).assign(income="yes").to_csv(folder / "oneclass.csv", index=False)
    return "oneclass.csv"


def w_all_null(folder: Path, df: pd.DataFrame) -> str:
    df.head(60).assign(income=None).to_csv(folder / "nulltarget.csv", index=False)
    return "nulltarget.csv"


def w_five_rows(folder: Path, df: pd.DataFrame) -> str:
    d = df.head(5).copy()
    d["income"] = ["yes", "no", "yes", "no", "yes"]
    d.to_csv(folder / "five.csv", index=False)
    return "five.csv"


def w_one_row_class(folder: Path, df: pd.DataFrame) -> str:
    d = df.head(60).assign(income="no")
    d.loc[7, "income"] = "yes"  # the class 'yes' has a single row
    d.to_csv(folder / "rare.csv", index=False)
    return "rare.csv"


def w_features(folder: Path, df: pd.DataFrame) -> str:
    _features(df).to_csv(folder / "rows.csv", index=False)
    return "rows.csv"


def w_labelled(folder: Path, df: pd.DataFrame) -> str:
    df.to_csv(folder / "labelled.csv", index=False)
    return "labelled.csv"


def w_missing_column(folder: Path, df: pd.DataFrame) -> str:
    _features(df).drop(columns=["x2"]).to_csv(folder / "nox2.csv", index=False)
    return "nox2.csv"


def w_reordered(folder: Path, df: pd.DataFrame) -> str:
    _features(df)[["color", "x2", "x1"]].to_csv(folder / "reordered.csv", index=False)
    return "reordered.csv"


def w_extra_columns(folder: Path, df: pd.DataFrame) -> str:
    _features(df).assign(zz=1, memo="hi").to_csv(folder / "extra.csv", index=False)
    return "extra.csv"


def _with_abc(df: pd.DataFrame, row: int = 4) -> pd.DataFrame:
    d = df.copy()
    d["x1"] = d["x1"].astype(str)
    d.loc[row, "x1"] = "abc"  # 0-based index 4 = data row 5 = CSV line 6
    return d


def w_wrong_type_csv(folder: Path, df: pd.DataFrame) -> str:
    _with_abc(_features(df)).to_csv(folder / "wrong.csv", index=False)
    return "wrong.csv"


def w_wrong_type_jsonl(folder: Path, df: pd.DataFrame) -> str:
    rows = _features(df).to_dict("records")
    rows[4]["x1"] = "abc"
    (folder / "wrong.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return "wrong.jsonl"


def w_wrong_type_parquet(folder: Path, df: pd.DataFrame) -> str:
    pq.write_table(pa.Table.from_pandas(_with_abc(_features(df)), preserve_index=False), folder / "wrong.parquet")
    return "wrong.parquet"


def w_late_error_parquet(folder: Path, df: pd.DataFrame) -> str:
    """1000 rows in row groups of 100; 'abc' in data row 901: the first chunks are fine and get scored."""
    big = pd.concat([_features(df)] * 4, ignore_index=True).head(1000)
    pq.write_table(pa.Table.from_pandas(_with_abc(big, row=900), preserve_index=False), folder / "late.parquet",
                   row_group_size=100)
    return "late.parquet"


def w_labelled_wrong_type(folder: Path, df: pd.DataFrame) -> str:
    _with_abc(df).to_csv(folder / "labelled_wrong.csv", index=False)
    return "labelled_wrong.csv"


def w_unseen_label(folder: Path, df: pd.DataFrame) -> str:
    d = df.copy()
    d.loc[9, "income"] = "maybe"
    d.to_csv(folder / "unseen.csv", index=False)
    return "unseen.csv"


# --------------------------------------------------------------------------------------------- training data


@dataclass(frozen=True)
class TrainCase:
    id: str
    write: Callable[[Path, pd.DataFrame], str]
    error: type[TandemError]
    expect: tuple[str, ...]
    target: str = TARGET


TRAIN_CASES = [
    TrainCase("missing_file", w_missing, DataError, ("'missing.csv'", "not found")),
    TrainCase("unsupported_format", w_unsupported, DataError,
              ("unsupported format '.xlsx'", "'data.xlsx'", "expected one of", ".csv", ".parquet")),
    TrainCase("empty_file", w_empty, DataError, ("'empty.csv'", "is empty", "expected a header row")),
    TrainCase("ragged_rows", w_ragged, DataError, ("'ragged.csv'", "line 4", "expected 4 fields", "found 3")),
    TrainCase("not_utf8", w_not_utf8, DataError, ("'latin1.csv'", "not UTF-8", "line 3")),
    TrainCase("duplicate_columns", w_duplicate, DataError,
              ("'dup.csv'", "duplicate column names", "'x1'", "columns 1 and 3")),
    TrainCase("target_missing", w_train, TargetError,
              ("target column 'incom'", "not found", "did you mean 'income'"), target="incom"),
    TrainCase("target_one_class", w_one_class, TargetError, ("'income'", "one class", "'yes'", "at least two")),
    TrainCase("target_all_null", w_all_null, TargetError, ("'income'", "every value is missing")),
    TrainCase("too_few_rows", w_five_rows, DataError, ("too few rows", "5 rows", "at least 10")),
    TrainCase("class_with_one_row", w_one_row_class, DataError, ("too few rows", "1 row", "at least 2 rows")),
]


def assert_message(text: str, expect: tuple[str, ...]) -> None:
    assert "\n" not in text, f"message spans several lines: {text!r}"
    missing = [part for part in expect if part not in text]
    assert not missing, f"message {text!r} lacks {missing}"


@pytest.mark.parametrize("case", TRAIN_CASES, ids=lambda c: c.id)
def test_api_train_refuses_bad_data(case: TrainCase, tmp_path, monkeypatch, snapshot, make_frame) -> None:
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    name = case.write(tmp_path, make_frame(300, seed=0))
    before = snapshot(tmp_path)
    with pytest.raises(case.error) as info:
        tandem.train(name, case.target, time_limit=TIME_LIMIT, name=NAME, home=home)
    assert_message(str(info.value), case.expect)
    assert snapshot(tmp_path) == before, "a failed train wrote files"
    assert not list(home.glob("models/*/*")), "a failed train left a bundle"


def test_api_train_frame_target_missing_suggests_and_writes_no_bundle(tmp_path, snapshot, make_frame) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(TargetError) as info:
        tandem.train(make_frame(300, seed=0), "Incom", time_limit=TIME_LIMIT, path=out, home=tmp_path / "home")
    assert_message(str(info.value), ("target column 'Incom'", "not found", "'income'"))
    assert snapshot(tmp_path) == {}


def test_api_train_one_row_class_names_the_class(tmp_path, monkeypatch, make_frame) -> None:
    monkeypatch.chdir(tmp_path)
    name = w_one_row_class(tmp_path, make_frame(300, seed=0))
    with pytest.raises(DataError) as info:
        tandem.train(name, TARGET, time_limit=TIME_LIMIT, home=tmp_path / "home")
    assert_message(str(info.value), ("'yes'", "'income'"))


# --------------------------------------------------------------------------------------------- a trained model


@pytest.fixture(scope="module")
def trained(tmp_path_factory, make_frame) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("trained")
    df = make_frame(300, seed=0)
    model = tandem.train(df, TARGET, time_limit=TIME_LIMIT, name=NAME, home=root / "home", seed=0)
    new = make_frame(200, seed=1)
    return SimpleNamespace(home=root / "home", model=model, frame=df, new=new, features=_features(new))


def test_api_predict_missing_column(trained) -> None:
    with pytest.raises(SchemaError) as info:
        trained.model.predict(trained.features.drop(columns=["x2"]))
    assert_message(str(info.value), ("missing column(s) 'x2'", "expects 'x1', 'x2', 'color'"))


def test_api_predict_wrong_type_names_column_and_row(trained) -> None:
    with pytest.raises(SchemaError) as info:
        trained.model.predict(_with_abc(trained.features))
    assert_message(str(info.value), ("column 'x1' row 5", "expected a number", "'abc'"))


def test_api_predict_wrong_type_one_row(trained) -> None:
    with pytest.raises(SchemaError) as info:
        trained.model.predict({"x1": "abc", "x2": 0.5, "color": "red"})
    assert_message(str(info.value), ("column 'x1'", "expected a number", "'abc'"))


def test_api_predict_file_wrong_type_names_column_and_row(trained, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    name = w_wrong_type_csv(tmp_path, trained.new)
    with pytest.raises(SchemaError) as info:
        trained.model.predict(name)
    assert_message(str(info.value), ("column 'x1' row 5", "expected a number", "'abc'"))


@pytest.mark.parametrize("writer", [w_wrong_type_csv, w_missing_column], ids=["wrong_type", "missing_column"])
def test_api_predict_file_error_names_the_file(trained, tmp_path, monkeypatch, writer) -> None:
    monkeypatch.chdir(tmp_path)
    name = writer(tmp_path, trained.new)
    with pytest.raises(SchemaError) as info:
        trained.model.predict(name)
    assert_message(str(info.value), (f"'{name}'",))


def test_api_predict_reordered_columns_give_same_predictions(trained, tmp_path) -> None:
    m, x = trained.model, trained.features
    reordered = x[["color", "x2", "x1"]]
    np.testing.assert_array_equal(m.predict(reordered), m.predict(x))
    np.testing.assert_array_equal(m.predict_proba(reordered), m.predict_proba(x))
    reordered.to_csv(tmp_path / "reordered.csv", index=False)
    np.testing.assert_array_equal(m.predict(str(tmp_path / "reordered.csv")), m.predict(x))
    row = x.iloc[3].to_dict()
    assert m.predict({k: row[k] for k in ["color", "x2", "x1"]})[0] == m.predict(x)[3]


def test_api_predict_extra_columns_work_and_are_reported(trained) -> None:
    m, x = trained.model, trained.features
    extra = x.assign(zz=1.0, note="hello")
    np.testing.assert_array_equal(m.predict(extra), m.predict(x))
    np.testing.assert_array_equal(m.predict_proba(extra), m.predict_proba(x))
    assert m.predictor.extra_columns(pa.Table.from_pandas(extra, preserve_index=False).column_names) == ["zz", "note"]


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _native_file(bundle: Path) -> str:
    files = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))["files"]
    return sorted(rel for rel in files if rel.startswith("native/"))[0]


@pytest.mark.parametrize("which", ["model.onnx", "native"])
def test_api_load_refuses_tampered_bundle(trained, tmp_path, which, snapshot) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(trained.model.path, bundle)
    rel = which if which == "model.onnx" else _native_file(bundle)
    _tamper(bundle / rel)
    before = snapshot(tmp_path)
    with pytest.raises(BundleError) as info:
        tandem.load(bundle)
    assert_message(str(info.value), (f"'{rel}'", "sha256", str(bundle)))
    assert snapshot(tmp_path) == before


def test_api_load_refuses_tampered_registry_version(trained, tmp_path) -> None:
    home = tmp_path / "home"
    shutil.copytree(trained.home, home)
    _tamper(home / "models" / NAME / "1" / "model.onnx")
    with pytest.raises(BundleError) as info:
        tandem.load(f"{NAME}:1", home=home)
    assert_message(str(info.value), ("'model.onnx'", "sha256"))


def test_api_evaluate_errors(trained, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    m = trained.model
    with pytest.raises(DataError) as info:
        m.evaluate(trained.features)
    assert_message(str(info.value), ("no target column 'income'",))
    with pytest.raises(DataError) as info:
        m.evaluate(w_unseen_label(tmp_path, trained.new))
    assert_message(str(info.value), ("column 'income' row 10", "label 'maybe'", "not seen", "no, yes"))
    with pytest.raises(SchemaError) as info:
        m.evaluate(_with_abc(trained.new))
    assert_message(str(info.value), ("column 'x1' row 5", "expected a number", "'abc'"))
    with pytest.raises(DataError) as info:
        m.evaluate("missing.csv")
    assert_message(str(info.value), ("'missing.csv'", "not found"))


@pytest.mark.parametrize("writer", [w_features, w_labelled_wrong_type], ids=["no_target", "wrong_type"])
def test_api_evaluate_file_error_names_the_file(trained, tmp_path, monkeypatch, writer) -> None:
    monkeypatch.chdir(tmp_path)
    name = writer(tmp_path, trained.new)
    with pytest.raises(DataError) as info:
        trained.model.evaluate(name)
    assert_message(str(info.value), (f"'{name}'",))


def test_api_load_unknown_reference(trained) -> None:
    with pytest.raises(TandemError) as info:
        tandem.load("chrun", home=trained.home)
    assert_message(str(info.value), ("no model named 'chrun'", "did you mean 'churn'"))


# --------------------------------------------------------------------------------------------- the CLI
# Every case runs in its own folder with its own copy of the trained registry (TANDEM_HOME), so the
# cases run concurrently and "nothing written" is checked on exactly what each one could touch.


@dataclass(frozen=True)
class CliCase:
    id: str
    argv: tuple[str, ...]  # "{in}" is replaced by the written input file's name
    write: Callable[[Path, pd.DataFrame], str] | None = None
    expect: tuple[str, ...] = ()
    pattern: str | None = None  # a regular expression the message must match too
    tamper: str | None = None  # "model.onnx" or "native": change one byte of that bundle file first
    outputs: tuple[str, ...] = ()  # paths that must not appear
    blank_line: bool = False  # known: stderr starts with an empty line (progress bar), see the strict test


def _train(case: TrainCase) -> CliCase:
    return CliCase(f"train_{case.id}", ("train", "{in}", "--target", case.target, "--time-limit", str(TIME_LIMIT),
                                        "--name", NAME), case.write, case.expect, blank_line=True)


OUT = "preds/out.csv"
CLI_ERRORS = [_train(c) for c in TRAIN_CASES] + [
    CliCase("predict_missing_file", ("predict", NAME, "{in}", "-o", OUT), w_missing, ("'missing.csv'", "not found"),
            outputs=(OUT,)),
    CliCase("predict_unsupported_format", ("predict", NAME, "{in}", "-o", OUT), w_unsupported,
            ("unsupported format '.xlsx'", "'data.xlsx'", ".csv"), outputs=(OUT,)),
    CliCase("predict_empty_file", ("predict", NAME, "{in}", "-o", OUT), w_empty, ("'empty.csv'", "is empty"),
            outputs=(OUT,)),
    CliCase("predict_missing_column", ("predict", NAME, "{in}", "-o", OUT), w_missing_column,
            ("'nox2.csv'", "missing column(s) 'x2'", "expects 'x1', 'x2', 'color'"), outputs=(OUT,),
            blank_line=True),
    CliCase("predict_wrong_type_csv", ("predict", NAME, "{in}", "-o", OUT), w_wrong_type_csv,
            ("'wrong.csv'", "'x1'", "'abc'"), pattern=r"line 6|row 5", outputs=(OUT,), blank_line=True),
    CliCase("predict_wrong_type_jsonl", ("predict", NAME, "{in}", "-o", OUT), w_wrong_type_jsonl,
            ("'wrong.jsonl'", "'x1'", "expected"), pattern=r"line 5|row 5", outputs=(OUT,), blank_line=True),
    CliCase("predict_wrong_type_parquet", ("predict", NAME, "{in}", "-o", OUT), w_wrong_type_parquet,
            ("'wrong.parquet'", "'x1'", "'abc'"), outputs=(OUT,), blank_line=True),
    CliCase("predict_late_error_streamed", ("predict", NAME, "{in}", "-o", OUT, "--batch-rows", "50"),
            w_late_error_parquet, ("'late.parquet'", "'x1'", "'abc'"), outputs=(OUT,), blank_line=True),
    CliCase("predict_tampered_onnx", ("predict", NAME, "{in}", "-o", OUT), w_features,
            ("'model.onnx'", "sha256", "failed verification"), tamper="model.onnx", outputs=(OUT,)),
    CliCase("predict_tampered_native", ("predict", NAME, "{in}", "-o", OUT), w_features,
            ("native/", "sha256", "failed verification"), tamper="native", outputs=(OUT,)),
    CliCase("predict_unknown_model", ("predict", "chrun", "{in}", "-o", OUT), w_features,
            ("no model named 'chrun'", "did you mean 'churn'"), outputs=(OUT,)),
    CliCase("predict_bad_output_format", ("predict", NAME, "{in}", "-o", "out.xlsx"), w_features,
            ("'out.xlsx'", "unsupported format", ".csv", ".parquet"), outputs=("out.xlsx",)),
    CliCase("evaluate_missing_file", ("evaluate", NAME, "{in}", "--json"), w_missing, ("'missing.csv'", "not found")),
    CliCase("evaluate_no_target_column", ("evaluate", NAME, "{in}", "--json"), w_features,
            ("no target column 'income'",)),
    CliCase("evaluate_wrong_type", ("evaluate", NAME, "{in}", "--json"), w_labelled_wrong_type,
            ("column 'x1' row 5", "expected a number", "'abc'")),
    CliCase("evaluate_unseen_label", ("evaluate", NAME, "{in}", "--json"), w_unseen_label,
            ("column 'income' row 10", "label 'maybe'", "not seen")),
    CliCase("evaluate_tampered_onnx", ("evaluate", NAME, "{in}", "--json"), w_labelled,
            ("'model.onnx'", "sha256"), tamper="model.onnx"),
    CliCase("models_show_tampered_native", ("models", "show", f"{NAME}@production"), None,
            ("native/", "sha256"), tamper="native"),
]
CLI_OK = {
    "predict_original": CliCase("predict_original", ("predict", NAME, "{in}", "-o", "out.csv"), w_features),
    "predict_reordered": CliCase("predict_reordered", ("predict", NAME, "{in}", "-o", "out.csv"), w_reordered),
    "predict_extra": CliCase("predict_extra", ("predict", NAME, "{in}", "-o", "out.csv"), w_extra_columns),
}


@dataclass
class CliResult:
    case: CliCase
    folder: Path
    rc: int
    stdout: str
    stderr: str
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def cli(trained, tmp_path_factory, run_cli, snapshot) -> dict[str, CliResult]:
    """Run every CLI case once, four at a time; each in its own folder with its own registry copy."""
    root = tmp_path_factory.mktemp("cli_cases")
    tandem.load(NAME, home=trained.home)  # the registry copy below holds a verified bundle
    from tandem.registry import Registry

    Registry(trained.home).set_alias(NAME, 1, "production")

    def run(case: CliCase) -> CliResult:
        folder = root / case.id
        folder.mkdir()
        home = folder / "home"
        shutil.copytree(trained.home, home)
        argv = list(case.argv)
        if case.write is not None:
            name = case.write(folder, trained.new)
            argv = [a.replace("{in}", name) for a in argv]
        if case.tamper:
            bundle = home / "models" / NAME / "1"
            _tamper(bundle / (case.tamper if case.tamper == "model.onnx" else _native_file(bundle)))
        before = snapshot(folder)
        proc = run_cli(argv, home=home, cwd=folder)
        return CliResult(case, folder, proc.returncode, proc.stdout, proc.stderr, before, snapshot(folder))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, CLI_ERRORS + list(CLI_OK.values())))
    return {r.case.id: r for r in results}


@pytest.mark.parametrize("case", CLI_ERRORS, ids=lambda c: c.id)
def test_cli_bad_input(cli, case: CliCase) -> None:
    r = cli[case.id]
    where = f"\nstdout: {r.stdout!r}\nstderr: {r.stderr!r}"
    assert r.rc not in (0, 1), f"exit code {r.rc}: expected a user error (non-zero, not a crash){where}"
    assert "Traceback" not in r.stderr + r.stdout, where
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tandem: error: "), where
    assert r.stdout == "", where
    message = lines[0].removeprefix("tandem: error: ")
    assert_message(message, case.expect)
    if case.pattern:
        assert re.search(case.pattern, message), f"message {message!r} does not match {case.pattern!r}"
    for out in case.outputs:
        assert not (r.folder / out).exists(), f"{out} was written"
    assert r.after == r.before, "the command wrote or changed files: " + ", ".join(
        sorted(set(r.after.items()) ^ set(r.before.items())))


@pytest.mark.parametrize("case", CLI_ERRORS, ids=lambda c: c.id)
def test_cli_bad_input_stderr_is_exactly_one_line(cli, case: CliCase) -> None:
    stderr = cli[case.id].stderr
    one_line = stderr.startswith("tandem: error: ") and stderr.count("\n") == 1 and stderr.endswith("\n")
    assert one_line, f"stderr: {stderr!r}"


def test_cli_predict_wrong_type_says_what_the_model_expects(cli) -> None:
    message = cli["predict_wrong_type_csv"].stderr.strip()
    assert "expected a number" in message and "column_types" not in message, message


def test_cli_predict_wrong_type_parquet_names_the_row(cli) -> None:
    message = cli["predict_wrong_type_parquet"].stderr.strip()
    assert "row 5" in message and "expected a number" in message, message


@pytest.mark.parametrize("case_id, name", [("evaluate_no_target_column", "rows.csv"),
                                           ("evaluate_wrong_type", "labelled_wrong.csv")])
def test_cli_evaluate_error_names_the_file(cli, case_id, name) -> None:
    stderr = cli[case_id].stderr
    assert f"'{name}'" in stderr, stderr


def _read_preds(r: CliResult) -> pd.DataFrame:
    assert r.rc == 0, r.stderr
    return pd.read_csv(r.folder / "out.csv")


def test_cli_predict_reordered_columns_same_predictions(cli) -> None:
    original, reordered = _read_preds(cli["predict_original"]), _read_preds(cli["predict_reordered"])
    assert list(original.columns) == ["income", "proba_no", "proba_yes"] and len(original) == 200
    pd.testing.assert_frame_equal(reordered, original)


def test_cli_predict_extra_columns_work_with_a_note(cli) -> None:
    r = cli["predict_extra"]
    pd.testing.assert_frame_equal(_read_preds(r), _read_preds(cli["predict_original"]))
    notes = [line for line in r.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "zz" in notes[0] and "memo" in notes[0] and "not use" in notes[0], r.stderr
    assert "note:" not in cli["predict_original"].stderr
