"""The preprocessing graph built from a schema, in numpy (for training) and ONNX (for inference).

Two views of the same encoded inputs (``num`` floats, ``cat`` strings):
- **tree**: numbers as they are (NaN = missing) followed by one integer code per categorical
  column (training vocabulary order; an unseen or missing category is NaN, which tree learners
  treat as missing, never as a shifted code);
- **dense**: numbers with the median imputed, a missing-indicator where training saw missing
  values, standardized; categoricals one-hot over their most frequent categories (unknown = all zero).
Both implementations must agree to float32 rounding; the parity tests hold them to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from tandem.bundle.inputs import EncodedInputs

if TYPE_CHECKING:  # the numpy views serve inference-side explanations, which must not need onnx
    from tandem.features.graph import GraphBuilder

DENSE_MAX_CATEGORIES = 50


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

    # -- fitting ------------------------------------------------------------------------------
    @classmethod
    def fit(cls, enc: EncodedInputs, num_names: list[str], cat_names: list[str],
            vocabularies: list[list[str]]) -> Preprocessor:
        medians, means, scales, indicators = [], [], [], []
        if enc.num is not None:
            num = enc.num.astype(np.float64)
            for j in range(num.shape[1]):
                col = num[:, j]
                ok = ~np.isnan(col)
                med = float(np.median(col[ok])) if ok.any() else 0.0
                filled = np.where(ok, col, med)
                mean = float(filled.mean())
                std = float(filled.std())
                medians.append(med)
                means.append(mean)
                scales.append(std if std > 1e-12 else 1.0)
                if not ok.all():
                    indicators.append(j)
        return cls(num_names, cat_names, [list(v) for v in vocabularies], medians, means, scales, indicators)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessor:
        return cls(**d)

    # -- shapes -------------------------------------------------------------------------------
    @property
    def tree_feature_names(self) -> list[str]:
        return list(self.num_names) + list(self.cat_names)

    @property
    def tree_categorical_indices(self) -> list[int]:
        return list(range(len(self.num_names), len(self.num_names) + len(self.cat_names)))

    def _dense_sizes(self) -> list[int]:
        return [min(len(v), DENSE_MAX_CATEGORIES) for v in self.vocabularies]

    @property
    def dense_width(self) -> int:
        return len(self.num_names) + len(self.indicator_columns) + sum(self._dense_sizes())

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

    def tree_view(self, enc: EncodedInputs) -> np.ndarray:
        parts = []
        if self.num_names:
            parts.append(enc.num.astype(np.float32))
        if self.cat_names:
            codes = self.codes(enc).astype(np.float32)
            codes[codes < 0] = np.nan
            parts.append(codes)
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
        return np.concatenate(parts, axis=1)

    # -- ONNX ---------------------------------------------------------------------------------
    # Few nodes on purpose: at one row, ONNX Runtime's cost is per node, not per value.
    def _keyed(self, g: GraphBuilder, cat: str) -> str:
        """Prefix each categorical value with its column index, so one LabelEncoder serves all columns."""
        if "keyed" not in g.memo:
            prefix = np.array([[f"{j}\x1f" for j in range(len(self.cat_names))]], dtype=object)
            g.memo["keyed"] = g.op("StringConcat", [g.const(prefix, "cat_prefix"), cat], prefix="cat_keyed")
        return g.memo["keyed"]

    def onnx_tree_view(self, g: GraphBuilder, num: str | None, cat: str | None) -> str:
        parts = []
        if self.num_names:
            parts.append(num)
        if self.cat_names:
            keys = [f"{j}\x1f{v}" for j, vocab in enumerate(self.vocabularies) for v in vocab]
            values = [float(i) for vocab in self.vocabularies for i in range(len(vocab))]
            parts.append(g.op("LabelEncoder", [self._keyed(g, cat)], domain="ai.onnx.ml", prefix="cat_codes",
                              keys_strings=keys or ["\x1f"], values_floats=values or [float("nan")],
                              default_float=float("nan")))
        return parts[0] if len(parts) == 1 else g.op("Concat", parts, axis=1, prefix="tree_view")

    def onnx_dense_view(self, g: GraphBuilder, num: str | None, cat: str | None) -> str:
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
        return parts[0] if len(parts) == 1 else g.op("Concat", parts, axis=1, prefix="dense_view")
