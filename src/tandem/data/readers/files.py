"""A data file named by the user: its format from the suffix, the limits every reader keeps, UTF-8 checks,
and the one-line errors shared by the readers of each format."""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from tandem.bundle.frames import READ_ERRORS
from tandem.errors import DataError

SUPPORTED_SUFFIXES: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
}
"""File suffix (lower case) -> format name."""

SNIFF_BYTES = 64 * 1024
_CHUNK_BYTES = 1 << 20
_MIN_BLOCK_BYTES = 1 << 20
MAX_ROW_BYTES = 64 << 20
"""The longest CSV row (record) or JSON line that every reader accepts: pyarrow parses in blocks and reads
a row that spans at most one block boundary, so blocks of this size take any row up to it. A longer row is
refused with one line naming the file and this bound, by :func:`read_table` and :func:`iter_batches` alike
(both read such a file in blocks of this size from its start), though one up to twice as long may happen
to fit between the block boundaries."""
_MAX_BLOCK_BYTES = 256 << 20
_BOM = codecs.BOM_UTF8
_EXPECTED_SUFFIXES = ", ".join(SUPPORTED_SUFFIXES)
# ArrowInvalid/ArrowTypeError are ValueError/TypeError subclasses; ArrowIOError is an OSError.
_EMPTY_EXPECTATION = {
    "csv": "expected a header row and at least one data row",
    "jsonl": "expected one JSON object per line",
    "parquet": "expected a Parquet file",
    "arrow": "expected an Arrow IPC (Feather) file",
}

Source = Any  # str | os.PathLike | pandas.DataFrame | polars.DataFrame | pa.Table | Mapping[str, Sequence]


# --------------------------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class _File:
    path: str  # what the file system sees (user expanded)
    name: str  # as the user gave it, for messages
    suffix: str
    fmt: str
    size: int

    @property
    def quoted(self) -> str:
        return f"'{self.name}'"


def _is_path(source: object) -> bool:
    return isinstance(source, (str, bytes, os.PathLike))


def _resolve(source: Source, what: str, *, allow_empty: bool = False) -> _File:
    if not _is_path(source):
        raise DataError(f"{what}: expected a file path, got {type(source).__name__}")
    name = os.fsdecode(os.fspath(source))
    path = os.path.expanduser(name)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(f"{what} file '{name}' not found") from None
    except OSError as exc:
        raise DataError(f"cannot read {what} file '{name}': {exc.strerror or exc}") from None
    if os.path.isdir(path):
        raise DataError(f"{what} path '{name}' is a directory: expected a file ({_EXPECTED_SUFFIXES})")
    suffix = os.path.splitext(name)[1].lower()
    if not suffix:
        raise DataError(f"'{name}' has no file suffix to tell its format: expected one of {_EXPECTED_SUFFIXES}")
    fmt = SUPPORTED_SUFFIXES.get(suffix)
    if fmt is None:
        raise DataError(f"unsupported format '{suffix}' for '{name}': expected one of {_EXPECTED_SUFFIXES}")
    if not os.access(path, os.R_OK):
        raise DataError(f"cannot read {what} file '{name}': permission denied")
    f = _File(path=path, name=name, suffix=suffix, fmt=fmt, size=st.st_size)
    if f.size == 0 and not allow_empty:
        raise _empty(f)
    return f


def _empty(f: _File) -> DataError:
    return DataError(f"{f.quoted} is empty: {_EMPTY_EXPECTATION[f.fmt]}")


def _not_utf8(f: _File, line: int) -> DataError:
    return DataError(f"{f.quoted} is not UTF-8 text (first invalid byte at line {line}): re-save it as UTF-8")


def _read_head(f: _File) -> bytes:
    try:
        with open(f.path, "rb") as fh:
            return fh.read(SNIFF_BYTES)
    except OSError as exc:
        raise DataError(f"cannot read {f.quoted}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------- UTF-8


def _invalid_utf8_offset(data: bytes, final: bool) -> tuple[int | None, int]:
    """(offset of the first invalid byte or None, bytes consumed); an incomplete tail is left unconsumed."""
    try:
        data.decode("utf-8")
        return None, len(data)
    except UnicodeDecodeError as exc:
        if not final and exc.reason == "unexpected end of data" and exc.end == len(data):
            return None, exc.start
        return exc.start, exc.start


def _find_invalid_utf8(f: _File) -> int | None:
    """1-based line of the first byte that is not UTF-8 (a leading BOM is fine), or None."""
    lines_before = 0
    carry = b""
    first = True
    try:
        with open(f.path, "rb") as fh:
            while True:
                chunk = fh.read(_CHUNK_BYTES)
                data = carry + chunk
                if first:
                    first = False
                    if data.startswith(_BOM):
                        data = data[len(_BOM) :]
                bad, consumed = _invalid_utf8_offset(data, final=not chunk)
                if bad is not None:
                    return lines_before + data.count(b"\n", 0, bad) + 1
                if not chunk:
                    return None
                lines_before += data.count(b"\n", 0, consumed)
                carry = data[consumed:]
    except OSError:
        return None


def _decode_head(f: _File, head: bytes) -> str:
    """The decoded first bytes of a text file (BOM stripped); raises DataError when they are not UTF-8."""
    body = head[len(_BOM) :] if head.startswith(_BOM) else head
    final = len(head) >= f.size
    bad, consumed = _invalid_utf8_offset(body, final)
    if bad is not None:
        raise _not_utf8(f, body.count(b"\n", 0, bad) + 1)
    text = body[:consumed].decode("utf-8")
    if final and not text.strip():
        raise _empty(f)
    return text


# --------------------------------------------------------------------------------------------- rows and blocks


def _straddles(exc: BaseException) -> bool:
    """pyarrow's failure for a row that does not fit its blocks."""
    return "straddl" in str(exc)


def _row_block(f: _File) -> int:
    """The block that takes any row up to MAX_ROW_BYTES (the whole file when it is smaller)."""
    return int(min(f.size + 1, MAX_ROW_BYTES))


def _open_fitting_rows(f: _File, block: int, open_reader: Callable[[int], Any]) -> tuple[Any, int]:
    """``open_reader(block)``, and its block size; when a row straddles that block, a reader in blocks that take
    any row up to the bound instead."""
    try:
        return open_reader(block), block
    except READ_ERRORS as exc:
        if not (_straddles(exc) and block < _row_block(f)):
            raise
        return open_reader(_row_block(f)), _row_block(f)


def _past_skipped(batch: pa.RecordBatch, skip: int) -> tuple[pa.RecordBatch, int]:
    """``batch`` less its first ``skip`` rows (yielded before the file was read again), and the rows left to skip."""
    dropped = min(skip, batch.num_rows)
    return batch.slice(dropped), skip - dropped
