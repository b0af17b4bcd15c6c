"""Tensor columns (an imported model's arrays): every way a client can get one wrong is a SchemaError naming the
column, the row and what was expected; the bounds hold; v2 reads a batch of arrays by its shape."""

from __future__ import annotations

import numpy as np
import pytest

from tandem.bundle.inputs import InputEncoder
from tandem.bundle.manifest import check_manifest
from tandem.bundle.tensors import MAX_ROW_ELEMENTS, tensor_block
from tandem.errors import BundleError, SchemaError
from tandem.schema import ColumnSpec, Schema
from tandem.serve import kserve

IMAGE = ColumnSpec("pixels", "tensor", shape=[2, 3], dtype="float32")
TOKENS = ColumnSpec("ids", "tensor", shape=[-1], dtype="int64")


def test_rows_of_nested_lists_become_one_array_of_the_column_dtype():
    block = tensor_block([[[1, 2, 3], [4, 5, 6]], [[0, 0, 0], [1, 1, 1]]], IMAGE, "input")
    assert block.dtype == np.float32 and block.shape == (2, 2, 3) and block[0, 1, 2] == 6
    ids = tensor_block([[5, 6, 7], [1, 2, 3]], TOKENS, "input")
    assert ids.dtype == np.int64 and ids.tolist() == [[5, 6, 7], [1, 2, 3]]
    assert tensor_block([[1.0, 2.0]], TOKENS, "input").dtype == np.int64  # whole floats (JSON's 2.0) are read


@pytest.mark.parametrize(("values", "column", "words"), [
    ([[[1, 2], [3, 4]]], IMAGE, "expected arrays of shape [2, 3] per row, got [2, 2] (dimension 2 is 2"),
    ([[[1, 2, 3]]], IMAGE, "got [1, 3]"),
    ([[1, 2, 3]], IMAGE, "per row, got [3]"),
    ([[[1, 2, 3], [4, 5]]], IMAGE, "row 1: expected an array of shape [2, 3]"),
    ([[1, 2, 3], [4, 5]], TOKENS, "row 2: shape [2] differs from row 1's [3]"),
    ([[["a", "b", "c"], ["d", "e", "f"]]], IMAGE, "expected numbers (float32), got text values"),
    ([[[1, 2, 3], [4, float("nan"), 6]]], IMAGE, "row 1: expected finite numbers within float32 range"),
    ([[[1, 2, 3], [4, 1e39, 6]]], IMAGE, "row 1: expected finite numbers within float32 range"),
    ([[1.5, 2]], TOKENS, "row 1: expected whole numbers (int64)"),
    ([[1, 2], [3, 2**70]], TOKENS, "row 2"),
])
def test_a_wrong_array_names_the_column_the_row_and_what_was_expected(values, column, words):
    with pytest.raises(SchemaError, match="column '" + column.name + "'") as caught:
        tensor_block(values, column, "input")
    assert words in str(caught.value)


def test_a_row_over_the_element_bound_is_refused():
    with pytest.raises(SchemaError, match=f"over the limit of {MAX_ROW_ELEMENTS:,}"):
        tensor_block(np.zeros((1, MAX_ROW_ELEMENTS + 1), dtype=np.int64), TOKENS, "input")


def test_the_encoder_reads_rows_columns_and_arrow_list_columns_alike():
    import pyarrow as pa

    encoder = InputEncoder(Schema(columns=[IMAGE]))
    rows = [{"pixels": [[1, 2, 3], [4, 5, 6]]}, {"pixels": [[0, 0, 0], [1, 1, 1]]}]
    by_rows = encoder.encode_rows(rows).tensors["pixels"]
    by_columns = encoder.encode_columns({"pixels": [r["pixels"] for r in rows]}).tensors["pixels"]
    by_table = encoder.encode_table(pa.table({"pixels": [r["pixels"] for r in rows]})).tensors["pixels"]
    assert np.array_equal(by_rows, by_columns) and np.array_equal(by_rows, by_table)
    with pytest.raises(SchemaError, match="missing column"):
        encoder.encode_rows([{"other": 1}])


def test_v2_reads_a_shape_of_more_than_one_dimension_as_a_batch_of_arrays():
    body = (b'{"inputs": [{"name": "pixels", "shape": [2, 2, 3], "datatype": "FP32", '
            b'"data": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}]}')
    request = kserve.decode_request(body, None, tensor_inputs=frozenset({"pixels"}))
    assert request.n_rows == 2 and np.asarray(request.columns["pixels"]).shape == (2, 2, 3)
    request = kserve.decode_request(body, None)  # not a tensor column: one value per row, whatever the shape
    assert request.n_rows == 12
    with pytest.raises(kserve.V2Error, match="does not match 5 values"):
        kserve.decode_request(b'{"inputs": [{"name": "pixels", "shape": [2, 3], "datatype": "FP32", '
                              b'"data": [1, 2, 3, 4, 5]}]}', None)


def test_a_manifest_tensor_column_needs_its_shape_and_dtype():
    manifest = {"files": {"model.onnx": {"sha256": "0" * 64, "bytes": 1}}, "name": "m", "task": "regression",
                "target": "y", "metric": "rmse", "threshold": 0.5,
                "schema": {"columns": [{"name": "x", "kind": "tensor", "shape": [3]}]},
                "metrics": {"validation": {}, "validation_scheme": "imported"}, "leaderboard": [],
                "ensemble": [{"model": "m", "weight": 1.0}], "parity": {"max_abs_diff": 0.0},
                "latency": {"predict_1row_us_p50": 1.0}}
    with pytest.raises(BundleError, match=r"schema.columns\[0\]' is a tensor column without its shape and dtype"):
        check_manifest(manifest, "bundle 'b': manifest.json")
    manifest["schema"]["columns"][0]["dtype"] = "complex64"
    with pytest.raises(BundleError, match="dtype"):
        check_manifest(manifest, "bundle 'b': manifest.json")
    manifest["schema"]["columns"][0]["dtype"] = "float32"
    check_manifest(manifest, "bundle 'b': manifest.json")
