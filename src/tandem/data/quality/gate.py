"""The quality gate itself: every check run on a training table (and its test table)."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tandem.data.quality.blocks import (
    BLOCK_VALUES,
    _block_outliers,
    _block_stats,
    _exact_block,
    _integer_mask,
    _numeric_groups,
)
from tandem.data.quality.columns import (
    OUTLIER_SAMPLE,
    _column_findings,
    _column_stats,
    _outliers,
    _Stats,
    _target_findings,
)
from tandem.data.quality.leakage import _leakage
from tandem.data.quality.report import SEVERITIES, Finding, QualityReport, _pct
from tandem.data.quality.rows import _codes, _combine, _joint, _label_conflicts, _row_hashes
from tandem.errors import DataError, TandemError

OVERLAP_ERROR = 0.01  # share of test rows found in the training rows


def check_quality(table: pa.Table, target: str, *, test: pa.Table | None = None, task: str | None = None,
                  seed: int = 0) -> QualityReport:
    """Run every check on ``table`` (target column ``target``) and, when given, against ``test``."""
    from tandem.data.infer import check_target, infer_task

    started = time.perf_counter()
    check_target(table, target, what="data")
    findings: list[Finding] = []
    n = table.num_rows
    features = [c for c in table.column_names if c != target]
    if test is not None:
        missing = [c for c in features if c not in test.column_names]
        if missing:
            raise DataError(f"test data is missing column(s) {', '.join(repr(m) for m in missing)} "
                              "that the training data has")
    target_col = table.column(target)
    try:
        task, labels = infer_task(pc.drop_null(target_col), target, task)
    except TandemError as exc:
        findings.append(Finding("target", "error", str(exc), target))
        task, labels = None, None

    stats: dict[str, _Stats] = {}
    blocks: list[tuple[list[str], np.ndarray | None]] = []  # numeric columns checked a block at a time
    kept_values = 0
    for names in _numeric_groups(table, features, n):
        names, x = _exact_block(table, names)
        if not names:
            continue
        sorted_x = np.sort(x, axis=1)
        block_stats = _block_stats(sorted_x, _integer_mask(table, names))
        stats.update(zip(names, block_stats, strict=True))
        if n <= OUTLIER_SAMPLE:
            findings += _block_outliers(names, sorted_x, block_stats)
        else:
            findings += [f for name, st in zip(names, block_stats, strict=True) if st.n_unique > 20
                         for f in _outliers(name, table.column(name), seed)]
        kept_values += x.size  # the leakage check reuses the first blocks rather than read them again
        blocks.append((names, x if kept_values <= BLOCK_VALUES else None))
    in_blocks = set(stats)
    for name in features:
        if name not in in_blocks:
            stats[name] = _column_stats(table.column(name), n)
    for name in features:
        findings += _column_findings(name, stats[name], n)
        if name not in in_blocks and stats[name].kind == "numeric" and stats[name].n_unique > 20:
            findings += _outliers(name, table.column(name), seed)
    stats = {name: stats[name] for name in features}
    findings += _target_findings(target, target_col, task, labels, n)

    # rows as hashes: duplicates, train/test overlap, label conflicts
    test_n = test.num_rows if test is not None else 0
    feature_hash = _row_hashes([_joint(table, test, c) for c in features], n + test_n)
    target_codes = _codes(target_col)
    train_hash = feature_hash[:n]
    full_hash = _combine(train_hash.copy(), target_codes)
    n_dup = n - len(np.unique(full_hash))
    if n_dup:
        share = n_dup / n
        findings.append(Finding(
            "duplicate_rows", "warning" if share > 0.05 else "info",
            f"{n_dup} rows ({_pct(share)}) repeat an earlier row exactly: they weigh more in training and can "
            "sit in both a training and a validation fold", value=share))
    if task in ("binary", "multiclass"):
        findings += _label_conflicts(train_hash, target_codes, pc.is_valid(target_col).to_numpy(zero_copy_only=False))
    if test is not None and test_n:
        shared = np.isin(feature_hash[n:], train_hash)
        k = int(shared.sum())
        if k:
            share = k / test_n
            findings.append(Finding(
                "train_test_overlap", "error" if share >= OVERLAP_ERROR else "warning",
                f"{k} test rows ({_pct(share)}) also appear in the training data (same values in every feature): "
                "test scores on them measure memory, not generalisation; remove them from one side",
                value=share))
    if task is not None:
        findings += _leakage(table, target_col, features, stats, task, seed, blocks)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: (order[f.severity], f.check, f.column or ""))
    return QualityReport(rows=n, columns=len(features), target=target, test_rows=test.num_rows if test else None,
                         seconds=time.perf_counter() - started, findings=findings)
