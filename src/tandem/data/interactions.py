"""Interaction logs for recommendation: who used what (and how much, and when), checked, indexed and split.

An interaction table has a user column, an item column, optionally a rating (or any weight) and a time.
:func:`read_interactions` turns it into :class:`Interactions`: users and items numbered from 0 in order of
first appearance, one row per (user, item) pair, a weight per pair, and the quality gate's findings for
this shape of data (missing ids, duplicate pairs, users and items seen once, timestamps in the future, id
columns that mix numbers and text). :func:`split_interactions` holds out each user's *latest* interactions
(or every interaction after one cut in time), so no user's future is ever trained on.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tandem.data.infer import check_column
from tandem.data.quality.report import Finding, QualityReport
from tandem.errors import ConfigError, DataError

SPLITS = ("time", "global_time", "random")
ID_TYPES = ("int", "string")
HOLDOUT_SHARE = 0.2  # of each user's interactions held out for validation (at least one; users with one stay whole)


@dataclass(frozen=True)
class InteractionSpec:
    """Which columns mean what; ``min_rating`` keeps the interactions rated at least that much."""

    user: str
    item: str
    rating: str | None = None
    min_rating: float | None = None
    time: str | None = None


@dataclass
class Interactions:
    """One row per (user, item) pair: ``user`` and ``item`` indices, ``weight`` (1, or the rating), ``time``
    (seconds; the file's row order when there is no time column)."""

    user: np.ndarray  # int64 indices into user_ids
    item: np.ndarray  # int64 indices into item_ids
    weight: np.ndarray  # float32
    time: np.ndarray  # float64
    user_ids: list  # the id of each user index (int or str, as id_type says)
    item_ids: list
    user_id_type: str
    item_id_type: str
    spec: InteractionSpec
    has_time: bool
    findings: list[Finding] = field(default_factory=list)
    rows_read: int = 0
    seconds: float = 0.0  # reading and checking took

    def quality_report(self) -> QualityReport:
        """The quality gate's findings on this table, as ``tandem check`` and the manifest show them."""
        spec = self.spec
        order = {"error": 0, "warning": 1, "info": 2}
        return QualityReport(rows=self.rows_read, columns=2 + bool(spec.rating) + bool(spec.time), target=spec.item,
                             test_rows=None, seconds=self.seconds,
                             findings=sorted(self.findings, key=lambda f: order[f.severity]))

    @cached_property
    def user_keys(self) -> list[str]:
        """Each user's id as text, as the bundle's graph keys it (index order)."""
        return [str(u) for u in self.user_ids]

    @cached_property
    def item_keys(self) -> list[str]:
        """Each item's id as text (index order)."""
        return [str(i) for i in self.item_ids]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, rows: np.ndarray) -> Interactions:
        """The same users and items (same indices), only ``rows`` of the interactions."""
        return Interactions(self.user[rows], self.item[rows], self.weight[rows], self.time[rows], self.user_ids,
                            self.item_ids, self.user_id_type, self.item_id_type, self.spec, self.has_time,
                            self.findings, self.rows_read, self.seconds)

    def matrix(self, rows: np.ndarray | None = None):
        """The user x item matrix (scipy CSR, float32) of the interactions (``rows`` of them when given)."""
        import scipy.sparse as sp

        u, i, w = (self.user, self.item, self.weight) if rows is None else (
            self.user[rows], self.item[rows], self.weight[rows])
        return sp.csr_matrix((w.astype(np.float32), (u, i)), shape=(self.n_users, self.n_items))


def read_interactions(table: pa.Table, spec: InteractionSpec, *, what: str = "interaction data",
                      now: float | None = None) -> Interactions:
    """Check and index an interaction table (see the module docstring); a DataError names the column and row
    of anything unusable."""
    started = time.monotonic()
    if spec.min_rating is not None and spec.rating is None:
        raise ConfigError("--min-rating needs --rating: the column whose values are compared with it")
    names = [spec.user, spec.item] + [c for c in (spec.rating, spec.time) if c]
    if len(set(names)) != len(names):
        raise ConfigError(f"the user, item, rating and time columns must differ; got {', '.join(names)}")
    roles = {spec.user: "user column", spec.item: "item column", spec.rating: "rating column",
             spec.time: "time column"}
    for name in names:
        check_column(table, name, roles[name], what=what)
    findings: list[Finding] = []
    n = table.num_rows
    if n == 0:
        raise DataError(f"{what} has no rows: expected one interaction a row")
    users, user_type = _ids(table.column(spec.user), spec.user, what, findings)
    items, item_type = _ids(table.column(spec.item), spec.item, what, findings)
    weight = np.ones(n, dtype=np.float32)
    if spec.rating:
        weight = _numbers(table.column(spec.rating), spec.rating, what).astype(np.float32)
    times = np.arange(n, dtype=np.float64)
    if spec.time:
        times = _seconds(table.column(spec.time), spec.time, what)
    keep = np.array([u is not None for u in users]) & np.array([i is not None for i in items])
    if spec.rating:
        keep &= ~np.isnan(weight)
    if spec.time:
        keep &= ~np.isnan(times)
    if not keep.all():
        _finding(findings, "warning", "missing_values", f"{int((~keep).sum())} of {n} interactions lack a user, "
                 "an item" + (", a rating" if spec.rating else "") + (" or a time" if spec.time else "") +
                 ": left out", None)
    if spec.time:
        future = keep & (times > (time.time() if now is None else now) + 86_400)
        if future.any():
            row = int(np.flatnonzero(future)[0])
            _finding(findings, "warning", "future_timestamps", f"{int(future.sum())} interactions are dated in the "
                     f"future (first: row {row + 1}); a time split treats them as the latest", spec.time)
    if spec.min_rating is not None:
        liked = keep & (weight >= spec.min_rating)
        _finding(findings, "info", "min_rating", f"{int(liked.sum())} of {int(keep.sum())} interactions are rated "
                 f">= {spec.min_rating:g}: only these count as positives", spec.rating)
        keep = liked
        weight = np.ones(n, dtype=np.float32)
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        raise DataError(f"{what} has no usable interactions" + (
            f" rated >= {spec.min_rating:g} in column '{spec.rating}'" if spec.min_rating is not None else ""))
    user_ids, user_idx = _index([users[r] for r in rows])
    item_ids, item_idx = _index([items[r] for r in rows])
    w, t = weight[rows], times[rows]
    # one row per pair: the latest interaction's weight stands (a re-rating replaces the rating)
    order = np.lexsort((t, item_idx, user_idx))
    pair = user_idx[order] * len(item_ids) + item_idx[order]
    last = np.r_[pair[1:] != pair[:-1], True]
    duplicates = int((~last).sum())
    if duplicates:
        _finding(findings, "info", "duplicate_pairs", f"{duplicates} interactions repeat a (user, item) pair: "
                 "the latest one is kept", None)
    sel = order[last]
    result = Interactions(user_idx[sel], item_idx[sel], w[sel], t[sel], user_ids, item_ids, user_type, item_type,
                          spec, spec.time is not None, findings, rows_read=n)
    for role, idx, total in (("users", result.user, result.n_users), ("items", result.item, result.n_items)):
        once = int((np.bincount(idx, minlength=total) == 1).sum())
        if once:
            _finding(findings, "info", f"single_interaction_{role}", f"{once} of {total} {role} have one interaction: "
                     + ("they are never held out, and only recommend from what they had" if role == "users" else
                        "little to learn from"), spec.user if role == "users" else spec.item)
    result.seconds = time.monotonic() - started
    return result


def split_interactions(data: Interactions, kind: str = "time", *, share: float = HOLDOUT_SHARE,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows) of ``data``.

    ``time``: each user's latest ``share`` of interactions (at least one) are held out, so everything trained
    on of a user came before what is scored; ``global_time``: every interaction after the time that leaves
    ``share`` of them later; ``random``: a seeded ``share`` of each user's interactions. Users with one
    interaction stay in training."""
    if kind not in SPLITS:
        raise ConfigError(f"split '{kind}' is not one of {', '.join(SPLITS)} for recommendation")
    n = len(data)
    if kind == "global_time":
        cut = np.quantile(data.time, 1 - share, method="higher")
        held = data.time >= cut
        if held.all():
            raise DataError("every interaction has the same time: a global time split has nothing to train on")
        return np.flatnonzero(~held), np.flatnonzero(held)
    rng = np.random.default_rng(seed)
    key = data.time if kind == "time" else rng.random(n)
    order = np.lexsort((np.arange(n), key, data.user))  # by user, then time (or a random draw)
    counts = np.bincount(data.user, minlength=data.n_users)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank = np.arange(n) - np.repeat(starts, counts)  # position within the user's ordered interactions
    per_user = np.where(counts > 1, np.maximum(1, np.floor(counts * share)), 0).astype(np.int64)
    held_sorted = rank >= np.repeat(counts - per_user, counts)
    held = np.zeros(n, dtype=bool)
    held[order] = held_sorted
    if not held.any():
        raise DataError("no user has two interactions: nothing can be held out to choose a model on")
    return np.flatnonzero(~held), np.flatnonzero(held)


def _finding(findings: list[Finding], severity: str, check: str, message: str, column: str | None) -> None:
    findings.append(Finding(check=check, severity=severity, message=message, column=column))


def _ids(col: pa.ChunkedArray, name: str, what: str, findings: list[Finding]) -> tuple[list, str]:
    """The column's ids (None where missing) and their type: int when every id is a whole number."""
    t = col.type
    if pa.types.is_integer(t):
        return col.to_pylist(), "int"
    if pa.types.is_floating(t):
        values = col.to_numpy(zero_copy_only=False)
        ok = ~np.isnan(values)
        if not np.all(values[ok] == np.round(values[ok])):
            row = int(np.flatnonzero(ok & (values != np.round(values)))[0])
            raise DataError(f"{what} column '{name}' row {row + 1}: id {float(values[row])!r} is not a whole number: "
                            "expected integer or text ids")
        return [int(v) if k else None for v, k in zip(values, ok, strict=True)], "int"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        values = pc.cast(col, pa.string()).to_pylist() if pa.types.is_dictionary(t) else col.to_pylist()
        present = [v for v in values if v is not None]
        numeric = sum(1 for v in present if re.fullmatch(r"[+-]?\d+", v))
        if 0 < numeric < len(present):
            _finding(findings, "warning", "mixed_id_types", f"column '{name}' mixes numeric ids ({numeric}) and "
                     f"text ids ({len(present) - numeric}): all are read as text, so '7' and '007' differ", name)
        return values, "string"
    raise DataError(f"{what} column '{name}' holds {t}: expected integer or text ids")


def _numbers(col: pa.ChunkedArray, name: str, what: str) -> np.ndarray:
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type):
        return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    values = col.to_pylist()
    out = np.full(len(values), np.nan)
    for row, v in enumerate(values):
        if v is None or v == "":
            continue
        try:
            out[row] = float(v)
        except (TypeError, ValueError):
            raise DataError(f"{what} column '{name}' row {row + 1}: {v!r} is not a number: expected ratings or "
                            "weights") from None
    return out


def _seconds(col: pa.ChunkedArray, name: str, what: str) -> np.ndarray:
    """Times as seconds: numbers (Unix seconds) as they are, timestamps and dates converted, ISO text parsed."""
    t = col.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        micros = pc.cast(pc.cast(col, pa.timestamp("us")), pa.int64()).to_numpy(zero_copy_only=False)
        out = np.asarray(micros, dtype=np.float64) / 1e6
        out[np.asarray(pc.is_null(col).to_numpy(zero_copy_only=False))] = np.nan
        return out
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            return _seconds(pc.cast(col, pa.timestamp("us")), name, what)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    try:
        return _numbers(col, name, what)
    except DataError:
        raise DataError(f"{what} column '{name}' holds values that are neither numbers (Unix seconds) nor "
                        "dates: expected the time of each interaction") from None


def _index(values: list) -> tuple[list, np.ndarray]:
    """Distinct values in order of first appearance, and each value's index."""
    ids: dict = {}
    idx = np.fromiter((ids.setdefault(v, len(ids)) for v in values), dtype=np.int64, count=len(values))
    return list(ids), idx


MAX_CATEGORIES = 30  # one-hot columns a text feature column gets (its most frequent values; the rest: "other")
MAX_DISTINCT = 200  # a text column with more distinct values than this (names, titles, zip codes) is left out


@dataclass
class SideFeatures:
    """A feature table of users or items, as numbers: one row per id of ``ids`` (canonical text)."""

    ids: list[str]
    matrix: np.ndarray  # float32 [len(ids), columns]
    columns: list[str]  # what each column is ("age", "occupation=writer", ...)
    left_out: list[str]  # columns not used, with why


def read_side_features(table: pa.Table, key: str, role: str, what: str) -> SideFeatures:
    """A user or item feature table keyed by ``key``: numbers and booleans standardised (missing: 0), text
    columns with at most :data:`MAX_DISTINCT` values one-hot on their :data:`MAX_CATEGORIES` most frequent, other
    columns left out (named in ``left_out``). A repeated key keeps its first row."""
    column = check_column(table, key, f"{role} id column", what=what)
    findings: list[Finding] = []
    ids, _ = _ids(column, key, what, findings)
    keep = [i for i, v in enumerate(ids) if v is not None]
    first: dict[str, int] = {}
    for i in keep:
        first.setdefault(str(ids[i]), i)
    rows = np.array(list(first.values()), dtype=np.int64)
    blocks, names, left_out = [], [], []
    for name in table.column_names:
        if name == key:
            continue
        col = table.column(name).take(pa.array(rows))
        t = col.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            x = np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
            ok = ~np.isnan(x)
            if not ok.any() or np.nanstd(x) == 0:
                left_out.append(f"{name} (constant)")
                continue
            z = np.where(ok, (x - np.nanmean(x)) / np.nanstd(x), 0.0)
            blocks.append(z.reshape(-1, 1))
            names.append(name)
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
            values = np.array([("" if v is None else str(v)) for v in col.to_pylist()], dtype=object)
            distinct, counts = np.unique(values, return_counts=True)
            if len(distinct) > MAX_DISTINCT or len(distinct) < 2:
                left_out.append(f"{name} ({len(distinct)} distinct values)")
                continue
            top = distinct[np.argsort(-counts, kind="stable")[:MAX_CATEGORIES]]
            blocks.append(np.stack([values == v for v in top], axis=1).astype(np.float64))
            names += [f"{name}={v}" for v in top]
        else:
            left_out.append(f"{name} ({t})")
    matrix = np.hstack(blocks).astype(np.float32) if blocks else np.zeros((len(rows), 0), np.float32)
    if matrix.shape[1] == 0:
        raise DataError(f"{what} has no usable feature column beside '{key}': expected numbers, booleans or text "
                        f"with at most {MAX_DISTINCT} distinct values" + (f" (left out: {', '.join(left_out)})"
                                                                           if left_out else ""))
    return SideFeatures(list(first), matrix, names, left_out)


def align_features(features: SideFeatures | None, ids: list) -> tuple[np.ndarray | None, np.ndarray]:
    """``features``' rows in the order of ``ids`` (zeros for an id the table lacks), and which ids it has."""
    if features is None:
        return None, np.zeros(len(ids), dtype=bool)
    index = {k: i for i, k in enumerate(features.ids)}
    rows = np.array([index.get(str(v), -1) for v in ids], dtype=np.int64)
    has = rows >= 0
    out = np.zeros((len(ids), features.matrix.shape[1]), dtype=np.float32)
    out[has] = features.matrix[rows[has]]
    return out, has
