"""Predictor: a verified bundle in ONNX Runtime, answering one row or millions.

Imports only numpy and onnxruntime (never the training stack; pyarrow only for tables and frames, tokenizers
only for a sentence encoder), so a serving host needs nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from tandem.bundle.files import MODEL_FILE, TOKENIZER_FILE
from tandem.bundle.format import check_sha256, read_manifest
from tandem.bundle.inputs import EncodedInputs, InputEncoder
from tandem.bundle.onnx_guard import GraphError, check_no_external_data
from tandem.bundle.tokens import GROUP_ROWS, in_length_order, load_tokenizer
from tandem.bundle.values import ARROW
from tandem.errors import BundleError, DataError, need
from tandem.schema import Schema, categorical_strings

if TYPE_CHECKING:
    import pyarrow as pa


def default_providers() -> list[str]:
    """CUDA when ONNX Runtime has it, else CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class Predictor:
    """Load a bundle (hashes, fields and signature verified) and predict with its ONNX graph.

    ``require_signed`` (default ``$TANDEM_REQUIRE_SIGNED``) refuses a bundle that is not signed by a key in
    ``$TANDEM_TRUSTED_KEYS``. A bundle that cannot be loaded raises a one-line :class:`BundleError`.
    """

    def __init__(self, bundle: str | Path, *, providers: list[str] | None = None, threads: int | None = None,
                 require_signed: bool | None = None):
        self.path = Path(bundle)
        # (the graph is hashed by _session, from the bytes it loads)
        self.manifest = read_manifest(self.path, verify=True, require_signed=require_signed,
                                      hashed_by_caller=frozenset({MODEL_FILE}))
        self.encoder = bundle_input_encoder(self.path, self.manifest)
        self.schema = self.encoder.schema
        self.task: str = self.manifest["task"]
        self.labels: list[str] | None = self.manifest.get("labels")
        self.threshold: float = float(self.manifest.get("threshold", 0.5))
        opts = ort.SessionOptions()
        # one row of a large tree ensemble runs ~2x faster on two threads; servers pass threads=1 per worker
        opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = _session(self.path, self.manifest, opts, providers or default_providers())
        self._outputs = [o.name for o in self.session.get_outputs()]
        # the binding itself, without the wrapper's per-call checks of the feeds (~1.5 µs a call): ours are
        # built from the schema, so they always match the graph's inputs
        self._run_graph = getattr(self.session, "_sess", self.session).run
        self.typed_labels = _typed_labels(self.labels, self.manifest.get("label_type", "string"))
        self._explainer = None
        self.recommendations = None
        if self.task == "recommend":
            from tandem.inference.recommend import Recommendations

            self.recommendations = Recommendations(self.manifest, self._run_graph)

    # -- encoding -----------------------------------------------------------------------------
    def encode(self, data: object) -> EncodedInputs:
        """Encode a dict (one row), list of dicts, dict of columns, arrow table or pandas/polars frame.

        Files are the front doors' to read (``tandem.load(...).predict(path)``, ``tandem predict``): a serving
        host decodes what a request carries and nothing else."""
        if self.recommendations is not None:
            raise DataError("this model recommends items: ask recommend(user, k) (POST .../recommend), not predict")
        if isinstance(data, dict) and data and not isinstance(next(iter(data.values())), (list, tuple, np.ndarray)):
            return self.encoder.encode_row(data)
        if isinstance(data, dict) and self.encoder.tensor_columns and _one_row_of_tensors(data, self.encoder):
            return self.encoder.encode_rows([data])
        if type(data).__module__.startswith("pandas") and getattr(data, "shape", (0,))[0] == 1:
            # one-row frames skip the Arrow conversion, which costs ~1 ms
            return self.encoder.encode_row(data.to_dict(orient="records")[0])
        if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
            return self.encoder.encode_rows(data, what="input rows")
        if isinstance(data, dict) and (self.encoder.tensor_columns or not ARROW):
            return self.encoder.encode_columns(data, what="input")
        if isinstance(data, np.ndarray) and len(self.encoder.tensor_columns) == 1:
            return self.encoder.encode_columns({self.encoder.tensor_columns[0].name: data}, what="input")
        return self.encoder.encode_table(self.as_table(data), what="input")

    @staticmethod
    def as_table(data: object) -> pa.Table:
        """In-memory input (rows, columns, frames) as an Arrow table; a DataError says what was expected."""
        if isinstance(data, (str, os.PathLike)):
            raise DataError(f"prediction input '{os.fsdecode(data)}': a Predictor takes rows, columns or frames; "
                            "read a file with tandem.load(...).predict(path) or `tandem predict`")
        pa = need("pyarrow", "files", "a table of columns or a data frame")
        from tandem.bundle.frames import as_table

        if isinstance(data, pa.Table):
            return data
        if isinstance(data, pa.RecordBatch):
            return pa.Table.from_batches([data])
        if isinstance(data, list):
            if not data or not all(isinstance(r, dict) for r in data):
                raise DataError("input rows must be a non-empty list of {column: value} objects")
            return pa.Table.from_pylist(data)
        return as_table(data, what="prediction input")

    def extra_columns(self, names: list[str]) -> list[str]:
        """The input's columns (``names``) the model does not use (tolerated, reported)."""
        known = {c.name for c in self.schema.columns} | {self.schema.target}
        return [c for c in names if c not in known]

    # -- prediction ---------------------------------------------------------------------------
    def run(self, enc: EncodedInputs) -> dict[str, np.ndarray]:
        """Raw graph outputs for encoded inputs."""
        return dict(zip(self._outputs, run_graph(self._run_graph, self._outputs, enc), strict=True))

    def recommend(self, user: object, k: int | None = None, *, exclude_seen: bool = True) -> dict | list[dict]:
        """The top ``k`` items (default: the k the study optimised) for ``user``, best first, as
        ``{"user", "items", "scores", "known"}``; a list of users gives a list of answers. What the user had in
        training is left out unless ``exclude_seen`` is false. An unknown user gets the most popular items,
        ``known`` false and a ``note``. A user id of the wrong type or a ``k`` outside 1..items is a DataError
        naming the field."""
        if self.recommendations is None:
            raise DataError(f"this model does {self.task}, not recommendation: ask predict")
        if isinstance(user, (list, tuple, np.ndarray)):
            if len(user) == 0:
                raise DataError("field 'user' is an empty list: expected at least one user id")
            return self.recommendations.answer(list(user), k, exclude_seen)
        return self.recommendations.answer([user], k, exclude_seen)[0]

    def predict_proba(self, data: object) -> np.ndarray:
        """Class probabilities [N, C], columns in the order of ``labels``."""
        if self.task == "regression":
            raise DataError("predict_proba is for classification; this model does regression")
        return self.run(self.encode(data))["probabilities"]

    def predict(self, data: object) -> np.ndarray:
        """Predicted labels (classification, with the tuned threshold) or values (regression)."""
        out = self.run(self.encode(data))
        return self.decode(out)

    def explain(self, enc: EncodedInputs) -> dict:
        """Per-column contributions of encoded rows (see tandem.inference.explain); ExplainError if it cannot."""
        if self._explainer is None:
            from tandem.inference.explain import Explainer

            self._explainer = Explainer.load(self.path, self.manifest, self.encoder)
        return self._explainer.explain(enc)

    def target_values(self, column: pa.ChunkedArray | pa.Array, what: str) -> np.ndarray:
        """A labelled table's target as the graph's outputs are scored: class indices in the order of ``labels``
        (a label not seen in training is a DataError naming its row), or float values for regression."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.task == "regression":
            return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        index = {label: i for i, label in enumerate(self.labels)}
        strings = categorical_strings(column)
        unknown = [(i, s) for i, s in enumerate(strings) if s not in index]
        if unknown:
            row, value = unknown[0]
            raise DataError(f"{what} column '{self.manifest['target']}' row {row + 1}: label '{value}' was not seen "
                            f"in training (known: {', '.join(self.labels)})")
        return np.array([index[s] for s in strings], dtype=np.int64)

    def decode(self, out: dict[str, np.ndarray]) -> np.ndarray:
        if self.task == "regression":
            return out["prediction"].reshape(-1)
        return self.typed_labels[out["label"]]


def _session(folder: Path, manifest: dict, opts: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    """An ONNX Runtime session of the bundle's graph, from the very bytes whose sha256 is checked here (the
    file cannot change between the check and the load), with no tensor data read from other files."""
    where = f"bundle '{folder}': {MODEL_FILE}"
    try:
        model = (folder / MODEL_FILE).read_bytes()
    except OSError as exc:
        raise BundleError(f"{where} cannot be read ({exc.strerror or exc})") from None
    check_sha256(folder, manifest, MODEL_FILE, model)
    try:
        check_no_external_data(model)
    except GraphError as exc:
        raise BundleError(f"{where} cannot be loaded: {exc}; expected every tensor inside the graph") from None
    # fatal only: a graph ONNX Runtime refuses is reported below in one line, not also logged on stderr
    opts.log_severity_level = 4
    try:
        return ort.InferenceSession(model, opts, providers=providers)
    except Exception as exc:  # onnxruntime's own exception classes (Fail, InvalidProtobuf, InvalidGraph...)
        reason = " ".join(str(exc).split())[:300]
        raise BundleError(f"{where} cannot be loaded by ONNX Runtime: {reason}") from None


def run_graph(run: object, outputs: list[str], enc: EncodedInputs) -> list[np.ndarray]:
    """``run(outputs, feeds, None)`` (an ONNX Runtime session's) on ``enc``. A sentence encoder's cost grows
    with the padded length, so rows with token ids run in groups of similar length, each cut to its
    longest row, and the answers are put back in order."""
    if enc.tokens is None or enc.n_rows <= GROUP_ROWS:
        return run(outputs, enc.feeds(), None)
    return in_length_order(enc.token_lengths(), GROUP_ROWS,
                           lambda rows: run(outputs, enc.take(rows).trimmed().feeds(), None))


def bundle_input_encoder(folder: Path, manifest: dict) -> InputEncoder:
    """The bundle's input encoder, with its sentence encoder's tokenizer when it has one."""
    tokenizer = None
    variant = manifest.get("preprocessing", {}).get("text_encoder")
    if variant:
        tokenizer = load_tokenizer(Path(folder) / TOKENIZER_FILE, int(variant["max_tokens"]))
    return InputEncoder(Schema.from_dict(manifest["schema"]), tokenizer=tokenizer)


def _one_row_of_tensors(data: dict, encoder: InputEncoder) -> bool:
    """Whether ``data`` is one row of a tensor model (each value one row's array) rather than columns."""
    c = encoder.tensor_columns[0]
    value = data.get(c.name)
    depth = np.ndim(value) if isinstance(value, np.ndarray) else _list_depth(value)
    return depth == len(c.shape or [])


def _list_depth(value: object) -> int:
    depth = 0
    while isinstance(value, (list, tuple)) and value:
        depth, value = depth + 1, value[0]
    return depth


def _typed_labels(labels: list[str] | None, label_type: str) -> np.ndarray | None:
    if labels is None:
        return None
    if label_type == "int":
        return np.array([int(v) for v in labels])
    if label_type == "float":
        return np.array([float(v) for v in labels])
    if label_type == "bool":
        return np.array([v == "true" for v in labels])
    return np.array(labels, dtype=object)
