"""Wide tables (thousands of columns): the steps before the first fit work a block of columns at a time, give
what the column-by-column code gives, load torch only for a learner that needs it, and leave the first fit no
more time than the limit has left (issue 15)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

from helpers import mixed_frame
from tandem.bundle.inputs import InputEncoder
from tandem.data import quality as Q
from tandem.data.infer import infer_schema
from tandem.data.quality import blocks as QB
from tandem.data.quality import columns as QC
from tandem.data.quality import leakage as QL
from tandem.data.quality import rows as QR
from tandem.data.readers import read_table
from tandem.features.preprocess import Preprocessor
from tandem.learners import FAMILIES, FAMILY_VIEWS, family_view, learner_class


def awkward_table(n: int = 400, seed: int = 0) -> pa.Table:
    """Numeric columns with missing values, constants, ties, outliers, counters and more than 256 values."""
    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array] = {}
    for j in range(6):
        x = rng.normal(size=n)
        x[rng.random(n) < 0.1 * j] = np.nan  # 0% to 50% missing: groups of columns with different counts
        cols[f"normal{j}"] = pa.array(x)
    heavy = rng.normal(size=n)
    heavy[:3] = [1e9, -999.0, 5e6]
    cols["outliers"] = pa.array(heavy)
    cols["constant"] = pa.array(np.full(n, 3.5))
    cols["all_nan"] = pa.array(np.full(n, np.nan))
    with_nulls = rng.integers(0, 5, n).astype(float)
    cols["few_values_nulls"] = pa.array(with_nulls, mask=rng.random(n) < 0.2)  # nulls, not NaN
    cols["ties"] = pa.array(np.round(rng.normal(size=n), 1) + 0.0)  # many ties, about 60 values (+0.0: no -0.0)
    cols["mostly_zero"] = pa.array(np.where(rng.random(n) < 0.995, 0.0, rng.normal(size=n)))
    cols["counter"] = pa.array(np.arange(n, dtype=np.int64))
    cols["ints"] = pa.array(rng.integers(-3, 30, n), type=pa.int32())
    cols["int_nulls"] = pa.array(rng.integers(0, 1000, n), mask=rng.random(n) < 0.3)
    cols["float32"] = pa.array(rng.normal(size=n).astype(np.float32))
    cols["signed_zero"] = pa.array(np.where(rng.random(n) < 0.5, -0.0, 0.0))  # Arrow counts two values
    cols["huge_int"] = pa.array(2 ** 60 + np.arange(n, dtype=np.int64) % 7)  # beyond float64's integers
    cols["leak"] = pa.array(np.where(rng.random(n) < 0.5, 1.0, 2.0))
    cols["target"] = pa.array(np.where(cols["leak"].to_numpy() > 1.5, "a", "b"))
    cols["target_reg"] = pa.array(cols["leak"].to_numpy() * 3 + rng.normal(0, 0.01, n))
    return pa.table(cols)


FEATURES = [c for c in awkward_table().column_names if not c.startswith("target")]


def test_block_stats_and_outliers_equal_the_per_column_ones():
    table = awkward_table()
    n = table.num_rows
    (names,) = QB._numeric_groups(table, FEATURES, n)
    kept, x = QB._exact_block(table, names)
    assert set(names) - set(kept) == {"signed_zero", "huge_int"}  # those two go one by one
    sorted_x = np.sort(x, axis=1)
    block = QB._block_stats(sorted_x, QB._integer_mask(table, kept))
    for name, st in zip(kept, block, strict=True):
        assert st == QC._column_stats(table.column(name), n), name
    assert any(s.integer_steps for s in block) and any(s.missing for s in block) and any(s.n_unique == 1 for s in block)
    per_column = [f for name, st in zip(kept, block, strict=True) if st.n_unique > 20
                  for f in QC._outliers(name, table.column(name), 0)]
    assert QB._block_outliers(kept, sorted_x, block) == per_column
    assert {f.column for f in per_column} >= {"outliers"}


@pytest.mark.parametrize("task, target", [("binary", "target"), ("regression", "target_reg")])
def test_block_leakage_skill_equals_the_per_column_one(task, target):
    table = awkward_table()
    stats = {c: QC._column_stats(table.column(c), table.num_rows) for c in FEATURES}
    rng = np.random.default_rng(3)
    half = rng.permutation(table.num_rows) < table.num_rows // 2
    col = table.column(target)
    y = col.to_numpy() if task == "regression" else np.unique(QR._codes(col).astype(np.int64), return_inverse=True)[1]
    names = [c for c in FEATURES if stats[c].n_unique > 1 and c not in ("signed_zero", "huge_int")]
    assert any(stats[c].n_unique > 256 for c in names) and any(stats[c].n_unique <= 256 for c in names)
    block = QL._block_skill(QB._matrix(table, names), [stats[c] for c in names], y, half, task)
    for name, skill in zip(names, block, strict=True):
        bins, n_bins = QL._bins(table.column(name), stats[name], half)
        assert skill == QL._skill(bins, n_bins, y, half, task), name
    assert block[names.index("leak")] >= Q.LEAK_ERROR


def test_quality_report_of_a_wide_table_names_every_column():
    table = awkward_table()
    wide = {f"w{j}": table.column(c) for j, c in enumerate(FEATURES * 20)}
    wide["target"] = table.column("target")
    report = Q.check_quality(pa.table(wide), "target")
    # the copy of 'leak' in each block of copies is flagged, as are the copies of the constant column
    by_check: dict[str, set] = {}
    for f in report.findings:
        by_check.setdefault(f.check, set()).add(f.column)
    leak_copies = {f"w{j}" for j in range(len(FEATURES) * 20) if FEATURES[j % len(FEATURES)] == "leak"}
    const_copies = {f"w{j}" for j in range(len(FEATURES) * 20) if FEATURES[j % len(FEATURES)] == "constant"}
    assert by_check["target_leakage"] == leak_copies
    assert const_copies <= by_check["constant"]
    # the same findings as the column-by-column checks
    wide_table = pa.table(wide)
    names = [c for c in wide if c != "target"]
    stats = {c: QC._column_stats(wide_table.column(c), wide_table.num_rows) for c in names}
    reference = [f for c in names for f in QC._column_findings(c, stats[c], wide_table.num_rows)]
    reference += [f for c in names if stats[c].kind == "numeric" and stats[c].n_unique > 20
                  for f in QC._outliers(c, wide_table.column(c), 0)]
    reference += QL._leakage(wide_table, wide_table.column("target"), names, stats, "binary", 0)
    checks = {f.check for f in reference}
    key = lambda f: (f.check, f.column, f.severity, f.message, f.value)  # noqa: E731
    assert sorted(map(key, (f for f in report.findings if f.check in checks))) == sorted(map(key, reference))
    assert {"outliers", "missing_values", "constant", "id_like", "target_leakage"} <= checks


def _preprocessor_per_column(num: np.ndarray) -> tuple[list, list, list, list]:
    """The per-column loop Preprocessor.fit used before it worked on blocks (the reference)."""
    medians, means, scales, indicators = [], [], [], []
    num = num.astype(np.float64)
    for j in range(num.shape[1]):
        col = num[:, j]
        ok = ~np.isnan(col)
        med = float(np.median(col[ok])) if ok.any() else 0.0
        filled = np.where(ok, col, med)
        std = float(filled.std())
        medians.append(med)
        means.append(float(filled.mean()))
        scales.append(std if std > 1e-12 else 1.0)
        if not ok.all():
            indicators.append(j)
    return medians, means, scales, indicators


def test_preprocessor_fit_equals_the_per_column_loop():
    table = awkward_table().drop_columns(["huge_int", "target_reg"])
    schema = infer_schema(table, "target")
    encoder = InputEncoder(schema)
    enc = encoder.encode_table(table)
    assert np.isnan(enc.num).any()
    pre = Preprocessor.fit(enc, encoder.num_feature_names, encoder.cat_feature_names, [], None)
    assert (pre.medians, pre.means, pre.scales, pre.indicator_columns) == _preprocessor_per_column(enc.num)


def test_every_family_view_is_its_learner_view():
    assert set(FAMILY_VIEWS) == set(FAMILIES)
    for family in FAMILIES:
        assert family_view(family) == learner_class(family).view, family


def test_torch_loads_only_for_a_learner_that_needs_it(tmp_path):
    # cnn and minilm_finetune are offered but cannot read numeric data: the portfolio filter must not
    # import their modules (and torch) to find that out
    code = f"""
import json, sys
import numpy as np, pandas as pd
import tandem
rng = np.random.default_rng(0)
x = rng.normal(size=(200, 4))
frame = pd.DataFrame(x, columns=list("abcd"))
frame["y"] = np.where(x[:, 0] + rng.normal(0, 0.3, 200) > 0, "yes", "no")
model = tandem.train(frame, "y", time_limit=20, families=["lightgbm", "linear", "cnn", "minilm_finetune"],
                     path={str(tmp_path / "m")!r})
print(json.dumps({{"torch": "torch" in sys.modules,
                   "families": sorted({{r["family"] for r in model.manifest["leaderboard"]}})}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"torch": False, "families": ["lightgbm", "linear"]} or (
        result["torch"] is False and set(result["families"]) <= {"lightgbm", "linear"})


def test_first_fit_gets_no_more_than_the_time_left():
    from tandem.study.runner import StudyConfig, run_study

    table = read_table(mixed_frame(600, seed=0), what="training data")
    configs = [{"name": "lgbm", "family": "lightgbm",
                "params": {"learning_rate": 0.05, "num_leaves": 15, "n_estimators": 200}}]
    config = StudyConfig(target="churn", time_limit=10.0, configs=configs, bagging="no")
    # the limit already spent before the study: the first fit must stop at once, yet leave one model
    result = run_study(table, config, started=time.monotonic() - 10.0)
    assert len(result.candidates) == 1 and result.members
    assert result.candidates[0].stopped_by_deadline
