"""The preprocessing's numpy views of encoded inputs, from the statistics a bundle keeps.

Two views of the same encoded inputs (``num`` floats, ``cat`` strings, ``text`` normalised text):
- **tree**: numbers as they are (NaN = missing) followed by one integer code per categorical
  column (training vocabulary order; an unseen or missing category is NaN, which tree learners
  treat as missing, never as a shifted code);
- **dense**: numbers with the median imputed, a missing-indicator where training saw missing
  values, standardized; categoricals one-hot over their most frequent categories (unknown = all zero).
Both views end with the same text blocks: per text column, TF-IDF over its most frequent words and
word pairs, and over its most frequent character 2- to 4-grams, each block scaled to unit length
per row.

Fitting the statistics and writing the same views as ONNX nodes is the training side's job
(:class:`tandem.features.preprocess.Preprocessor`, a subclass); explanations and drift on a
serving host need only these numpy views, so they live with the bundle, in numpy alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from tandem.bundle.inputs import EncodedInputs

DENSE_MAX_CATEGORIES = 50
TEXT_MAX_TERMS = {"words": 2000, "chars": 3000}  # per text column
TEXT_GRAMS = {"words": (1, 2), "chars": (2, 4)}  # n-gram lengths counted, in tokens
TEXT_BLOCKS = ("words", "chars")  # the encoder's text tensor holds these two columns per text column
TEXT_MIN_ROWS = 2  # a term must appear in this many training rows


@dataclass
class PreprocessingViews:
    """Fitted statistics of the preprocessing and its numpy views; JSON-able via :meth:`to_dict`."""

    num_names: list[str]
    cat_names: list[str]
    vocabularies: list[list[str]]
    medians: list[float]
    means: list[float]
    scales: list[float]
    indicator_columns: list[int]
    text_names: list[str] = field(default_factory=list)
    # per text block (words then chars of each text column): terms as space-joined tokens, and their idf
    text_terms: list[list[str]] = field(default_factory=list)
    text_idf: list[list[float]] = field(default_factory=list)
    image_size: int | None = None  # the side images are resized to (an image column's schema size)
    text_encoder: dict | None = None  # the sentence encoder (tandem.features.sentence.build_encoder), or None
    # the frozen image backbone whose features join the embedding view (features.efficientnet.build_image_encoder)
    image_encoder: dict | None = None

    def to_dict(self) -> dict:
        """The statistics as JSON-able lists (what a bundle keeps in its manifest)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessingViews:
        """The views of statistics :meth:`to_dict` wrote (a subclass gives itself)."""
        return cls(**d)

    # -- shapes -------------------------------------------------------------------------------
    @property
    def tree_feature_names(self) -> list[str]:
        return list(self.num_names) + list(self.cat_names) + self.text_feature_names

    @property
    def text_feature_names(self) -> list[str]:
        blocks = len(TEXT_BLOCKS)
        return [f"{self.text_names[b // blocks]}:{'~' if TEXT_BLOCKS[b % blocks] == 'chars' else ''}{t}"
                for b, terms in enumerate(self.text_terms) for t in terms]

    @property
    def text_feature_columns(self) -> list[str]:
        """The text column each text feature comes from."""
        return [self.text_names[b // len(TEXT_BLOCKS)] for b, terms in enumerate(self.text_terms) for _ in terms]

    @property
    def tree_categorical_indices(self) -> list[int]:
        return list(range(len(self.num_names), len(self.num_names) + len(self.cat_names)))

    def dense_sizes(self) -> list[int]:
        """One-hot width of each categorical column in the dense view."""
        return [min(len(v), DENSE_MAX_CATEGORIES) for v in self.vocabularies]

    @property
    def dense_width(self) -> int:
        return len(self.num_names) + len(self.indicator_columns) + sum(self.dense_sizes()) + self.text_width

    @property
    def text_width(self) -> int:
        return sum(len(t) for t in self.text_terms)

    # -- numpy --------------------------------------------------------------------------------
    def codes(self, enc: EncodedInputs) -> np.ndarray:
        """Integer code per categorical column, -1 for unknown or missing."""
        n = enc.n_rows
        out = np.empty((n, len(self.cat_names)), dtype=np.int64)
        for j, vocab in enumerate(self.vocabularies):
            lookup = {v: i for i, v in enumerate(vocab)}
            uniq, inverse = np.unique(enc.cat[:, j].astype(str), return_inverse=True)
            mapped = np.array([lookup.get(u, -1) for u in uniq], dtype=np.int64)
            out[:, j] = mapped[inverse.reshape(-1)]
        return out

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Standardisation as x * inv_scale + shift (the same float32 arithmetic in numpy and ONNX)."""
        scale = np.asarray(self.scales, dtype=np.float64)
        inv = (1.0 / scale).astype(np.float32)
        shift = (-np.asarray(self.means, dtype=np.float64) / scale).astype(np.float32)
        return inv, shift

    def tree_view(self, enc: EncodedInputs) -> np.ndarray:
        parts = []
        if self.num_names:
            parts.append(enc.num.astype(np.float32))
        if self.cat_names:
            codes = self.codes(enc).astype(np.float32)
            codes[codes < 0] = np.nan
            parts.append(codes)
        if self.text_width:
            parts.append(self.text_view(enc))
        return np.concatenate(parts, axis=1)

    def dense_view(self, enc: EncodedInputs) -> np.ndarray:
        parts = []
        if self.num_names:
            num = enc.num.astype(np.float32)
            isnan = np.isnan(num)
            filled = np.where(isnan, np.asarray(self.medians, dtype=np.float32), num)
            inv, shift = self.affine()
            parts.append((filled * inv + shift).astype(np.float32))
            if self.indicator_columns:
                parts.append(isnan[:, self.indicator_columns].astype(np.float32))
        if self.cat_names:
            codes = self.codes(enc)
            for j, size in enumerate(self.dense_sizes()):
                parts.append((codes[:, j: j + 1] == np.arange(size)[None, :]).astype(np.float32))
        if self.text_width:
            parts.append(self.text_view(enc))
        return np.concatenate(parts, axis=1)

    def text_view(self, enc: EncodedInputs) -> np.ndarray:
        """TF-IDF of every text column, each row of each column scaled to unit length (float32)."""
        blocks = []
        for b, (terms, idf) in enumerate(zip(self.text_terms, self.text_idf, strict=True)):
            index = {t: k for k, t in enumerate(terms)}
            lengths = TEXT_GRAMS[TEXT_BLOCKS[b % len(TEXT_BLOCKS)]]
            counts = np.zeros((enc.n_rows, len(terms)), dtype=np.float32)
            for i, doc in enumerate(enc.text[:, b]):
                for gram in grams(doc, lengths):
                    k = index.get(gram)
                    if k is not None:
                        counts[i, k] += 1.0
            x = counts * np.asarray(idf, dtype=np.float32)
            norm = np.sqrt((x * x).sum(axis=1, keepdims=True, dtype=np.float32))
            blocks.append(x / np.maximum(norm, np.float32(1e-12)))
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((enc.n_rows, 0), dtype=np.float32)


def grams(doc: str, lengths: tuple[int, int]) -> list[str]:
    """A text block's n-grams of ``lengths`` tokens, space-joined (what the graph's TfIdfVectorizer counts)."""
    tokens = doc.split(" ") if doc else []
    low, high = lengths
    return [" ".join(tokens[i: i + n]) for n in range(low, high + 1) for i in range(len(tokens) - n + 1)]
