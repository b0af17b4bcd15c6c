"""The app's answers to hostile requests, on a real server over loopback: deep JSON, wrong methods, a broken reload.

One quick linear model served as ``churn@production`` (watched every 0.2 s, with an admin token) for the whole
module. Every mistake must be a 4xx with ``{"error": ...}`` naming the field, never a 500, and nothing the
server logs may be a traceback.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import free_port, linear_churn, mixed_frame, records, start_server, stop_server

ADMIN_TOKEN = "hardening-admin"
WATCH_S = 0.2
PREDICT = "/v1/models/churn/predict"
INFER = "/v2/models/churn/infer"
RELOAD = "/admin/models/churn/reload"
GET_ROUTES = ["/v2/health/live", "/v2/health/ready", "/v2", "/metrics", "/openapi.json", "/v2/models/churn",
              "/v2/models/churn/ready", "/v2/models/churn/versions/1", "/v2/models/churn/versions/1/ready",
              "/v1/models/churn/footprint"]
POST_ROUTES = [PREDICT, INFER, "/v2/models/churn/versions/1/infer", RELOAD]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from tandem.registry import Registry

    home = tmp_path_factory.mktemp("serve-hardening-home")
    frame, train = linear_churn(home)
    model = train()
    registry = Registry(home)
    registry.set_alias("churn", 1, "production")
    port = free_port()
    proc = start_server(home, port, "--admin-token", ADMIN_TOKEN, "--watch-interval", str(WATCH_S),
                        ref="churn@production", stdout=subprocess.DEVNULL)
    log: list[str] = []  # the server's stderr, drained as it comes (a full pipe would stop the server)
    drain = threading.Thread(target=lambda: log.extend(line.decode(errors="replace") for line in proc.stderr))
    drain.start()
    x = mixed_frame(20, task="binary", seed=5).drop(columns=["churn"])
    try:
        yield SimpleNamespace(port=port, home=home, registry=registry, model=model, train=train, x=x,
                              rows=records(x), log=log)
    finally:
        stop_server(proc)
        drain.join(timeout=5)


def _ask(served, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=20)
    try:
        sent = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=body, headers=sent)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _error(served, method: str, path: str, body: bytes | None = None, **kwargs) -> tuple[int, str]:
    status, headers, raw = _ask(served, method, path, body, **kwargs)
    assert headers["content-type"] == "application/json", (status, raw[:200])
    answer = json.loads(raw)
    assert set(answer) == {"error"}, answer
    return status, answer["error"]


def _v2(inputs: list[dict], **fields) -> bytes:
    return json.dumps({"inputs": inputs, **fields}).encode()


def _v2_row(served) -> list[dict]:
    """One row as v2 tensors, every column, 'age' first."""
    row = served.rows[0]
    return [{"name": c, "shape": [1], "datatype": "FP32" if c in ("age", "income") else "BYTES", "data": [row[c]]}
            for c in sorted(row, key=lambda c: c != "age")]


# -- finding 1: nesting depth --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, body, message", [
    (PREDICT, b"[" * 100_000, "body: JSON nested deeper than 32 levels"),
    (PREDICT, b'{"instances": ' + b"[" * 2000 + b"]" * 2000 + b"}", "body: JSON nested deeper than 32 levels"),
    (PREDICT, b'{"instances": ' + b"[" * 900 + b"]" * 900 + b"}", "body: JSON nested deeper than 32 levels"),
    (PREDICT, b'{"instances": [{"age": ' + b"[" * 1010 + b"]" * 1010 + b"}]}",
     "body: JSON nested deeper than 32 levels"),
    (PREDICT, b'{"instances": [{"age": 1}], "explain": ' + b"[" * 1000 + b"]" * 1000 + b"}",
     "body: JSON nested deeper than 32 levels"),
    (PREDICT, b'{"instances": [{"age": NaN, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}]}",
     "body: JSON nested deeper than 32 levels"),
    (PREDICT, b'{"instances": [{"city": "\\ud800", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}]}",
     "body: JSON nested deeper than 32 levels"),
    (INFER, b'{"inputs": [{"name": "age", "datatype": "FP32", "data": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}]}",
     "body: JSON nested deeper than 32 levels"),
])
def test_deeply_nested_json_is_refused_400(served, path, body, message):
    status, error = _error(served, "POST", path, body)
    assert status == 400, error
    assert error.startswith(message), error
    assert "a REST value is a scalar" in error and "its shape's rank" in error


@pytest.mark.parametrize("token", ["-" + "9" * 5000, "9" * 4301])
def test_a_number_with_more_digits_than_python_reads_is_400(served, token):
    body = b'{"instances": [{"age": ' + token.encode() + b', "income": 1, "city": "paris"}]}'
    status, error = _error(served, "POST", PREDICT, body)
    assert (status, error) == (400, "body: a number has over 4300 digits")


def test_an_integer_beyond_float_precision_reads_as_the_nearest_float_in_any_number_of_rows(served):
    """2**53 + 1 has no float64: one row or several, it is read as 2**53 (the model's columns are floats)."""
    rows = [dict(r, age=2 ** 53 + 1) for r in served.rows[:2]]
    exact = [dict(r, age=2 ** 53) for r in served.rows[:2]]
    answers = []
    for body in (rows, exact, rows[:1]):
        status, headers, raw = _ask(served, "POST", PREDICT, json.dumps({"instances": body}).encode())
        assert status == 200, raw
        answers.append(json.loads(raw)["probabilities"])
    assert answers[0] == answers[1] and answers[2] == answers[0][:1]


def test_brackets_inside_strings_do_not_count_as_nesting(served):
    rows = [dict(r, city="[" * 50 + "{\"" * 50) for r in served.rows]
    status, headers, raw = _ask(served, "POST", PREDICT, json.dumps({"instances": rows}).encode())
    assert status == 200, raw
    assert json.loads(raw)["predictions"] == served.model.predict(
        served.x.assign(city="[" * 50 + "{\"" * 50)).tolist()


def test_many_rows_are_not_mistaken_for_nesting(served):
    rows = served.rows * 5  # 100 objects, 102 brackets, 3 levels
    status, _, raw = _ask(served, "POST", PREDICT, json.dumps({"instances": rows}).encode())
    assert status == 200, raw
    assert len(json.loads(raw)["predictions"]) == 100


@pytest.mark.parametrize("shape, data, message", [
    ([1], [[[1.0]]], "inputs[0] ('age'): field 'data' nests lists deeper than the 1 dimension(s) of its shape [1]"),
    ([1, 1], [[[1.0]]],
     "inputs[0] ('age'): field 'data' nests lists deeper than the 2 dimension(s) of its shape [1, 1]"),
    (None, [[[[[[[[[[[[[[[[[[1.0]]]]]]]]]]]]]]]]]],
     "inputs[0] ('age'): field 'data' nests lists deeper than 16 levels; a tensor has at most 16 dimensions"),
])
def test_v2_data_nested_deeper_than_its_shape_is_400(served, shape, data, message):
    tensors = _v2_row(served)
    tensors[0] = {"name": "age", "datatype": "FP32", "data": data, **({"shape": shape} if shape else {})}
    status, error = _error(served, "POST", INFER, _v2(tensors))
    assert (status, error) == (400, message)


def test_v2_data_nested_as_deep_as_its_shape_is_read(served):
    tensors = _v2_row(served)
    tensors[0] = {"name": "age", "datatype": "FP32", "shape": [1, 1], "data": [[served.rows[0]["age"]]]}
    status, _, raw = _ask(served, "POST", INFER, _v2(tensors))
    assert status == 200, raw
    labels = {o["name"]: o for o in json.loads(raw)["outputs"]}["label"]["data"]
    assert labels == [str(served.model.predict(served.x.iloc[:1])[0])]


@pytest.mark.parametrize("outputs, message", [
    ([{"name": "label", "parameters": [1]}], "field 'outputs' item 1 ('label'): 'parameters' must be an object, "
                                              "got array"),
    ([{"name": "label"}, {"name": "probabilities", "parameters": "binary"}],
     "field 'outputs' item 2 ('probabilities'): 'parameters' must be an object, got string"),
])
def test_v2_output_parameters_that_are_not_an_object_are_400(served, outputs, message):
    status, error = _error(served, "POST", INFER, _v2(_v2_row(served), outputs=outputs))
    assert (status, error) == (400, message)


@pytest.mark.parametrize("fields, message", [
    ({"id": [1, [2]]}, "field 'id': expected a string, got array"),
    ({"parameters": [1]}, "field 'parameters': expected an object, got array"),
    ({"inputs": [{"name": "age", "datatype": "FP32", "data": [1.0], "parameters": 3}]},
     "inputs[0] ('age'): 'parameters' must be an object, got number"),
])
def test_v2_other_fields_of_the_wrong_type_are_400(served, fields, message):
    doc = {"inputs": _v2_row(served), **fields}
    status, error = _error(served, "POST", INFER, json.dumps(doc).encode())
    assert (status, error) == (400, message)


# -- finding 2: methods --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", GET_ROUTES)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_a_get_route_answers_405_to_other_methods(served, path, method):
    status, headers, raw = _ask(served, method, path, b"{}")
    assert status == 405, raw
    assert headers["allow"] == "GET, HEAD"
    assert json.loads(raw) == {"error": f"{path} takes GET or HEAD, not {method}"}


@pytest.mark.parametrize("path", POST_ROUTES)
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
def test_a_post_route_answers_405_to_other_methods(served, path, method):
    status, headers, raw = _ask(served, method, path)
    assert status == 405, raw
    assert headers["allow"] == "POST"
    if method != "HEAD":
        assert json.loads(raw) == {"error": f"{path} takes POST, not {method}"}
    else:
        assert raw == b"" and int(headers["content-length"]) > 0


@pytest.mark.parametrize("path", GET_ROUTES)
def test_head_on_a_get_route_is_answered_like_get_without_a_body(served, path):
    get_status, get_headers, get_body = _ask(served, "GET", path)
    head_status, head_headers, head_body = _ask(served, "HEAD", path)
    assert get_status == head_status == 200, get_body
    assert head_body == b""
    assert head_headers["content-type"] == get_headers["content-type"]
    if path != "/metrics":  # (the counters moved between the two requests)
        assert int(head_headers["content-length"]) == len(get_body) > 0


# -- finding 3: a reload that cannot load ----------------------------------------------------------------------------
def _graph_that_fails_its_first_run() -> bytes:
    """A valid ONNX graph that ONNX Runtime loads, but whose input is none of the bundle's: every run fails."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["bogus"], ["label"])], "broken",
                              [helper.make_tensor_value_info("bogus", TensorProto.FLOAT, [None, 1])],
                              [helper.make_tensor_value_info("label", TensorProto.FLOAT, [None, 1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


BROKEN_GRAPHS = {"not ONNX": lambda: b"this is not a protobuf \x00\xff" * 10,
                 "fails its warm-up run": _graph_that_fails_its_first_run}


def _add_broken_version(served, kind: str) -> tuple[int, str]:
    """(version, bundle path) of a new copy of version 1 whose model.onnx is replaced, re-hashed: it verifies."""
    from tandem.bundle.format import CHECKSUM, write_bundle

    source = Path(served.registry.resolve("churn:1"))
    manifest = json.loads((source / "manifest.json").read_text())

    def write_files(tmp: Path) -> None:
        for path in source.rglob("*"):
            rel = path.relative_to(source)
            if path.is_file() and rel.as_posix() != "manifest.json":
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, tmp / rel)
        (tmp / "model.onnx").write_bytes(BROKEN_GRAPHS[kind]())

    def write(final_dir: Path, version: int) -> None:
        body = {k: v for k, v in manifest.items() if k not in ("files", CHECKSUM, "format_version")}
        write_bundle(final_dir, write_files, dict(body, version=version))

    version = served.registry.add("churn", write).version
    return version, str(served.registry.resolve(f"churn:{version}"))


def _version_served(served) -> int:
    status, _, raw = _ask(served, "POST", PREDICT, json.dumps({"instances": served.rows[:1]}).encode())
    assert status == 200, raw
    return json.loads(raw)["version"]


def _wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _reports(served, path: str) -> list[str]:
    return [line for line in served.log if path in line]


@pytest.mark.parametrize("kind", list(BROKEN_GRAPHS))
def test_reload_of_a_version_that_does_not_load_is_409_and_not_retried(served, kind):
    broken, path = _add_broken_version(served, kind)
    served.registry.set_alias("churn", broken, "production")
    try:
        status, error = _error(served, "POST", RELOAD, b"", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert status == 409, error
        assert error.startswith("reload of 'churn' failed, still serving version 1: "), error
        why = {"not ONNX": f"bundle '{path}': model.onnx cannot be loaded",  # (the bundle's loader says how)
               "fails its warm-up run": f"version {broken} ({path}) loads, but its warm-up run failed: "
                                        "InvalidArgument: [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Invalid input "
                                        "name: num"}[kind]
        assert why in error, error
        assert _version_served(served) == 1

        # the watcher tried it once, said why on stderr, and leaves it be while the alias stays there
        assert _wait_for(lambda: _reports(served, path)), served.log[-5:]
        time.sleep(15 * WATCH_S)
        reports = _reports(served, path)
        assert len(reports) == 1, reports
        assert reports[0].startswith(f"tandem serve: 'churn@production' moved to {path}, which failed to load: ")
        assert reports[0].rstrip().endswith(
            "; still serving version 1, and not trying it again until 'churn@production' moves"), reports[0]
        assert _version_served(served) == 1
    finally:
        served.registry.set_alias("churn", 1, "production")


def test_an_alias_moved_back_to_a_version_that_failed_is_tried_again(served):
    broken, path = _add_broken_version(served, "fails its warm-up run")
    served.registry.set_alias("churn", broken, "production")
    assert _wait_for(lambda: len(_reports(served, path)) == 1)
    good = served.train().version
    served.registry.set_alias("churn", good, "production")
    assert _wait_for(lambda: _version_served(served) == good)
    served.registry.set_alias("churn", broken, "production")
    assert _wait_for(lambda: len(_reports(served, path)) == 2), served.log[-5:]
    time.sleep(10 * WATCH_S)
    assert len(_reports(served, path)) == 2
    assert _version_served(served) == good
    served.registry.set_alias("churn", good, "production")


def test_the_server_logged_no_traceback(served):
    """Last in the module: every hostile request above was answered without an unexpected error."""
    assert _version_served(served) > 1
    assert not [line for line in served.log if "Traceback" in line or "unexpected error" in line], served.log
