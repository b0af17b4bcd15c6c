"""The quality gate: each planted problem is found with its severity; clean data (and Adult) has no errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import tandem
from tandem.data.quality import QualityError, check_quality

ADULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "adult_census_income"
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
                 "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
                 "native-country", "income"]


def load_adult() -> tuple[pd.DataFrame, pd.DataFrame]:
    kw = dict(header=None, names=ADULT_COLUMNS, skipinitialspace=True, na_values="?")
    train = pd.read_csv(ADULT / "adult-train.csv", **kw)
    test = pd.read_csv(ADULT / "adult-test.csv", **kw)
    for frame in (train, test):
        frame["income"] = frame["income"].str.strip().str.rstrip(".")
    return train, test


def clean(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], n)
    score = x1 + 0.5 * x2 + (color == "red") + rng.normal(scale=1.0, size=n)
    return pd.DataFrame({"x1": x1, "x2": x2, "color": color, "y": np.where(score > 0.4, "yes", "no")})


def report(frame: pd.DataFrame, target: str = "y", test: pd.DataFrame | None = None):
    return check_quality(pa.Table.from_pandas(frame, preserve_index=False), target,
                         test=None if test is None else pa.Table.from_pandas(test, preserve_index=False))


def found(rep, check: str, column: str | None = None) -> list:
    return [f for f in rep.findings if f.check == check and (column is None or f.column == column)]


def the_one(rep, check: str, column: str | None = None):
    hits = found(rep, check, column)
    assert len(hits) == 1, f"{check} {column}: {[(f.check, f.column) for f in rep.findings]}"
    return hits[0]


def test_clean_data_has_no_errors_or_warnings():
    rep = report(clean())
    assert [f for f in rep.findings if f.severity != "info"] == []
    assert rep.rows == 3000 and rep.columns == 3 and rep.counts()["error"] == 0


def test_a_leaked_copy_of_the_target_is_an_error_and_a_noisy_one_a_warning():
    frame = clean()
    rng = np.random.default_rng(1)
    frame["approved"] = np.where(frame["y"] == "yes", "A", "R")  # the target under another name
    y01 = frame["y"].eq("yes").to_numpy().astype(float)
    flipped = rng.random(len(frame)) < 0.03
    noisy = np.where(flipped, 1 - y01, y01) + rng.normal(scale=0.05, size=len(frame))
    frame["score_after"] = noisy
    rep = report(frame)
    leak = the_one(rep, "target_leakage", "approved")
    assert leak.severity == "error" and leak.value == pytest.approx(1.0)
    assert "predicts the target on its own" in leak.message
    assert the_one(rep, "target_leakage", "score_after").severity == "warning"
    assert not found(rep, "target_leakage", "x1")  # a real, useful feature is not a leak
    assert rep.errors and rep.findings[0].severity == "error"  # most severe first


def test_a_leak_in_regression_is_found_by_its_r2():
    rng = np.random.default_rng(0)
    x = rng.normal(size=2000)
    price = 3 * x + rng.normal(size=2000)
    frame = pd.DataFrame({"x": x, "price": price, "price_with_tax": price * 1.2})
    rep = report(frame, "price")
    assert the_one(rep, "target_leakage", "price_with_tax").severity == "error"
    assert not found(rep, "target_leakage", "x")


def test_rows_shared_between_train_and_test_are_an_error_past_one_percent():
    frame = clean()
    train, test = frame.iloc[:2000].reset_index(drop=True), frame.iloc[2000:].reset_index(drop=True)
    leaked = pd.concat([test, train.iloc[:50]], ignore_index=True)  # 50 of 1050 test rows copied from train
    hit = the_one(report(train, test=leaked), "train_test_overlap")
    assert hit.severity == "error" and hit.value == pytest.approx(50 / 1050)
    assert "50 test rows" in hit.message
    few = pd.concat([test, train.iloc[:3]], ignore_index=True)
    assert the_one(report(train, test=few), "train_test_overlap").severity == "warning"
    assert not found(report(train, test=test), "train_test_overlap")


def test_overlap_is_found_when_the_test_file_reads_numbers_as_another_type():
    frame = clean()
    train = frame.iloc[:2000].reset_index(drop=True)
    test = train.iloc[:100].copy()
    test["x1"] = test["x1"].astype(np.float32).astype(np.float64)  # not the same values: no overlap
    assert not found(report(train, test=test), "train_test_overlap")
    ints = pd.DataFrame({"a": np.arange(500) % 7, "b": np.arange(500) % 11, "y": np.arange(500) % 2})
    as_float = ints.iloc[:40].astype({"a": float})
    assert the_one(report(ints, test=as_float), "train_test_overlap").value == pytest.approx(1.0)


def test_an_id_column_and_a_constant_column_are_warnings():
    frame = clean()
    frame["customer_id"] = np.arange(100_000, 100_000 + len(frame))
    frame["ticket"] = [f"T-{i:06d}" for i in range(len(frame))]
    frame["country"] = "FR"
    frame["flag"] = np.where(np.arange(len(frame)) < 10, "rare", "common")  # 99.7% one value
    rep = report(frame)
    assert the_one(rep, "id_like", "customer_id").severity == "warning"
    assert the_one(rep, "id_like", "ticket").severity == "warning"
    assert the_one(rep, "constant", "country").severity == "warning"
    assert the_one(rep, "near_constant", "flag").severity == "info"
    assert not found(rep, "id_like", "x1")  # unique floats are measurements, not ids
    assert not found(rep, "target_leakage", "customer_id")  # memorised ids do not predict unseen rows
    again = report(pd.concat([frame, frame.iloc[:60]], ignore_index=True))  # duplicated rows copy their ids
    hit = the_one(again, "id_like", "customer_id")
    assert hit.severity == "warning" and 0.95 < hit.value < 1.0 and "--ignore" in hit.message


def test_conflicting_labels_are_a_warning_with_their_share():
    frame = clean()
    twins = frame.iloc[:150].copy()
    twins["y"] = np.where(twins["y"] == "yes", "no", "yes")
    rep = report(pd.concat([frame, twins], ignore_index=True))
    hit = the_one(rep, "label_conflicts")
    assert hit.severity == "warning" and hit.value == pytest.approx(300 / 3150)
    assert "in 150 groups have identical features" in hit.message


def test_duplicate_rows_are_counted():
    frame = clean()
    rep = report(pd.concat([frame, frame.iloc[:300]], ignore_index=True))
    hit = the_one(rep, "duplicate_rows")
    assert hit.value == pytest.approx(300 / 3300) and hit.severity == "warning"
    assert the_one(report(pd.concat([frame, frame.iloc[:30]], ignore_index=True)), "duplicate_rows").severity == "info"


def test_a_one_percent_minority_class_is_a_warning_that_says_what_tandem_does():
    rng = np.random.default_rng(0)
    n = 5000
    frame = pd.DataFrame({"x": rng.normal(size=n), "fraud": np.where(np.arange(n) < 50, "yes", "no")})
    hit = the_one(report(frame, "fraud"), "class_imbalance")
    assert hit.severity == "warning" and hit.value == pytest.approx(0.01)
    assert "class 'yes' is 1.0%" in hit.message and "threshold" in hit.message
    single = frame.copy()
    single.loc[1:49, "fraud"] = "no"
    assert the_one(report(single, "fraud"), "class_imbalance").severity == "error"  # one row cannot be split


def test_missing_values_mixed_types_high_cardinality_and_outliers():
    frame = clean()
    n = len(frame)
    rng = np.random.default_rng(2)
    frame["mostly_missing"] = np.where(rng.random(n) < 0.7, np.nan, rng.normal(size=n))
    frame["some_missing"] = np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n))
    frame["age_text"] = np.where(rng.random(n) < 0.05, "n/a", rng.integers(18, 90, n).astype(str))
    frame["zip"] = rng.integers(0, 2000, n).astype(str)
    amount = rng.normal(100, 10, n)
    amount[:5] = 1e9
    frame["amount"] = amount
    rep = report(frame)
    assert the_one(rep, "missing_values", "mostly_missing").severity == "warning"
    some = the_one(rep, "missing_values", "some_missing")
    assert some.severity == "info" and 0.08 < some.value < 0.12
    mixed = the_one(rep, "mixed_types", "age_text")
    assert mixed.severity == "warning" and 0.9 < mixed.value < 1.0
    assert the_one(rep, "high_cardinality", "zip").value > 1000
    out = the_one(rep, "outliers", "amount")
    assert out.severity == "info" and out.value == pytest.approx(5 / n) and "1e+09" in out.message
    assert not found(rep, "outliers", "x1")


def test_adult_has_no_errors():
    train, test = load_adult()
    rep = report(train, "income", test=test)
    assert rep.errors == []
    assert the_one(rep, "missing_values", "occupation").value == pytest.approx(1843 / 32561)
    assert the_one(rep, "train_test_overlap").severity == "warning"  # a few identical people in both files
    assert not found(rep, "target_leakage")


def test_bad_test_data_is_a_clear_error():
    frame = clean()
    with pytest.raises(tandem.TandemError, match="test data is missing column.*'color'"):
        report(frame, test=frame.drop(columns=["color"]))
    with pytest.raises(tandem.TandemError, match="target column 'income' not found"):
        report(frame, "income")


def test_check_cli_json_and_strict(tmp_path, run_cli):
    frame = clean()
    frame["leak"] = frame["y"]
    path = tmp_path / "leaky.csv"
    frame.to_csv(path, index=False)
    proc = run_cli(["check", path, "--target", "y", "--json"], home=tmp_path / "home", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["counts"]["error"] == 1 and rep["findings"][0]["column"] == "leak"
    proc = run_cli(["check", path, "--target", "y", "--strict"], home=tmp_path / "home", cwd=tmp_path)
    assert proc.returncode == 1
    assert "error target_leakage: column 'leak'" in proc.stdout
    assert proc.stderr.strip() == "tandem: error: the quality gate found 1 error(s) (--strict)"


def test_train_keeps_the_gate_report_and_strict_stops_before_fitting(tmp_path):
    frame = clean(600)
    frame["leak"] = frame["y"]
    with pytest.raises(QualityError, match="--strict.*column 'leak': predicts the target"):
        tandem.train(frame, "y", time_limit=5, strict=True, home=tmp_path, families=["linear"])
    model = tandem.train(frame, "y", time_limit=5, home=tmp_path, families=["linear"])
    quality = model.manifest["quality"]
    assert quality["counts"]["error"] == 1 and quality["findings"][0]["check"] == "target_leakage"
