"""Batch prediction of a file: streamed in chunks, bounded memory, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tandem.data.readers import count_rows_estimate, iter_batches
from tandem.errors import ConfigError
from tandem.fsutil import atomic_file
from tandem.inference.predictor import Predictor

OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _column_types(predictor: Predictor, input_path: Path) -> dict[str, pa.DataType] | None:
    """For CSV, read every model column as text so each chunk parses the same way; the encoder then
    checks values against the schema and names the row of a bad one. Typed formats keep their types."""
    if Path(input_path).suffix.lower() not in (".csv", ".tsv", ".txt"):
        return None
    return {c.name: pa.string() for c in predictor.schema.columns}


def _output_batch(predictor: Predictor, batch: pa.RecordBatch, out: dict[str, np.ndarray]) -> pa.Table:
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
            cols[f"proba_{label}"] = pa.array(out["probabilities"][:, j].astype(np.float64))
    return pa.table(cols)


def predict_file(bundle: Path, input_path: Path, output: Path, *, batch_rows: int = 65536,
                 console: Console | None = None) -> tuple[int, list[str]]:
    """Score ``input_path`` with the bundle into ``output`` (.csv or .parquet); return (rows, notes)."""
    fmt = OUTPUT_FORMATS.get(Path(output).suffix.lower())
    if fmt is None:
        raise ConfigError(f"output '{output}': unsupported format, expected one of {', '.join(OUTPUT_FORMATS)}")
    if batch_rows < 1:
        raise ConfigError(f"--batch-rows must be at least 1, got {batch_rows}")
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
    with atomic_file(output) as tmp, progress:
        task = progress.add_task("predict", total=total)
        try:
            for batch in batches:
                if rows == 0:
                    extra = predictor.extra_columns(pa.Table.from_batches([batch]))
                    if extra:
                        notes.append(f"ignored column(s) the model does not use: {', '.join(extra)}")
                enc = predictor.encoder.encode_table(batch, what=f"'{input_path}'", row_offset=rows)
                table = _output_batch(predictor, batch, predictor.run(enc))
                if writer is None:
                    writer = (pq.ParquetWriter(str(tmp), table.schema) if fmt == "parquet"
                              else pacsv.CSVWriter(str(tmp), table.schema))
                writer.write_table(table)
                rows += batch.num_rows
                progress.update(task, completed=rows)
        finally:
            if writer is not None:
                writer.close()
    return rows, notes
