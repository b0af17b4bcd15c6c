"""Drift: how new data differs from the training data a bundle remembers (its ``profile.json``).

Per feature: the population stability index (PSI) over the training deciles (numbers) or the
training categories; the Kolmogorov-Smirnov distance to the training distribution (numbers, from
101 stored percentiles, or the deciles of a very wide table); the change in the share of missing
values; categories never seen in training. A feature **moved** when its PSI is at least ``PSI_MOVED``
(the usual 0.25 rule), when its KS distance is at least ``KS_MOVED`` with a p-value under ``KS_P``,
when its missing share changed by ``MISSING_MOVED`` or more, or when ``NEW_CATEGORY_MOVED`` of its
values are new categories. PSI from ``PSI_WATCH`` is reported as "watch". Pure numpy: a serving host can run it.
"""

from __future__ import annotations

import math

import numpy as np

from tandem.bundle.inputs import EncodedInputs

PSI_WATCH = 0.10
PSI_MOVED = 0.25
KS_MOVED = 0.10
KS_P = 1e-3
MISSING_MOVED = 0.10
NEW_CATEGORY_MOVED = 0.05
_FLOOR = 1e-4  # share given to an empty bin, so PSI stays finite


def numeric_profile(values: np.ndarray) -> dict:
    """What drift needs to remember of one numeric training column."""
    return numeric_profiles(np.asarray(values).reshape(-1, 1))[0]


_DECILES, _PERCENTILES = np.linspace(0, 1, 11), np.linspace(0, 1, 101)
_CHUNK_VALUES = 1 << 22  # numbers per block of columns profiled at once (32 MB as float64)


def numeric_profiles(matrix: np.ndarray, *, percentiles: bool = True) -> list[dict]:
    """:func:`numeric_profile` of each column of ``matrix`` [rows, columns]: np.quantile's numbers (means and
    standard deviations to the last bit or so), a block of columns read off one sort, since calling np.quantile
    per column dominates the export of a wide table.
    Without ``percentiles`` the profile keeps deciles only: KS distances then come from the deciles."""
    x = np.asarray(matrix, dtype=np.float64)
    n, p = x.shape
    out: list[dict] = []
    step = max(1, _CHUNK_VALUES // max(n, 1))
    for start in range(0, p, step):
        block = np.ascontiguousarray(x[:, start:start + step].T)  # a column per row: sorts run in memory order
        ordered = np.sort(block, axis=1)  # missing values sort last
        counts = n - np.isnan(block).sum(axis=1)
        profiles: list[dict] = [{}] * block.shape[0]
        for k in np.unique(counts):
            cols = np.flatnonzero(counts == k)
            missing = round(1 - int(k) / max(n, 1), 6)
            if k == 0:
                empty = {"kind": "numeric", "missing_fraction": missing, "mean": None, "std": None,
                         "quantiles": None, **({"percentiles": None} if percentiles else {}), "bins": None}
                for j in cols:
                    profiles[j] = dict(empty)
                continue
            ok = ordered[cols, :k].T
            deciles = _sorted_quantiles(ok, _DECILES)
            pcts = _sorted_quantiles(ok, _PERCENTILES).T.tolist() if percentiles else None
            cuts = deciles[1:-1]
            below = (ok[None, :, :] < cuts[:, None, :]).sum(axis=1)  # values under each cut
            distinct = (np.diff(cuts, axis=0) > 0).all(axis=0)
            shares = (np.diff(np.vstack([np.zeros_like(below[:1]), below, np.full_like(below[:1], k)]), axis=0) /
                      k).round(8).T.tolist()
            means, stds = ok.mean(axis=0).tolist(), ok.std(axis=0).tolist()
            rounded, edges = deciles.round(6).T.tolist(), cuts.T.tolist()
            for i, j in enumerate(cols):
                prof = {"kind": "numeric", "missing_fraction": missing, "mean": means[i], "std": stds[i],
                        "quantiles": rounded[i]}
                if percentiles:
                    prof["percentiles"] = pcts[i]
                if distinct[i]:
                    prof["bins"] = {"edges": edges[i], "fractions": shares[i]}
                else:  # cuts some deciles share (a value many rows hold): one edge each
                    cut, first = np.unique(cuts[:, i], return_index=True)
                    bins = np.diff(np.concatenate([[0], below[first, i], [k]]))
                    prof["bins"] = {"edges": cut.tolist(), "fractions": (bins / k).round(8).tolist()}
                profiles[j] = prof
        out += profiles
    return out


def _sorted_quantiles(ordered: np.ndarray, q: np.ndarray) -> np.ndarray:
    """np.quantile(ordered, q, axis=0) (its default linear method, the same arithmetic) of columns already
    sorted and free of missing values."""
    k = ordered.shape[0]
    virtual = (k - 1) * q
    prev = np.floor(virtual)
    nxt = prev + 1
    prev[virtual >= k - 1], nxt[virtual >= k - 1] = -1, -1
    prev[virtual < 0], nxt[virtual < 0] = 0, 0
    prev, nxt = prev.astype(np.intp), nxt.astype(np.intp)
    gamma = (virtual - prev)[:, None]
    a, b = ordered[prev], ordered[nxt]
    diff = b - a
    out = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=out, where=np.broadcast_to(gamma >= 0.5, out.shape))
    return out


def categorical_profile(values: np.ndarray, keep: int = 1000) -> dict:
    """Category frequencies ('' = missing) of one categorical training column."""
    strings = values.astype(str)
    missing = strings == ""
    uniq, counts = np.unique(strings[~missing], return_counts=True)
    order = np.argsort(-counts, kind="stable")[:keep]
    return {"kind": "categorical", "rows": int(len(strings)),
            "missing_fraction": round(float(missing.mean()) if len(strings) else 0.0, 6),
            "frequencies": {str(uniq[i]): int(counts[i]) for i in order}}


def word_counts(texts: np.ndarray) -> np.ndarray:
    """Words per normalised text (how drift sees a text column: its length)."""
    return np.array([len(t.split(" ")) if t else 0 for t in texts], dtype=np.float64)


PERCENTILES_MAX_COLUMNS = 1000  # numeric columns beyond which profile.json keeps deciles only


def training_profile(enc: EncodedInputs, num_names: list[str], cat_names: list[str], text_names: list[str]) -> dict:
    """The training rows ``enc`` as drift checks remember them (a bundle's ``profile.json``): each numeric
    column's quantiles, each category's share, each text's words per row, and each tensor column's per-row mean
    and standard deviation (an image's brightness and contrast, say)."""
    cols = {}
    percentiles = len(num_names) <= PERCENTILES_MAX_COLUMNS
    if enc.num is not None:
        cols.update(zip(num_names, numeric_profiles(enc.num, percentiles=percentiles), strict=True))
    if enc.cat is not None:
        for j, name in enumerate(cat_names):
            cols[name] = categorical_profile(enc.cat[:, j])
    if enc.text is not None:
        for j, name in enumerate(text_names):
            cols[name] = {**numeric_profile(word_counts(enc.text[:, 2 * j])), "kind": "text"}
    for name, values in tensor_summaries(enc).items():
        cols[name] = numeric_profile(values)
    out = {"rows": int(enc.n_rows), "columns": cols}
    if not percentiles:
        out["note"] = (f"{len(num_names):,} numeric columns: each keeps its deciles, not 101 percentiles, to keep "
                       "profile.json small; drift's KS distances come from the deciles")
    return out


def tensor_summaries(enc: EncodedInputs) -> dict[str, np.ndarray]:
    """Per tensor column, the mean and the standard deviation of each row's numbers (``x.mean``, ``x.std``)."""
    out = {}
    for name, block in (getattr(enc, "tensors", None) or {}).items():
        flat = block.reshape(len(block), -1).astype(np.float64)
        out[f"{name}.mean"] = flat.mean(axis=1) if flat.shape[1] else np.zeros(len(flat))
        out[f"{name}.std"] = flat.std(axis=1) if flat.shape[1] else np.zeros(len(flat))
    return out


def compare(profile: dict, enc: EncodedInputs, num_names: list[str], cat_names: list[str],
            known_categories: dict[str, list[str]], text_names: list[str] | None = None) -> dict:
    """Per-feature drift of the rows ``enc`` against ``profile``; features that moved come first."""
    features = []
    cols = profile.get("columns", {})
    n_train = int(profile.get("rows") or 10_000)
    for name, values in tensor_summaries(enc).items():
        if name in cols and cols[name].get("kind") == "numeric":
            features.append(_numeric(name, cols[name], values, n_train))
    for j, name in enumerate(num_names):
        if name in cols and cols[name].get("kind") == "numeric":
            features.append(_numeric(name, cols[name], enc.num[:, j].astype(np.float64), n_train))
    for j, name in enumerate(cat_names):
        if name in cols and cols[name].get("kind") == "categorical":
            features.append(_categorical(name, cols[name], enc.cat[:, j].astype(str),
                                         set(known_categories.get(name) or [])))
    for j, name in enumerate(text_names or []):
        if name in cols and cols[name].get("kind") == "text":
            f = _numeric(name, cols[name], word_counts(enc.text[:, 2 * j]), n_train)  # its words column
            features.append({**f, "kind": "text (words per row)"})
    rank = {"moved": 0, "watch": 1, "stable": 2}
    features.sort(key=lambda f: (rank[f["verdict"]], -(f["psi"] or 0.0)))
    moved = [f["feature"] for f in features if f["verdict"] == "moved"]
    return {"rows": int(enc.n_rows), "training_rows": profile.get("rows"), "moved": moved,
            "watch": [f["feature"] for f in features if f["verdict"] == "watch"], "features": features,
            "rules": {"psi_moved": PSI_MOVED, "psi_watch": PSI_WATCH, "ks_moved": KS_MOVED, "ks_p": KS_P,
                      "missing_moved": MISSING_MOVED, "new_category_moved": NEW_CATEGORY_MOVED}}


def interaction_profile(users: np.ndarray, items: np.ndarray, user_name: str, item_name: str) -> dict:
    """A recommender's training interactions as drift remembers them: who is active (the user column's shares),
    what is popular (the item column's), and how many interactions a user has."""
    _, per_user = np.unique(users, return_counts=True)
    return {"kind": "interactions", "rows": int(len(users)), "user": user_name, "item": item_name,
            "columns": {user_name: categorical_profile(users), item_name: categorical_profile(items),
                        "interactions per user": numeric_profile(per_user.astype(np.float64))}}


def compare_interactions(profile: dict, users: np.ndarray, items: np.ndarray | None, known_users: set[str],
                         known_items: set[str]) -> dict:
    """Drift of new interactions (``users``, and ``items`` when the data has them, as id strings): the share
    of unknown users and items (as new categories), the shift in who is active and in what is popular (PSI),
    and the interaction volume per user (PSI and KS against the training counts)."""
    cols = profile["columns"]
    user, item = profile["user"], profile["item"]
    features = [_categorical(user, cols[user], users, known_users)]
    if items is not None:
        features.append(_categorical(item, cols[item], items, known_items))
    _, per_user = np.unique(users[users != ""], return_counts=True)
    features.append(_numeric("interactions per user", cols["interactions per user"], per_user.astype(np.float64),
                             int(profile["rows"])))
    rank = {"moved": 0, "watch": 1, "stable": 2}
    features.sort(key=lambda f: (rank[f["verdict"]], -(f["psi"] or 0.0)))
    return {"kind": "interactions", "rows": int(len(users)), "training_rows": profile["rows"],
            "moved": [f["feature"] for f in features if f["verdict"] == "moved"],
            "watch": [f["feature"] for f in features if f["verdict"] == "watch"], "features": features,
            "rules": {"psi_moved": PSI_MOVED, "psi_watch": PSI_WATCH, "ks_moved": KS_MOVED, "ks_p": KS_P,
                      "missing_moved": MISSING_MOVED, "new_category_moved": NEW_CATEGORY_MOVED}}


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two share vectors over the same bins."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), _FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), _FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_pvalue(d: float, n1: int, n2: int) -> float:
    """Asymptotic two-sample Kolmogorov-Smirnov p-value (Stephens' small-sample correction)."""
    if d <= 0:
        return 1.0
    ne = n1 * n2 / (n1 + n2)
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    total = sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return float(min(max(2 * total, 0.0), 1.0))


def _numeric(name: str, prof: dict, x: np.ndarray, n_train: int) -> dict:
    missing = np.isnan(x)
    ok = np.sort(x[~missing])
    out = {"feature": name, "kind": "numeric", "missing_train": prof.get("missing_fraction"),
           "missing_new": round(float(missing.mean()) if len(x) else 0.0, 6), "psi": None, "ks": None,
           "ks_pvalue": None, "mean_train": prof.get("mean"), "mean_new": float(ok.mean()) if len(ok) else None,
           "new_categories": None}
    bins = prof.get("bins")
    if bins is None and prof.get("quantiles"):  # an older profile: deciles only, a tenth of the rows each
        q = np.asarray(prof["quantiles"], dtype=np.float64)
        edges = np.unique(q[1:-1])
        bins = {"edges": edges.tolist(), "fractions": None}
    if len(ok) and bins is not None:
        edges = np.asarray(bins["edges"], dtype=np.float64)
        counts = np.bincount(np.searchsorted(edges, ok, side="right"), minlength=len(edges) + 1)
        expected = bins["fractions"]
        if expected is None:
            q = np.asarray(prof["quantiles"], dtype=np.float64)
            expected = np.diff(np.interp(np.r_[q[0], edges, q[-1]], q, np.linspace(0, 1, len(q))))
        out["psi"] = round(psi(expected, counts / len(ok)), 6)
        d = _ks_distance(np.asarray(prof.get("percentiles") or prof["quantiles"], dtype=np.float64), ok)
        out["ks"] = round(d, 6)
        out["ks_pvalue"] = ks_pvalue(d, n_train, len(ok))
    out["verdict"], out["why"] = _verdict(out)
    return out


def _ks_distance(grid: np.ndarray, ok: np.ndarray) -> float:
    """Largest gap between the training CDF and the sorted new values' empirical CDF, on both sides of every
    jump. The training CDF comes from evenly spaced percentiles ``grid``: a value several percentiles share
    is a jump (a point mass, as in counts), and between distinct values the CDF rises linearly from the top
    of one jump to the foot of the next."""
    levels = np.linspace(0, 1, len(grid))
    values, first = np.unique(grid, return_index=True)
    last = np.append(first[1:] - 1, len(grid) - 1)  # the last percentile holding each distinct value
    foot, top = levels[first], levels[last]  # the CDF just below and at each distinct value
    u, counts = np.unique(ok, return_counts=True)
    n = len(ok)
    new_right = np.cumsum(counts) / n
    new_left = new_right - counts / n
    j = np.searchsorted(values, u, side="right") - 1  # the largest training value <= u (-1: below them all)
    jc = np.clip(j, 0, len(values) - 1)
    nxt = np.clip(j + 1, 0, len(values) - 1)
    span = np.where(nxt > jc, values[nxt] - values[jc], 1.0)
    between = top[jc] + (u - values[jc]) / span * (foot[nxt] - top[jc])
    exact = (j >= 0) & (values[jc] == u)
    train_right = np.where(j < 0, 0.0, np.where(exact, top[jc], np.where(j >= len(values) - 1, 1.0, between)))
    train_left = np.where(exact, foot[jc], train_right)
    return float(max(np.abs(new_right - train_right).max(), np.abs(new_left - train_left).max()))


def _categorical(name: str, prof: dict, values: np.ndarray, known: set[str]) -> dict:
    freq = prof.get("frequencies", {})
    total = float(sum(freq.values())) or 1.0
    missing = values == ""
    present = values[~missing]
    uniq, counts = np.unique(present, return_counts=True)
    seen = {str(u): int(c) for u, c in zip(uniq, counts, strict=True)}
    n_present = max(len(present), 1)
    cats = list(freq)
    expected = [freq[c] / total for c in cats]
    actual = [seen.get(c, 0) / n_present for c in cats]
    other_new = sum(c for v, c in seen.items() if v not in freq) / n_present
    expected.append(max(0.0, 1.0 - sum(expected)))  # categories the profile did not keep (rare ones)
    actual.append(other_new)
    vocabulary = known or set(freq)
    new = sorted(((v, c) for v, c in seen.items() if v not in vocabulary), key=lambda vc: -vc[1])
    out = {"feature": name, "kind": "categorical", "missing_train": prof.get("missing_fraction"),
           "missing_new": round(float(missing.mean()) if len(values) else 0.0, 6),
           "psi": round(psi(expected, actual), 6) if len(present) else None, "ks": None, "ks_pvalue": None,
           "mean_train": None, "mean_new": None,
           "new_categories": {"share": round(sum(c for _, c in new) / n_present, 6),
                              "values": [v for v, _ in new[:10]]}}
    out["verdict"], out["why"] = _verdict(out)
    return out


def _verdict(f: dict) -> tuple[str, list[str]]:
    why = []
    if f["psi"] is not None and f["psi"] >= PSI_MOVED:
        why.append(f"PSI {f['psi']:.3f} >= {PSI_MOVED}")
    if f["ks"] is not None and f["ks"] >= KS_MOVED and f["ks_pvalue"] < KS_P:
        why.append(f"KS {f['ks']:.3f} (p {f['ks_pvalue']:.1e})")
    if f["missing_train"] is not None and abs(f["missing_new"] - f["missing_train"]) >= MISSING_MOVED:
        why.append(f"missing {f['missing_train']:.1%} -> {f['missing_new']:.1%}")
    new = f["new_categories"]
    if new and new["share"] >= NEW_CATEGORY_MOVED:
        why.append(f"{new['share']:.1%} new categories ({', '.join(new['values'][:3])})")
    if why:
        return "moved", why
    if f["psi"] is not None and f["psi"] >= PSI_WATCH:
        return "watch", [f"PSI {f['psi']:.3f} >= {PSI_WATCH}"]
    return "stable", []
