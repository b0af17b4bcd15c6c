"""Read tables, infer their schema and task, and split them.

The package's public interface, by module (everything else, and every ``_name``, is internal to ``tandem.data``):

- :mod:`tandem.data.readers`: :func:`read_table`, :func:`iter_batches`, :func:`count_rows_estimate`,
  :func:`read_errors`, :data:`SOURCE_KEY` (files, folders and frames to pyarrow);
- :mod:`tandem.data.infer`: :func:`infer_schema`, :func:`infer_task`, :func:`check_target`, :func:`check_column`;
- :mod:`tandem.data.splits`: :func:`make_folds`;
- :mod:`tandem.data.quality`: ``check_quality``, ``QualityReport``, ``Finding``, ``QualityError``, ``SEVERITIES``
  (the quality gate; import it from there: training only, so serving hosts do not load it);
- :mod:`tandem.data.images` and :mod:`tandem.data.mail`: image and e-mail folders as tables (read through
  :func:`read_table`; :mod:`tandem.data.mail` also parses one message for serving).
"""

from tandem.data.infer import check_column, check_target, infer_schema, infer_task
from tandem.data.readers import SOURCE_KEY, count_rows_estimate, iter_batches, read_errors, read_table
from tandem.data.splits import make_folds

__all__ = ["SOURCE_KEY", "check_column", "check_target", "count_rows_estimate", "infer_schema", "infer_task",
           "iter_batches", "make_folds", "read_errors", "read_table"]
