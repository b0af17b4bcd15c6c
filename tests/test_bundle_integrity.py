"""A manifest re-hashed after a bad edit, files the manifest does not list, and ONNX graphs with external data:
each is refused with one line naming the field or file, by the API and by the CLI (issue 15)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import tandem
from helpers import mixed_frame
from tandem.errors import BundleError
from tandem.inference.predictor import Predictor


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A small real bundle (binary, linear), written outside any registry."""
    path = tmp_path_factory.mktemp("integrity") / "churn"
    tandem.train(mixed_frame(300, task="binary", seed=0), "churn", time_limit=2, path=path, families=["linear"],
                 footprint=False)
    return path


def rehash(folder: Path, *, extra: dict | None = None) -> None:
    """What an attacker (or a careless editor) with write access does: recompute every listed file's sha256
    and the manifest's checksum, so that hashes alone no longer catch the edit."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for rel in manifest["files"] if isinstance(manifest["files"], dict) else []:
        if not (folder / rel).is_file() or not isinstance(manifest["files"][rel].get("sha256"), str):
            continue  # the edit under test is in the list itself
        data = (folder / rel).read_bytes()
        manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest.update(extra or {})
    body = {k: v for k, v in manifest.items() if k not in ("manifest_sha256", "signature")}
    manifest["manifest_sha256"] = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def edited(bundle: Path, tmp_path: Path, edit: Callable[[dict], None]) -> Path:
    """A copy of ``bundle`` whose manifest went through ``edit`` and was re-hashed."""
    folder = tmp_path / "edited"
    shutil.copytree(bundle, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    rehash(folder)
    return folder


def _set(path: str, value: object) -> Callable[[dict], None]:
    def edit(manifest: dict) -> None:
        *parents, last = path.split(".")
        node = manifest
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


def _drop(key: str) -> Callable[[dict], None]:
    return lambda manifest: manifest.pop(key)


BAD_FIELDS = [
    ("threshold_text", _set("threshold", "abc"), ("field 'threshold'", "'abc'", "expected a number from 0 to 1")),
    ("files_list", _set("files", ["model.onnx"]), ("field 'files'", "expected an object")),
    ("no_task", _drop("task"), ("field 'task' is missing", "'binary', 'multiclass', 'regression'")),
    ("one_label", _set("labels", ["yes"]), ("field 'labels'", "expected exactly 2 class labels")),
    ("no_files", _set("files", {}), ("field 'files' does not list 'model.onnx'",)),
    ("bad_sha", lambda m: m["files"].update({"model.onnx": {"sha256": 5, "bytes": 1}}),
     ("field 'files.model.onnx.sha256' is 5", "expected 64 lowercase hex digits")),
    ("schema_columns", _set("schema.columns", "age"), ("field 'schema.columns'", "expected an array")),
    ("column_unknown_key", lambda m: m["schema"]["columns"][0].update(evil=1),
     ("field 'schema.columns[0]' has unknown key(s) 'evil'",)),
    ("label_type", _set("label_type", "int"), ("field 'labels[0]' is 'no'", "label of type 'int'")),
    ("ensemble_weight", lambda m: m["ensemble"][0].update(weight="heavy"),
     ("field 'ensemble[0].weight' is 'heavy'", "expected a number")),
    ("metrics", _set("metrics", {"validation": {}}), ("field 'metrics.validation_scheme' is missing",)),
    ("text_encoder", _set("preprocessing.text_encoder", {"max_tokens": "many"}),
     ("field 'preprocessing.text_encoder.max_tokens'", "an integer > 0")),
    ("file_outside", lambda m: m["files"].update({"../x": m["files"]["model.onnx"]}),
     ("field 'files' lists '../x'", "relative path inside the bundle")),
]


@pytest.mark.parametrize("edit, expect", [c[1:] for c in BAD_FIELDS], ids=[c[0] for c in BAD_FIELDS])
def test_a_rehashed_manifest_with_a_bad_field_is_one_line(bundle, tmp_path, edit, expect) -> None:
    folder = edited(bundle, tmp_path, edit)
    with pytest.raises(BundleError) as info:
        Predictor(folder)
    message = str(info.value)
    assert "\n" not in message and f"bundle '{folder}'" in message, message
    for part in expect:
        assert part in message, message


def test_deeply_nested_manifest_is_one_line(bundle, tmp_path) -> None:
    folder = tmp_path / "deep"
    shutil.copytree(bundle, folder)
    text = (folder / "manifest.json").read_text()
    # json.loads itself recurses: 100k levels is a RecursionError before any field is looked at
    (folder / "manifest.json").write_text(text.replace('"notes": [', '"notes": [' + "[" * 100_000 + "]" * 100_000
                                                       + ",", 1))
    with pytest.raises(BundleError) as info:
        tandem.load(folder)
    assert "nests too deeply" in str(info.value) and "manifest.json" in str(info.value)
    # deep but readable: refused before anything walks it recursively
    (folder / "manifest.json").write_text(text.replace('"notes": [', '"notes": [' + "[" * 500 + "]" * 500 + ",", 1))
    with pytest.raises(BundleError) as info:
        tandem.load(folder)
    assert "nests deeper than 64 levels" in str(info.value)


def test_files_the_manifest_does_not_list_are_refused(bundle, tmp_path) -> None:
    extra = tmp_path / "extra"
    shutil.copytree(bundle, extra)
    (extra / "native" / "payload.bin").write_bytes(b"unverified")
    with pytest.raises(BundleError) as info:
        tandem.load(extra)
    assert "'native/payload.bin' is not listed in manifest.json" in str(info.value)

    # a reader's file dropped from the list (and the manifest re-hashed) would be read unverified
    unlisted = edited(bundle, tmp_path / "u", lambda m: m["files"].pop("profile.json"))
    with pytest.raises(BundleError) as info:
        tandem.load(unlisted)
    assert "'profile.json' is not listed in manifest.json" in str(info.value)


def test_cli_reports_a_bad_field_in_one_line(bundle, tmp_path, run_cli) -> None:
    folder = edited(bundle, tmp_path, _set("threshold", "abc"))
    proc = run_cli(["models", "show", str(folder)], home=tmp_path / "home", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "field 'threshold' is 'abc'" in proc.stderr


# ------------------------------------------------------------------------------------------- ONNX graphs


def _graph_with_external_data(location: str) -> bytes:
    """A real ONNX model (y = x + W) whose initializer W keeps its data in the file ``location``."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones(2, np.float32), "W")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": "8"}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _with_model(bundle: Path, folder: Path, model: bytes, extra_files: dict[str, bytes] | None = None) -> Path:
    shutil.copytree(bundle, folder)
    (folder / "model.onnx").write_bytes(model)
    manifest = json.loads((folder / "manifest.json").read_text())
    for rel, data in (extra_files or {}).items():
        (folder / rel).write_bytes(data)
        manifest["files"][rel] = {"sha256": "0" * 64, "bytes": 0}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    rehash(folder)
    return folder


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "weights.bin"])
def test_onnx_external_data_is_refused(bundle, tmp_path, location, monkeypatch) -> None:
    # "weights.bin" is even inside the bundle, listed and hashed: tandem's graphs never use external data
    folder = _with_model(bundle, tmp_path / "ext", _graph_with_external_data(location),
                         {"weights.bin": np.ones(2, np.float32).tobytes()})
    (tmp_path / "weights.bin").write_bytes(np.ones(2, np.float32).tobytes())
    monkeypatch.chdir(tmp_path)  # a graph loaded from bytes would look for a relative location here
    with pytest.raises(BundleError) as info:
        Predictor(folder)
    message = str(info.value)
    assert message == (f"bundle '{folder}': model.onnx cannot be loaded: tensor 'W' keeps its data in an external "
                       f"file ('{location}'); expected every tensor inside the graph")


def test_unloadable_onnx_is_one_line(bundle, tmp_path, run_cli) -> None:
    folder = _with_model(bundle, tmp_path / "garbage", b"\x08\x07not an onnx model at all")
    with pytest.raises(BundleError) as info:
        Predictor(folder)
    assert f"bundle '{folder}': model.onnx cannot be" in str(info.value)
    assert "\n" not in str(info.value)

    ext = _with_model(bundle, tmp_path / "ext", _graph_with_external_data("../../etc/passwd"))
    rows = tmp_path / "rows.csv"
    mixed_frame(20).drop(columns=["churn"]).to_csv(rows, index=False)
    for folder in (ext, tmp_path / "garbage"):
        proc = run_cli(["predict", str(folder), str(rows), "-o", str(tmp_path / "out.csv")], home=tmp_path / "home",
                       cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("tandem: error: bundle "), proc.stderr
        assert "model.onnx cannot be loaded" in proc.stderr
        assert not (tmp_path / "out.csv").exists()


def test_the_guard_reads_real_graphs_without_false_alarms(bundle) -> None:
    from tandem.bundle.onnx_guard import GraphError, check_no_external_data

    check_no_external_data((bundle / "model.onnx").read_bytes())
    with pytest.raises(GraphError, match="truncated or malformed"):
        check_no_external_data((bundle / "model.onnx").read_bytes()[:-3])


def _external(name: str, location: str | None):
    from onnx import TensorProto, numpy_helper

    tensor = numpy_helper.from_array(np.ones(2, np.float32), name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    if location is not None:
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", location
    return tensor


def _hidden_in(where: str) -> bytes:
    """A model whose one external tensor sits in ``where``, behind long attribute lists (which the guard
    skips in bulk: a skip must never step over a tensor)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    lists = {"ints": list(range(-3, 5000)), "floats": [0.5] * 3000, "strings": ["BRANCH_LEQ"] * 3000}
    add = helper.make_node("Add", ["x", "W"], ["y"], **lists)
    if where == "constant":
        nodes = [helper.make_node("Constant", [], ["W"], **lists, value=_external("W", "w.bin")), add]
        return helper.make_model(helper.make_graph(nodes, "g", [x], [y])).SerializeToString()
    if where == "subgraph":
        sub = helper.make_graph([helper.make_node("Identity", ["S"], ["y"])], "sub", [], [y],
                                [_external("S", "w.bin")])
        node = helper.make_node("If", ["c"], ["y"], **lists, then_branch=sub, else_branch=sub)
        c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
        return helper.make_model(helper.make_graph([node], "g", [c], [y])).SerializeToString()
    # an initializer flagged external with no location entry at all
    return helper.make_model(helper.make_graph([add], "g", [x], [y], [_external("W", None)])).SerializeToString()


@pytest.mark.parametrize("where, expect", [("constant", "tensor 'W' keeps its data in an external file ('w.bin')"),
                                           ("subgraph", "tensor 'S' keeps its data in an external file ('w.bin')"),
                                           ("no_location", "tensor 'W' keeps its data in an external file")])
def test_the_guard_finds_external_data_anywhere(where, expect) -> None:
    from tandem.bundle.onnx_guard import GraphError, check_no_external_data

    with pytest.raises(GraphError) as info:
        check_no_external_data(_hidden_in(where))
    assert str(info.value) == expect
