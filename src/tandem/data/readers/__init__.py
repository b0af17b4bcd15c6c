"""Read tables from files and in-memory frames into pyarrow, with one-line errors a person can act on.

Files: CSV/TSV (delimiter sniffed), Parquet, JSON lines (and a JSON array of objects), Arrow IPC / Feather.
Frames: pandas and polars DataFrames, pyarrow Tables, and ``dict`` of column -> values.

Every failure the user can cause raises :class:`tandem.errors.DataError` whose message is one line naming
the file as the user gave it (and the line/column where it makes sense) and what was expected.

It imports only pyarrow at module level. In-memory frames are converted by :mod:`tandem.bundle.frames`,
which a Predictor uses too (pandas and polars imported lazily, only for objects that come from them).

Modules: :mod:`~tandem.data.readers.dispatch` (the entry points below), :mod:`~tandem.data.readers.files`
(a file's format from its suffix, the row limits, UTF-8 checks), one module per format
(:mod:`~tandem.data.readers.delimited`, :mod:`~tandem.data.readers.json_lines`,
:mod:`~tandem.data.readers.parquet`, :mod:`~tandem.data.readers.arrow_ipc`),
and :mod:`~tandem.data.readers.tables` (batches cast and re-cut).
"""

from tandem.bundle.delimiters import CANDIDATE_DELIMITERS, sniff_delimiter
from tandem.data.readers.dispatch import (
    ARRAY_SUFFIXES,
    READ_ERRORS_KEY,
    SOURCE_KEY,
    count_rows_estimate,
    iter_batches,
    read_errors,
    read_table,
)
from tandem.data.readers.files import MAX_ROW_BYTES, SNIFF_BYTES, SUPPORTED_SUFFIXES, Source

__all__ = [
    "ARRAY_SUFFIXES",
    "CANDIDATE_DELIMITERS",
    "MAX_ROW_BYTES",
    "READ_ERRORS_KEY",
    "SNIFF_BYTES",
    "SOURCE_KEY",
    "SUPPORTED_SUFFIXES",
    "Source",
    "count_rows_estimate",
    "iter_batches",
    "read_errors",
    "read_table",
    "sniff_delimiter",
]
