"""Read tables, infer their schema and task, and split them."""

from tandem.data.infer import check_target, infer_schema, infer_task
from tandem.data.readers import count_rows_estimate, iter_batches, read_table
from tandem.data.splits import make_folds

__all__ = ["check_target", "count_rows_estimate", "infer_schema", "infer_task", "iter_batches", "make_folds",
           "read_table"]
