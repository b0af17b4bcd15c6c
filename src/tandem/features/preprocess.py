"""The preprocessing graph built from a schema, in numpy (for training) and ONNX (for inference).

Two views of the same encoded inputs (``num`` floats, ``cat`` strings, ``text`` normalised text):
- **tree**: numbers as they are (NaN = missing) followed by one integer code per categorical
  column (training vocabulary order; an unseen or missing category is NaN, which tree learners
  treat as missing, never as a shifted code);
- **dense**: numbers with the median imputed, a missing-indicator where training saw missing
  values, standardized; categoricals one-hot over their most frequent categories (unknown = all zero).
Both views end with the same text blocks: per text column, TF-IDF over its most frequent words and
word pairs, and over its most frequent character 2- to 4-grams (punctuation and symbols kept, so
'£', '!!' and 'txt' count), each seen in at least two rows and each block scaled to unit length
per row (sklearn's TfidfVectorizer with smooth idf and l2 norm, on tandem's own tokens).
A third view, **embedding**, is the dense view followed by each text column's sentence embedding
(384 numbers from the all-MiniLM-L6-v2 encoder variant in ``text_encoder``; see
tandem.features.sentence). The numpy side runs the encoder's own ONNX graph, which the bundle's
graph contains, so training and serving see the same numbers.
Both implementations must agree to float32 rounding; the parity tests hold them to it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from tandem.bundle.inputs import EncodedInputs

if TYPE_CHECKING:  # the numpy views serve inference-side explanations, which must not need onnx
    from tandem.features.graph import GraphBuilder

DENSE_MAX_CATEGORIES = 50
TEXT_MAX_TERMS = {"words": 2000, "chars": 3000}  # per text column
TEXT_GRAMS = {"words": (1, 2), "chars": (2, 4)}  # n-gram lengths counted, in tokens
TEXT_BLOCKS = ("words", "chars")  # the encoder's text tensor holds these two columns per text column
TEXT_MIN_ROWS = 2  # a term must appear in this many training rows


@dataclass
class Preprocessor:
    """Fitted statistics of both views; JSON-able via :meth:`to_dict`."""

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

    # -- fitting ------------------------------------------------------------------------------
    @classmethod
    def fit(cls, enc: EncodedInputs, num_names: list[str], cat_names: list[str],
            vocabularies: list[list[str]], text_names: list[str] | None = None,
            image_size: int | None = None, text_encoder: dict | None = None) -> Preprocessor:
        medians, means, scales, indicators = [], [], [], []
        if enc.num is not None:
            n, width = enc.num.shape
            per_block = max(1, (1 << 22) // max(n, 1))
            for start in range(0, width, per_block):
                # columns as contiguous rows: each row's reductions add in the order a 1-D call on the column does
                cols = enc.num[:, start:start + per_block].T.astype(np.float64, order="C")
                ok = ~np.isnan(cols)
                present = ok.sum(axis=1)
                med = np.zeros(len(cols))
                for m in np.unique(present[present > 0]):  # columns with as many values share one median call
                    rows = np.flatnonzero(present == m)
                    med[rows] = np.median(cols[rows][ok[rows]].reshape(len(rows), m), axis=1)
                filled = np.where(ok, cols, med[:, None])
                std = filled.std(axis=1)
                medians += med.tolist()
                means += filled.mean(axis=1).tolist()
                scales += np.where(std > 1e-12, std, 1.0).tolist()
                indicators += (start + np.flatnonzero(present < n)).tolist()
        terms, idfs = [], []
        for b in range(len(text_names or []) * len(TEXT_BLOCKS)):
            t, idf = _fit_terms(enc.text[:, b], TEXT_BLOCKS[b % len(TEXT_BLOCKS)])
            terms.append(t)
            idfs.append(idf)
        return cls(num_names, cat_names, [list(v) for v in vocabularies], medians, means, scales, indicators,
                   list(text_names or []), terms, idfs, image_size, text_encoder)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessor:
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

    def _dense_sizes(self) -> list[int]:
        return [min(len(v), DENSE_MAX_CATEGORIES) for v in self.vocabularies]

    @property
    def dense_width(self) -> int:
        return len(self.num_names) + len(self.indicator_columns) + sum(self._dense_sizes()) + self.text_width

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

    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Standardisation as x * inv_scale + shift (the same float32 arithmetic in numpy and ONNX)."""
        scale = np.asarray(self.scales, dtype=np.float64)
        inv = (1.0 / scale).astype(np.float32)
        shift = (-np.asarray(self.means, dtype=np.float64) / scale).astype(np.float32)
        return inv, shift

    def view(self, name: str, enc: EncodedInputs) -> np.ndarray:
        """A learner family's input: "tree", "dense", "embedding", or as encoded: "image" (the pixels) and
        "tokens" (a sentence encoder's token ids)."""
        if name in ("image", "tokens"):
            return getattr(enc, name)
        return {"tree": self.tree_view, "dense": self.dense_view, "embedding": self.embedding_view}[name](enc)

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
            inv, shift = self._affine()
            parts.append((filled * inv + shift).astype(np.float32))
            if self.indicator_columns:
                parts.append(isnan[:, self.indicator_columns].astype(np.float32))
        if self.cat_names:
            codes = self.codes(enc)
            for j, size in enumerate(self._dense_sizes()):
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
                for gram in _grams(doc, lengths):
                    k = index.get(gram)
                    if k is not None:
                        counts[i, k] += 1.0
            x = counts * np.asarray(idf, dtype=np.float32)
            norm = np.sqrt((x * x).sum(axis=1, keepdims=True, dtype=np.float32))
            blocks.append(x / np.maximum(norm, np.float32(1e-12)))
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((enc.n_rows, 0), dtype=np.float32)

    def embeddings(self, enc: EncodedInputs) -> np.ndarray:
        """Each text column's sentence embedding, side by side: float32 [N, 384 * n_text]."""
        from tandem.features.sentence import session_for

        return session_for(self.text_encoder).embed_columns(enc.tokens)

    def embedding_view(self, enc: EncodedInputs) -> np.ndarray:
        return np.concatenate([self.dense_view(enc), self.embeddings(enc)], axis=1)

    @property
    def embedding_width(self) -> int:
        return len(self.text_names) * int(self.text_encoder["dims"]) if self.text_encoder else 0

    # -- ONNX ---------------------------------------------------------------------------------
    # Few nodes on purpose: at one row, ONNX Runtime's cost is per node, not per value.
    def _keyed(self, g: GraphBuilder, cat: str) -> str:
        """Prefix each categorical value with its column index, so one LabelEncoder serves all columns."""
        if "keyed" not in g.memo:
            prefix = np.array([[f"{j}\x1f" for j in range(len(self.cat_names))]], dtype=object)
            g.memo["keyed"] = g.op("StringConcat", [g.const(prefix, "cat_prefix"), cat], prefix="cat_keyed")
        return g.memo["keyed"]

    def onnx_tree_view(self, g: GraphBuilder, num: str | None, cat: str | None, text: str | None = None) -> str:
        parts = []
        if self.num_names:
            parts.append(num)
        if self.cat_names:
            keys = [f"{j}\x1f{v}" for j, vocab in enumerate(self.vocabularies) for v in vocab]
            values = [float(i) for vocab in self.vocabularies for i in range(len(vocab))]
            parts.append(g.op("LabelEncoder", [self._keyed(g, cat)], domain="ai.onnx.ml", prefix="cat_codes",
                              keys_strings=keys or ["\x1f"], values_floats=values or [float("nan")],
                              default_float=float("nan")))
        if self.text_width:
            parts.append(self._onnx_text(g, text))
        return parts[0] if len(parts) == 1 else g.op("Concat", parts, axis=1, prefix="tree_view")

    def _onnx_text(self, g: GraphBuilder, text: str) -> str:
        """TF-IDF blocks of the text columns (shared by both views): StringSplit, TfIdfVectorizer, L2 norm."""
        if "text_block" in g.memo:
            return g.memo["text_block"]
        blocks = []
        for b, (terms, idf) in enumerate(zip(self.text_terms, self.text_idf, strict=True)):
            if not terms:  # no term in two rows: the block adds nothing
                continue
            low, high = TEXT_GRAMS[TEXT_BLOCKS[b % len(TEXT_BLOCKS)]]
            column = g.op("Gather", [text, g.const(np.array(b, dtype=np.int64), "text_col")], axis=1)
            tokens = g.op("StringSplit", [column], n_out=2, prefix="tokens", delimiter=" ")[0]
            index = {t: k for k, t in enumerate(terms)}
            by_length = {n: [t for t in terms if t.count(" ") == n - 1] for n in range(1, high + 1)}
            pool, starts, order = [], [], []
            for n in range(1, high + 1):  # the pool holds 1-grams, then 2-grams, ... (n strings each)
                starts.append(len(pool))
                for t in by_length[n]:
                    pool += t.split(" ")
                    order.append(index[t])
            tf = g.op("TfIdfVectorizer", [tokens], prefix="tfidf", mode="TFIDF", min_gram_length=low,
                      max_gram_length=high, max_skip_count=0, ngram_counts=starts,
                      ngram_indexes=order, pool_strings=pool, weights=[float(np.float32(idf[k])) for k in order])
            norm = g.op("ReduceL2", [tf, g.const(np.array([1], dtype=np.int64), "axis")], keepdims=1)
            floor = g.op("Max", [norm, g.const(np.array(1e-12, dtype=np.float32), "eps")])
            blocks.append(g.op("Div", [tf, floor]))
        g.memo["text_block"] = blocks[0] if len(blocks) == 1 else g.op("Concat", blocks, axis=1, prefix="text_view")
        return g.memo["text_block"]

    def onnx_dense_view(self, g: GraphBuilder, num: str | None, cat: str | None, text: str | None = None) -> str:
        parts = []
        if self.num_names:
            isnan = g.op("IsNaN", [num])
            filled = g.op("Where", [isnan, g.const(np.asarray([self.medians], dtype=np.float32), "median"), num])
            inv, shift = self._affine()
            scaled = g.op("Mul", [filled, g.const(inv.reshape(1, -1), "inv_scale")])
            parts.append(g.op("Add", [scaled, g.const(shift.reshape(1, -1), "shift")]))
            if self.indicator_columns:
                picked = g.op("Gather", [isnan, g.const(np.asarray(self.indicator_columns, dtype=np.int64), "ind")],
                              axis=1)
                parts.append(g.op("Cast", [picked], to=1))
        if self.cat_names:
            sizes = self._dense_sizes()
            offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
            width = int(sum(sizes))
            keys = [f"{j}\x1f{v}" for j, vocab in enumerate(self.vocabularies) for v in vocab[: sizes[j]]]
            values = [int(offsets[j]) + i for j in range(len(sizes)) for i in range(sizes[j])]
            index = g.op("LabelEncoder", [self._keyed(g, cat)], domain="ai.onnx.ml", prefix="onehot_index",
                         keys_strings=keys or ["\x1f"], values_int64s=values or [width], default_int64=width)
            hot = g.op("OneHot", [index, g.const(np.array(width, dtype=np.int64), "depth"),
                                  g.const(np.array([0.0, 1.0], dtype=np.float32), "onehot_values")], axis=-1)
            parts.append(g.op("ReduceMax", [hot, g.const(np.array([1], dtype=np.int64), "axis")], keepdims=0))
        if self.text_width:
            parts.append(self._onnx_text(g, text))
        return parts[0] if len(parts) == 1 else g.op("Concat", parts, axis=1, prefix="dense_view")

    def onnx_view(self, g: GraphBuilder, name: str, num: str | None, cat: str | None, text: str | None,
                  tokens: str | None) -> str:
        """:meth:`view` in the graph, from the graph's inputs."""
        if name in ("image", "tokens"):
            return name  # the graph's input as the encoder gives it (the network standardises pixels itself)
        if name == "embedding":
            return self.onnx_embedding_view(g, num, cat, text, tokens)
        return (self.onnx_tree_view if name == "tree" else self.onnx_dense_view)(g, num, cat, text)

    def onnx_embedding_view(self, g: GraphBuilder, num: str | None, cat: str | None, text: str | None,
                            tokens: str) -> str:
        """The dense view, then the encoder's graph (grafted in) over every text column's token ids."""
        import onnx

        from tandem.features.sentence import encode_in_graph, encoder_graph

        per_row = encode_in_graph(g, tokens, onnx.load_from_string(encoder_graph(self.text_encoder)),
                                  self.embedding_width)
        dense = self.onnx_dense_view(g, num, cat, text)
        return g.op("Concat", [dense, per_row], axis=1, prefix="embedding_view")


def _grams(doc: str, lengths: tuple[int, int]) -> list[str]:
    """A text block's n-grams of ``lengths`` tokens, space-joined (what the graph's TfIdfVectorizer counts)."""
    tokens = doc.split(" ") if doc else []
    low, high = lengths
    return [" ".join(tokens[i: i + n]) for n in range(low, high + 1) for i in range(len(tokens) - n + 1)]


def _fit_terms(docs: np.ndarray, block: str) -> tuple[list[str], list[float]]:
    """The block's most frequent n-grams (in >= TEXT_MIN_ROWS rows) and their smooth idf."""
    df: Counter = Counter()
    lengths = TEXT_GRAMS[block]
    for doc in docs:
        df.update(set(_grams(doc, lengths)))
    kept = sorted((t for t, k in df.items() if k >= TEXT_MIN_ROWS), key=lambda t: (-df[t], t))
    kept = kept[: TEXT_MAX_TERMS[block]]
    n = len(docs)
    return kept, [float(np.log((1 + n) / (1 + df[t])) + 1.0) for t in kept]
