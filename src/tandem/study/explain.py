"""Permutation importance of a bundle's whole pipeline: how much the validation score drops when one
input column's values are shuffled (the ONNX graph itself is scored, so every bundle gets it)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tandem.bundle.inputs import DATETIME_PARTS, EncodedInputs, InputEncoder
from tandem.study import metrics as M

REPEATS = 3


def permutation_importance(run: Callable[[EncodedInputs], np.ndarray], enc: EncodedInputs, y: np.ndarray,
                           encoder: InputEncoder, metric: str, threshold: float, *, seed: int = 0) -> dict:
    """``run(inputs)`` returns the graph's probabilities or predictions; columns by importance, largest first."""
    sign = -1.0 if metric in M.LOWER_IS_BETTER else 1.0
    base = M.score(metric, y, run(enc), threshold=threshold)
    rng = np.random.default_rng(seed)
    columns = []
    j = 0
    for c in encoder.num_columns:
        width = len(DATETIME_PARTS) if c.kind == "datetime" else 1
        columns.append((c.name, "num", list(range(j, j + width))))
        j += width
    columns += [(c.name, "cat", [k]) for k, c in enumerate(encoder.cat_columns)]
    columns += [(c.name, "text", [2 * k, 2 * k + 1]) for k, c in enumerate(encoder.text_columns)]  # words, chars
    columns += [(c.name, "image", []) for c in encoder.image_columns]  # (the whole image moves)
    out = []
    for name, part, index in columns:
        drops = []
        for _ in range(REPEATS):
            order = rng.permutation(enc.n_rows)
            parts = {"num": enc.num, "cat": enc.cat, "text": enc.text, "image": enc.image, "tokens": enc.tokens}
            shuffled = dict(parts)
            if part == "image":
                block = parts[part][order]
            else:
                block = parts[part].copy()
                block[:, index] = block[order][:, index]
            shuffled[part] = block
            if part == "text" and enc.tokens is not None:  # the sentence encoder reads the same column
                tokens = enc.tokens.copy()
                tokens[:, index[0] // 2] = tokens[order, index[0] // 2]
                shuffled["tokens"] = tokens
            score = M.score(metric, y, run(EncodedInputs(**shuffled)), threshold=threshold)
            drops.append(sign * (base - score))
        out.append({"column": name, "importance": round(float(np.mean(drops)), 6),
                    "std": round(float(np.std(drops)), 6)})
    out.sort(key=lambda r: -r["importance"])
    return {"metric": metric, "baseline": round(float(base), 6), "rows": int(enc.n_rows), "repeats": REPEATS,
            "columns": out}
