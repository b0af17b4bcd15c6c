"""Fuzzing the request path of a real ``tandem serve`` on loopback with Hypothesis: 10,000 cases in all.

JSON bodies (any JSON value, deep nesting, huge numbers, NaN-like tokens, odd unicode, instances and v2
tensors of the wrong shapes and types, valid rows with fuzzed values) to the REST and v2 routes over one
keep-alive connection; raw bytes (mutated request lines, headers, methods, paths, Content-Length and
Transfer-Encoding combinations, binary v2 bodies) each on a connection of its own, half-closed after
sending. Whatever arrives: never a 5xx, an answer or a close within ANSWER_S, the server's memory bounded,
no traceback on its stderr, and a normal prediction still answered at the end. Derandomized: the same
cases on every run.
"""

from __future__ import annotations

import functools
import json
import re
import socket
import struct
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import free_port, linear_churn, start_server, stop_server

ANSWER_S = 5.0  # an answer, or the connection closed, within this
RSS_GROWTH_MB = 100
ADMIN_TOKEN = "fuzz-admin"
PREDICT = "/v1/models/churn/predict"
INFER = "/v2/models/churn/infer"
COLUMNS = ("age", "income", "city", "member", "signup")
FUZZ = dict(deadline=None, derandomize=True, database=None, print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                   HealthCheck.large_base_example])
STATUS = re.compile(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3})[ \r]")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-fuzz-home")
    frame, train = linear_churn(home)
    model = train()
    port = free_port()
    proc = start_server(home, port, "--admin-token", ADMIN_TOKEN, "--watch-interval", "0",
                        stdout=subprocess.DEVNULL)
    log: list[str] = []  # the server's stderr, drained as it comes (a full pipe would stop the server)
    drain = threading.Thread(target=lambda: log.extend(line.decode(errors="replace") for line in proc.stderr))
    drain.start()
    row = {c: v for c, v in frame.drop(columns=["churn"]).iloc[0].items() if c in COLUMNS}
    row = json.loads(json.dumps(row, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
    client = Client(port)
    status, _, body = client.exchange(_http("POST", PREDICT, json.dumps({"instances": [row]}).encode()))
    assert status == 200, body
    try:
        yield SimpleNamespace(port=port, proc=proc, log=log, client=client, model=model, row=row,
                              prediction=json.loads(body)["predictions"], rss_before=_rss_mb(proc.pid))
    finally:
        client.close()
        stop_server(proc)
        drain.join(timeout=5)


# -- clients ---------------------------------------------------------------------------------------------------------
class Client:
    """One keep-alive connection for well-formed requests; a new one when the server closed it."""

    def __init__(self, port: int):
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of the answer to ``request``, which must come within ANSWER_S."""
        for attempt in (1, 2):
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=ANSWER_S)
            started = time.monotonic()
            try:
                self.sock.sendall(request)
                answer = self._read(started + ANSWER_S)
            except (ConnectionResetError, BrokenPipeError, EOFError):
                if attempt == 2 or self.buf:
                    raise
                self.close()  # closed while idle (keep-alive timeout): once more on a new connection
                continue
            if answer[1].get("connection", "").lower() == "close":
                self.close()
            return answer
        raise AssertionError("unreachable")

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        assert left > 0, f"no answer within {ANSWER_S} s; received so far: {self.buf[:300]!r}"
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"no answer within {ANSWER_S} s; received so far: {self.buf[:300]!r}") from None
        if not chunk:
            raise EOFError
        self.buf += chunk

    def _read(self, deadline: float) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        while len(self.buf) < length:
            self._fill(deadline)
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(status_line.split()[1]), headers, body


def _raw_exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    """Send ``data`` on a new connection, half-close it, and read until the server closes: (what came, whether the
    server closed within ANSWER_S)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_S) as sock:
        deadline = time.monotonic() + ANSWER_S
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # refused and closed before all of it was read: what it said is read below
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return received, False
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return received, False
            except ConnectionResetError:  # closed with our bytes unread: a close all the same
                return received, True
            if not chunk:
                return received, True
            received += chunk


def _http(method: str, path: str, body: bytes | None = None, content_type: str = "application/json",
          extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if body is not None:
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode("latin-1") + (body or b"")


def _check_answer(status: int, headers: dict[str, str], body: bytes, allowed: set[int]) -> dict:
    assert status in allowed, (status, body[:500])
    assert headers["content-type"] == "application/json", headers
    answer = json.loads(body)
    if status >= 400:
        assert set(answer) == {"error"} and isinstance(answer["error"], str) and answer["error"], answer
    return answer


# -- JSON strategies -------------------------------------------------------------------------------------------------
# Drawn mostly from pools: Hypothesis spends ~1 ms per example and more per draw, and 10,000 must fit in CI.
SCALARS = [None, True, False, 0, -0.0, 1, -1, 0.5, 1e-300, 5e-324, 1.7976931348623157e308, 2 ** 31, 2 ** 53 + 1,
           2 ** 63 - 1, 2 ** 63, -(2 ** 63) - 1, 2 ** 64, 10 ** 30, -(10 ** 30), float("nan"), float("inf"),
           float("-inf"), "", " ", "paris", "PARIS", "2020-01-01", "2020-02-30", "1e3", "NaN", "null", "true", "\u0000",
           "\ufeff", "\u202e", "\U0001f600", "\udc80", "\ud800x", "\u00e9" * 40, "[" * 40, '{"' * 20, "\\", '"',
           "a" * 3000, "\r\n", "%00", "../.."]
keys = st.sampled_from([*COLUMNS, "", "instances", "inputs", "data", "name", "\u0000", "\ud800", "__proto__"])
scalars = st.sampled_from(SCALARS) | st.integers(-(2 ** 70), 2 ** 70) | st.floats() | st.text(max_size=8)
# up to three levels, with no retries (st.recursive redraws whatever overruns its size); deep_text nests deeper
shallow = scalars | st.lists(scalars, max_size=3) | st.dictionaries(keys, scalars, max_size=3)
json_values = shallow | st.lists(shallow, max_size=3) | st.dictionaries(keys, shallow, max_size=3)
valid_values = {
    "age": st.sampled_from([None, 0, 17, 39.5, 90, 120.25]),
    "income": st.sampled_from([None, 0.0, 12000.5, 1e6, 3]),
    "city": st.sampled_from([None, "paris", "lyon", "nice", "lille", "brest", "nowhere"]),
    "member": st.sampled_from([None, True, False]),
    "signup": st.sampled_from([None, "2020-01-01", "2021-06-30", "2020-01-01T10:00:00", "1970-01-01"]),
}
good_rows = st.fixed_dictionaries(valid_values)
rows = st.fixed_dictionaries({c: v | scalars for c, v in valid_values.items()}, optional={"extra": json_values})
# tokens no JSON writer produces, spliced in as text
odd_tokens = st.sampled_from(["NaN", "-NaN", "Infinity", "-Infinity", "nan", "1e999", "-1e999", "1e-999", "0x10",
                              "1_000", "+1", "01", "1.", ".5", "-", "9" * 400, "-" + "9" * 5000, '"\\ud800"',
                              '"\\udc00\\ud800"', '"\\u0000"', '"\\x41"', "'x'", "tru", "nul", "[", "]", "{}", "[]",
                              '"' + "\\" * 3 + '"', "1e+", "\u00a0", "/* */"])


def _deep(depth: int, opener: str) -> str:
    closer = {"[": "]", '{"a":': "}", '[{"a":': "}]"}[opener]
    return opener * depth + "1" + closer * depth


deep_text = st.builds(_deep, st.integers(1, 5000) | st.sampled_from([31, 32, 33, 1023, 1024, 1025, 100_000]),
                      st.sampled_from(["[", '{"a":', '[{"a":']))


@st.composite
def rest_bodies(draw) -> bytes:
    kind, encoding = draw(st.tuples(
        st.sampled_from(["value", "instances", "rows", "good", "inputs", "token", "deep", "explain"]),
        st.sampled_from(["ascii"] * 5 + ["utf-8"] * 3 + ["utf-8-sig", "utf-16", "latin-1"])))
    dumps = functools.partial(json.dumps, ensure_ascii=encoding == "ascii")
    if kind == "value":
        text = dumps(draw(json_values))
    elif kind == "instances":
        text = dumps({"instances": draw(json_values)})
    elif kind == "rows":
        text = dumps({"instances": draw(st.lists(rows, min_size=1, max_size=3))})
    elif kind == "good":  # up to 210 rows: past the micro-batch size and the depth check's bracket count
        batch = draw(st.lists(good_rows, min_size=1, max_size=3)) * draw(st.sampled_from([1, 1, 2, 20, 70]))
        text = dumps({"instances": batch})
    elif kind == "inputs":
        columns = draw(st.dictionaries(keys, st.lists(scalars, max_size=3) | json_values, max_size=5))
        text = dumps({"inputs": columns})
    elif kind == "token":
        row = {c: f"@{c}@" for c in COLUMNS}
        text = dumps({"instances": [row]})
        for c in draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=2, unique=True)):
            text = text.replace(f'"@{c}@"', draw(odd_tokens))
        text = text.replace('"@age@"', "30").replace('"@income@"', "1000").replace('"@city@"', '"paris"')
        text = text.replace('"@member@"', "true").replace('"@signup@"', '"2020-01-01"')
    elif kind == "deep":
        deep = draw(deep_text)
        text = draw(st.sampled_from([deep, '{"instances": ' + deep + "}", '{"instances": [{"age": ' + deep + "}]}",
                                     '{"instances": [{"age": 1}], "x": ' + deep + "}"]))
    else:
        text = dumps({"instances": [draw(good_rows)], "explain": draw(json_values)})
    if encoding == "ascii":
        return text.encode()
    return text.encode(encoding, errors="surrogatepass" if encoding.startswith("utf") else "replace")


tensor_names = st.sampled_from([*COLUMNS, "", "x", "\u00e9"])
datatypes = st.sampled_from(["FP32", "FP64", "BYTES", "BOOL", "INT64", "INT8", "UINT8", "FP16", "fp32", "STRING", ""])
shapes = st.sampled_from([None, [], [1], [2], [0], [1, 1], [-1], [2 ** 63], [2 ** 62, 4], [1] * 17, "1", [1.5]])


@st.composite
def v2_tensors(draw) -> dict:
    tensor = {"name": draw(tensor_names), "datatype": draw(datatypes), "shape": draw(shapes),
              "data": draw(st.lists(scalars, max_size=3) | st.lists(st.lists(scalars, max_size=2), max_size=2)
                           | json_values)}
    if tensor["shape"] is None:
        del tensor["shape"]
    if draw(st.integers(0, 4)) == 0:
        tensor["parameters"] = draw(json_values)
    return tensor


def _good_tensors(row: dict) -> list[dict]:
    return [{"name": c, "shape": [1], "datatype": "FP32" if c in ("age", "income") else "BYTES", "data": [row[c]]}
            for c in COLUMNS]


@st.composite
def v2_bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["value", "tensors", "good", "fields", "deep"]))
    if kind == "value":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        return ('{"inputs": [{"name": "age", "datatype": "FP32", "data": ' + draw(deep_text) + "}]}").encode()
    tensors = draw(st.lists(v2_tensors(), max_size=5)) if kind == "tensors" else _good_tensors(draw(good_rows))
    doc: dict = {"inputs": tensors}
    if kind == "fields":
        names = st.sampled_from(["label", "probabilities", "prediction", ""])
        outputs = st.lists(st.fixed_dictionaries({"name": names}, optional={"parameters": json_values}), max_size=2)
        for field in draw(st.lists(st.sampled_from(["id", "parameters", "outputs"]), unique=True)):
            doc[field] = draw(outputs if field == "outputs" and draw(st.booleans()) else json_values)
    return json.dumps(doc).encode(errors="surrogatepass")


# -- raw HTTP strategies ---------------------------------------------------------------------------------------------
methods = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE", "get",
                           "PRI", "BREW", "G\x00T", "POST POST", ""]) | st.binary(max_size=6).map(bytes.hex)
paths = (st.sampled_from([PREDICT, INFER, "/v2/health/live", "/v2/health/ready", "/v2", "/metrics", "/openapi.json",
                          "/v2/models/churn", "/v2/models/churn/ready", "/v2/models/churn/versions/1/infer",
                          "/v2/models/churn/versions/99/infer", "/v1/models/churn/footprint",
                          "/admin/models/churn/reload", "/v1/models/nope/predict", "/v1/models/%63hurn/predict",
                          "/v1/models/churn%2Fpredict", "/v1/models/churn/predict%00", "/%2e%2e/%2e%2e/etc/passwd",
                          "/v2/../v2/health/live", "/../../etc/passwd", "//v2//health//live", "/v2/health/live/",
                          "*", "http://127.0.0.1/v2/health/live", "/?" + "a" * 3000, "/" + "x/" * 2000,
                          "/v1/models/" + "%" * 50 + "/predict", "/v2/models/\u00e9/infer", "/%ff%fe", "/%", ""])
         | st.text(max_size=8).map(lambda t: "/" + t))
versions = st.sampled_from(["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.12", "http/1.1", "HTTP/",
                                               ""])
header_lines = st.sampled_from([
    "Content-Type: application/json", "Content-Type: application/octet-stream", "Content-Type: text/plain",
    "Content-Type: image/png", "Content-Type: message/rfc822", "Content-Type:", "Content-Length: 0",
    "Content-Length: -1", "Content-Length: 99999999999999999999999", "Content-Length: 1e3", "Content-Length: 5, 5",
    "Content-Length: 3", "Content-Length: 20000000", "Transfer-Encoding: chunked", "Transfer-Encoding: gzip",
    "Transfer-Encoding: chunked, chunked", "Transfer-Encoding: identity", "Content-Encoding: gzip",
    "Expect: 100-continue", "Expect: 200-ok", "Connection: close", "Connection: keep-alive", "Connection: upgrade",
    "Upgrade: websocket", "Host:", "Host: a, b", "Inference-Header-Content-Length: 10",
    "Inference-Header-Content-Length: -3", "Inference-Header-Content-Length: 99999999999999999999999",
    "Inference-Header-Content-Length: " + "9" * 5000, f"Authorization: Bearer {ADMIN_TOKEN}", "Authorization: x",
    " folded: line", "\tfolded", "X-Empty:", ": no name", "No-Colon", "X-Long: " + "a" * 9000,
    "X-Bin: \x00\x01\x7f", "X-Latin: \xe9\xff", "Bad Name: x", "X-Crlf: a\rb",
]) | st.binary(max_size=10).map(lambda b: b.translate(None, b"\r\n").decode("latin-1"))
chunk_bodies = st.lists(st.binary(max_size=40), max_size=4).map(
    lambda parts: b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n")
raw_bodies = (st.binary(max_size=200) | chunk_bodies
              | st.sampled_from([b'{"instances": [{"age": 40, "income": 1.5, "city": "paris", "member": true, '
                                 b'"signup": "2020-01-01"}]}', b'{"instances": [{"age": NaN}]}', b'[' * 5000, b"{",
                                 b'{"inputs": [{"name": "age", "datatype": "FP32", "shape": [1], "data": [1]}]}',
                                 b"0\r\n\r\n", b"fffffffffffffffff\r\n", b"5\r\nab\r\n0\r\n\r\n", b"-1\r\n\r\n",
                                 b"3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n", b"\r\n\r\n", b"G" * 300]))


@st.composite
def raw_requests(draw) -> bytes:
    method, path = draw(methods), draw(paths)
    line = f"{method} {path} {draw(versions)}"
    if draw(st.integers(0, 9)) == 0:
        line = draw(st.sampled_from([line.replace(" ", "  "), line.replace(" ", "\t"), line + " extra", line[:-3],
                                     line.replace(" ", "")]))
    lines = [line] + draw(st.lists(header_lines, max_size=6))
    if draw(st.booleans()):
        lines.insert(1, "Host: 127.0.0.1")
    body = draw(raw_bodies)
    if draw(st.booleans()):
        lines.append(f"Content-Length: {len(body) + draw(st.sampled_from([0, 0, 0, -1, 1, 10]))}")
    eol = draw(st.sampled_from(["\r\n"] * 8 + ["\n", "\r"]))
    data = (eol.join(lines) + eol + eol).encode("utf-8", errors="surrogatepass") + body
    for position, op, byte in draw(st.lists(st.tuples(st.floats(0, 1), st.sampled_from("fid"),
                                                      st.integers(0, 255)), max_size=3)):
        i = int(position * len(data))
        data = (data[:i] + bytes([byte]) + data[i + 1:] if op == "f" else
                data[:i] + bytes([byte]) + data[i:] if op == "i" else data[:i] + data[i + 1:])
    if draw(st.integers(0, 4)) == 0:  # a pipelined second request behind it
        data += _http("GET", "/v2/health/live")
    return data


def _binary_tensor(draw, name: str) -> tuple[dict, bytes]:
    datatype = draw(st.sampled_from(["FP32", "FP64", "BYTES", "BOOL", "INT64", "UINT8", "FP16", "BF16", "BYTES"]))
    if datatype == "BYTES":
        elements = draw(st.lists(st.binary(max_size=12), max_size=3))
        raw = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    else:
        raw = draw(st.binary(max_size=40))
    tensor = {"name": name, "datatype": datatype, "parameters": {"binary_data_size": len(raw)}}
    if draw(st.integers(0, 3)) == 0:
        tensor["parameters"]["binary_data_size"] = draw(st.integers(-5, 200) | st.sampled_from([1.5, "8", None]))
    if draw(st.booleans()):
        tensor["shape"] = draw(st.lists(st.integers(0, 10), max_size=3))
    return tensor, raw


@st.composite
def binary_v2_requests(draw) -> bytes:
    names = draw(st.lists(tensor_names, min_size=1, max_size=5))
    tensors, blobs = zip(*(_binary_tensor(draw, n) for n in names), strict=True)
    doc: dict = {"inputs": list(tensors)}
    if draw(st.booleans()):
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": draw(st.booleans())}}
                          for n in draw(st.lists(st.sampled_from(["label", "probabilities", "x"]), max_size=2))]
    head = json.dumps(doc).encode()
    body = head + b"".join(blobs) + draw(st.sampled_from([b""] * 6 + [b"\x00", b"extra"]))
    declared = draw(st.sampled_from([str(len(head))] * 6 + [str(len(head) + 1), str(len(head) - 1), "0",
                                                           str(len(body) + 5), "abc", "", " 12"]))
    ctype = draw(st.sampled_from(["application/octet-stream", "application/json", "", "text/plain"]))
    extra = f"Inference-Header-Content-Length: {declared}\r\n"
    return _http("POST", draw(st.sampled_from([INFER, "/v2/models/churn/versions/1/infer", PREDICT])), body,
                 ctype, extra)


def _assert_raw_answered(server, data: bytes) -> None:
    received, closed = _raw_exchange(server.port, data)
    statuses = [int(s) for s in STATUS.findall(received)]
    assert all(s < 500 for s in statuses), (statuses, received[:800])
    assert closed, f"the server neither answered and closed nor closed within {ANSWER_S} s: {received[:300]!r}"
    if received:
        assert statuses, f"bytes that are no HTTP answer: {received[:300]!r}"


# -- the fuzz tests: 3,000 + 2,500 + 3,000 + 1,500 = 10,000 cases ------------------------------------------------------
@settings(max_examples=3000, **FUZZ)
@given(body=rest_bodies())
def test_fuzz_rest_predict(server, body):
    answer = _check_answer(*server.client.exchange(_http("POST", PREDICT, body)), {200, 400, 413, 415, 422, 429})
    if "predictions" in answer:
        assert len(answer["predictions"]) == len(answer["probabilities"]) >= 1


@settings(max_examples=2500, **FUZZ)
@given(body=v2_bodies())
def test_fuzz_v2_infer_json(server, body):
    answer = _check_answer(*server.client.exchange(_http("POST", INFER, body)), {200, 400, 413, 415, 422, 429})
    if "outputs" in answer:
        assert {o["name"] for o in answer["outputs"]} <= {"label", "probabilities"}


@settings(max_examples=3000, **FUZZ)
@given(data=raw_requests())
def test_fuzz_raw_http(server, data):
    _assert_raw_answered(server, data)


@settings(max_examples=1500, **FUZZ)
@given(data=binary_v2_requests())
def test_fuzz_binary_v2(server, data):
    _assert_raw_answered(server, data)


def test_after_the_fuzzing_the_server_is_well(server):
    """Last in the module: memory bounded, a normal prediction answered as before, no traceback logged."""
    growth = _rss_mb(server.proc.pid) - server.rss_before
    assert growth < RSS_GROWTH_MB, f"RSS grew by {growth:.0f} MB"
    client = Client(server.port)
    try:
        body = json.dumps({"instances": [server.row]}).encode()
        status, headers, body = client.exchange(_http("POST", PREDICT, body))
    finally:
        client.close()
    assert _check_answer(status, headers, body, {200})["predictions"] == server.prediction
    assert server.proc.poll() is None
    assert not [line for line in server.log if "Traceback" in line or "unexpected error" in line], server.log[-40:]


@pytest.mark.parametrize("target", ["example.com:443", "HTTP/2.0"])
def test_connect_to_an_authority_is_answered(server, target):
    received, closed = _raw_exchange(server.port, f"CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert closed and [int(s) for s in STATUS.findall(received)] == [400], received[:300]
