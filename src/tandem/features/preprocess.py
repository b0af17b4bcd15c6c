"""The preprocessing on the training side: fitted from encoded rows, and written as ONNX nodes.

The views themselves (tree, dense, text; see :mod:`tandem.bundle.views`, which also computes them
in numpy for explanations and drift on a serving host) are fitted here from the training rows, and
built here once more as ONNX nodes, so the bundle's graph holds the whole preprocessing. A third
view, **embedding**, is the dense view followed by each text column's sentence embedding (384
numbers from the all-MiniLM-L6-v2 encoder variant in ``text_encoder``; see
tandem.features.sentence). The numpy side runs the encoder's own ONNX graph, which the bundle's
graph contains, so training and serving see the same numbers.
Both implementations must agree to float32 rounding; the parity tests hold them to it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tandem.bundle.inputs import EncodedInputs
from tandem.bundle.views import (
    DENSE_MAX_CATEGORIES,
    TEXT_BLOCKS,
    TEXT_GRAMS,
    TEXT_MAX_TERMS,
    TEXT_MIN_ROWS,
    PreprocessingViews,
    grams,
)

if TYPE_CHECKING:  # onnx is needed only to build a graph
    from tandem.features.graph import GraphBuilder

__all__ = ["DENSE_MAX_CATEGORIES", "TEXT_BLOCKS", "TEXT_GRAMS", "TEXT_MAX_TERMS", "TEXT_MIN_ROWS", "Preprocessor"]


class Preprocessor(PreprocessingViews):
    """The preprocessing as the training side uses it: fitted from encoded rows, its numpy views (those of
    :class:`tandem.bundle.views.PreprocessingViews`, plus sentence embeddings), and the same views as ONNX nodes."""

    # -- fitting ------------------------------------------------------------------------------
    @classmethod
    def fit(cls, enc: EncodedInputs, num_names: list[str], cat_names: list[str],
            vocabularies: list[list[str]], text_names: list[str] | None = None,
            image_size: int | None = None, text_encoder: dict | None = None,
            image_encoder: dict | None = None) -> Preprocessor:
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
                   list(text_names or []), terms, idfs, image_size, text_encoder, image_encoder)

    def view(self, name: str, enc: EncodedInputs) -> np.ndarray:
        """A learner family's input: "tree", "dense", "embedding", or as encoded: "image" (the pixels) and
        "tokens" (a sentence encoder's token ids)."""
        if name in ("image", "tokens"):
            return getattr(enc, name)
        return {"tree": self.tree_view, "dense": self.dense_view, "embedding": self.embedding_view}[name](enc)

    def embeddings(self, enc: EncodedInputs) -> np.ndarray:
        """Each text column's sentence embedding side by side, then the image's backbone features: float32
        [N, 384 * n_text + 1280 * has_image]."""
        parts = []
        if self.text_encoder:
            from tandem.features.sentence import session_for

            parts.append(session_for(self.text_encoder).embed_columns(enc.tokens))
        if self.image_encoder:
            from tandem.features.efficientnet import embed_images

            parts.append(embed_images(self.image_encoder, enc.image))
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def embedding_view(self, enc: EncodedInputs) -> np.ndarray:
        """The dense view (when the data has other columns) followed by :meth:`embeddings`."""
        if not self.dense_width:
            return self.embeddings(enc)
        return np.concatenate([self.dense_view(enc), self.embeddings(enc)], axis=1)

    @property
    def embedding_width(self) -> int:
        """The sentence embeddings' width (the image features come after them)."""
        return len(self.text_names) * int(self.text_encoder["dims"]) if self.text_encoder else 0

    def register_native_graphs(self, native: Path) -> None:
        """Make the encoder graphs a bundle keeps in its ``native`` folder known to this process (the native
        learners' embedding view computes through them)."""
        from tandem.bundle.files import ENCODER_FILE, IMAGE_ENCODER_FILE
        from tandem.features.sentence import register_graph

        for described, name in ((self.text_encoder, ENCODER_FILE), (self.image_encoder, IMAGE_ENCODER_FILE)):
            if described and (native / name).is_file():
                register_graph((native / name).read_bytes())

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
            inv, shift = self.affine()
            scaled = g.op("Mul", [filled, g.const(inv.reshape(1, -1), "inv_scale")])
            parts.append(g.op("Add", [scaled, g.const(shift.reshape(1, -1), "shift")]))
            if self.indicator_columns:
                picked = g.op("Gather", [isnan, g.const(np.asarray(self.indicator_columns, dtype=np.int64), "ind")],
                              axis=1)
                parts.append(g.op("Cast", [picked], to=1))
        if self.cat_names:
            sizes = self.dense_sizes()
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
                  tokens: str | None, image: str | None = "image") -> str:
        """:meth:`view` in the graph, from the graph's inputs."""
        if name in ("image", "tokens"):
            return name  # the graph's input as the encoder gives it (the network standardises pixels itself)
        if name == "embedding":
            return self.onnx_embedding_view(g, num, cat, text, tokens, image)
        return (self.onnx_tree_view if name == "tree" else self.onnx_dense_view)(g, num, cat, text)

    def onnx_embedding_view(self, g: GraphBuilder, num: str | None, cat: str | None, text: str | None,
                            tokens: str | None, image: str | None = "image") -> str:
        """The dense view, then the encoders' graphs (grafted in): the sentence encoder over every text column's
        token ids, the image backbone over the image."""
        import onnx

        from tandem.features.sentence import encoder_graph

        parts = [self.onnx_dense_view(g, num, cat, text)] if self.dense_width else []
        if self.text_encoder:
            from tandem.features.sentence import encode_in_graph

            parts.append(encode_in_graph(g, tokens, onnx.load_from_string(encoder_graph(self.text_encoder)),
                                         self.embedding_width))
        if self.image_encoder:
            from tandem.features import efficientnet

            parts.append(efficientnet.encode_in_graph(g, image,
                                                      onnx.load_from_string(encoder_graph(self.image_encoder))))
        return parts[0] if len(parts) == 1 else g.op("Concat", parts, axis=1, prefix="embedding_view")


def _fit_terms(docs: np.ndarray, block: str) -> tuple[list[str], list[float]]:
    """The block's most frequent n-grams (in >= TEXT_MIN_ROWS rows) and their smooth idf."""
    df: Counter = Counter()
    lengths = TEXT_GRAMS[block]
    for doc in docs:
        df.update(set(grams(doc, lengths)))
    kept = sorted((t for t, k in df.items() if k >= TEXT_MIN_ROWS), key=lambda t: (-df[t], t))
    kept = kept[: TEXT_MAX_TERMS[block]]
    n = len(docs)
    return kept, [float(np.log((1 + n) / (1 + df[t])) + 1.0) for t in kept]
