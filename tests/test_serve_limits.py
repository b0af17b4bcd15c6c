"""The HTTP layer's bounds (serve/http.py), each attacked over raw sockets on loopback.

One ``tandem serve`` with small limits for most tests: pipelining behind micro-batched answers, header
bytes and lines (431), the request target (414), the Host header (400), slow headers and bodies (408, then
the connection closes), the connection cap (503), the open-file limit (no EMFILE), and the pipelining depth
(in process: how far the protocol reads ahead of its answers).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from types import SimpleNamespace

import pytest

from helpers import free_port, linear_churn, mixed_frame, records, start_server
from test_serve_http import Conn, _predict_body, _request

PREDICT = "/v1/models/churn/predict"
LIVE = "/v2/health/live"
HEADER_BYTES = 2048
HEADERS = 30
HEADER_TIMEOUT = 2
BODY_TIMEOUT = 3
LIMITS = ("--max-header-bytes", str(HEADER_BYTES), "--max-headers", str(HEADERS), "--header-timeout",
          str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT), "--max-pipeline", "8")


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode(errors="replace") if err else ""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-limits-home")
    linear_churn(home)[1]()
    x = mixed_frame(40, task="binary", seed=7).drop(columns=["churn"])
    port = free_port()
    proc = start_server(home, port, *LIMITS, stdout=subprocess.DEVNULL)
    state = SimpleNamespace(port=port, home=home, rows=records(x), proc=proc)
    yield state
    err = _stop(proc)
    assert "Traceback" not in err, err


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _one_prediction(port: int, row: dict) -> dict:
    with Conn(port) as c:
        c.send(_request("POST", PREDICT, _predict_body([row])))
        answer = c.read_answer()
    assert answer.status == 200, answer.body
    return answer.json()


# -- pipelining behind micro-batched answers --------------------------------------------------------------
def test_pipelined_predictions_interleaved_with_immediate_answers_all_come_back_in_order(served):
    """1,000 requests on one connection, written by one thread while another reads: predictions (answered later,
    from a micro-batch) alternate with liveness checks (answered at once). Every answer comes back, in order."""
    rows = served.rows
    expected = [_one_prediction(served.port, rows[i % len(rows)])["predictions"][0] for i in range(len(rows))]
    n = 1000
    with Conn(served.port) as c:
        def write() -> None:  # in bursts of 1 to 12 requests a write
            requests = [_request("GET", LIVE) if i % 2 else _request("POST", PREDICT, _predict_body(
                [rows[(i // 2) % len(rows)]])) for i in range(n)]
            i = 0
            while i < n:
                burst = 1 + (i * 7) % 12
                c.send(b"".join(requests[i:i + burst]))
                i += burst

        writer = threading.Thread(target=write)
        writer.start()
        for i in range(n):
            answer = c.read_answer()
            assert answer.status == 200, (i, answer.body)
            if i % 2:
                assert answer.json() == {"live": True}, i
            else:
                assert answer.json()["predictions"] == [expected[(i // 2) % len(rows)]], i
        writer.join()
        assert c.still_open()


@pytest.mark.parametrize("depth", [2, 3, 5, 10])
def test_a_request_after_pipelined_ones_is_answered(served, depth):
    """A burst of pipelined predictions, then (once their answers are read) one more request on the same
    connection: it is answered (reading resumed after the last micro-batched answer)."""
    for _ in range(5):
        with Conn(served.port) as c:
            c.send(b"".join(_request("POST", PREDICT, _predict_body([served.rows[i]])) for i in range(depth)))
            for _ in range(depth):
                assert c.read_answer().status == 200
            c.send(_request("POST", PREDICT, _predict_body([served.rows[0]])))
            assert c.read_answer().status == 200


def test_thousands_of_pipelined_requests_in_one_write(served):
    """2,000 requests in one write, read only after they are all sent: the server reads ahead a few at a time
    (its pipelining depth), so nothing is lost, and every answer comes in order."""
    n = 2000
    with Conn(served.port) as c:
        c.send(b"".join(_request("GET", LIVE if i % 3 else "/v2/health/ready") for i in range(n)))
        for i in range(n):
            answer = c.read_answer()
            assert answer.status == 200
            assert answer.json() == ({"live": True} if i % 3 else {"ready": True}), i


# -- header bounds --------------------------------------------------------------------------------------
def _refused(c: Conn, status: int, words: str) -> None:
    answer = c.read_answer()
    assert answer.status == status, answer.body
    assert words in answer.json()["error"], answer.json()
    assert answer.headers["connection"] == "close"
    assert c.closed_by_server()


def test_header_value_over_the_limit_is_431(served):
    with Conn(served.port) as c:
        c.send(_request("GET", LIVE, headers={"X-Big": "a" * (HEADER_BYTES + 1)}))
        _refused(c, 431, f"over the limit of {HEADER_BYTES} bytes")


def test_header_name_over_the_limit_is_431(served):
    with Conn(served.port) as c:
        c.send(_request("GET", LIVE, headers={"X-" + "n" * HEADER_BYTES: "1"}))
        _refused(c, 431, f"over the limit of {HEADER_BYTES} bytes")


def test_too_many_header_lines_is_431(served):
    with Conn(served.port) as c:
        c.send(_request("GET", LIVE, headers={f"X-{i}": "1" for i in range(HEADERS + 1)}))
        _refused(c, 431, f"more than {HEADERS} header lines")


def test_a_repeated_header_counts_every_line(served):
    raw = _request("GET", LIVE).replace(b"\r\n\r\n", b"\r\n" + b"X-Same: 1\r\n" * (HEADERS + 1) + b"\r\n")
    with Conn(served.port) as c:
        c.send(raw)
        _refused(c, 431, f"more than {HEADERS} header lines")


def test_headers_at_the_limit_are_served(served):
    headers = {f"X-{i}": "v" for i in range(HEADERS - 1)}  # (+ Host)
    with Conn(served.port) as c:
        c.send(_request("GET", LIVE, headers=headers))
        assert c.read_answer().status == 200


def test_a_header_streamed_forever_is_cut_at_the_limit(served):
    """One client streams a header value without end: the server answers 431 and closes once the limit is
    passed (give or take one read), instead of buffering megabytes; its memory stays put."""
    before = _rss_kb(served.proc.pid)
    sent = 0
    with Conn(served.port) as c:
        c.send(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Stream: ")
        try:
            while sent < 20 * 1024 * 1024:
                c.sock.sendall(b"a" * 4096)
                sent += 4096
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = c.read_answer()
    assert answer.status == 431, answer.body
    assert sent < 4 * 1024 * 1024, f"the server kept reading {sent} bytes of one header"
    assert _rss_kb(served.proc.pid) - before < 20 * 1024


def test_request_target_over_the_limit_is_414(served):
    with Conn(served.port) as c:
        c.send(_request("GET", "/v2/health/live?" + "q" * 9000))
        _refused(c, 414, "request target over the limit")


# -- the Host header ------------------------------------------------------------------------------------
def test_http_1_1_without_host_is_400(served):
    with Conn(served.port) as c:
        c.send(b"GET /v2/health/live HTTP/1.1\r\n\r\n")
        _refused(c, 400, "needs a Host header")


def test_two_host_headers_are_400(served):
    with Conn(served.port) as c:
        c.send(b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        _refused(c, 400, "more than one Host header")


def test_http_1_0_needs_no_host(served):
    with Conn(served.port) as c:
        c.send(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
        assert c.read_answer().status == 200


# -- slow clients ---------------------------------------------------------------------------------------
def _cut_after(c: Conn, started: float, limit: float, words: str) -> float:
    answer = c.read_answer()
    took = time.monotonic() - started
    assert answer.status == 408, answer.body
    assert words in answer.json()["error"]
    assert c.closed_by_server()
    assert limit <= took <= limit + 2.5, took  # the sweep runs once a second
    return took


def test_headers_sent_too_slowly_get_408_and_the_connection_closes(served):
    with Conn(served.port) as c:
        c.send(b"POST /v1/models/churn/predict HTTP/1.1\r\nHost: x\r\n")
        _cut_after(c, time.monotonic(), HEADER_TIMEOUT, f"headers did not arrive within {HEADER_TIMEOUT} s")


def test_a_byte_a_second_does_not_keep_headers_open(served):
    """A slowloris client that keeps sending (one header byte every 0.5 s) is cut all the same."""
    with Conn(served.port) as c:
        started = time.monotonic()
        c.send(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        stop = threading.Event()

        def drip() -> None:
            while not stop.wait(0.5):
                try:
                    c.sock.send(b"a")
                except OSError:
                    return

        dripper = threading.Thread(target=drip)
        dripper.start()
        try:
            _cut_after(c, started, HEADER_TIMEOUT, "headers did not arrive")
        finally:
            stop.set()
            dripper.join()


def test_a_body_sent_too_slowly_gets_408(served):
    body = _predict_body([served.rows[0]])
    with Conn(served.port) as c:
        c.send(_request("POST", PREDICT, body)[: -len(body) + 5])
        _cut_after(c, time.monotonic(), BODY_TIMEOUT, f"body did not arrive within {BODY_TIMEOUT} s")


def test_a_slow_client_does_not_hold_up_others(served):
    with Conn(served.port) as slow:
        slow.send(b"POST /v1/models/churn/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        assert _one_prediction(served.port, served.rows[1])["predictions"]
        assert slow.read_answer().status == 408


# -- option ranges --------------------------------------------------------------------------------------
@pytest.mark.parametrize("option, value, words", [
    ("--port", "99999", "--port must be a port from 1 to 65535"),
    ("--max-body-bytes", "-1", "--max-body-bytes must be at least 1 byte"),
    ("--max-queue-rows", "0", "--max-queue-rows must be at least 1 row"),
    ("--request-timeout", "-1", "--request-timeout must be more than 0"),
    ("--header-timeout", "0", "--header-timeout must be more than 0"),
    ("--max-connections", "0", "--max-connections must be a whole number from 1"),
    ("--max-header-bytes", "10", "--max-header-bytes must be a whole number from 256"),
    ("--max-pipeline", "0", "--max-pipeline must be a whole number from 1"),
])
def test_serve_options_out_of_range_are_one_line_errors(served, option, value, words):
    args = ["serve", "churn", option, value] + ([] if option == "--port" else ["--port", str(free_port())])
    done = subprocess.run([sys.executable, "-m", "tandem.cli", *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, TANDEM_HOME=str(served.home)))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tandem: error: ") and words in lines[0], done.stderr


# -- connections ----------------------------------------------------------------------------------------
def _connect_many(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        socks.append(s)
    return socks


def _first_answer(s: socket.socket, wait: float) -> bytes:
    s.settimeout(wait)
    try:
        return s.recv(65536)
    except TimeoutError:
        return b""


def test_connections_beyond_the_cap_get_503_and_are_closed(tmp_path):
    linear_churn(tmp_path)[1]()
    port = free_port()
    proc = start_server(tmp_path, port, "--max-connections", "5", "--header-timeout", "2",
                        stdout=subprocess.DEVNULL)
    try:
        held = _connect_many(port, 5)
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        answer = _first_answer(extra, 5)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"retry-after: 1\r\n" in answer and b"connection: close\r\n" in answer
        assert b"maximum of 5 connections" in answer
        assert _first_answer(extra, 5) == b""  # closed
        extra.close()
        for s in held:  # the held ones are cut by their header time limit, and room comes back
            assert _first_answer(s, 6).startswith(b"HTTP/1.1 408 ")
            s.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=10) as resp:
            assert resp.status == 200
    finally:
        err = _stop(proc)
    assert "Traceback" not in err, err


def test_slow_clients_beyond_the_open_file_limit_never_reach_emfile(tmp_path):
    """The file limit at 256 and 300 slow clients: the server keeps files for itself (no 'Too many open files'
    anywhere, the footprint meter included), answers the connections it cannot hold 503, cuts the slow ones in
    the header time limit, and serves normally afterwards."""
    linear_churn(tmp_path)[1]()
    port = free_port()

    def low_file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    env = dict(os.environ, TANDEM_HOME=str(tmp_path), TANDEM_SERVE_FOOTPRINT_WINDOW_S="1")
    proc = subprocess.Popen([sys.executable, "-m", "tandem.cli", "serve", "churn", "--port", str(port),
                             "--header-timeout", "2"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=low_file_limit)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        started = time.monotonic()
        socks = _connect_many(port, 300)
        answers = [_first_answer(s, 0.01 if i < 150 else 3) for i, s in enumerate(socks)]
        refused = sum(a.startswith(b"HTTP/1.1 503 ") for a in answers)
        assert refused >= 300 - (256 - 64), refused  # the cap leaves 64 files to the server
        held = [s for s, a in zip(socks, answers, strict=True) if not a]
        for s in held:
            assert _first_answer(s, 8).startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 2 + 3 + 6
        for s in socks:
            s.close()
        row = records(mixed_frame(5, seed=1).drop(columns=["churn"]))[0]
        for _ in range(1200):  # a footprint window of >= 1,000 predictions opens files of its own
            body = json.dumps({"instances": [row]}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}{PREDICT}", data=body,
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200
    finally:
        err = _stop(proc)
    assert "Too many open files" not in err and "EMFILE" not in err, err
    assert "Traceback" not in err, err


# -- the pipelining depth, in process ------------------------------------------------------------------
def test_the_protocol_reads_no_further_ahead_than_its_pipelining_depth(served):
    """A real ServeApp (the churn model, micro-batching on) behind TandemHTTP on a loopback socket, in this
    process: a client writes 3,000 pipelined predictions at once. Predictions are answered later (from a
    micro-batch), so requests wait behind them: the protocol holds at most its depth (plus what one 4 KiB
    slice of input holds) of parsed requests waiting, leaves the rest unparsed, and answers all 3,000."""
    import uvicorn
    from uvicorn.server import ServerState

    from tandem.registry import Registry
    from tandem.serve import http as tandem_http
    from tandem.serve.app import ServeApp
    from tandem.serve.limits import HTTPLimits
    from tandem.serve.models import load_model

    depth = 16
    app = ServeApp([load_model("churn", Registry(served.home))], max_batch_rows=64,
                   limits=HTTPLimits(max_pipeline=depth))
    config = uvicorn.Config(app, http=tandem_http.TandemHTTP, log_level="warning")
    config.load()
    state = ServerState()
    request = _request("POST", PREDICT, _predict_body([served.rows[0]]))
    n = 3000
    seen = {"most_waiting": 0, "answers": 0}

    def look() -> None:
        for conn in state.connections:
            seen["most_waiting"] = max(seen["most_waiting"], len(conn.waiting))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: tandem_http.TandemHTTP(config, state, _loop=loop),
                                          "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
        writer.write(request * n)
        data = b""
        while data.count(b"HTTP/1.1 200 OK") < n:
            look()
            chunk = await asyncio.wait_for(reader.read(1 << 16), 20)
            assert chunk, "connection closed early"
            data += chunk
        seen["answers"] = data.count(b"HTTP/1.1 200 OK")
        writer.close()
        server.close()

    asyncio.run(main())
    assert seen["answers"] == n
    assert 2 <= seen["most_waiting"] <= depth + 4096 // len(request) + 1, seen
