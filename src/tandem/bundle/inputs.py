"""How raw input rows become a bundle's ONNX inputs.

A bundle's graph takes up to five tensors:

- ``num``: float32, one column per numeric, boolean or datetime-derived feature; NaN = missing;
- ``cat``: strings, one column per categorical feature; '' = missing;
- ``text``: strings, two columns per free-text feature: its words by :func:`normalize_text` (lower
  case, words of letters and digits separated by one space) and its characters by
  :func:`char_tokens` (lower case, one space between characters, '_' for white space); '' =
  missing or empty;
- ``image``: float32 N x 3 x S x S, RGB in [0, 1], every image decoded and resized to the
  schema's side S by :func:`decode_images`;
- ``tokens``: int64 N x T x L, each text column's token ids for a model with a sentence encoder
  (the encoder's tokenizer, given to the :class:`InputEncoder`; 0 = padding, L = the batch's
  longest text);
- one tensor per ``tensor`` column (an imported model's own inputs, named as the column), of the column's
  dtype and shape [N, *shape] (:mod:`tandem.bundle.tensors`).

This module is the one place that turns tables, frames and dicts into those tensors, checking them
against the schema; training and inference both use it, so a row is encoded the same way in both
lives.
"""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING

import numpy as np

from tandem.bundle.tensors import tensor_block
from tandem.bundle.tokens import padded, tokenize
from tandem.bundle.values import (
    ARROW,
    DATETIME_PARTS,
    NESTED,
    expected,
    row_category,
    row_numeric,
    to_float,
)
from tandem.errors import SchemaError, need
from tandem.schema import Schema

if TYPE_CHECKING:
    import pyarrow as pa


class EncodedInputs:
    """The ONNX inputs of a batch of rows."""

    __slots__ = ("num", "cat", "text", "image", "tokens", "tensors", "n_rows")

    def __init__(self, num: np.ndarray | None, cat: np.ndarray | None, text: np.ndarray | None = None,
                 image: np.ndarray | None = None, tokens: np.ndarray | None = None,
                 tensors: dict[str, np.ndarray] | None = None):
        self.num = num  # float32 [N, n_num]
        self.cat = cat  # object (str) [N, n_cat]
        self.text = text  # object (normalised str) [N, 2 * n_text]
        self.image = image  # float32 [N, 3, S, S]
        self.tokens = tokens  # int64 [N, n_text, L]: sentence-encoder token ids, 0 = padding
        self.tensors = tensors  # tensor columns by name: [N, *shape] each
        self.n_rows = next(len(a) for a in (num, cat, text, image, *(tensors or {}).values()) if a is not None)

    def feeds(self) -> dict[str, np.ndarray]:
        out = {}
        if self.num is not None:
            out["num"] = self.num
        if self.cat is not None:
            out["cat"] = self.cat
        if self.text is not None:
            out["text"] = self.text
        if self.image is not None:
            out["image"] = self.image
        if self.tokens is not None:
            out["tokens"] = self.tokens
        if self.tensors:
            out.update(self.tensors)
        return out

    def take(self, index: np.ndarray) -> EncodedInputs:
        return EncodedInputs(None if self.num is None else self.num[index],
                             None if self.cat is None else self.cat[index],
                             None if self.text is None else self.text[index],
                             None if self.image is None else self.image[index],
                             None if self.tokens is None else self.tokens[index],
                             None if self.tensors is None else {k: v[index] for k, v in self.tensors.items()})

    def trimmed(self) -> EncodedInputs:
        """These rows with their token ids cut to the longest row's length (no all-padding columns)."""
        if self.tokens is None or self.n_rows == 0:
            return self
        width = max(int(self.token_lengths().max()), 1)
        return EncodedInputs(self.num, self.cat, self.text, self.image, self.tokens[:, :, :width], self.tensors)

    def token_lengths(self) -> np.ndarray:
        """Per row, the longest of its texts in tokens (padding excluded)."""
        return (self.tokens != 0).sum(axis=2).max(axis=1)

    @staticmethod
    def concat(parts: list[EncodedInputs]) -> EncodedInputs:
        """The rows of ``parts`` in order, as one batch (token ids padded to the longest)."""
        if len(parts) == 1:
            return parts[0]

        def joined(arrays: list[np.ndarray | None]) -> np.ndarray | None:
            return None if arrays[0] is None else np.concatenate(arrays)

        tokens = None if parts[0].tokens is None else np.concatenate(padded([p.tokens for p in parts]))
        tensors = None if parts[0].tensors is None else {
            k: np.concatenate([p.tensors[k] for p in parts]) for k in parts[0].tensors}
        return EncodedInputs(joined([p.num for p in parts]), joined([p.cat for p in parts]),
                             joined([p.text for p in parts]), joined([p.image for p in parts]), tokens, tensors)


class InputEncoder:
    """Encode raw rows for one schema; cheap enough to call per request."""

    def __init__(self, schema: Schema, *, tokenizer: object | None = None):
        self.schema = schema
        self.tokenizer = tokenizer  # a sentence encoder's (tandem.bundle.tokens.load_tokenizer), or None
        feats = schema.features
        self.num_columns = [c for c in feats if c.kind in ("numeric", "boolean", "datetime")]
        self.cat_columns = [c for c in feats if c.kind == "categorical"]
        self.text_columns = [c for c in feats if c.kind == "text"]
        self.image_columns = [c for c in feats if c.kind == "image"]
        self.tensor_columns = [c for c in feats if c.kind == "tensor"]
        if len(self.image_columns) > 1:
            raise SchemaError(f"one image column per model: this data has {len(self.image_columns)} "
                              f"({', '.join(c.name for c in self.image_columns)}); leave the others out with --ignore")
        if self.text_columns:  # a serving host without them learns it when it loads the model, not per request
            need("pyarrow", "text-models", f"text column '{self.text_columns[0].name}' of this model")
        if self.image_columns:
            for module in ("pyarrow", "PIL"):
                need(module, "image-models", f"image column '{self.image_columns[0].name}' of this model")
        self.required = [c.name for c in feats]
        self._required_set = frozenset(self.required)
        self.num_feature_names: list[str] = []
        for c in self.num_columns:
            if c.kind == "datetime":
                self.num_feature_names += [f"{c.name}.{p}" for p in DATETIME_PARTS]
            else:
                self.num_feature_names.append(c.name)
        self.cat_feature_names = [c.name for c in self.cat_columns]
        self.text_feature_names = [c.name for c in self.text_columns]
        self._simple_num = all(c.kind == "numeric" for c in self.num_columns)
        self._num_names = [c.name for c in self.num_columns]
        self._cat_names = [c.name for c in self.cat_columns]
        # one C call fetches a row's values (itemgetter of one name returns the value, not a tuple)
        self._get_num = _getter(self._num_names)
        self._get_cat = _getter(self._cat_names)

    def _check_columns(self, present: object, what: str) -> None:
        if isinstance(present, list):  # a table's column names: a set, or thousands of columns cost n² lookups
            present = set(present)
        missing = [n for n in self.required if n not in present]
        if missing:
            raise SchemaError(
                f"{what} is missing column(s) {', '.join(repr(m) for m in missing)}; "
                f"the model expects {', '.join(repr(n) for n in self.required)}")

    # -- tables --------------------------------------------------------------------------------
    def encode_table(self, table: pa.Table | pa.RecordBatch, *, what: str = "input",
                     row_offset: int = 0) -> EncodedInputs:
        """Encode a table; columns are matched by name, extra columns ignored.

        ``row_offset`` is added to row numbers in error messages (for streamed batches).
        """
        pa = need("pyarrow", "files", "reading a table")
        from tandem.bundle.columns import numeric_block
        from tandem.schema import categorical_strings

        self._check_columns(table.column_names, what)
        n = table.num_rows
        num = None
        if self.num_feature_names:
            num = np.empty((n, len(self.num_feature_names)), dtype=np.float32)
            j = 0
            for c in self.num_columns:
                block = numeric_block(table.column(c.name), c, what, row_offset)
                num[:, j: j + block.shape[1]] = block
                j += block.shape[1]
        if num is not None:
            self._check_finite(num, what, row_offset)
        cat = None
        if self.cat_columns:
            cat = np.empty((n, len(self.cat_columns)), dtype=object)
            for j, c in enumerate(self.cat_columns):
                col = table.column(c.name)
                if pa.types.is_nested(col.type):
                    raise SchemaError(f"{what} column '{c.name}': expected text or a number, got {col.type} values")
                cat[:, j] = categorical_strings(col)
        image = None
        if self.image_columns:
            from tandem.bundle.media import decode_images

            c = self.image_columns[0]
            image = decode_images(table.column(c.name), c.size or 32, c.name, what, row_offset)
        texts = [table.column(c.name) for c in self.text_columns]
        tensors = {c.name: tensor_block(table.column(c.name).to_pylist(), c, what, row_offset)
                   for c in self.tensor_columns} or None
        return EncodedInputs(num, cat, self._texts(texts, what), image, self._tokens(texts), tensors)

    def encode_columns(self, columns: dict, *, what: str = "input") -> EncodedInputs:
        """Encode ``{column: values}`` where a tensor column's values are per-row arrays (or one array [N, ...]);
        a model without tensor columns reads the columns as a table."""
        if not self.tensor_columns:
            if not ARROW:  # the inference install: the columns' rows, each read alone
                self._check_columns(columns, what)
                values = [columns[n] for n in self.required]
                if len({len(v) for v in values}) > 1:
                    raise SchemaError(f"{what}: every column needs the same number of values, got "
                                      f"{sorted({len(v) for v in values})}")
                rows = [dict(zip(self.required, row, strict=True)) for row in zip(*values, strict=True)]
                return self.encode_rows(rows, what=what)
            import pyarrow as pa

            return self.encode_table(pa.table(columns), what=what)
        self._check_columns(columns, what)
        tensors = {c.name: tensor_block(columns[c.name], c, what) for c in self.tensor_columns}
        if len({len(v) for v in tensors.values()}) > 1:
            raise SchemaError(f"{what}: every tensor needs the same number of rows, got "
                              f"{sorted({len(v) for v in tensors.values()})}")
        return EncodedInputs(None, None, tensors=tensors)

    def _texts(self, columns: list[pa.ChunkedArray | pa.Array], what: str) -> np.ndarray | None:
        if not self.text_columns:
            return None
        import pyarrow as pa

        from tandem.bundle.media import char_tokens, normalize_text

        out = np.empty((len(columns[0]), 2 * len(columns)), dtype=object)
        for j, (c, col) in enumerate(zip(self.text_columns, columns, strict=True)):
            if pa.types.is_nested(col.type):
                raise SchemaError(f"{what} column '{c.name}': expected text, got {col.type} values")
            out[:, 2 * j] = normalize_text(col)
            out[:, 2 * j + 1] = char_tokens(col)
        return out

    def _tokens(self, columns: list[pa.ChunkedArray | pa.Array]) -> np.ndarray | None:
        """The sentence encoder's token ids of each text column (as written: it lower-cases itself)."""
        if self.tokenizer is None or not columns:
            return None
        import pyarrow.compute as pc

        from tandem.bundle.media import as_text

        ids = [tokenize(self.tokenizer, pc.fill_null(as_text(col), "").to_pylist()) for col in columns]
        return np.stack(padded(ids), axis=1)

    # -- one row as a dict (the latency-critical path) ------------------------------------------
    def encode_row(self, row: dict, *, what: str = "input") -> EncodedInputs:
        """Encode one row given as ``{column: value}``."""
        if self.text_columns or self.image_columns or self.tensor_columns:
            return self.encode_rows([row], what=what)
        if self._simple_num:  # the common case in a few C calls: numbers (or null) and text categories
            fast = self._encode_plain_row(row, what)
            if fast is not None:
                return fast
        try:
            if self._simple_num:  # (plain rows took the fast path above: this one has text, bools or worse)
                num_values = [to_float(row[n]) for n in self._num_names]
            else:
                num_values = []
                for c in self.num_columns:
                    num_values.extend(row_numeric(row[c.name], c))
            cat_values = [row_category(row[c.name]) for c in self.cat_columns]
        except KeyError:
            self._check_columns(row, what)
            raise
        except (TypeError, ValueError, OverflowError):
            # slow path only to name the offending field
            for c in self.num_columns:
                try:
                    row_numeric(row[c.name], c)
                except (TypeError, ValueError, OverflowError):
                    raise SchemaError(
                        f"{what} column '{c.name}': expected {expected(c)}, got {row[c.name]!r}") from None
            for c in self.cat_columns:
                if isinstance(row[c.name], NESTED):
                    raise SchemaError(
                        f"{what} column '{c.name}': expected text or a number, got {row[c.name]!r}") from None
            raise
        num = np.array([num_values], dtype=np.float32) if self.num_columns else None
        if num is not None:
            self._check_finite(num, what, 0)
        cat = np.array([cat_values], dtype=object) if self.cat_columns else None
        return EncodedInputs(num, cat)

    def _encode_plain_row(self, row: dict, what: str) -> EncodedInputs | None:
        """A row whose numeric values are numbers or null and whose categories are text, or None (then
        the general path reads it, and names what is wrong)."""
        try:
            nums = self._get_num(row)
            cats = self._get_cat(row)
        except KeyError:
            return None
        for v in cats:
            if type(v) is not str:
                return None
        num = None
        if nums:
            try:
                num = np.array([nums], dtype=np.float32)
            except (TypeError, ValueError, OverflowError):
                return None
            if num.shape != (1, len(nums)):
                return None
            if not math.isfinite(sum(num.tolist()[0])):  # NaN (missing) or infinite: the general check
                self._check_finite(num, what, 0)
        cat = np.array([cats], dtype=object) if cats else None
        return EncodedInputs(num, cat)

    def encode_rows(self, rows: list[dict], *, what: str = "input") -> EncodedInputs:
        """Encode a list of ``{column: value}`` rows (a request's worth) without building a table.

        Only the model's columns are read; other fields are ignored. Errors name the row and column.
        """
        if self.tensor_columns:
            for i, row in enumerate(rows):
                if not self._required_set <= row.keys():
                    self._check_columns(row, f"{what} row {i + 1}")
            return EncodedInputs(None, None, tensors={
                c.name: tensor_block([r[c.name] for r in rows], c, what) for c in self.tensor_columns})
        if len(rows) == 1 and not (self.text_columns or self.image_columns):
            return self.encode_row(rows[0], what=what)
        if not self._simple_num or self.text_columns or self.image_columns:
            for i, row in enumerate(rows):
                if not self._required_set <= row.keys():
                    self._check_columns(row, f"{what} row {i + 1}")
                for c in self.text_columns:  # a request's blank text is a mistake (null says "missing")
                    v = row[c.name]
                    if isinstance(v, str) and not v.strip():
                        raise SchemaError(f"{what} row {i + 1} column '{c.name}': empty text; send the text "
                                          "(or null when it is missing)")
            if not ARROW:  # the inference install: no tables, so each row is read alone (text and images need one)
                return EncodedInputs.concat([self.encode_row(row, what=f"{what} row {i + 1}")
                                             for i, row in enumerate(rows)])
            return self.encode_table(_rows_table(rows, self.required, what), what=what)
        try:
            num = None
            if self._num_names:
                num = np.array([[r[n] for n in self._num_names] for r in rows], dtype=np.float32)
                if num.shape != (len(rows), len(self._num_names)):
                    raise ValueError("nested values")
                self._check_finite(num, what, 0)
            cat = None
            if self.cat_columns:
                cat = np.array([[row_category(r[c.name]) for c in self.cat_columns] for r in rows], dtype=object)
                cat = cat.reshape(len(rows), len(self.cat_columns))
            return EncodedInputs(num, cat)
        except (KeyError, TypeError, ValueError, OverflowError):
            for i, row in enumerate(rows):  # the slow path only to say which row and column
                self.encode_row(row, what=f"{what} row {i + 1}")
            raise SchemaError(f"{what}: the rows could not be read as the model's columns") from None

    def _check_finite(self, num: np.ndarray, what: str, row_offset: int) -> None:
        """Infinities (or numbers beyond float32, which become them) would poison the model's sums."""
        if np.isfinite(num.sum()):  # the common case, in one pass: no infinity (and no NaN) anywhere
            return
        bad = np.isinf(num)
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            raise SchemaError(f"{what} column '{self.num_feature_names[j]}' row {i + 1 + row_offset}: "
                              "expected a finite number within float32 range (about ±3.4e38)")


def _getter(names: list[str]) -> object:
    """``row -> tuple of row[name]`` for ``names``."""
    if not names:
        return lambda row: ()
    if len(names) == 1:
        name = names[0]
        return lambda row: (row[name],)
    return operator.itemgetter(*names)


def _rows_table(rows: list[dict], columns: list[str], what: str) -> pa.Table:
    """The model's columns of ``rows`` as a table; a column whose values do not share a type is named."""
    import pyarrow as pa

    arrays = []
    for c in columns:
        values = [r[c] for r in rows]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            for i, v in enumerate(values):
                if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
                    raise SchemaError(f"{what} column '{c}' row {i + 1}: number {v} is out of range") from None
            raise SchemaError(f"{what} column '{c}': values must share one type ({exc})") from None
    return pa.Table.from_arrays(arrays, names=columns)
