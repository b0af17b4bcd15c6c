"""tandem.data.readers: files and frames to pyarrow, and one-line errors for bad user data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from tandem.data.readers import (
    SUPPORTED_SUFFIXES,
    count_rows_estimate,
    iter_batches,
    read_table,
    sniff_delimiter,
)
from tandem.errors import DataError

SUFFIXES = ".csv, .tsv, .txt, .parquet, .pq, .jsonl, .ndjson, .json, .arrow, .feather, .ipc"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run every test in its tmp dir so files can be named as a user would ('x.csv') in messages."""
    monkeypatch.chdir(tmp_path)


def write(name: str, data: str | bytes) -> str:
    Path(name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return name


def message(source, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        read_table(source, **kwargs)
    text = str(info.value)
    assert "\n" not in text
    return text


def batch_message(source, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        list(iter_batches(source, **kwargs))
    text = str(info.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------------------------- CSV: good files


def test_suffix_table():
    assert SUPPORTED_SUFFIXES[".tsv"] == "csv"
    assert SUPPORTED_SUFFIXES[".pq"] == "parquet"
    assert SUPPORTED_SUFFIXES[".ndjson"] == "jsonl"
    assert SUPPORTED_SUFFIXES[".feather"] == "arrow"
    assert set(SUPPORTED_SUFFIXES.values()) == {"csv", "parquet", "jsonl", "arrow"}


def test_csv_types_nulls_and_stripped_header():
    write("x.csv", " age , name,score,flag\n31,ann,1.5,true\n,bob,NA,false\n45,,2.5,\n")
    table = read_table("x.csv")
    assert table.column_names == ["age", "name", "score", "flag"]
    assert table.schema.types == [pa.int64(), pa.string(), pa.float64(), pa.bool_()]
    assert table.num_rows == 3
    assert table.column("age").to_pylist() == [31, None, 45]
    assert table.column("name").to_pylist() == ["ann", "bob", None]
    assert table.column("score").to_pylist() == [1.5, None, 2.5]
    assert table.column("flag").null_count == 1


def test_csv_default_null_markers_but_not_question_mark():
    write("x.csv", "a,b\nN/A,?\nnull,x\nNaN,y\nok,?\n")
    table = read_table(Path("x.csv"))
    assert table.column("a").to_pylist() == [None, None, None, "ok"]
    assert table.column("b").to_pylist() == ["?", "x", "y", "?"]
    assert table.schema.field("b").type == pa.string()


def test_csv_quoted_fields_with_delimiters_newlines_and_quotes():
    write("x.csv", 'id,text,n\n1,"hello, world",2\n2,"two\nlines",3\n3,"say ""hi""",4\n')
    table = read_table("x.csv")
    assert table.num_rows == 3
    assert table.column("text").to_pylist() == ["hello, world", "two\nlines", 'say "hi"']
    assert table.column("n").to_pylist() == [2, 3, 4]


def test_csv_utf8_bom_is_stripped_and_non_ascii_kept():
    write("x.csv", b"\xef\xbb\xbfcity,n\nK\xc3\xb6ln,1\nZ\xc3\xbcrich,2\n")
    table = read_table("x.csv")
    assert table.column_names == ["city", "n"]
    assert table.column("city").to_pylist() == ["Köln", "Zürich"]


def test_tsv_and_semicolon_sniffing():
    write("x.tsv", "a\tb, c\n1\t2\n3\t4\n")
    table = read_table("x.tsv")
    assert table.column_names == ["a", "b, c"]
    assert table.column("a").to_pylist() == [1, 3]

    write("eu.csv", "a;b;c\n1,5;2;x\n3,25;4;y\n")
    table = read_table("eu.csv")
    assert table.column_names == ["a", "b", "c"]
    assert table.column("a").to_pylist() == ["1,5", "3,25"]
    assert table.column("b").to_pylist() == [2, 4]

    write("p.txt", "a|b\n1|2\n")
    assert read_table("p.txt").column_names == ["a", "b"]


def test_sniff_delimiter():
    assert sniff_delimiter("a,b,c\n1,2,3\n4,5,6\n") == ","
    assert sniff_delimiter("a;b;c\n1,5;2;3\n4,5;5;6\n") == ";"
    assert sniff_delimiter("a\tb\n1\t2\n") == "\t"
    assert sniff_delimiter("a|b|c\n1|2|3\n") == "|"
    # a single column: nothing to sniff, the fallback decides
    assert sniff_delimiter("a\n1\n2\n") == ","
    assert sniff_delimiter("a\n1\n2\n", default="\t") == "\t"
    # a quoted header holding a comma does not fool it
    assert sniff_delimiter('"x, y";b\n1;2\n3;4\n') == ";"


def test_csv_single_column_and_crlf():
    write("x.csv", "value\r\n1\r\n2\r\n")
    table = read_table("x.csv")
    assert table.column_names == ["value"]
    assert table.column("value").to_pylist() == [1, 2]


# --------------------------------------------------------------------------------------------- CSV: errors


def test_missing_file():
    assert message("x.csv") == "data file 'x.csv' not found"
    assert message("x.csv", what="training data") == "training data file 'x.csv' not found"
    with pytest.raises(DataError, match=r"^prediction input file 'y.parquet' not found$"):
        iter_batches("y.parquet", what="prediction input")
    with pytest.raises(DataError, match="not found"):
        count_rows_estimate("x.csv")


def test_directory_and_unsupported_suffix():
    Path("folder.csv").mkdir()
    assert message("folder.csv", what="training data") == (
        f"training data path 'folder.csv' is a directory: expected a file ({SUFFIXES})"
    )
    write("x.xlsx", "not really")
    assert message("x.xlsx") == f"unsupported format '.xlsx' for 'x.xlsx': expected one of {SUFFIXES}"
    write("noext", "a,b\n1,2\n")
    assert message("noext") == f"'noext' has no file suffix to tell its format: expected one of {SUFFIXES}"


def test_empty_and_header_only():
    write("x.csv", "")
    assert message("x.csv") == "'x.csv' is empty: expected a header row and at least one data row"
    write("w.csv", "  \n\n \t\n")
    assert message("w.csv") == "'w.csv' is empty: expected a header row and at least one data row"
    write("bom.csv", b"\xef\xbb\xbf\n")
    assert message("bom.csv") == "'bom.csv' is empty: expected a header row and at least one data row"
    write("h.csv", "a,b,c\n")
    assert message("h.csv") == "'h.csv' has a header but no data rows"
    assert batch_message("h.csv") == "'h.csv' has a header but no data rows"


def test_ragged_row_names_the_physical_line():
    # line 1 header, 2 row, 3-4 one quoted row over two lines, 5 blank, 6 row, 7 the bad row
    write("x.csv", 'a,b,c\n1,2,3\n"multi\nline",2,3\n\n4,5,6\n7,8,9,10\n11,12,13\n')
    assert message("x.csv") == "'x.csv' line 7: expected 3 fields, found 4"
    write("short.csv", "a,b,c\n1,2,3\n4,5\n")
    assert message("short.csv") == "'short.csv' line 3: expected 3 fields, found 2"
    assert batch_message("short.csv") == "'short.csv' line 3: expected 3 fields, found 2"


def test_not_utf8_in_sample_and_beyond_it():
    write("x.csv", b"a,b\n1,x\n2,caf\xe9\n")
    assert message("x.csv") == "'x.csv' is not UTF-8 text (first invalid byte at line 3): re-save it as UTF-8"
    # far beyond the first 64 KiB that are sniffed: found by pyarrow's binary inference, located by a scan
    rows = "".join(f"{i},word{i}\n" for i in range(20_000))
    write("late.csv", b"a,b\n" + rows.encode() + b"7,na\xefve\n")
    assert message("late.csv") == (
        "'late.csv' is not UTF-8 text (first invalid byte at line 20002): re-save it as UTF-8"
    )
    # invalid bytes in the header row
    write("head.csv", b"a,caf\xe9\n1,2\n")
    assert message("head.csv") == ("'head.csv' is not UTF-8 text (first invalid byte at line 1): re-save it as UTF-8")


def test_duplicate_column_names_in_csv():
    write("x.csv", "a,b,a\n1,2,3\n")
    assert message("x.csv") == "'x.csv' has duplicate column names: 'a' (columns 1 and 3)"
    # duplicates after stripping spaces, and several of them
    write("y.csv", "a, b,a ,b,a\n1,2,3,4,5\n")
    assert message("y.csv") == "'y.csv' has duplicate column names: 'a' (columns 1, 3 and 5), 'b' (columns 2 and 4)"
    assert batch_message("y.csv").startswith("'y.csv' has duplicate column names: 'a'")


# --------------------------------------------------------------------------------------------- other formats


def test_parquet_roundtrip_and_iter():
    source = pa.table({"a": list(range(1000)), "s": ["x", None] * 500})
    pq.write_table(source, "x.parquet", row_group_size=300)
    table = read_table("x.parquet")
    assert table.equals(source)
    batches = list(iter_batches("x.parquet", batch_rows=400))
    assert [b.num_rows for b in batches] == [400, 400, 200]
    assert count_rows_estimate("x.parquet") == 1000
    typed = list(iter_batches("x.parquet", batch_rows=400, column_types={"a": pa.float64()}))
    assert all(b.schema.field("a").type == pa.float64() for b in typed)


def test_parquet_errors():
    write("bad.parquet", b"PAR1 this is not parquet at all PAR1")
    assert message("bad.parquet").startswith("'bad.parquet' is not a readable Parquet file: ")
    write("empty.pq", b"")
    assert message("empty.pq") == "'empty.pq' is empty: expected a Parquet file"
    pq.write_table(pa.table({"a": pa.array([], pa.int64())}), "norows.parquet")
    assert message("norows.parquet") == "'norows.parquet' has no data rows"
    pq.write_table(pa.table([pa.array([1]), pa.array([2])], names=["a", "a"]), "dup.parquet")
    assert message("dup.parquet") == "'dup.parquet' has duplicate column names: 'a' (columns 1 and 2)"


def test_arrow_file_stream_and_feather():
    source = pa.table({"a": [1, 2, 3], "s": ["x", "y", None]})
    feather.write_feather(source, "x.feather")
    assert read_table("x.feather").equals(source)
    with pa.OSFile("s.arrow", "wb") as sink, pa.ipc.new_stream(sink, source.schema) as writer:
        writer.write_table(source)
    assert read_table("s.arrow").equals(source)
    assert [b.num_rows for b in iter_batches("s.arrow", batch_rows=2)] == [2, 1]
    assert count_rows_estimate("s.arrow") is None
    write("bad.arrow", b"ARROW1\x00\x00 corrupt bytes")
    assert message("bad.arrow").startswith("'bad.arrow' is not a readable Arrow IPC or Feather file: ")
    feather.write_feather(pa.table({"a": pa.array([], pa.int64())}), "none.ipc")
    assert message("none.ipc") == "'none.ipc' has no data rows"


def test_jsonl_good_and_array_json():
    write("x.jsonl", '{"a": 1, "s": "x"}\n\n{"a": 2, "s": null}\n{"a": 3}\n')
    table = read_table("x.jsonl")
    assert table.num_rows == 3
    assert table.column("a").to_pylist() == [1, 2, 3]
    assert table.column("s").to_pylist() == ["x", None, None]
    assert count_rows_estimate("x.jsonl") == 4  # blank lines count: it is an estimate
    write("x.json", json.dumps([{"a": 1, "b": "u"}, {"a": 2}]))
    table = read_table("x.json")
    assert table.column_names == ["a", "b"]
    assert table.column("b").to_pylist() == ["u", None]
    write("bom.ndjson", b'\xef\xbb\xbf{"a": 1}\n')
    assert read_table("bom.ndjson").column("a").to_pylist() == [1]


def test_jsonl_errors():
    write("x.jsonl", '{"a": 1}\n{"a": 2,}\n')
    assert message("x.jsonl") == (
        "'x.jsonl' line 2: not valid JSON: Expecting property name enclosed in double quotes (column 9)"
    )
    write("y.jsonl", '{"a": 1}\n{"a": 2}\n[1, 2]\n')
    assert message("y.jsonl") == "'y.jsonl' line 3: expected a JSON object, found an array"
    write("z.jsonl", '{"a": 1}\n\n{"a": "x"}\n')
    assert message("z.jsonl") == (
        "'z.jsonl' line 3, column 'a': found a string after a number in earlier lines: expected one type per column"
    )
    write("u.jsonl", b'{"a": "x"}\n{"a": "caf\xe9"}\n')
    assert message("u.jsonl") == "'u.jsonl' is not UTF-8 text (first invalid byte at line 2): re-save it as UTF-8"
    write("e.jsonl", "\n\n")
    assert message("e.jsonl") == "'e.jsonl' is empty: expected one JSON object per line"
    write("a.json", "[]")
    assert message("a.json") == "'a.json' has no data rows: expected an array of JSON objects"
    write("c.json", '[{"a": 1},\n {"a": 2,}]')
    assert (
        message("c.json")
        == "'c.json' line 2: not valid JSON: Expecting property name enclosed in double quotes (column 10)"
    )
    write("b.json", '[{"a": 1}, 5]')
    assert message("b.json") == "'b.json' item 2: expected a JSON object, found a number"
    write("d.jsonl", '{"a": 1}\n5\n')
    assert batch_message("d.jsonl") == "'d.jsonl' line 2: expected a JSON object, found a number"


def test_jsonl_iter_batches_with_column_types():
    lines = [json.dumps({"i": i, "v": None if i < 1500 else "late"}) for i in range(3000)]
    write("x.jsonl", "\n".join(lines) + "\n")
    batches = list(iter_batches("x.jsonl", batch_rows=1000, column_types={"v": pa.string()}))
    assert [b.num_rows for b in batches] == [1000, 1000, 1000]
    assert {b.schema.field("v").type for b in batches} == {pa.string()}
    assert batches[2].column(batches[2].schema.get_field_index("v")).to_pylist()[-1] == "late"
    # the file's column order is kept, and a forced name that is not in the file adds no column
    batches = list(iter_batches("x.jsonl", batch_rows=1000, column_types={"v": pa.string(), "zz": pa.int8()}))
    assert [b.schema.names for b in batches] == [["i", "v"]] * 3
    assert read_table("x.jsonl").column_names == ["i", "v"]


# --------------------------------------------------------------------------------------------- frames


def test_pandas_frame():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [1, 2, 3], "s": ["x", None, "z"]}, index=[10, 20, 30])
    table = read_table(df)
    assert table.column_names == ["a", "s"]  # the index is not a column
    assert table.column("a").to_pylist() == [1, 2, 3]
    assert table.column("s").to_pylist() == ["x", None, "z"]
    assert table.schema.metadata is None
    assert message(pd.DataFrame(), what="training data") == "training data (pandas DataFrame) has no columns"
    assert message(pd.DataFrame({"a": []})) == "data (pandas DataFrame) has no rows"
    assert message(pd.DataFrame([[1, 2, 3]], columns=["a", "b", "a"])) == (
        "data (pandas DataFrame) has duplicate column names: 'a' (columns 1 and 3)"
    )
    assert message(pd.DataFrame({"a": [1, "x"]})).startswith("data (pandas DataFrame) column 'a' cannot be converted: ")
    assert message(pd.Series([1, 2])) == "data: expected a DataFrame, got a pandas Series"


def test_polars_frame():
    pl = pytest.importorskip("polars")
    table = read_table(pl.DataFrame({"a": [1, 2], "s": ["x", None]}))
    assert table.column_names == ["a", "s"]
    assert table.column("a").to_pylist() == [1, 2]
    assert table.column("s").to_pylist() == ["x", None]
    assert pa.types.is_string(table.schema.field("s").type) or pa.types.is_large_string(table.schema.field("s").type)
    assert read_table(pl.DataFrame({"a": [1, 2]}).lazy()).num_rows == 2
    assert message(pl.DataFrame({"a": []})) == "data (polars DataFrame) has no rows"
    assert message(pl.DataFrame()) == "data (polars DataFrame) has no columns"


def test_pyarrow_table_and_dict():
    source = pa.table({"a": [1, 2], "b": ["x", "y"]})
    assert read_table(source) is source
    assert read_table(source.to_batches()[0]).equals(source)
    table = read_table({"a": [1, 2], "b": ["x", None]})
    assert table.schema.types == [pa.int64(), pa.string()]
    assert table.column("b").to_pylist() == ["x", None]
    assert message({}) == "data (dict of columns) has no columns"
    assert message({"a": []}) == "data (dict of columns) has no rows"
    assert (
        message({"a": [1, 2], "b": [1]}) == "data (dict of columns) column 'b' has 1 value: expected 2 like column 'a'"
    )
    assert message({"a": 1}) == "data (dict of columns) column 'a': expected a list of values, got int"
    assert message({"a": [1, "x"]}).startswith("data (dict of columns) column 'a' cannot be converted: ")
    assert message(pa.table({"a": pa.array([], pa.int64())})) == "data (pyarrow Table) has no rows"
    assert message(pa.table([pa.array([1]), pa.array([2])], names=["a", "a"])) == (
        "data (pyarrow Table) has duplicate column names: 'a' (columns 1 and 2)"
    )
    assert message(42, what="training data") == (
        "training data: expected a file path, a pandas or polars DataFrame, a pyarrow Table or a dict of "
        "column -> values, got int"
    )


def test_iter_batches_over_frames():
    batches = list(iter_batches({"a": list(range(10))}, batch_rows=4))
    assert [b.num_rows for b in batches] == [4, 4, 2]


# --------------------------------------------------------------------------------------------- streaming CSV


@pytest.fixture
def big_csv() -> str:
    """200k rows: 'v' is an integer for the first 150k rows and a float after that; 'tag' is null at first."""
    ints = "".join(f"{i},{i % 97},\n" for i in range(150_000))
    floats = "".join(f"{i},{i % 97}.5,t{i % 3}\n" for i in range(150_000, 200_000))
    return write("big.csv", "id,v,tag\n" + ints + floats)


def test_iter_batches_csv_with_column_types(big_csv):
    types = {"v": pa.float64(), "tag": pa.string()}
    batches = list(iter_batches(big_csv, batch_rows=50_000, column_types=types))
    assert len(batches) > 1
    assert [b.num_rows for b in batches] == [50_000] * 4
    assert sum(b.num_rows for b in batches) == 200_000
    schemas = {b.schema for b in batches}
    assert len(schemas) == 1
    schema = schemas.pop()
    assert schema.names == ["id", "v", "tag"]
    assert schema.field("v").type == pa.float64()
    assert schema.field("tag").type == pa.string()
    assert batches[-1].column(1).to_pylist()[-1] == 199_999 % 97 + 0.5
    assert count_rows_estimate(big_csv) == 200_000


def test_iter_batches_csv_type_change_without_column_types(big_csv):
    assert batch_message(big_csv, batch_rows=50_000) == (
        "'big.csv' line 150002, column 'v': value '38.5' is not int64 like the first rows: "
        "pass column_types={'v': ...} to fix the column's type"
    )
    assert batch_message(big_csv, batch_rows=50_000, column_types={"v": pa.float64()}) == (
        "'big.csv' line 150002, column 'tag': value 't0' where the first rows had only empty cells: "
        "pass column_types={'tag': ...} to fix the column's type"
    )
    # reading it whole works: pyarrow widens the type across blocks
    table = read_table(big_csv)
    assert table.num_rows == 200_000
    assert table.schema.field("v").type == pa.float64()


def test_iter_batches_stripped_header_and_column_types():
    write("x.csv", " a ,b\n1,x\n2,y\n3,z\n")
    batches = list(iter_batches("x.csv", batch_rows=2, column_types={"a": pa.float32()}))
    assert [b.num_rows for b in batches] == [2, 1]
    assert batches[0].schema.names == ["a", "b"]
    assert batches[0].schema.field("a").type == pa.float32()


def test_count_rows_estimate_csv_without_trailing_newline():
    write("x.csv", "a,b\n1,2\n3,4")
    assert count_rows_estimate("x.csv") == 2
    write("x.json", '[{"a": 1}]')
    assert count_rows_estimate("x.json") is None
    write("empty.csv", "")
    assert count_rows_estimate("empty.csv") == 0


def test_module_imports_no_frame_libraries():
    code = (
        "import sys, tandem.data.readers; "
        "bad = [m for m in ('pandas', 'polars', 'sklearn', 'torch', 'lightgbm') if m in sys.modules]; "
        "assert not bad, bad"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": src})
