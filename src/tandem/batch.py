"""Batch prediction of a file: streamed in chunks, bounded memory, written atomically.

Files are read with pyarrow (CSV, Parquet, JSON lines, Arrow). The inference install has no pyarrow: there a
CSV file is read and written with Python's ``csv`` module, row by row, with the same values and the same
errors (:func:`predict_csv_rows`); other formats name the extra that reads them.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tandem.bundle.delimiters import sniff_delimiter
from tandem.bundle.inputs import EncodedInputs
from tandem.bundle.values import ARROW
from tandem.errors import ConfigError, DataError, need
from tandem.fsutil import atomic_file
from tandem.inference.predictor import Predictor

if TYPE_CHECKING:
    import pyarrow as pa

OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a CSV cell as a formula (OWASP, CSV injection)."""
_TRIGGER_RE = r"^[=+\-@\t\r]"
# A plain decimal number ("-12", "+3.5e2") is read as a number, never run: it keeps its sign unescaped.
_NUMBER_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_NUMBER = re.compile(_NUMBER_RE)


def escape_formula(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would read it as a formula (it starts with
    ``= + - @``, a tab or a carriage return and is not a plain number), else unchanged."""
    return "'" + text if text.startswith(FORMULA_TRIGGERS) and not _NUMBER.fullmatch(text) else text


def escape_table_formulas(table: pa.Table) -> pa.Table:
    """Every text cell and column name of ``table`` through :func:`escape_formula`; numbers stay numbers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for col in table.columns:
        if pa.types.is_dictionary(col.type) and pa.types.is_string(col.type.value_type):
            col = col.cast(pa.string())
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            risky = pc.and_(pc.match_substring_regex(col, _TRIGGER_RE),
                            pc.invert(pc.match_substring_regex(col, _NUMBER_RE)))
            col = pc.if_else(risky, pc.binary_join_element_wise("'", col, ""), col)
        columns.append(col)
    return pa.table(columns, names=[escape_formula(n) for n in table.column_names])


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def _column_types(predictor: Predictor, input_path: Path) -> dict[str, pa.DataType] | None:
    """For CSV, read every model column as text so each chunk parses the same way; the encoder then
    checks values against the schema and names the row of a bad one. Typed formats keep their types.
    A recommender's user column is read as its ids are typed."""
    import pyarrow as pa

    if Path(input_path).suffix.lower() not in (".csv", ".tsv", ".txt"):
        return None
    if predictor.recommendations is not None:
        info = predictor.manifest["recommend"]
        return {info["user"]: pa.int64() if info["user_id_type"] == "int" else pa.string()}
    return {c.name: pa.string() for c in predictor.schema.columns}


def _output_batch(predictor: Predictor, batch: pa.RecordBatch, out: dict[str, np.ndarray], *,
                  escape: bool = False) -> pa.Table:
    import pyarrow as pa

    cols: dict[str, pa.Array] = {}
    for c in predictor.schema.columns:
        if c.kind == "id" and c.name in batch.schema.names:
            cols[c.name] = batch.column(c.name)
    target = predictor.schema.target or "prediction"
    if predictor.task == "regression":
        cols[target] = pa.array(out["prediction"].reshape(-1).astype(np.float64))
    else:
        cols[target] = pa.array(predictor.decode(out).tolist())
        for j, label in enumerate(predictor.labels):
            # the header names the label as its cells show it, escaped or not
            name = f"proba_{escape_formula(label) if escape else label}"
            cols[name] = pa.array(out["probabilities"][:, j].astype(np.float64))
    table = pa.table(cols)
    return escape_table_formulas(table) if escape else table


def _recommend_batch(predictor: Predictor, batch: pa.RecordBatch, k: int | None, what: str,
                     row_offset: int) -> pa.Table:
    """A recommender's answer for a chunk of users: one row per (user, rank): user, rank, item, score, known."""
    import pyarrow as pa

    from tandem.data.infer import check_column

    user = predictor.manifest["recommend"]["user"]
    users = check_column(pa.Table.from_batches([batch]), user, "user column", what=what).to_pylist()
    missing = [i for i, u in enumerate(users) if u is None]
    if missing:
        raise DataError(f"{what} column '{user}' row {row_offset + missing[0] + 1}: no user id")
    answers = predictor.recommendations.answer(users, k,
                                               where=lambda i: f"{what} column '{user}' row {row_offset + i + 1}")
    cols: dict[str, list] = {user: [], "rank": [], "item": [], "score": [], "known": []}
    for a in answers:
        n = len(a["items"])
        cols[user] += [a["user"]] * n
        cols["rank"] += list(range(1, n + 1))
        cols["item"] += a["items"]
        cols["score"] += a["scores"]
        cols["known"] += [a["known"]] * n
    return pa.table(cols)


def predict_file(bundle: Path, input_path: Path, output: Path, *, batch_rows: int = 65536,
                 console: Console | None = None, escape_formulas: bool = True,
                 k: int | None = None) -> tuple[int, list[str]]:
    """Score ``input_path`` with the bundle into ``output`` (.csv or .parquet); return (rows, notes).

    A recommendation bundle writes the top ``k`` items (default: the k it was trained for) of each user in
    the input's user column, one row per (user, rank).

    CSV output escapes text that a spreadsheet would run as a formula (see :func:`escape_formula`) unless
    ``escape_formulas`` is False; Parquet holds the values as they are. ``output`` may not be the input
    (same path, symlink or hard link). An ``OSError`` while writing names ``output`` (not the temp file)
    and leaves nothing behind.
    """
    fmt = OUTPUT_FORMATS.get(Path(output).suffix.lower())
    if fmt is None:
        raise ConfigError(f"output '{output}': unsupported format, expected one of {', '.join(OUTPUT_FORMATS)}")
    if batch_rows < 1:
        raise ConfigError(f"--batch-rows must be at least 1, got {batch_rows}")
    if _same_file(Path(input_path), Path(output)):
        raise ConfigError(f"output '{output}' is the input file '{input_path}': write the predictions to another file")
    escape = escape_formulas and fmt == "csv"
    predictor = Predictor(bundle)
    console = console or Console(stderr=True)
    if not ARROW:
        return predict_csv_rows(predictor, Path(input_path), Path(output), batch_rows=min(batch_rows, 4096),
                                escape_formulas=escape, console=console)
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from tandem.data.readers import count_rows_estimate, iter_batches

    total = count_rows_estimate(input_path)
    batches = iter_batches(input_path, batch_rows=batch_rows, column_types=_column_types(predictor, input_path),
                           what="prediction input")
    notes: list[str] = []
    rows = 0
    writer = None
    progress = _progress(console)
    try:
        with atomic_file(output) as tmp, progress:
            task = progress.add_task("predict", total=total)
            try:
                for batch in batches:
                    if rows == 0:
                        extra = predictor.extra_columns(batch.schema.names)
                        if extra:
                            notes.append(f"ignored column(s) the model does not use: {', '.join(extra)}")
                    if predictor.recommendations is not None:
                        table = _recommend_batch(predictor, batch, k, f"'{input_path}'", rows)
                        table = escape_table_formulas(table) if escape else table
                    else:
                        enc = predictor.encoder.encode_table(batch, what=f"'{input_path}'", row_offset=rows)
                        table = _output_batch(predictor, batch, predictor.run(enc), escape=escape)
                    if writer is None:
                        writer = (pq.ParquetWriter(str(tmp), table.schema) if fmt == "parquet"
                                  else pacsv.CSVWriter(str(tmp), table.schema))
                    writer.write_table(table)
                    rows += batch.num_rows
                    progress.update(task, completed=rows)
            finally:
                if writer is not None:
                    writer.close()
    except OSError as exc:  # reading errors are DataErrors: this one is the output's, not its temp file's
        raise _named(exc, output) from exc
    return rows, notes


def _named(exc: OSError, output: Path) -> OSError:
    """A write error named by ``output``, not by the temp file it was written to."""
    reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    return OSError(exc.errno, reason, str(output))


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


#: What pyarrow's CSV reader reads as missing (its default ``null_values``): read the same way without it.
CSV_NULLS = frozenset(["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                       "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"])
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_SNIFF_BYTES = 64 * 1024


def predict_csv_rows(predictor: Predictor, input_path: Path, output: Path, *, batch_rows: int = 4096,
                     escape_formulas: bool = True, console: Console | None = None) -> tuple[int, list[str]]:
    """Score a CSV file into a CSV file with Python's ``csv`` module (no pyarrow): each row is encoded alone, as a
    request's row is, and named by its line when it does not fit the model. The values read and written are
    pyarrow's (its missing-value markers, shortest float text, ``true``/``false``), so the output matches
    :func:`predict_file`'s. Returns (rows, notes)."""
    what = f"'{input_path}'"
    if input_path.suffix.lower() not in CSV_SUFFIXES or output.suffix.lower() != ".csv":
        need("pyarrow", "files", f"reading or writing {input_path.suffix or output.suffix or 'such'} files")
    if predictor.recommendations is not None:
        need("pyarrow", "files", "a recommender's file of users")
    encoder = predictor.encoder
    ids = [c.name for c in predictor.schema.columns if c.kind == "id"]
    target = predictor.schema.target or "prediction"
    notes: list[str] = []
    rows = 0
    console = console or Console(stderr=True)
    try:
        with atomic_file(output) as tmp, _progress(console) as progress, \
                open(tmp, "w", encoding="utf-8", newline="") as sink:
            task = progress.add_task("predict", total=None)
            writer = csv.writer(sink, lineterminator="\n")
            header: list[str] | None = None
            chunk: list[tuple[dict, EncodedInputs]] = []
            for row in _csv_rows(input_path, what):
                if header is None:
                    header = [n for n in ids if n in row] + [target]
                    if predictor.task != "regression":
                        header += [f"proba_{label}" for label in predictor.labels]
                    writer.writerow([escape_formula(h) if escape_formulas else h for h in header])
                    extra = predictor.extra_columns(list(row))
                    if extra:
                        notes.append(f"ignored column(s) the model does not use: {', '.join(extra)}")
                chunk.append((row, encoder.encode_row(row, what=f"{what} row {rows + len(chunk) + 1}")))
                if len(chunk) == batch_rows:
                    rows += _write_chunk(predictor, chunk, ids, writer, escape_formulas)
                    chunk = []
                    progress.update(task, completed=rows)
            if chunk:
                rows += _write_chunk(predictor, chunk, ids, writer, escape_formulas)
    except OSError as exc:  # reading errors are DataErrors: this one is the output's, not its temp file's
        raise _named(exc, output) from exc
    if rows == 0:
        raise DataError(f"{what} has no rows")
    return rows, notes


def _write_chunk(predictor: Predictor, chunk: list[tuple[dict, EncodedInputs]], ids: list[str],
                 writer: object, escape: bool) -> int:
    """Run encoded rows as one batch and write one output row each: id columns, answer, probabilities."""
    out = predictor.run(EncodedInputs.concat([enc for _, enc in chunk]))
    if predictor.task == "regression":
        answers = [[v] for v in out["prediction"].reshape(-1).astype(np.float64).tolist()]
    else:
        probabilities = out["probabilities"].astype(np.float64).tolist()
        answers = [[label, *p] for label, p in zip(predictor.decode(out).tolist(), probabilities, strict=True)]
    for (row, _), answer in zip(chunk, answers, strict=True):
        writer.writerow([_csv_cell(v, escape) for v in [row[n] for n in ids if n in row] + answer])
    return len(chunk)


def _csv_cell(value: object, escape: bool) -> str:
    """One output cell as pyarrow's CSV writer shows it."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, str):
        return escape_formula(value) if escape else value
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _csv_rows(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """{column: text or None} for each row of a CSV file; the delimiter sniffed from its start."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise DataError(f"{what} cannot be read ({exc.strerror or exc})") from None
    delimiter = sniff_delimiter(head.decode("utf-8-sig", errors="ignore"),
                                default="\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter, strict=True)
            try:
                names = next(reader)
            except StopIteration:
                raise DataError(f"{what} is empty: expected a header row of column names") from None
            if len(set(names)) != len(names) or "" in names:
                raise DataError(f"{what} line 1: expected distinct, non-empty column names, got {names[:20]}")
            for row in reader:
                if not row:
                    continue
                if len(row) != len(names):
                    raise DataError(f"{what} line {reader.line_num}: expected {len(names)} fields, got {len(row)}")
                yield {n: (None if v in CSV_NULLS else v) for n, v in zip(names, row, strict=True)}
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} is not UTF-8 text (byte {exc.start} of a block): re-save it as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{what}: not readable as CSV ({exc})") from None
