"""One huge CSV cell: the table reader and the streaming reader accept the same rows and refuse the same
rows, with the same one-line error (issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tandem.data.readers import MAX_ROW_BYTES, iter_batches, read_table
from tandem.errors import DataError

MIB = 1 << 20


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def write_csv(name: str, cell_bytes: int, *, before: int = 5, after: int = 5) -> str:
    """A CSV with ``before`` small rows, one row whose 'note' holds ``cell_bytes`` bytes, ``after`` small rows."""
    with open(name, "wb") as fh:
        fh.write(b"id,note,y\n")
        fh.write(b"".join(b"%d,short,%s\n" % (i, b"yes" if i % 2 else b"no") for i in range(before)))
        fh.write(b'%d,"' % before)
        chunk = b"abcdefgh" * (MIB // 8)
        left = cell_bytes
        while left > 0:
            fh.write(chunk[:left])
            left -= len(chunk)
        fh.write(b'",yes\n')
        fh.write(b"".join(b"%d,short,%s\n" % (before + 1 + i, b"yes" if i % 2 else b"no") for i in range(after)))
    return name


def streamed(name: str, **kwargs) -> list:
    return [b for b in iter_batches(name, what="data", **kwargs)]


def test_the_bound_is_64_mib() -> None:
    assert MAX_ROW_BYTES == 64 * MIB


def test_a_50_mb_cell_reads_the_same_in_every_reader() -> None:
    name = write_csv("big.csv", 50 * MIB)
    table = read_table(name)
    assert table.num_rows == 11
    assert len(table.column("note")[5].as_py()) == 50 * MIB
    rows = sum(b.num_rows for b in streamed(name))
    assert rows == 11
    small = streamed(name, batch_rows=4)
    assert [b.num_rows for b in small] == [4, 4, 3]
    assert len(small[1].column(1)[1].as_py()) == 50 * MIB


def test_a_50_mb_cell_after_many_small_rows_streams_without_repeating_rows() -> None:
    # the streaming reader's block fits its small rows, not the big one: it must read on with bigger blocks
    name = write_csv("late.csv", 50 * MIB, before=200_000, after=1_000)
    ids = [v for b in streamed(name, batch_rows=65536, column_types=None) for v in b.column(0).to_pylist()]
    assert ids == list(range(201_001))
    assert read_table(name).num_rows == 201_001


def test_a_row_past_the_bound_is_refused_the_same_way_by_every_reader() -> None:
    # pyarrow reads a row that spans at most one block boundary: past twice the block it always refuses
    name = write_csv("huge.csv", 2 * MAX_ROW_BYTES + MIB)
    expected = ("'huge.csv' has a row longer than pyarrow can read in one 64 MiB block: a CSV row may hold "
                "up to 64 MiB (keep such values in Parquet, or in files beside the table)")
    with pytest.raises(DataError) as table_error:
        read_table(name)
    with pytest.raises(DataError) as stream_error:
        streamed(name)
    assert str(table_error.value) == expected
    assert str(stream_error.value) == expected


def test_a_50_mb_json_line_after_many_small_lines_reads_the_same_in_every_reader() -> None:
    with open("late.jsonl", "w", encoding="utf-8") as fh:
        fh.write("".join(json.dumps({"id": i, "note": "short", "y": "no"}) + "\n" for i in range(100_000)))
        fh.write(json.dumps({"id": 100_000, "note": "n" * (50 * MIB), "y": "yes"}) + "\n")
        fh.write("".join(json.dumps({"id": 100_001 + i, "note": "short", "y": "no"}) + "\n" for i in range(10)))
    assert read_table("late.jsonl").column("id").to_pylist() == list(range(100_011))
    batches = streamed("late.jsonl")
    assert [v for b in batches for v in b.column("id").to_pylist()] == list(range(100_011))
    assert len({b.schema for b in batches}) == 1


def test_cli_check_accepts_a_50_mb_cell(tmp_path) -> None:
    write_csv("big.csv", 50 * MIB, before=40, after=40)
    env = dict(os.environ, TANDEM_HOME=str(tmp_path / "home"), NO_COLOR="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "tandem.cli", "check", "big.csv", "--target", "y", "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "straddl" not in proc.stderr
    assert Path("big.csv").stat().st_size > 50 * MIB
