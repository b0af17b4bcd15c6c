"""In-memory tables as Arrow: dicts of columns, pandas and polars DataFrames, pyarrow Tables and RecordBatches.

Both lives take such data: training reads it beside files (:mod:`tandem.data.readers`), and a
Predictor or the server decodes columnar requests (REST ``inputs``, KServe v2 tensors) with it, so a
column is checked and named the same way in both. pandas and polars are imported lazily, and only
when the object handed in already comes from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from tandem.errors import DataError

#: What pyarrow and the frame libraries raise on data they cannot convert.
READ_ERRORS = (pa.ArrowException, OSError, ValueError, TypeError, OverflowError, UnicodeDecodeError)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (pyarrow errors may carry several, or a tuple of args)."""
    parts = [str(a) for a in exc.args if str(a).strip()] if len(exc.args) > 1 else [str(exc)]
    text = "; ".join(p.strip().splitlines()[0] for p in parts if p.strip())
    return text or type(exc).__name__


def _frame_family(obj: object) -> str | None:
    for cls in type(obj).__mro__:
        root = (getattr(cls, "__module__", "") or "").split(".", 1)[0]
        if root in ("pandas", "polars"):
            return root
    return None


def as_table(source: object, what: str) -> pa.Table:
    """``source`` (a pandas or polars frame, a pyarrow Table or RecordBatch, a dict of columns) as a checked
    table; a DataError names ``what`` and the column or row that is wrong."""
    family = _frame_family(source)
    if family == "pandas":
        return _from_pandas(source, what)
    if family == "polars":
        return _from_polars(source, what)
    if isinstance(source, pa.Table):
        return check_table(source, f"{what} (pyarrow Table)")
    if isinstance(source, pa.RecordBatch):
        return check_table(pa.Table.from_batches([source]), f"{what} (pyarrow RecordBatch)")
    if isinstance(source, Mapping):
        return table_from_columns(source, f"{what} (dict of columns)")
    raise DataError(
        f"{what}: expected a file path, a pandas or polars DataFrame, a pyarrow Table or a dict of "
        f"column -> values, got {type(source).__name__}"
    )


def _from_pandas(df: Any, what: str) -> pa.Table:
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{what}: expected a DataFrame, got a pandas {type(df).__name__}")
    label = f"{what} (pandas DataFrame)"
    names = [str(c) for c in df.columns]
    check_columns(names, label)
    if len(df) == 0:
        raise DataError(f"{label} has no rows")
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except READ_ERRORS as exc:
        for i, name in enumerate(names):
            try:
                pa.Array.from_pandas(df.iloc[:, i])
            except READ_ERRORS as column_exc:
                raise DataError(
                    f"{label} column '{name}' cannot be converted: {one_line(column_exc)}: expected values of one type"
                ) from exc
        raise DataError(f"{label} cannot be converted to a table: {one_line(exc)}") from exc
    return check_table(table.replace_schema_metadata(None), label)


def _from_polars(df: Any, what: str) -> pa.Table:
    import polars as pl

    if isinstance(df, pl.LazyFrame):
        try:
            df = df.collect()
        except Exception as exc:  # polars raises its own exception hierarchy for bad user queries
            raise DataError(f"{what} (polars LazyFrame) could not be collected: {one_line(exc)}") from exc
    if not isinstance(df, pl.DataFrame):
        raise DataError(f"{what}: expected a DataFrame, got a polars {type(df).__name__}")
    label = f"{what} (polars DataFrame)"
    check_columns(list(df.columns), label)
    if df.height == 0:
        raise DataError(f"{label} has no rows")
    try:
        table = df.to_arrow()
    except READ_ERRORS as exc:
        raise DataError(f"{label} cannot be converted to a table: {one_line(exc)}") from exc
    return check_table(_without_views(table), label)


def _without_views(table: pa.Table) -> pa.Table:
    """Cast string_view/binary_view columns (newer polars) to large_string/large_binary."""
    is_string_view = getattr(pa.types, "is_string_view", lambda t: False)
    is_binary_view = getattr(pa.types, "is_binary_view", lambda t: False)
    fields = []
    changed = False
    for fld in table.schema:
        if is_string_view(fld.type):
            fld, changed = fld.with_type(pa.large_string()), True
        elif is_binary_view(fld.type):
            fld, changed = fld.with_type(pa.large_binary()), True
        fields.append(fld)
    return table.cast(pa.schema(fields, metadata=table.schema.metadata)) if changed else table


def table_from_columns(columns: Mapping[Any, Any], label: str, rows_word: str = "rows") -> pa.Table:
    """A dict of equal-length columns as a checked table."""
    arrays: dict[str, pa.Array | pa.ChunkedArray] = {}
    first: tuple[str, int] | None = None
    if not columns:
        raise DataError(f"{label} has no columns")
    for name, values in columns.items():
        if not isinstance(name, str):
            raise DataError(f"{label}: column names must be strings, got {type(name).__name__} {name!r}")
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            array = values
        elif isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__"):
            raise DataError(f"{label} column '{name}': expected a list of values, got {type(values).__name__}")
        else:
            try:
                array = pa.array(values)
            except READ_ERRORS as exc:
                raise DataError(
                    f"{label} column '{name}' cannot be converted: {one_line(exc)}: expected values of one type"
                ) from exc
        if first is None:
            first = (name, len(array))
        elif len(array) != first[1]:
            raise DataError(
                f"{label} column '{name}' has {len(array)} value{'' if len(array) == 1 else 's'}: "
                f"expected {first[1]} like column '{first[0]}'"
            )
        arrays[name] = array
    return check_table(pa.table(arrays), label, rows_word=rows_word)


def _join_numbers(numbers: list[int]) -> str:
    text = [str(n) for n in numbers]
    return text[0] if len(text) == 1 else ", ".join(text[:-1]) + " and " + text[-1]


def _looks_numeric(name: str) -> bool:
    try:
        float(name)
    except ValueError:
        return False
    return True


def column_names(schema: pa.Schema, label: str) -> list[str]:
    """Column names; pyarrow decodes them lazily, so a name that is not UTF-8 fails here."""
    try:
        return list(schema.names)
    except UnicodeDecodeError:
        raise DataError(f"{label} has a column name that is not UTF-8 text: re-save it as UTF-8") from None


def check_columns(names: Iterable[str] | pa.Schema, label: str) -> None:
    """DataError unless the column names are non-empty, UTF-8 and distinct."""
    names = column_names(names, label) if isinstance(names, pa.Schema) else list(names)
    if not names:
        raise DataError(f"{label} has no columns")
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(names, start=1):
        positions.setdefault(name, []).append(i)
    duplicates = [f"'{n}' (columns {_join_numbers(p)})" for n, p in positions.items() if len(p) > 1]
    if duplicates:
        hint = ""
        if all(_looks_numeric(n) for n in names):
            hint = " (the first line must be a header row of column names)"
        raise DataError(f"{label} has duplicate column names: {', '.join(duplicates)}{hint}")


def check_table(table: pa.Table, label: str, rows_word: str = "rows") -> pa.Table:
    """``table``, once its columns are checked and it has rows."""
    check_columns(table.schema, label)
    if table.num_rows == 0:
        raise DataError(f"{label} has no {rows_word}")
    return table
