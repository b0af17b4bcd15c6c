"""Batch prediction of a file: streamed in chunks, bounded memory, written atomically."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tandem.data.readers import count_rows_estimate, iter_batches
from tandem.errors import ConfigError, DataError
from tandem.fsutil import atomic_file
from tandem.inference.predictor import Predictor

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
    if Path(input_path).suffix.lower() not in (".csv", ".tsv", ".txt"):
        return None
    if predictor.recommendations is not None:
        info = predictor.manifest["recommend"]
        return {info["user"]: pa.int64() if info["user_id_type"] == "int" else pa.string()}
    return {c.name: pa.string() for c in predictor.schema.columns}


def _output_batch(predictor: Predictor, batch: pa.RecordBatch, out: dict[str, np.ndarray], *,
                  escape: bool = False) -> pa.Table:
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
    total = count_rows_estimate(input_path)
    batches = iter_batches(input_path, batch_rows=batch_rows, column_types=_column_types(predictor, input_path),
                           what="prediction input")
    notes: list[str] = []
    rows = 0
    writer = None
    console = console or Console(stderr=True)
    progress = Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=True, disable=not console.is_terminal)
    try:
        with atomic_file(output) as tmp, progress:
            task = progress.add_task("predict", total=total)
            try:
                for batch in batches:
                    if rows == 0:
                        extra = predictor.extra_columns(pa.Table.from_batches([batch]))
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
        reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
        raise OSError(exc.errno, reason, str(output)) from exc
    return rows, notes
