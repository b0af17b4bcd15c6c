"""A sentence encoder's tokens, as both lives compute them: the tokenizer, token ids, padding, and
running rows in groups of similar length.

Imports only numpy (and ``tokenizers`` when a tokenizer is loaded): a serving host tokenizes with
the bundle's own ``tokenizer.json`` and never needs the encoder's training side
(:mod:`tandem.features.sentence`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

PAD_ID = 0  # padding is token id 0, so an encoder graph reads only the ids and finds the mask itself
GROUP_ROWS = 32  # rows per encoder run, grouped by token length


def load_tokenizer(path: Path, max_tokens: int) -> object:
    """A ``tokenizers`` tokenizer from its JSON file, padding to the longest text of a batch and cutting
    texts at ``max_tokens`` (the packaged file pads every text to 128, which would waste most of the work)."""
    from tandem.errors import need

    tok = need("tokenizers", "text-models", "a model with a sentence encoder").Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_tokens)
    tok.enable_padding(pad_id=PAD_ID, pad_token="[PAD]")
    return tok


def tokenize(tok: object, texts: list[str]) -> np.ndarray:
    """Token ids [N, L] (int64, 0 = padding) of ``texts``."""
    if not texts:
        return np.zeros((0, 2), dtype=np.int64)
    return np.array([e.ids for e in tok.encode_batch(texts)], dtype=np.int64)


def padded(ids: list[np.ndarray]) -> list[np.ndarray]:
    """Token-id arrays padded (0) on their last axis to the longest of them."""
    width = max(a.shape[-1] for a in ids)
    return [np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, width - a.shape[-1])], constant_values=PAD_ID) for a in ids]


def in_length_order(lengths: np.ndarray, batch: int, run: Callable[[np.ndarray], list[np.ndarray]]
                    ) -> list[np.ndarray]:
    """``run(rows)`` over groups of ``batch`` rows of similar ``lengths``, its outputs put back in row order.

    Padding is wasted work: a group of short texts beside one long one would pay the long one's
    length for all, so ``run`` should cut its rows to their longest."""
    order = np.argsort(lengths, kind="stable")
    parts = [run(order[start: start + batch]) for start in range(0, len(order), batch)]
    back = np.argsort(order, kind="stable")
    return [np.concatenate([p[k] for p in parts])[back] for k in range(len(parts[0]))]
