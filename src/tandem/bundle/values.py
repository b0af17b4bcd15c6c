"""One value as the numbers and category keys a bundle's graph reads.

Numbers, booleans and datetimes become float32 (NaN = missing; a datetime four parts: days since
the epoch, month, weekday, hour); categories become their string keys. These row-at-a-time functions
serve the one-row latency path and need no pyarrow; :mod:`tandem.bundle.columns` does the same for
whole columns with Arrow compute, and both give the same numbers.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from tandem.errors import installed
from tandem.schema import ColumnSpec, category_key

#: Whether pyarrow is installed (the inference install leaves it out): rows are then read without it.
ARROW = installed("pyarrow")
DATETIME_PARTS = ("days", "month", "weekday", "hour")
_TRUE = {"true", "yes", "y", "t", "1"}
_FALSE = {"false", "no", "n", "f", "0"}


def expected(c: ColumnSpec) -> str:
    return {"numeric": "a number", "boolean": "true/false or 1/0",
            "datetime": "an ISO date or timestamp"}.get(c.kind, "a value")


_MISSING_TYPES = ("NAType", "NaTType")  # pandas' missing markers, recognised without importing pandas


def is_missing(v: object) -> bool:
    return v is None or type(v).__name__ in _MISSING_TYPES or (isinstance(v, float) and v != v)


def to_float(v: object) -> float:
    if is_missing(v):
        return math.nan
    if isinstance(v, str):
        if v.strip() == "" or v.strip().lower() in ("nan", "na", "null"):
            return math.nan
        return float(v)
    if isinstance(v, (bool, int, float, np.number, np.bool_)):
        return float(v)
    raise TypeError(type(v).__name__)


def to_bool_float(v: object) -> float:
    if is_missing(v):
        return math.nan
    if isinstance(v, str):
        s = v.strip().lower()
        if s == "":
            return math.nan
        if s in _TRUE:
            return 1.0
        if s in _FALSE:
            return 0.0
        raise ValueError(v)
    f = to_float(v)
    if f == f and f not in (0.0, 1.0):
        raise ValueError(v)
    return f


def row_numeric(v: object, c: ColumnSpec) -> list[float]:
    if c.kind == "datetime" and is_missing(v):
        return [math.nan] * len(DATETIME_PARTS)
    if c.kind == "numeric":
        return [to_float(v)]
    if c.kind == "boolean":
        return [to_bool_float(v)]
    if ARROW:  # the column path's own parser, so a value reads the same in a row and in a table
        from tandem.bundle.columns import datetime_block, one_value

        return datetime_block(one_value(v), c, "input")[0].tolist()
    return datetime_parts(v)


NESTED = (dict, list, tuple, set)


def row_category(v: object) -> str:
    if type(v) is str:
        return v
    if is_missing(v):
        return ""
    if isinstance(v, NESTED):
        raise TypeError(type(v).__name__)
    if isinstance(v, np.bool_):
        v = bool(v)
    return category_key(v)


def datetime_parts(v: object) -> list[float]:
    """A date, datetime or ISO text as the four parts (days since the epoch, month, weekday 0 = Monday, hour),
    rounded as the column path rounds them; a time zone is converted to UTC, as Arrow reads zoned timestamps.
    ValueError when it is none of those. Without pyarrow, rows are read with this (which also takes ISO text
    with a zone, which Arrow's column cast refuses)."""
    if isinstance(v, str):
        text = v.strip()
        if text == "":
            return [math.nan] * len(DATETIME_PARTS)
        if text[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat does not read the zone letter
            text = text[:-1] + "+00:00"
        v = dt.datetime.fromisoformat(text)
    if isinstance(v, np.datetime64):
        v = v.astype("datetime64[us]").item()
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
    elif isinstance(v, dt.date):
        v = dt.datetime(v.year, v.month, v.day)
    else:
        raise TypeError(type(v).__name__)
    seconds = (v - _EPOCH) // dt.timedelta(seconds=1)  # whole seconds, as the column path casts to seconds
    # the column path holds the seconds as float32 before it divides
    return [float(np.float32(seconds)) / 86400.0, float(v.month), float(v.weekday()), float(v.hour)]


_EPOCH = dt.datetime(1970, 1, 1)
