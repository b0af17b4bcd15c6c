"""The bundle: the one contract between training and inference, which both lives import.

What it offers, by module:

- :mod:`~tandem.bundle.files`: the names of a bundle's files (``MODEL_FILE``, ``TOKENIZER_FILE``, ...);
- :mod:`~tandem.bundle.format`: :func:`write_bundle` (atomic, hashed, signed when a key is set) and
  :func:`read_manifest` (every hash, field and signature verified);
- :mod:`~tandem.bundle.manifest`: the manifest's fields and their checks;
- :mod:`~tandem.bundle.signing`: Ed25519 keys, signatures and trusted keys;
- :mod:`~tandem.bundle.onnx_guard`: what a graph may hold before ONNX Runtime reads it;
- :mod:`~tandem.bundle.inputs`: rows, columns and frames -> the graph's inputs (:class:`InputEncoder`,
  :class:`EncodedInputs`), with :mod:`~tandem.bundle.values` (one value: numbers, booleans, datetimes,
  categories; no pyarrow), :mod:`~tandem.bundle.columns` (whole columns, with Arrow compute) and
  :mod:`~tandem.bundle.media` (text, images) under it;
- :mod:`~tandem.bundle.frames`: in-memory tables (dict of columns, pandas, polars, Arrow) as Arrow tables;
- :mod:`~tandem.bundle.tokens`: a sentence encoder's tokenizer, token ids and length grouping;
- :mod:`~tandem.bundle.mail`: one raw e-mail message -> the fields a mail model reads;
- :mod:`~tandem.bundle.views`: the preprocessing's numpy views (tree, dense, text), for explanations and drift.

The names below load their module on first use, so importing :mod:`tandem.bundle.files` stays cheap
(the encoding modules bring numpy; pyarrow only where a table is read, so the inference install has none).
"""

from __future__ import annotations

import importlib

_HOMES = {
    "MANIFEST_FILE": "files", "MODEL_FILE": "files", "TOKENIZER_FILE": "files", "EXPLAIN_FILE": "files",
    "PROFILE_FILE": "files", "REPORT_FILE": "files", "NATIVE_DIR": "files", "ENCODER_FILE": "files",
    "PREPROCESSING_FILE": "files",
    "write_bundle": "format", "read_manifest": "format", "check_sha256": "format",
    "EncodedInputs": "inputs", "InputEncoder": "inputs", "DATETIME_PARTS": "values",
    "as_table": "frames",
    "load_tokenizer": "tokens", "tokenize": "tokens", "in_length_order": "tokens", "GROUP_ROWS": "tokens",
    "parse_message": "mail", "message_fields": "mail",
    "PreprocessingViews": "views",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tandem.bundle' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tandem.bundle.{home}"), name)
