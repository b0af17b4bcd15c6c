"""`tandem import` / `tandem.import_model`: models trained elsewhere become verified bundles that serve over REST
and KServe v2 with their answers equal to the source framework's; unsafe or unreadable models are refused in one
line with nothing written."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import urllib.request

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

import tandem
from foreign_models import churn_pipeline, churn_table, images, small_cnn
from helpers import free_port, post, start_server, stop_server
from tandem.errors import ConfigError
from tandem.registry import Registry

PARITY = 1e-5


def _run_cli_json(run_cli, args: list, home, cwd) -> dict:
    done = run_cli(args + ["--json"], home=home, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def imported(home, tmp_path_factory, run_cli):
    """Four imports into one registry: a live CNN, the same CNN as a torch.export file and a small MLP as a plain
    ONNX file (both by the command line), a scikit-learn pipeline."""
    work = tmp_path_factory.mktemp("import")
    net = small_cnn()
    cnn = tandem.import_model(net, sample=images(32, 1), name="cnn", labels=["stop", "yield", "limit", "turn"],
                              home=home)
    program = torch.export.export(net, (torch.from_numpy(images(4, 2)),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    torch.export.save(program, str(work / "cnn.pt2"))
    exported = _run_cli_json(run_cli, ["import", work / "cnn.pt2", "--name", "exported", "--labels", "a,b,c,d"],
                             home, work)
    torch.manual_seed(3)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3),
                              torch.nn.Softmax(dim=1)).eval()
    torch.onnx.export(mlp, (torch.zeros(1, 4),), str(work / "mlp.onnx"), input_names=["features"],
                      output_names=["scores"], dynamic_axes={"features": {0: "N"}, "scores": {0: "N"}},
                      opset_version=17, dynamo=False)
    plain = _run_cli_json(run_cli, ["import", work / "mlp.onnx", "--name", "plain"], home, work)
    train, held_out = churn_table(600, 0), churn_table(200, 1)
    pipe = churn_pipeline(train)
    held_out.to_csv(work / "held_out.csv", index=False)
    sklearn_model = tandem.import_model(pipe, sample=work / "held_out.csv", target="churn", name="pipe", home=home)
    return {"net": net, "cnn": cnn, "pipe": pipe, "sklearn": sklearn_model, "work": work, "held_out": held_out,
            "exported": exported, "mlp": mlp, "plain": plain}


def test_a_live_pytorch_cnn_imports_with_its_answers_and_a_tensor_schema(imported):
    model, net = imported["cnn"], imported["net"]
    m = model.manifest
    assert m["imported"]["framework"] == "pytorch" and m["imported"]["meaning"] == "logits"
    assert m["parity"]["max_abs_diff"] <= PARITY and m["parity"]["rows"] == 32
    assert m["schema"]["columns"] == [{"name": "input", "kind": "tensor", "nullable": False, "missing": 0,
                                       "categories": None, "min": None, "max": None, "note": None, "size": None,
                                       "shape": [3, 16, 16], "dtype": "float32"}]
    x = images(20, 7)  # rows the import never saw
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
    assert np.abs(model.predict_proba(x) - expected).max() <= PARITY
    assert list(model.predict(x)) == [model.labels[i] for i in expected.argmax(axis=1)]
    assert m["footprint"]["train"]["not_trained_here"].startswith("trained with pytorch outside tandem")
    assert m["footprint"]["inference"]["predictions"] == 1000
    report = (model.path / "report.html").read_text()
    assert "Model card" in report and "Leaderboard" not in report and "torch.onnx" in report


def _softmax_of(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()


def test_a_torch_export_file_and_a_plain_onnx_file_import_from_the_command_line(imported, home):
    summary = imported["exported"]
    assert summary["framework"] == "pytorch" and summary["labels"] == ["a", "b", "c", "d"]
    assert summary["inputs"] == [{"name": "x", "kind": "tensor", "shape": [3, 16, 16], "dtype": "float32"}]
    assert summary["parity_max_abs_diff"] <= PARITY and summary["parity_on"] == "4 sample rows"
    x = images(5, 9)
    model = tandem.load("exported", home=home)
    assert np.abs(model.predict_proba({"x": x}) - _softmax_of(imported["net"], x)).max() <= PARITY

    plain = imported["plain"]
    assert plain["framework"] == "onnx" and plain["task"] == "multiclass" and plain["meaning"] == "probabilities"
    assert plain["inputs"] == [{"name": "features", "kind": "tensor", "shape": [4], "dtype": "float32"}]
    assert plain["parity_on"].startswith("8 random rows") and plain["parity_max_abs_diff"] <= PARITY
    rows = np.random.default_rng(8).normal(size=(6, 4)).astype(np.float32)
    with torch.no_grad():
        expected = imported["mlp"](torch.from_numpy(rows)).numpy()
    assert np.abs(tandem.load("plain", home=home).predict_proba({"features": rows}) - expected).max() <= PARITY


def test_a_scikit_learn_pipeline_imports_with_a_table_schema_metrics_and_drift(imported):
    model, pipe, held_out = imported["sklearn"], imported["pipe"], imported["held_out"]
    m = model.manifest
    kinds = {c["name"]: (c["kind"], c.get("categories")) for c in m["schema"]["columns"]}
    assert kinds == {"age": ("numeric", None), "hours": ("numeric", None), "city": ("categorical", ["lyon", "oslo",
                                                                                                     "rome"]),
                     "plan": ("categorical", ["basic", "pro"])}
    assert model.labels == ["no", "yes"] and m["parity"]["max_abs_diff"] <= PARITY
    x = held_out.drop(columns="churn")
    assert np.abs(model.predict_proba(x) - pipe.predict_proba(x)).max() <= PARITY
    assert list(model.predict(x)) == list(pipe.predict(x))
    assert m["metrics"]["validation"]["accuracy"] == pytest.approx((pipe.predict(x) == held_out.churn).mean())
    assert m["quality"]["rows"] == 200
    assert model.evaluate(imported["work"] / "held_out.csv")["metrics"]["accuracy"] == pytest.approx(
        m["metrics"]["validation"]["accuracy"])
    moved = held_out.assign(age=held_out.age + 30)
    moved.to_csv(imported["work"] / "moved.csv", index=False)
    assert model.drift(imported["work"] / "moved.csv")["moved"] == ["age"]
    with pytest.raises(tandem.TandemError, match="column 'city'"):
        model.predict({"age": 30, "hours": 10, "city": ["nested"], "plan": "pro"})


def test_imported_models_serve_over_rest_and_v2_with_the_source_answers(imported, home):
    port = free_port()
    proc = start_server(home, port, "pipe", "exported", "plain", ref="cnn")
    try:
        x = images(3, 11)
        expected = _softmax_of(imported["net"], x)
        _tensor_model_answers_on_both_protocols(port, "exported", "x", x, expected)
        rows = np.random.default_rng(13).normal(size=(4, 4)).astype(np.float32)
        with torch.no_grad():
            _tensor_model_answers_on_both_protocols(port, "plain", "features", rows,
                                                    imported["mlp"](torch.from_numpy(rows)).numpy())
        status, body = post(port, "/v1/models/cnn/predict", {"instances": [{"input": r.tolist()} for r in x]})
        assert status == 200, body
        assert np.abs(np.array(body["probabilities"]) - expected).max() <= PARITY
        status, body = post(port, "/v2/models/cnn/infer", {"inputs": [
            {"name": "input", "shape": [3, 3, 16, 16], "datatype": "FP32", "data": x.reshape(-1).tolist()}]})
        assert status == 200, body
        probs = next(o for o in body["outputs"] if o["name"] == "probabilities")
        assert probs["shape"] == [3, 4] and np.abs(np.array(probs["data"]).reshape(3, 4) - expected).max() <= PARITY
        head = json.dumps({"inputs": [{"name": "input", "shape": [3, 3, 16, 16], "datatype": "FP32",
                                       "parameters": {"binary_data_size": x.nbytes}}]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/cnn/infer", data=head + x.tobytes(),
                                     headers={"inference-header-content-length": str(len(head)),
                                              "content-type": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=20) as resp:
            answer = json.loads(resp.read())
        assert [o["name"] for o in answer["outputs"]] == ["label", "probabilities"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/cnn", timeout=10) as resp:
            meta = json.loads(resp.read())
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 16, 16]}]
        status, body = post(port, "/v1/models/cnn/predict", {"instances": [{"input": x[0, :, :8].tolist()}]})
        assert status == 422 and "column 'input'" in body["error"] and "[3, 16, 16]" in body["error"]
        status, body = post(port, "/v2/models/cnn/infer", {"inputs": [
            {"name": "input", "shape": [1, 3, 16], "datatype": "FP32", "data": [0.5] * 48}]})
        assert status == 422 and "column 'input'" in body["error"]

        rows = imported["held_out"].drop(columns="churn").head(5)
        expected = imported["pipe"].predict_proba(rows)
        instances = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")
        status, body = post(port, "/v1/models/pipe/predict", {"instances": instances})
        assert status == 200 and np.abs(np.array(body["probabilities"]) - expected).max() <= PARITY
        assert body["predictions"] == list(imported["pipe"].predict(rows))
        status, body = post(port, "/v2/models/pipe/infer", {"inputs": [
            {"name": "age", "shape": [2], "datatype": "FP32", "data": [30.0, 55.0]},
            {"name": "hours", "shape": [2], "datatype": "FP32", "data": [10.0, 40.0]},
            {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["oslo", "rome"]},
            {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["pro", "basic"]}]})
        assert status == 200, body
        frame = pd.DataFrame({"age": [30.0, 55.0], "hours": [10.0, 40.0], "city": ["oslo", "rome"],
                              "plan": ["pro", "basic"]})
        probs = next(o for o in body["outputs"] if o["name"] == "probabilities")
        assert np.abs(np.array(probs["data"]).reshape(2, 2) - imported["pipe"].predict_proba(frame)).max() <= PARITY

        # hostile tensor bodies: each a 4xx naming what is wrong, never a 500
        row = x[0].tolist()
        hostile = [
            ("/v1/models/cnn/predict", {"instances": [{"input": [[[1.0, 2.0], [3.0]]]}]}, 422, "column 'input'"),
            ("/v1/models/cnn/predict", {"instances": [{"input": row}, {"input": x[0, :2].tolist()}]}, 422,
             "row 2"),
            ("/v1/models/cnn/predict", {"instances": [{"input": [[["a"] * 16] * 16] * 3}]}, 422, "numbers"),
            ("/v1/models/cnn/predict", {"instances": [{"other": row}]}, 422, "missing column"),
            ("/v1/models/cnn/predict", {"inputs": {"input": [row, 5]}}, 422, "column 'input'"),
            ("/v2/models/cnn/infer", {"inputs": [{"name": "input", "shape": [2, 3, 16, 16], "datatype": "FP32",
                                                  "data": x[0].reshape(-1).tolist()}]}, 400, "does not match"),
            ("/v2/models/cnn/infer", {"inputs": [{"name": "input", "shape": [1, 3, 16, 16], "datatype": "BYTES",
                                                  "data": ["x"] * 768}]}, 422, "column 'input'"),
        ]
        for path, body, status_wanted, words in hostile:
            status, answer = post(port, path, body)
            assert status == status_wanted and words in answer["error"], (path, status, answer)
        nested = b'{"instances": [{"input": ' + b"[" * 5000 + b"]" * 5000 + b"}]}"
        status, answer = post(port, "/v1/models/cnn/predict", nested)
        assert status == 400 and "deep" in answer["error"]

        exe = os.path.join(os.path.dirname(sys.executable), "schemathesis")
        # the tensor models' own operations (test_serve fuzzes the table model's and the server's)
        run = subprocess.run([exe, "run", f"http://127.0.0.1:{port}/openapi.json", "--checks", "not_a_server_error",
                              "--include-path-regex", "/models/(cnn|exported|plain)/(predict|infer)",
                              "--phases", "fuzzing", "-n", "8", "--seed", "1"],
                             capture_output=True, text=True, timeout=240)
        assert run.returncode == 0 and "No issues found" in run.stdout, run.stdout[-3000:]
        assert re.search(r"Tested:\s+6\b", run.stdout), run.stdout[-3000:]  # REST and v2 of each tensor model
    finally:
        stop_server(proc)


def _tensor_model_answers_on_both_protocols(port: int, name: str, column: str, x: np.ndarray,
                                           expected: np.ndarray) -> None:
    """REST rows and a v2 JSON tensor of ``x``: both answer ``expected`` (the source framework's)."""
    status, body = post(port, f"/v1/models/{name}/predict", {"instances": [{column: r.tolist()} for r in x]})
    assert status == 200 and np.abs(np.array(body["probabilities"]) - expected).max() <= PARITY, body
    status, body = post(port, f"/v2/models/{name}/infer", {"inputs": [
        {"name": column, "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]})
    assert status == 200, body
    probs = next(o for o in body["outputs"] if o["name"] == "probabilities")
    assert np.abs(np.array(probs["data"]).reshape(expected.shape) - expected).max() <= PARITY


# -- refusals: one line, nothing written ------------------------------------------------------------------------
def _error_line(done) -> str:
    """The one error line of a failed command (progress lines aside), and no traceback."""
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("tandem: error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def _versions(home) -> list[str]:
    return sorted(r.name for r in Registry(home).list())


def test_a_pickle_is_refused_unread_naming_the_safe_formats(home, tmp_path, run_cli):
    before = _versions(home)
    trap = tmp_path / "model.pkl"
    trap.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    done = run_cli(["import", trap, "--name", "trap"], home=home, cwd=tmp_path)
    line = _error_line(done)
    assert "is a pickle" in line and "never unpickles" in line and ".pt2" in line
    torch.save(small_cnn().state_dict(), tmp_path / "weights.bin.dat")  # a zip holding data.pkl, whatever its name
    with pytest.raises(ConfigError, match="is a pickle"):
        tandem.import_model(tmp_path / "weights.bin.dat", framework="pytorch", name="trap", home=home)
    assert _versions(home) == before


def _tiny_onnx(tmp_path, location: str):
    """A one-layer ONNX model [N, 4] -> [N, 1] whose weight is kept as external data at ``location``."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 1), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_onnx_external_data_is_read_from_beside_the_model_and_refused_outside_its_folder(home, tmp_path, run_cli):
    from onnx.external_data_helper import convert_model_to_external_data

    inside = tmp_path / "inside"
    inside.mkdir()
    model = _tiny_onnx(tmp_path, "w.bin")
    convert_model_to_external_data(model, location="w.bin", size_threshold=0)
    onnx.save_model(model, str(inside / "sum.onnx"))
    summary = _run_cli_json(run_cli, ["import", inside / "sum.onnx", "--name", "sum"], home, tmp_path)
    assert summary["task"] == "regression" and summary["inputs"] == [
        {"name": "x", "kind": "tensor", "shape": [4], "dtype": "float32"}]
    loaded = tandem.load("sum", home=home)
    assert loaded.predict({"x": [1.0, 2.0, 3.0, 4.5]}).tolist() == [10.5]
    assert not any(p.name == "w.bin" for p in loaded.path.rglob("*"))  # the weight lives inside the one graph

    before = _versions(home)
    for escaping in ("../w.bin", str(tmp_path / "w.bin")):
        bad = _tiny_onnx(tmp_path, escaping)
        convert_model_to_external_data(bad, location="w.bin", size_threshold=0)
        onnx.save_model(bad, str(inside / "bad.onnx"))
        (inside / "w.bin").rename(tmp_path / "w.bin")
        loaded_bad = onnx.load(str(inside / "bad.onnx"), load_external_data=False)
        for t in loaded_bad.graph.initializer:
            for entry in t.external_data:
                if entry.key == "location":
                    entry.value = escaping
        onnx.save_model(loaded_bad, str(inside / "bad.onnx"))
        done = run_cli(["import", inside / "bad.onnx", "--name", "escape"], home=home, cwd=tmp_path)
        line = _error_line(done)
        assert "outside the model's folder" in line and escaping in line
        (tmp_path / "w.bin").rename(inside / "w.bin")
    assert _versions(home) == before


def test_a_table_graph_without_a_sample_and_a_parity_failure_are_refused(imported, home, tmp_path, run_cli):
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    before = _versions(home)
    types = [("age", FloatTensorType([None, 1])), ("hours", FloatTensorType([None, 1])),
             ("city", StringTensorType([None, 1])), ("plan", StringTensorType([None, 1]))]
    graph = to_onnx(imported["pipe"], initial_types=types, options={id(imported["pipe"]): {"zipmap": False}},
                    target_opset={"": 17, "ai.onnx.ml": 3})
    onnx.save_model(graph, str(tmp_path / "pipe.onnx"))
    done = run_cli(["import", tmp_path / "pipe.onnx", "--name", "columns"], home=home, cwd=tmp_path)
    assert "takes table columns (age, hours, city, plan): give --sample rows" in _error_line(done)
    sample = ["--sample", imported["work"] / "held_out.csv", "--target", "churn", "--labels", "no,yes"]
    done = run_cli(["import", tmp_path / "pipe.onnx", "--name", "columns", *sample, "--graph-output", "scores"],
                   home=home, cwd=tmp_path)
    assert "has no output 'scores': it has label, probabilities" in _error_line(done)
    # with the rows, the same file imports (the answer is its 'probabilities' output)
    done = run_cli(["import", tmp_path / "pipe.onnx", "--name", "columns", *sample, "--graph-output",
                    "probabilities", "--json"], home=home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["parity_max_abs_diff"] <= PARITY

    class Drifting(torch.nn.Module):
        """Exports one graph, then answers differently (Python state the tracer cannot see)."""

        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return x.sum(dim=1, keepdim=True) * self.calls

    with pytest.raises(ConfigError, match=r"parity failed: the bundle graph differs from pytorch by up to .* "
                                          r"nothing was written"):
        tandem.import_model(Drifting(), sample=np.ones((4, 3), dtype=np.float32), name="drifting", home=home)
    with pytest.raises(ConfigError, match="the sample has no column.*'plan', which the scikit-learn model reads"):
        tandem.import_model(imported["pipe"], sample=imported["held_out"].drop(columns="plan"), target="churn",
                            name="partial", home=home)
    assert _versions(home) == sorted(before + ["columns"])


def test_an_imported_model_predicts_evaluates_drifts_reports_and_optimizes_from_the_command_line(imported, home,
                                                                                                 run_cli):
    import pyarrow as pa
    import pyarrow.parquet as pq

    work = imported["work"]
    done = run_cli(["predict", "pipe", work / "held_out.csv", "--output", work / "scored.csv"], home=home, cwd=work)
    assert done.returncode == 0, done.stderr
    scored = pd.read_csv(work / "scored.csv")
    assert list(scored["churn"]) == list(imported["pipe"].predict(imported["held_out"].drop(columns="churn")))
    done = run_cli(["evaluate", "pipe", work / "held_out.csv"], home=home, cwd=work)
    assert done.returncode == 0 and "accuracy" in done.stdout, done.stderr
    done = run_cli(["report", "pipe", "--output", work / "card.html"], home=home, cwd=work)
    assert done.returncode == 0, done.stderr
    assert "Model card" in (work / "card.html").read_text()

    # a tensor model's labelled rows: a Parquet file whose image column holds nested lists
    net = imported["net"]
    x = images(120, 21)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).argmax(1).numpy()
    labels = np.array(imported["cnn"].labels)
    pq.write_table(pa.table({"input": x.tolist(), "target": labels[y]}), work / "images.parquet")
    done = run_cli(["optimize", "cnn", "--data", work / "images.parquet", "--methods", "int8,prune", "--max-loss",
                    "0.05", "--goal", "size", "--no-footprint", "--json"], home=home, cwd=work)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    by_method = {v["method"]: v for v in result["variants"]}
    assert "imported model has no tandem members" in by_method["prune"]["skipped"]
    assert by_method["int8"]["skipped"] is None and by_method["int8"]["parity"] < 0.05
    if by_method["int8"]["kept"]:
        variant = tandem.load(f"cnn:{by_method['int8']['version']}", home=home)
        assert variant.manifest["imported"]["framework"] == "pytorch"
        assert variant.predict_proba(x[:3]).shape == (3, 4)
