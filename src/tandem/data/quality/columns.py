"""Checks on one column at a time: its stats, what they say about it (missing, constant, id-like, free text,
mixed types, high cardinality), its outliers, and the target's classes."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tandem.data.quality.report import Finding, _pct

MINORITY_WARNING = 0.05
MINORITY_INFO = 0.20
OUTLIER_SAMPLE = 100_000  # rows of a column the outlier rule reads (a seeded sample beyond)
FREE_TEXT_WORDS = 4  # words per value from which a text column is free text (as the schema reads it)
ID_UNIQUE_SHARE = 0.95  # a column this unique, of text or of counter-like integers, reads as an identifier
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
_ID_NAME = re.compile(r"(^|[_\s.-])(id|uuid|guid|key|index)$|^(id|uuid|guid|index)([_\s.-]|$)", re.I)


@dataclass
class _Stats:
    kind: str  # numeric, boolean, string, other
    missing: int
    n_unique: int
    top_share: float  # share of non-missing rows holding the most frequent value
    numeric_share: float | None = None  # strings: share of non-missing values that read as numbers
    integer_steps: bool = False  # (nearly) unique integers that fill their whole range: a counter
    mean_words: float = 0.0  # strings: words per distinct value (free text has several)


def _column_stats(col: pa.ChunkedArray, n: int) -> _Stats:
    t = col.type
    if pa.types.is_boolean(t):
        kind = "boolean"
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        kind = "numeric"
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        kind = "string"
    else:
        kind = "other"
    missing = col.null_count
    if pa.types.is_floating(t):
        missing += int(pc.sum(pc.is_nan(col)).as_py() or 0)
    counts = pc.value_counts(col.drop_null() if kind != "numeric" else _drop_missing(col))
    freq = counts.field("counts").to_numpy()
    present = n - missing
    stats = _Stats(kind, missing, len(freq), float(freq.max()) / present if present else 0.0)
    if kind == "string" and len(freq):
        values = counts.field("values")
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        numeric = pc.match_substring_regex(values, _NUMBER).to_numpy(zero_copy_only=False)
        stats.numeric_share = float(freq[numeric].sum()) / present
        sample = values.slice(0, 2000)
        stats.mean_words = float(np.mean(pc.count_substring_regex(pc.utf8_trim_whitespace(sample), r"\S+")
                                         .to_numpy(zero_copy_only=False)))
    if kind == "numeric" and pa.types.is_integer(t) and len(freq) >= ID_UNIQUE_SHARE * present and present >= 20:
        mm = pc.min_max(col)
        stats.integer_steps = mm["max"].as_py() - mm["min"].as_py() + 1 == len(freq)  # every integer in the range
    return stats


def _drop_missing(col: pa.ChunkedArray) -> pa.ChunkedArray:
    col = col.drop_null()
    if pa.types.is_floating(col.type):
        col = col.filter(pc.invert(pc.is_nan(col)))
    return col


def _column_findings(name: str, s: _Stats, n: int) -> list[Finding]:
    out = []
    present = n - s.missing
    if s.missing:
        share = s.missing / n
        if present == 0:
            out.append(Finding("missing_values", "warning", "every value is missing: tandem ignores the column",
                               name, 1.0))
            return out
        out.append(Finding(
            "missing_values", "warning" if share > 0.5 else "info",
            f"{s.missing} values missing ({_pct(share)}); tree learners route them natively, the others impute "
            "the median (numbers) or read them as an unknown category", name, share))
    if s.n_unique == 1:
        out.append(Finding("constant", "warning", "one value in every row: the column carries no information",
                           name, 1.0))
        return out
    if s.top_share >= 0.99:
        out.append(Finding("near_constant", "info",
                           f"{_pct(s.top_share)} of the rows hold the same value: little to learn from it",
                           name, s.top_share))
    if s.kind == "string" and s.mean_words >= FREE_TEXT_WORDS:
        out.append(Finding("free_text", "info", f"free text ({s.mean_words:.0f} words a value on average): tandem "
                           "reads it as TF-IDF features of its words, word pairs and character n-grams", name,
                           s.mean_words))
        return out
    near_unique = s.n_unique >= ID_UNIQUE_SHARE * present and present >= 20
    if near_unique and (s.kind == "string" or s.integer_steps or (s.kind == "numeric" and _ID_NAME.search(name))):
        share = s.n_unique / present
        fate = ("so tandem leaves it out of the features (drop it, or keep it out of the data you serve)"
                if s.n_unique == present else "but it repeats in some rows, so tandem would use it: leave it out "
                "with --ignore")
        out.append(Finding("id_like", "warning",
                           f"{_pct(share)} of its values are unique, like an identifier: it cannot generalise, "
                           f"{fate}", name, share))
        return out
    if s.kind == "string":
        if s.numeric_share is not None and 0.0 < s.numeric_share < 1.0 and s.numeric_share >= 0.5:
            out.append(Finding(
                "mixed_types", "warning",
                f"{_pct(s.numeric_share)} of the values are numbers and the rest text, so the column is read as "
                "categories; if the text marks missing values (like '?' or 'n/a'), read it as missing",
                name, s.numeric_share))
        ratio = s.n_unique / max(present, 1)
        if s.n_unique > 50:
            severity = "warning" if ratio > 0.5 else "info"
            out.append(Finding(
                "high_cardinality", severity,
                f"{s.n_unique} distinct categories ({ratio:.0%} of the rows): trees read every category seen "
                "in training, the one-hot view keeps the 50 most frequent; rare ones hardly generalise",
                name, float(s.n_unique)))
    return out


def _outliers(name: str, col: pa.ChunkedArray, seed: int) -> list[Finding]:
    """Values farther outside the central 98% of the column than that range is wide (typos like 1e9, codes
    like -999): a rule that leaves long but real tails alone."""
    x = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    x = x[~np.isnan(x)]
    sample = x if len(x) <= OUTLIER_SAMPLE else np.random.default_rng(seed).choice(x, OUTLIER_SAMPLE, replace=False)
    p1, p99 = np.quantile(sample, [0.01, 0.99])
    spread = p99 - p1
    if spread <= 0:  # mostly one value (zeros, say): the percentiles say nothing about the rest
        return []
    far = (x < p1 - spread) | (x > p99 + spread)
    k = int(far.sum())
    if not k:
        return []
    return [_outlier_finding(name, k, len(x), p1, p99, x[far].min(), x[far].max())]


def _outlier_finding(name: str, k: int, present: int, p1: float, p99: float, lo: float, hi: float) -> Finding:
    share = k / present
    return Finding("outliers", "info",
                   f"{k} values ({_pct(share)}) lie farther outside the central 98% [{p1:.4g}, {p99:.4g}] than it "
                   f"is wide (from {lo:.4g} to {hi:.4g}): check they are real values, not typos "
                   "or codes for missing; trees are not thrown by them, the linear and MLP learners are",
                   name, share)


def _target_findings(target: str, col: pa.ChunkedArray, task: str | None, labels: list[str] | None,
                     n: int) -> list[Finding]:
    out = []
    if col.null_count:
        share = col.null_count / n
        out.append(Finding("missing_target", "warning" if share > 0.5 else "info",
                           f"{col.null_count} rows ({_pct(share)}) have no target value: training drops them",
                           target, share))
    if task not in ("binary", "multiclass"):
        return out
    counts = pc.value_counts(col.drop_null())
    freq = counts.field("counts").to_numpy()
    values = counts.field("values").to_pylist()
    i = int(np.argmin(freq))
    share = float(freq[i]) / float(freq.sum())
    label = values[i]
    if freq[i] < 2:
        out.append(Finding("class_imbalance", "error",
                           f"class '{label}' has {freq[i]} row: each class needs at least 2 rows to be split "
                           "between training and validation", target, share))
    elif share < MINORITY_INFO:
        severity = "warning" if share < MINORITY_WARNING else "info"
        out.append(Finding(
            "class_imbalance", severity,
            f"class '{label}' is {_pct(share)} of the rows ({freq[i]} of {int(freq.sum())}): accuracy would look "
            "good for a model that never predicts it. tandem stratifies its folds by class and, for binary "
            "targets, tunes the decision threshold on validation rows for the metric; choose a metric that "
            "sees the small class (--metric pr_auc, f1 or balanced_accuracy)", target, share))
    return out
