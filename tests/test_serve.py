"""The HTTP server, run for real on loopback: REST, KServe v2, health, and 4xx for bad requests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import tandem
from helpers import free_port, linear_churn, mixed_frame, records, start_server


def _call(url: str, body: object = None, *, method: str | None = None, content_type: str = "application/json",
          raw: bytes | None = None, token: str | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    if data is not None:
        req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-home")
    frame = mixed_frame(600, task="binary", seed=0)
    model = tandem.train(frame, "churn", time_limit=4, name="churn", home=home, families=["lightgbm", "linear"])
    port = free_port()
    proc = start_server(home, port, "--max-body-bytes", "200000")
    base = f"http://127.0.0.1:{port}"
    yield base, model, mixed_frame(50, task="binary", seed=5).drop(columns=["churn"])
    proc.terminate()
    proc.wait(timeout=10)


class _Hammer:
    """Posts ``body`` to ``url`` in a loop on a thread while the block runs; ``answers`` are (status, body)."""

    def __init__(self, url: str, body: dict, token: str | None = None):
        import threading

        self.answers: list[tuple[int, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, body, token))

    def _run(self, url, body, token):
        while not self._stop.is_set():
            self.answers.append(_call(url, body, token=token))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_rest_predict_matches_the_model(server):
    base, model, x = server
    status, body = _call(base + "/v1/models/churn/predict", {"instances": records(x)})
    assert status == 200
    assert body["model"] == "churn" and body["version"] == 1 and body["labels"] == ["no", "yes"]
    assert body["predictions"] == model.predict(x).tolist()
    assert np.allclose(body["probabilities"], model.predict_proba(x), atol=1e-6)
    status, one = _call(base + "/v1/models/churn/predict", {"instances": records(x)[:1]})
    assert status == 200 and one["predictions"] == body["predictions"][:1]
    columns = {c: x[c].astype(object).where(x[c].notna(), None).tolist() for c in x.columns}
    status, col = _call(base + "/v1/models/churn/predict", {"inputs": columns})
    assert status == 200 and col["predictions"] == body["predictions"]


def test_kserve_v2_metadata_and_infer(server):
    base, model, x = server
    assert _call(base + "/v2/health/live") == (200, {"live": True})
    status, meta = _call(base + "/v2/models/churn")
    assert status == 200 and meta["name"] == "churn"
    assert {i["name"]: i["datatype"] for i in meta["inputs"]}["age"] == "FP32"
    assert _call(base + "/v2/models/churn/ready")[0] == 200
    inputs = [{"name": c, "shape": [len(x)], "datatype": "FP32" if c in ("age", "income") else "BYTES",
               "data": x[c].astype(object).where(x[c].notna(), None).tolist()} for c in x.columns]
    status, body = _call(base + "/v2/models/churn/infer", {"id": "r1", "inputs": inputs})
    assert status == 200 and body["id"] == "r1" and body["model_name"] == "churn"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["label"]["data"] == [str(v) for v in model.predict(x)]
    assert outputs["probabilities"]["shape"] == [len(x), 2]
    assert np.allclose(np.reshape(outputs["probabilities"]["data"], (-1, 2)), model.predict_proba(x), atol=1e-6)


@pytest.mark.parametrize("path, kwargs, status, message", [
    ("/v1/models/churn/predict", {"raw": b"{not json"}, 400, "body is not valid JSON"),
    ("/v1/models/churn/predict", {"body": {"instances": []}, "content_type": "text/plain"}, 415,
     "content type must be application/json"),
    ("/v1/models/churn/predict", {"body": {"rows": []}}, 400, 'expected {"instances"'),
    ("/v1/models/churn/predict", {"body": {"instances": [{"age": 40}]}}, 422, "missing column(s) 'income'"),
    ("/v1/models/churn/predict", {"body": {"instances": [{"age": "old", "income": 1.0, "city": "paris",
                                                           "member": True, "signup": "2020-01-01"}]}},
     422, "column 'age': expected a number, got 'old'"),
    ("/v1/models/churn/predict", {"raw": b'{"instances": [{"age": NaN}]}'}, 400, "NaN is not allowed"),
    ("/v1/models/churn/predict", {"body": {"instances": [{"age": 1}] * 20000}}, 413, "over the limit"),
    ("/v1/models/nope/predict", {"body": {"instances": [{}]}}, 404, "model 'nope' is not served here"),
    ("/v2/models/churn/infer", {"body": {"inputs": [{"name": "age", "shape": [3], "data": [1, 2]}]}}, 400,
     "shape [3] does not match 2 values"),
    ("/v2/models/churn/infer", {"body": {"inputs": "age"}}, 400, 'expected {"inputs"'),
    ("/v1/models/churn/predict", {"method": "GET"}, 405, "takes POST"),
])
def test_bad_requests_get_4xx_with_a_message(server, path, kwargs, status, message):
    base, _, _ = server
    got, body = _call(base + path, **kwargs)
    assert got == status, body
    assert message in body["error"], body


def test_tokens_and_hot_reload_under_load(tmp_path):
    from tandem.registry import Registry

    home = tmp_path / "home"
    frame, train = linear_churn(home, 400)
    train()
    registry = Registry(home)
    registry.set_alias("churn", 1, "production")
    port = free_port()
    proc = start_server(home, port, "--api-key", "key-1", "--watch-interval", "0", ref="churn@production",
                  env={"TANDEM_ADMIN_TOKEN": "admin-secret"})
    base = f"http://127.0.0.1:{port}"
    try:
        row = {"instances": records(frame.drop(columns=["churn"]).iloc[:1])}
        predict = base + "/v1/models/churn/predict"
        reload = base + "/admin/models/churn/reload"
        assert _call(predict, row)[0] == 401
        assert _call(predict, row, token="wrong")[0] == 401
        status, body = _call(predict, row, token="key-1")
        assert status == 200 and body["version"] == 1
        status, body = _call(reload, {}, token="key-1")
        assert status == 401 and "admin token" in body["error"]

        train()
        registry.set_alias("churn", 2, "production")
        with _Hammer(predict, row, token="key-1") as load:
            time.sleep(0.3)
            status, body = _call(reload, {}, token="admin-secret")
            time.sleep(0.3)
        assert status == 200 and body == {"name": "churn", "previous_version": 1, "version": 2}
        codes = [code for code, _ in load.answers]
        assert codes and set(codes) == {200}
        assert _call(predict, row, token="key-1")[1]["version"] == 2

        record = train()
        registry.set_alias("churn", 3, "production")
        onnx_path = record.path / "model.onnx"
        data = bytearray(onnx_path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        onnx_path.write_bytes(bytes(data))
        status, body = _call(reload, {}, token="admin-secret")
        assert status == 409 and "still serving version 2" in body["error"] and "sha256" in body["error"]
        assert _call(predict, row, token="key-1")[1]["version"] == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_python_client_round_trip(server):
    base, model, x = server
    client = tandem.Client(base)
    assert client.predict("churn", x).tolist() == model.predict(x).tolist()
    assert np.allclose(client.predict_proba("churn", x.iloc[:3]), model.predict_proba(x.iloc[:3]), atol=1e-6)
    with pytest.raises(tandem.TandemError) as info:
        client.predict("churn", x.drop(columns=["age"]))
    assert "server answered 422" in str(info.value) and "missing column(s) 'age'" in str(info.value)


def _scrape(base: str) -> dict:
    """/metrics parsed by Prometheus' own parser: {(name, frozenset(labels)): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _sample(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_and_latency(server):
    base, _, x = server
    before = _scrape(base)
    _call(base + "/v1/models/churn/predict", {"instances": records(x.iloc[:4])})
    _call(base + "/v1/models/churn/predict", {"instances": records(x.iloc[:1])})
    _call(base + "/v1/models/churn/predict", {"rows": []})
    _call(base + "/v1/models/made-up/predict", {"rows": []})
    after = _scrape(base)

    def grew(name, **labels):
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert grew("tandem_requests_total", model="churn", route="predict", code="200") == 2
    assert grew("tandem_requests_total", model="churn", route="predict", code="400") == 1
    assert grew("tandem_requests_total", model="", route="predict", code="404") == 1  # no label per made-up name
    assert not any("made-up" in str(labels) for _, labels in after)
    assert grew("tandem_request_seconds_count", model="churn", phase="compute") == 2
    assert grew("tandem_request_seconds_count", model="churn", phase="total") == 3
    assert grew("tandem_batch_rows_bucket", model="churn", le="4.0") == 2  # 4 rows and 1 row
    assert grew("tandem_batch_rows_bucket", model="churn", le="2.0") == 1
    assert grew("tandem_batch_rows_sum", model="churn") == 5
    assert _sample(after, "tandem_in_flight_requests") == 1  # the scrape itself


def test_openapi_document_comes_from_the_schema(server):
    base, _, x = server
    status, doc = _call(base + "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    row = doc["components"]["schemas"]["churn_row"]
    assert set(row["required"]) == set(x.columns) - {"customer_id"}  # id-like: not a feature
    assert row["properties"]["age"]["type"] == ["number", "null"]
    assert "paris" in row["properties"]["city"]["description"]
    post = doc["paths"]["/v1/models/churn/predict"]["post"]
    assert {"200", "400", "413", "415", "422"} <= set(post["responses"])


def test_killing_a_worker_leaves_the_server_answering(tmp_path):
    import signal

    home = tmp_path / "home"
    frame, train = linear_churn(home)
    train()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tandem.cli", "serve", "churn", "--port", str(port),
                             "--workers", "2"], env=dict(os.environ, TANDEM_HOME=str(home)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    row = {"instances": records(frame.drop(columns=["churn"]).iloc[:1])}
    try:
        deadline = time.monotonic() + 40
        workers: list[int] = []
        while time.monotonic() < deadline:
            children = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
            try:
                ready = _call(base + "/v2/health/ready")[0] == 200
            except OSError:
                ready = False
            workers = [int(c) for c in children if "tandem" in open(f"/proc/{c}/cmdline").read()
                       or "multiprocessing" in open(f"/proc/{c}/cmdline").read()]
            if ready and len(workers) >= 2:
                break
            time.sleep(0.3)
        assert len(workers) >= 2, workers
        os.kill(workers[0], signal.SIGKILL)
        time.sleep(0.2)
        codes = []
        for _ in range(40):
            try:
                codes.append(_call(base + "/v1/models/churn/predict", row)[0])
            except OSError:
                codes.append(-1)
        assert codes.count(200) >= 38, codes  # at most a connection caught by the dying worker
        assert codes[-10:] == [200] * 10
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _burst(port: int, path: str, bodies: list[dict]) -> list[tuple[int, dict, str | None]]:
    """Send every request at once, as a backlog: all connections open (and used once) first, then the
    requests written back to back, so the server reads them together. (status, JSON body, Retry-After) per request."""
    conns = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in bodies]
    try:
        for conn in conns:  # every connection accepted and idle first: only the requests remain to be read
            conn.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            raw = b""
            while not raw.endswith(b"}"):
                raw += conn.recv(65536)
        for conn, body in zip(conns, bodies, strict=True):
            data = json.dumps(body).encode()
            conn.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        results = []
        for conn in conns:
            raw = b""
            while chunk := conn.recv(65536):
                raw += chunk
            head, payload = raw.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in lines[1:])
            results.append((int(lines[0].split()[1]), json.loads(payload), headers.get("retry-after")))
        return results
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.solo  # requests 3 ms apart at most, or they are not merged: not beside another test
def test_micro_batching_merges_concurrent_requests_and_bounds_its_queue(tmp_path):
    home = tmp_path / "home"
    frame = mixed_frame(400, task="binary", seed=0)
    model = tandem.train(frame, "churn", time_limit=3, name="churn", home=home, families=["lightgbm"])
    x = mixed_frame(48, task="binary", seed=9).drop(columns=["churn"])
    bodies = [{"instances": [r]} for r in records(x)]
    port_a, port_b = free_port(), free_port()
    batching = start_server(home, port_a, "--max-batch-rows", "64", "--queue-delay-us", "3000")
    tiny_queue = start_server(home, port_b, "--max-batch-rows", "64", "--queue-delay-us", "100000",
                              "--max-queue-rows", "1")
    try:
        results = _burst(port_a, "/v1/models/churn/predict", bodies)
        assert [r[0] for r in results] == [200] * 48
        assert [r[1]["predictions"][0] for r in results] == model.predict(x).tolist()
        assert np.allclose([r[1]["probabilities"][0] for r in results], model.predict_proba(x), atol=1e-6)
        metrics = _scrape(f"http://127.0.0.1:{port_a}")
        runs = _sample(metrics, "tandem_batch_rows_count", model="churn")
        assert 0 < runs < 48, runs  # fewer model runs than requests: concurrent requests were batched
        assert _sample(metrics, "tandem_batch_rows_sum", model="churn") == 48
        assert _sample(metrics, "tandem_request_seconds_count", model="churn", phase="queue") == runs

        results = _burst(port_b, "/v1/models/churn/predict", bodies[:16])
        codes = [r[0] for r in results]
        assert set(codes) <= {200, 429} and 429 in codes and 200 in codes, codes
        refused = [r for r in results if r[0] == 429]
        assert all(r[2] == "1" and "rows queued" in r[1]["error"] for r in refused)
    finally:
        for proc in (batching, tiny_queue):
            proc.terminate()
            proc.wait(timeout=10)


def test_schemathesis_finds_no_server_error(server):
    base, _, _ = server
    exe = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    run = subprocess.run([exe, "run", base + "/openapi.json", "--checks", "not_a_server_error", "-n", "40",
                          "--seed", "1"], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "No issues found" in run.stdout


def test_sigterm_drains_requests_in_flight(tmp_path):
    import signal

    home = tmp_path / "home"
    frame, train = linear_churn(home)
    train()
    port = free_port()
    proc = start_server(home, port)
    body = json.dumps({"instances": records(frame.drop(columns=["churn"]).iloc[:2])}).encode()
    head = (f"POST /v1/models/churn/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(head + body[:10])  # a request in flight: its body is still arriving
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # still draining
        conn.sendall(body[10:])
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 20:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b'"predictions"' in answer
    assert proc.wait(timeout=20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained


@pytest.mark.parametrize("instances", [
    [{"age": 1, "income": 2.0, "city": {}, "member": True, "signup": "2020-01-01"}],
    [{"age": 1, "income": 2.0, "city": {}, "member": True, "signup": "2020-01-01"},
     {"age": 2, "income": 2.0, "city": {"a": 1}, "member": False, "signup": "2020-01-02"}],
    [{"age": [1], "income": 2.0, "city": "paris", "member": True, "signup": "2020-01-01"}],
])
def test_nested_values_are_a_4xx_not_a_crash(server, instances):
    base, _, _ = server
    status, body = _call(base + "/v1/models/churn/predict", {"instances": instances})
    assert status == 422, body
    assert "column 'city'" in body["error"] or "column 'age'" in body["error"]


@pytest.mark.parametrize("raw, status, message", [
    (b'{"instances": [{"age": 1e999, "income": 1, "city": "x", "member": true, "signup": null}]}', 400,
     "out of range"),
    (b'{"instances": [{"age": 1e300, "income": 1, "city": "x", "member": true, "signup": null}]}', 422,
     "column 'age' row 1: expected a finite number"),
    (b'{"instances": [{"age": 1, "income": 1, "city": "x", "member": true, "signup": null},'
     b' {"age": 99999999999999999999999999999999999999999999, "income": 1, "city": "x", "member": true,'
     b' "signup": null, "extra": 123456789012345678901234567890}]}', 422, "column 'age' row 2"),
])
def test_numbers_beyond_range_are_a_4xx(server, raw, status, message):
    base, _, _ = server
    got, body = _call(base + "/v1/models/churn/predict", raw=raw)
    assert got == status and message in body["error"], body


@pytest.mark.parametrize("path, body", [
    ("/v1/models/churn/predict", {"inputs": {"age": [10**40], "income": [1], "city": ["x"], "member": [True],
                                             "signup": [None]}}),
    ("/v2/models/churn/infer", {"inputs": [{"name": c, "data": [10**40]}
                                           for c in ["age", "income", "city", "member", "signup"]]}),
])
def test_huge_integers_in_columns_are_a_4xx(server, path, body):
    base, _, _ = server
    got, answer = _call(base + path, body)
    assert got == 422 and "column '" in answer["error"] and "row 1" in answer["error"], answer


def test_tritonclient_drives_the_v2_protocol_json_and_binary(server):
    """A real Open Inference Protocol client (tritonclient, as users of Triton have it)."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    base, model, x = server
    x = x.dropna().head(12)
    client = triton.InferenceServerClient(base.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("churn")
    meta = client.get_model_metadata("churn")
    assert meta["name"] == "churn" and {i["name"] for i in meta["inputs"]} == set(x.columns) - {"customer_id"}
    types = {i["name"]: i["datatype"] for i in meta["inputs"]}

    def request(binary: bool):
        inputs = []
        for name, datatype in types.items():
            values = x[name].to_numpy()
            if datatype in ("FP32", "BOOL"):
                array = values.astype(np.float32 if datatype == "FP32" else bool)
            else:
                array = np.array([str(v) for v in values], dtype=np.object_)
            tensor = triton.InferInput(name, [len(x)], datatype)
            tensor.set_data_from_numpy(array, binary_data=binary)
            inputs.append(tensor)
        return inputs

    for binary in (True, False):
        outputs = [triton.InferRequestedOutput("label", binary_data=binary),
                   triton.InferRequestedOutput("probabilities", binary_data=binary)]
        result = client.infer("churn", request(binary), outputs=outputs, request_id="r7")
        assert result.get_response()["id"] == "r7"
        labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").tolist()]
        assert labels == [str(v) for v in model.predict(x)]
        assert np.allclose(result.as_numpy("probabilities").reshape(-1, 2), model.predict_proba(x), atol=1e-6)
    default = client.infer("churn", request(True))  # no outputs named: all of them, as binary
    assert default.as_numpy("probabilities").shape == (len(x), 2)
    assert client.infer("churn", request(True), model_version="1").as_numpy("label").shape == (len(x),)
    with pytest.raises(InferenceServerException, match="served at version 1, not 9"):
        client.infer("churn", request(True), model_version="9")
    with pytest.raises(InferenceServerException, match="unknown output"):
        client.infer("churn", request(True), outputs=[triton.InferRequestedOutput("score")])


def _post_raw(url: str, body: bytes, headers: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("tensors, tail, header_extra, message", [
    ([{"name": "age", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}], b"\0" * 4, 0,
     "binary_data_size 8 does not fit"),
    ([{"name": "age", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 3}}], b"\0" * 3, 0,
     "not a whole number of FP32 values"),
    ([{"name": "city", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}],
     b"\x09\0\0\0ab", 0, "runs past the tensor's data"),
    ([{"name": "city", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 5}}],
     b"\x01\0\0\0\xff", 0, "not UTF-8 text"),
    ([{"name": "age", "shape": [1], "datatype": "COMPLEX", "parameters": {"binary_data_size": 4}}], b"\0" * 4, 0,
     "datatype 'COMPLEX' is not one of"),
    ([{"name": "age", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}], b"\0" * 8, 0,
     "4 bytes of binary data that no input claims"),
    ([{"name": "age", "shape": [1], "datatype": "FP32", "data": [1]}], b"", 10_000,
     "does not fit a body"),
])
def test_bad_binary_v2_requests_are_400(server, tensors, tail, header_extra, message):
    base, _, _ = server
    head = json.dumps({"inputs": tensors}).encode()
    status, body = _post_raw(base + "/v2/models/churn/infer", head + tail,
                             {"Inference-Header-Content-Length": str(len(head) + header_extra),
                              "Content-Type": "application/octet-stream"})
    assert status == 400 and message in body["error"], body


def test_a_moved_alias_is_followed_without_an_admin_call(tmp_path):
    from tandem.registry import Registry

    home = tmp_path / "home"
    frame, train = linear_churn(home)
    train()
    registry = Registry(home)
    registry.set_alias("churn", 1, "production")
    port = free_port()
    proc = start_server(home, port, "--watch-interval", "0.3", "--workers", "2", ref="churn@production")
    base = f"http://127.0.0.1:{port}"
    row = {"instances": records(frame.drop(columns=["churn"]).iloc[:1])}
    predict = base + "/v1/models/churn/predict"
    try:
        assert _call(predict, row)[1]["version"] == 1
        train()
        with _Hammer(predict, row) as load:
            time.sleep(0.3)
            registry.set_alias("churn", 2, "production")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and [b.get("version") for _, b in load.answers[-20:]] != [2] * 20:
                time.sleep(0.2)
        codes = [code for code, _ in load.answers]
        versions = [body.get("version") for _, body in load.answers]
        assert set(codes) == {200}
        assert versions[-20:] == [2] * 20  # both workers moved on
        assert versions.index(2) > 0 and 1 in versions
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_an_admin_reload_reaches_every_worker_and_says_so(tmp_path):
    home = tmp_path / "home"
    frame, train = linear_churn(home)
    train()
    port = free_port()
    token = "reload-token-0123456789"
    proc = start_server(home, port, "--workers", "2", "--admin-token", token, "--watch-interval", "0", ref="churn")
    base = f"http://127.0.0.1:{port}"
    row = {"instances": records(frame.drop(columns=["churn"]).iloc[:1])}
    try:
        time.sleep(1.5)  # both workers have published themselves
        train()  # version 2: "churn" (the latest) now means it, but nothing follows without a reload
        assert {_call(base + "/v1/models/churn/predict", row)[1]["version"] for _ in range(20)} == {1}
        status, answer = _call(base + "/admin/models/churn/reload", {}, token=token)
        assert status == 200 and answer["version"] == 2, answer
        workers = answer["workers"]
        assert workers["total"] == 2 and len(workers["reloaded"]) == 2, workers
        assert workers["failed"] == {} and workers["no_answer"] == []
        versions = {_call(base + "/v1/models/churn/predict", row)[1]["version"] for _ in range(40)}
        assert versions == {2}  # new connections each time: both workers answer, both with version 2
        status, again = _call(base + "/admin/models/churn/reload", {}, token=token)
        assert status == 200 and again["previous_version"] == 2 and len(again["workers"]["reloaded"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_metrics_add_up_over_workers(tmp_path):
    home = tmp_path / "home"
    frame, train = linear_churn(home)
    train()
    port = free_port()
    proc = start_server(home, port, "--workers", "2")
    base = f"http://127.0.0.1:{port}"
    row = {"instances": records(frame.drop(columns=["churn"]).iloc[:1])}
    try:
        for _ in range(60):  # new connections each time: the kernel spreads them over both workers
            assert _call(base + "/v1/models/churn/predict", row)[0] == 200
        time.sleep(1.5)  # each worker publishes its figures about once a second
        totals = [_sample(_scrape(base), "tandem_requests_total", model="churn", route="predict", code="200")
                  for _ in range(6)]
        assert totals == [60] * 6, totals  # whichever worker answers the scrape, it counts all of them
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_the_serving_side_never_imports_the_training_stack(server):
    """A serving host needs numpy, onnxruntime, pyarrow and the server: never torch, lightgbm, sklearn, onnx..."""
    _, model, x = server
    row = records(x.iloc[:1])[0]
    code = f"""
import json, sys
import tandem.serve.http
from tandem.inference import Predictor
from tandem.serve.app import ServeApp
from tandem.serve.models import ServedModel
from tandem.serve.protocol import Request
app = ServeApp([ServedModel("churn", 1, Predictor({str(model.path)!r}, threads=1))])
answers = []
body = json.dumps({{"instances": [json.loads({json.dumps(json.dumps(row, default=str))})]}}).encode()
app.handle(Request("POST", "/v1/models/churn/predict", {{b"content-type": b"application/json"}}, body), answers.append)
print(answers[0].status, json.dumps(json.loads(answers[0].body)["predictions"]))
heavy = [m for m in ("torch", "lightgbm", "sklearn", "optuna", "onnx", "scipy") if m in sys.modules]
print(json.dumps(heavy))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    answer_line, heavy_line = out.stdout.strip().splitlines()
    assert json.loads(heavy_line) == []
    status, predictions = answer_line.split(" ", 1)
    assert status == "200" and json.loads(predictions) == model.predict(x.iloc[:1]).tolist()
