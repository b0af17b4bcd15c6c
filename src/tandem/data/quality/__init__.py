"""The quality gate: what is wrong with a training table (and its test table) before anything is fit.

Every check is vectorised over Arrow and numpy (no Python loop over rows), so a million rows of
fifty columns take seconds. Rows are compared through a 64-bit hash of their values, the same
for a value in the training and the test table, so duplicates, train/test overlap and label
conflicts cost a sort, not a join. Each finding has a severity:

- ``error``: the model or its scores would be wrong (target leakage, test rows copied from the
  training rows, a class too small to validate); ``--strict`` refuses to go on;
- ``warning``: worth fixing or at least knowing (id-like, constant or mostly missing columns,
  label conflicts, class imbalance, mixed types, many duplicates);
- ``info``: a fact about the data that explains the model (some missing values, outliers,
  near-constant or high-cardinality columns).

Modules: :mod:`~tandem.data.quality.gate` (:func:`check_quality`, which runs every check),
:mod:`~tandem.data.quality.report` (the findings, the report and :class:`QualityError`),
:mod:`~tandem.data.quality.columns` (one column at a time), :mod:`~tandem.data.quality.blocks` (numeric
columns a block at a time), :mod:`~tandem.data.quality.rows` (rows as hashes) and
:mod:`~tandem.data.quality.leakage` (one feature alone against the target).
"""

from tandem.data.quality.blocks import BLOCK_VALUES
from tandem.data.quality.columns import (
    FREE_TEXT_WORDS,
    ID_UNIQUE_SHARE,
    MINORITY_INFO,
    MINORITY_WARNING,
    OUTLIER_SAMPLE,
)
from tandem.data.quality.gate import OVERLAP_ERROR, check_quality
from tandem.data.quality.leakage import LEAK_ERROR, LEAK_SAMPLE_ROWS, LEAK_WARNING
from tandem.data.quality.report import SEVERITIES, Finding, QualityError, QualityReport

__all__ = [
    "BLOCK_VALUES",
    "FREE_TEXT_WORDS",
    "ID_UNIQUE_SHARE",
    "LEAK_ERROR",
    "LEAK_SAMPLE_ROWS",
    "LEAK_WARNING",
    "MINORITY_INFO",
    "MINORITY_WARNING",
    "OUTLIER_SAMPLE",
    "OVERLAP_ERROR",
    "SEVERITIES",
    "Finding",
    "QualityError",
    "QualityReport",
    "check_quality",
]
