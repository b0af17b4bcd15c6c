"""The quality gate: what is wrong with a training table (and its test table) before anything is fit.

Every check is vectorised over Arrow and numpy (no Python loop over rows), so a million rows of
fifty columns take seconds. Rows are compared through a 64-bit hash of their values, the same
for a value in the training and the test table, so duplicates, train/test overlap and label
conflicts cost a sort, not a join. Each finding has a severity:

- ``error``: the model or its scores would be wrong (target leakage, test rows copied from the
  training rows, a class too small to validate); ``--strict`` refuses to go on;
- ``warning``: worth fixing or at least knowing (id-like, constant or mostly missing columns,
  label conflicts, class imbalance, mixed types, many duplicates);
- ``info``: a fact about the data that explains the model (some missing values, outliers,
  near-constant or high-cardinality columns).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tandem.errors import DataError, TandemError

SEVERITIES = ("error", "warning", "info")
LEAK_ERROR = 0.98  # skill of one feature alone (0 = no better than the majority, 1 = perfect) ...
LEAK_WARNING = 0.90  # ... on rows it did not see
OVERLAP_ERROR = 0.01  # share of test rows found in the training rows
MINORITY_WARNING = 0.05
MINORITY_INFO = 0.20
LEAK_SAMPLE_ROWS = 200_000
OUTLIER_SAMPLE = 100_000  # rows of a column the outlier rule reads (a seeded sample beyond)
BLOCK_VALUES = 1 << 22  # values of a block of numeric columns (32 MiB as float64)
FREE_TEXT_WORDS = 4  # words per value from which a text column is free text (as the schema reads it)
ID_UNIQUE_SHARE = 0.95  # a column this unique, of text or of counter-like integers, reads as an identifier
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
_ID_NAME = re.compile(r"(^|[_\s.-])(id|uuid|guid|key|index)$|^(id|uuid|guid|index)([_\s.-]|$)", re.I)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class Finding:
    """One problem (or fact) found in the data."""

    check: str
    severity: str
    message: str
    column: str | None = None
    value: float | None = None  # the figure the severity was decided on (a fraction, a skill, a count)


@dataclass
class QualityReport:
    """Every finding of one run of the gate, most severe first."""

    rows: int
    columns: int
    target: str
    test_rows: int | None
    seconds: float
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def counts(self) -> dict[str, int]:
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    def to_dict(self) -> dict:
        return {"rows": self.rows, "columns": self.columns, "target": self.target, "test_rows": self.test_rows,
                "seconds": round(self.seconds, 3), "counts": self.counts(),
                "findings": [asdict(f) for f in self.findings]}

    def summary(self) -> str:
        c = self.counts()
        return f"{c['error']} error(s), {c['warning']} warning(s), {c['info']} note(s)"


class QualityError(DataError):
    """The gate found errors and was asked to be strict (exit status 1: the data, not the command, is wrong)."""

    exit_code = 1


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


# -- columns one by one -------------------------------------------------------------------------
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


# -- numeric columns a block at a time ------------------------------------------------------------
# A wide table (thousands of numeric columns) checked column by column spends seconds in Python
# and in numpy's per-call overhead; these give the same stats and findings from one matrix.
def _numeric_groups(table: pa.Table, features: list[str], n: int) -> list[list[str]]:
    names = [c for c in features
             if pa.types.is_floating(table.schema.field(c).type) or pa.types.is_integer(table.schema.field(c).type)]
    if n == 0 or len(names) < 2:
        return []
    per_block = max(1, BLOCK_VALUES // n)
    return [names[i:i + per_block] for i in range(0, len(names), per_block)]


def _integer_mask(table: pa.Table, names: list[str]) -> np.ndarray:
    return np.array([pa.types.is_integer(table.schema.field(c).type) for c in names], dtype=bool)


def _matrix(table: pa.Table, names: list[str], index: pa.Array | None = None) -> np.ndarray:
    """Columns ``names`` as rows of one float64 matrix, missing values as NaN."""
    cols = []
    for c in names:
        col = table.column(c)
        if index is not None:
            col = col.take(index)
        cols.append(np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64))
    return np.stack(cols) if cols else np.empty((0, 0 if index is None else len(index)))


def _exact_block(table: pa.Table, names: list[str]) -> tuple[list[str], np.ndarray]:
    """The matrix of the columns whose values float64 keeps apart as Arrow does (others go one by one):
    integers of 2**53 or more round, and Arrow counts -0.0 and 0.0 as two values where a sort sees one."""
    x = _matrix(table, names)
    with np.errstate(invalid="ignore"):
        bad = ((x == 0) & np.signbit(x)).any(axis=1)
        bad |= _integer_mask(table, names) & (np.abs(x) >= 2.0 ** 53).any(axis=1)
    if bad.any():
        keep = np.flatnonzero(~bad)
        return [names[i] for i in keep], x[keep]
    return names, x


def _block_stats(sorted_x: np.ndarray, integer: np.ndarray) -> list[_Stats]:
    """:func:`_column_stats` of each row of ``sorted_x`` (a column's values sorted, NaN last)."""
    b, n = sorted_x.shape
    present = n - np.isnan(sorted_x).sum(axis=1)
    valid = np.arange(n)[None, :] < present[:, None]
    starts = np.ones_like(valid)
    starts[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    starts &= valid
    n_unique = starts.sum(axis=1)
    flat = np.flatnonzero(starts)  # a run of equal values begins at each; runs end at the next or at the NaNs
    row = flat // n
    ends = np.minimum(np.r_[flat[1:], b * n], row * n + present[row])
    top = np.zeros(b, dtype=np.int64)
    if len(flat):
        firsts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        top[row[firsts]] = np.maximum.reduceat(ends - flat, firsts)
    lo = sorted_x[:, 0]
    hi = sorted_x[np.arange(b), np.maximum(present - 1, 0)]
    out = []
    for j in range(b):
        p, u = int(present[j]), int(n_unique[j])
        st = _Stats("numeric", n - p, u, float(top[j]) / p if p else 0.0)
        if integer[j] and u >= ID_UNIQUE_SHARE * p and p >= 20:
            st.integer_steps = int(hi[j]) - int(lo[j]) + 1 == u
        out.append(st)
    return out


def _quantiles_by_count(sorted_x: np.ndarray, present: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.quantile`` of each row's present values (its first ``present`` ones), rows as columns of the result;
    rows with the same count share one call, so every figure is what the per-column call gives."""
    out = np.full((len(q), len(sorted_x)), np.nan)
    for m in np.unique(present):
        if m == 0:
            continue
        rows = np.flatnonzero(present == m)
        out[:, rows] = np.quantile(sorted_x[rows, :m], q, axis=1)
    return out


def _block_outliers(names: list[str], sorted_x: np.ndarray, stats: list[_Stats]) -> list[Finding]:
    """:func:`_outliers` of each column with more than 20 values, on a block of at most OUTLIER_SAMPLE rows."""
    rows = np.flatnonzero([s.n_unique > 20 for s in stats])
    if not len(rows):
        return []
    x = sorted_x[rows]
    present = np.array([x.shape[1] - stats[i].missing for i in rows])
    p1, p99 = _quantiles_by_count(x, present, np.array([0.01, 0.99]))
    spread = p99 - p1
    with np.errstate(invalid="ignore"):
        far = (x < (p1 - spread)[:, None]) | (x > (p99 + spread)[:, None])
    far &= (spread > 0)[:, None]
    k = far.sum(axis=1)
    lo = np.where(far, x, np.inf).min(axis=1)
    hi = np.where(far, x, -np.inf).max(axis=1)
    return [_outlier_finding(names[rows[j]], int(k[j]), int(present[j]), p1[j], p99[j], lo[j], hi[j])
            for j in np.flatnonzero(k)]


def _count(k: int, what: str) -> str:
    return f"{k} {what}{'' if k == 1 else 's'}"


def _pct(share: float) -> str:
    return "<0.1%" if 0 < share < 0.001 else f"{share:.1%}"


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


# -- rows as hashes -----------------------------------------------------------------------------
def _joint(table: pa.Table, test: pa.Table | None, name: str) -> pa.ChunkedArray:
    """A column of the training rows followed by the test rows, in one type (so equal values hash alike)."""
    col = table.column(name)
    if test is None or name not in test.column_names:
        return col
    other = test.column(name)
    if other.type != col.type:
        if _is_number(col.type) and _is_number(other.type):
            col, other = pc.cast(col, pa.float64()), pc.cast(other, pa.float64())
        else:
            col, other = pc.cast(col, pa.large_string()), pc.cast(other, pa.large_string())
    return pa.chunked_array(col.chunks + other.chunks, type=col.type)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)


def _codes(col: pa.ChunkedArray) -> np.ndarray:
    """uint64 per row, equal for equal values (missing values equal each other)."""
    t = col.type
    if _is_number(t):
        # as float64, so 5 and 5.0 hash alike across a training and a test table; an integer beyond 2**53 takes
        # the nearest float (as the model reads it), and +0.0 folds -0.0 into 0.0
        x = pc.cast(col, pa.float64(), safe=False).to_numpy(zero_copy_only=False) + 0.0
        x[np.isnan(x)] = np.inf * 0  # every missing value as the same NaN
        return x.view(np.uint64)
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t) or pa.types.is_duration(t):
        col = pc.cast(col, pa.int64()) if not pa.types.is_date(t) else pc.cast(pc.cast(col, pa.date32()), pa.int32())
        return pc.fill_null(col, -1).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        col = pc.cast(col, pa.large_string())
    encoded = pc.dictionary_encode(col.combine_chunks() if col.num_chunks != 1 else col.chunk(0))
    return pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)


def _combine(h: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Mix one column's codes into the row hashes (boost's hash_combine on 64 bits, then a finaliser)."""
    h ^= codes + _GOLDEN + (h << np.uint64(6)) + (h >> np.uint64(2))
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(29)
    return h


def _row_hashes(columns: list[pa.ChunkedArray], n: int) -> np.ndarray:
    h = np.zeros(n, dtype=np.uint64)
    for col in columns:
        h = _combine(h, _codes(col))
    return h


def _label_conflicts(feature_hash: np.ndarray, labels: np.ndarray, has_label: np.ndarray) -> list[Finding]:
    h, y = feature_hash[has_label], labels[has_label].astype(np.int64)
    order = np.argsort(h, kind="stable")
    h, y = h[order], y[order]
    starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
    sizes = np.diff(np.r_[starts, len(h)])
    conflict = np.minimum.reduceat(y, starts) != np.maximum.reduceat(y, starts)
    rows = int(sizes[conflict].sum())
    if not rows:
        return []
    share = rows / len(h)
    return [Finding("label_conflicts", "warning" if share > 0.01 else "info",
                    f"{rows} rows ({_pct(share)}) in {_count(int(conflict.sum()), 'group')} have identical features "
                    "but different labels: no model can tell them apart, which caps accuracy on them", value=share)]


# -- one feature alone --------------------------------------------------------------------------
def _leakage(table: pa.Table, target_col: pa.ChunkedArray, features: list[str], stats: dict[str, _Stats],
             task: str, seed: int, blocks: list[tuple[list[str], np.ndarray | None]] | None = None) -> list[Finding]:
    """Flag a feature that predicts the target (almost) on its own, scored on rows it was not fit on."""
    keep = pc.is_valid(target_col)
    if pa.types.is_floating(target_col.type):
        keep = pc.and_(keep, pc.invert(pc.is_nan(target_col)))
    rows = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
    rng = np.random.default_rng(seed)
    if len(rows) > LEAK_SAMPLE_ROWS:
        rows = np.sort(rng.choice(rows, LEAK_SAMPLE_ROWS, replace=False))
    if len(rows) < 20:
        return []
    half = rng.permutation(len(rows)) < len(rows) // 2  # fit on one half, score on the other
    index = pa.array(rows)
    target = target_col.take(index)
    if task == "regression":
        y = pc.cast(target, pa.float64()).to_numpy(zero_copy_only=False)
    else:
        y = _codes(target).astype(np.int64)
        _, y = np.unique(y, return_inverse=True)
    skills: dict[str, float] = {}
    cells = (min(len(rows), 256) + 2) * (1 if task == "regression" else int(y.max()) + 1)  # per column, at most
    per_chunk = max(1, min(BLOCK_VALUES // cells, BLOCK_VALUES // len(rows)))
    for block_names, block in blocks or []:
        varied = [i for i, c in enumerate(block_names) if stats[c].n_unique > 1]
        for i in range(0, len(varied), per_chunk):
            at = varied[i:i + per_chunk]
            chunk = [block_names[j] for j in at]
            if len(rows) < table.num_rows:
                x = _matrix(table, chunk, index)
            else:  # every row kept: the block read for the stats, or one read of the whole columns
                x = block[at] if block is not None else _matrix(table, chunk)
            skills.update(zip(chunk, _block_skill(x, [stats[c] for c in chunk], y, half, task), strict=True))
    out = []
    for name in features:
        s = stats[name]
        if s.n_unique <= 1 or s.kind == "other":
            continue
        if name in skills:
            skill = skills[name]
        else:
            bins, n_bins = _bins(table.column(name).take(index), s, half)
            skill = _skill(bins, n_bins, y, half, task)
        if skill >= LEAK_WARNING:
            what = "R²" if task == "regression" else "skill over the majority class"
            out.append(Finding(
                "target_leakage", "error" if skill >= LEAK_ERROR else "warning",
                f"predicts the target on its own ({what} {skill:.3f} on rows it was not fit on): a copy or a "
                "consequence of the target would make the model look perfect and fail in use; keep it only if "
                "its value is known before the target is", name, round(float(skill), 4)))
    return out


_QUANTILE_EDGES = np.linspace(0, 1, 257)[1:-1]


def _block_bins(x: np.ndarray, stats: list[_Stats], fit_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_bins` of each row of ``x``: the same partition of its values into bins (numbered alike
    for the quantile bins, in another order for one bin per value, which no skill depends on)."""
    b, r = x.shape
    bins = np.empty((b, r), dtype=np.int64)
    n_bins = np.empty(b, dtype=np.int64)
    wide = np.array([s.n_unique > 256 for s in stats], dtype=bool)
    if wide.any():
        rows = np.flatnonzero(wide)
        fit = np.sort(x[rows][:, fit_rows], axis=1)
        present = fit.shape[1] - np.isnan(fit).sum(axis=1)
        edges = _quantiles_by_count(fit, present, _QUANTILE_EDGES)
        for j, i in enumerate(rows):
            if present[j] == 0:
                bins[i], n_bins[i] = 0, 1
                continue
            e = np.unique(edges[:, j])
            bins[i] = np.searchsorted(e, x[i], side="right")
            bins[i, np.isnan(x[i])] = len(e) + 1
            n_bins[i] = len(e) + 2
    rows = np.flatnonzero(~wide)
    if len(rows):  # one bin per value (equal floats alike, -0.0 with 0.0), every missing value in one more
        v = x[rows]
        order = np.argsort(v, axis=1, kind="stable")
        sv = np.take_along_axis(v, order, axis=1)
        new = np.ones(sv.shape, dtype=bool)
        new[:, 1:] = (sv[:, 1:] != sv[:, :-1]) & ~(np.isnan(sv[:, 1:]) & np.isnan(sv[:, :-1]))
        rank = np.cumsum(new, axis=1) - 1
        sub = np.empty_like(rank)
        np.put_along_axis(sub, order, rank, axis=1)
        bins[rows] = sub
        n_bins[rows] = rank[:, -1] + 1 if r else 1
    return bins, n_bins


def _block_skill(x: np.ndarray, stats: list[_Stats], y: np.ndarray, fit: np.ndarray, task: str) -> list[float]:
    """:func:`_skill` of each row of ``x`` (a feature on the leakage rows), from one bincount per block."""
    bins, n_bins = _block_bins(x, stats, fit)
    score = ~fit
    offsets = np.r_[0, np.cumsum(n_bins)[:-1]]
    flat = bins + offsets[:, None]  # every column's bins numbered apart
    total_bins = int(n_bins.sum())
    y_fit, y_score = y[fit], y[score]
    if task == "regression":
        fit_bins = flat[:, fit].ravel()  # column by column, each in row order: the per-column sums' order
        total = np.bincount(fit_bins, weights=np.tile(y_fit, len(x)), minlength=total_bins)
        count = np.bincount(fit_bins, minlength=total_bins)
        mean = np.where(count > 0, total / np.maximum(count, 1), y_fit.mean())
        sst = float(np.sum((y_score - y_score.mean()) ** 2))
        if sst == 0:
            return [0.0] * len(x)
        squares = (y_score[None, :] - mean[flat[:, score]]) ** 2
        # one sum per row: numpy's 2-D reduction adds in another order than the per-column 1-D sum
        return [1.0 - float(np.sum(row)) / sst for row in squares]
    n_classes = int(y.max()) + 1
    cells = flat[:, fit] * n_classes + y_fit[None, :]
    table = np.bincount(cells.ravel(), minlength=total_bins * n_classes).reshape(total_bins, n_classes)
    majority = int(np.bincount(y_fit, minlength=n_classes).argmax())
    guess = np.where(table.sum(axis=1) > 0, table.argmax(axis=1), majority)
    accuracy = np.mean(guess[flat[:, score]] == y_score[None, :], axis=1)
    base = float(np.mean(y_score == majority))
    return [0.0 if base >= 1.0 else (float(a) - base) / (1.0 - base) for a in accuracy]


def _bins(col: pa.ChunkedArray, s: _Stats, fit_rows: np.ndarray) -> tuple[np.ndarray, int]:
    """A bin per row: quantile bins for numbers, one per value otherwise; missing values share one bin."""
    if s.kind == "numeric" and s.n_unique > 256:
        x = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        fit = x[fit_rows]
        fit = fit[~np.isnan(fit)]
        if not len(fit):
            return np.zeros(len(x), dtype=np.int64), 1
        edges = np.unique(np.quantile(fit, np.linspace(0, 1, 257)[1:-1]))
        bins = np.searchsorted(edges, x, side="right")
        bins[np.isnan(x)] = len(edges) + 1
        return bins, len(edges) + 2
    codes = _codes(col)
    _, bins = np.unique(codes, return_inverse=True)
    return bins.reshape(-1), int(bins.max()) + 1


def _skill(bins: np.ndarray, n_bins: int, y: np.ndarray, fit: np.ndarray, task: str) -> float:
    score = ~fit
    if task == "regression":
        total = np.bincount(bins[fit], weights=y[fit], minlength=n_bins)
        count = np.bincount(bins[fit], minlength=n_bins)
        mean = np.where(count > 0, total / np.maximum(count, 1), y[fit].mean())
        sst = float(np.sum((y[score] - y[score].mean()) ** 2))
        if sst == 0:
            return 0.0
        return 1.0 - float(np.sum((y[score] - mean[bins[score]]) ** 2)) / sst
    n_classes = int(y.max()) + 1
    table = np.bincount(bins[fit] * n_classes + y[fit], minlength=n_bins * n_classes).reshape(n_bins, n_classes)
    majority = int(np.bincount(y[fit], minlength=n_classes).argmax())
    guess = np.where(table.sum(axis=1) > 0, table.argmax(axis=1), majority)
    accuracy = float(np.mean(guess[bins[score]] == y[score]))
    base = float(np.mean(y[score] == majority))
    return 0.0 if base >= 1.0 else (accuracy - base) / (1.0 - base)
