"""tandem's own HTTP/1.1 protocol (serve/http.py), spoken over raw sockets, and the ASGI adapter of ServeApp.

One quick linear model and one ``tandem serve --max-body-bytes 2000 --admin-token ...`` for the whole module:
keep-alive, pipelining, ``Expect: 100-continue``, chunked bodies, the body size limit, malformed requests,
HTTP/1.0, ``Connection: close``, HEAD, the idle sweep and percent-encoded paths, each checked byte for byte.
A reload (``POST /admin/models/churn/reload``) is always answered later, from a task: pipelined behind it,
a request must wait for its answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import threading
import time
from email.utils import parsedate_to_datetime
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import free_port, linear_churn, mixed_frame, records, start_server, stop_server

MAX_BODY = 2000
ADMIN_TOKEN = "sekret"
TIMEOUT_S = 10.0
PREDICT = "/v1/models/churn/predict"
LIVE_BODY = b'{"live":true}'


# -- helpers -----------------------------------------------------------------------------------------------
class Answer(SimpleNamespace):
    status: int
    reason: str
    version: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class Conn:
    """One client connection: writes raw bytes, reads and parses answers itself."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.buf = b""

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"connection closed by the server; unparsed bytes: {self.buf[:200]!r}")
        self.buf += chunk

    def read_head(self) -> tuple[str, int, str, dict[str, str]]:
        """(version, status, reason, headers) of the next answer; header names lower-case, each named once."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        match = re.fullmatch(r"(HTTP/1\.[01]) (\d{3}) ?(.*)", status_line)
        assert match, f"bad status line {status_line!r}"
        headers: dict[str, str] = {}
        for line in lines:
            name, sep, value = line.partition(":")
            assert sep and name == name.strip(), f"bad header line {line!r}"
            assert name.lower() not in headers, f"header {name} sent twice"
            headers[name.lower()] = value.strip()
        return match.group(1), int(match.group(2)), match.group(3), headers

    def read_answer(self, *, head: bool = False) -> Answer:
        version, status, reason, headers = self.read_head()
        assert "transfer-encoding" not in headers, headers
        assert "content-length" in headers, (status, reason, headers)
        length = int(headers["content-length"])
        body = b""
        if not head:
            while len(self.buf) < length:
                self._fill()
            body, self.buf = self.buf[:length], self.buf[length:]
        return Answer(status=status, reason=reason, version=version, headers=headers, body=body)

    def closed_by_server(self, wait_s: float = TIMEOUT_S) -> bool:
        """True when the server closes the connection (orderly, no bytes left over) within ``wait_s``."""
        assert self.buf == b"", f"bytes after the last answer: {self.buf[:200]!r}"
        self.sock.settimeout(wait_s)
        try:
            rest = self.sock.recv(65536)
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(TIMEOUT_S)
        assert rest == b"", f"unexpected bytes from the server: {rest[:200]!r}"
        return True

    def still_open(self) -> bool:
        """Nothing arrives and the connection is not closed within a short wait."""
        return not self.closed_by_server(0.3)


def _request(method: str, path: str, body: bytes | None = None, *, version: str = "HTTP/1.1",
             headers: dict[str, str] | None = None, content_type: str | None = "application/json") -> bytes:
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1"]
    extra = dict(headers or {})
    if body is not None:
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        if "Transfer-Encoding" not in extra:
            lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if body is None else body)


def _predict_body(rows: list[dict], pad_to: int = 0) -> bytes:
    body = json.dumps({"instances": rows}).encode()
    return body + b" " * max(0, pad_to - len(body))  # JSON allows trailing white space


def _chunked(*parts: bytes) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]


def _assert_json_answer(answer: Answer, status: int) -> None:
    assert answer.status == status, (answer.status, answer.body)
    assert answer.version == "HTTP/1.1"
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["content-length"]) == len(answer.body)


def _too_large_message(size: int) -> str:
    return f"body of {size} bytes is over the limit of {MAX_BODY} bytes"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-http-home")
    model = linear_churn(home)[1]()
    x = mixed_frame(40, task="binary", seed=5).drop(columns=["churn"])
    port = free_port()
    proc = start_server(home, port, "--max-body-bytes", str(MAX_BODY), "--admin-token", ADMIN_TOKEN,
                        stdout=subprocess.DEVNULL)
    try:
        yield SimpleNamespace(port=port, home=home, model=model, x=x, rows=records(x))
    finally:
        stop_server(proc)


def _predict_alone(port: int, rows: list[dict]) -> dict:
    with Conn(port) as c:
        c.send(_request("POST", PREDICT, _predict_body(rows)))
        answer = c.read_answer()
    _assert_json_answer(answer, 200)
    return answer.json()


# -- keep-alive and pipelining ---------------------------------------------------------------------------------
def test_keep_alive_answers_two_requests_on_one_connection(served):
    with Conn(served.port) as c:
        c.send(_request("GET", "/v2/health/live"))
        first = c.read_answer()
        _assert_json_answer(first, 200)
        assert first.reason == "OK"
        assert first.body == LIVE_BODY
        assert "connection" not in first.headers
        assert parsedate_to_datetime(first.headers["date"]).year >= 2024
        assert c.still_open()

        c.send(_request("POST", PREDICT, _predict_body(served.rows[:3])))
        second = c.read_answer()
        _assert_json_answer(second, 200)
        assert "connection" not in second.headers
        assert parsedate_to_datetime(second.headers["date"]).year >= 2024
        body = second.json()
        assert body["model"] == "churn" and body["version"] == 1
        assert body["predictions"] == served.model.predict(served.x.iloc[:3]).tolist()
        assert c.still_open()

        c.send(_request("GET", "/v2/health/ready"))  # and it still answers
        third = c.read_answer()
        _assert_json_answer(third, 200)
        assert third.json() == {"ready": True}


def test_pipelined_requests_are_answered_in_order(served):
    rows = served.rows[:3]
    alone = [_predict_alone(served.port, [row]) for row in rows]
    assert [a["predictions"] for a in alone] == [[p] for p in served.model.predict(served.x.iloc[:3]).tolist()]
    assert len({json.dumps(a["probabilities"]) for a in alone}) == 3  # three different answers: order shows
    with Conn(served.port) as c:
        c.send(b"".join(_request("POST", PREDICT, _predict_body([row])) for row in rows))
        answers = [c.read_answer() for _ in rows]
        for answer, expected in zip(answers, alone, strict=True):
            _assert_json_answer(answer, 200)
            assert "connection" not in answer.headers
            assert answer.json() == expected
        assert c.still_open()


def test_pipelined_requests_then_connection_close(served):
    """Three GETs in one write, the last with Connection: close: three answers, then the server closes."""
    with Conn(served.port) as c:
        c.send(_request("GET", "/v2/health/live") + _request("GET", "/v2/models/nope")
               + _request("GET", "/v2/health/ready", headers={"Connection": "close"}))
        live, missing, ready = (c.read_answer() for _ in range(3))
        _assert_json_answer(live, 200)
        assert live.body == LIVE_BODY
        _assert_json_answer(missing, 404)
        assert missing.json() == {"error": "model 'nope' is not served here; served: churn"}
        _assert_json_answer(ready, 200)
        assert ready.json() == {"ready": True}
        assert ready.headers["connection"] == "close"
        assert c.closed_by_server()


# -- pipelining behind an answer given later (a reload runs off the event loop) ---------------------------------
RELOAD = (b"POST /admin/models/churn/reload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
          b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\nContent-Length: 0\r\n\r\n")


def _assert_reloaded(answer: Answer) -> None:
    _assert_json_answer(answer, 200)
    assert answer.json() == {"name": "churn", "previous_version": 1, "version": 1}
    assert "connection" not in answer.headers


def test_pipelined_behind_a_later_answer(served):
    with Conn(served.port) as c:
        c.send(RELOAD + _request("POST", PREDICT, _predict_body(served.rows[:2])) + _request("GET", "/v2/health/live"))
        _assert_reloaded(c.read_answer())
        predicted = c.read_answer()
        _assert_json_answer(predicted, 200)
        assert predicted.json()["predictions"] == served.model.predict(served.x.iloc[:2]).tolist()
        live = c.read_answer()
        _assert_json_answer(live, 200)
        assert live.body == LIVE_BODY
        assert c.still_open()


def test_pipelined_behind_a_later_answer_then_connection_close(served):
    with Conn(served.port) as c:
        c.send(RELOAD + _request("GET", "/v2/health/live", headers={"Connection": "close"}))
        _assert_reloaded(c.read_answer())
        live = c.read_answer()
        _assert_json_answer(live, 200)
        assert live.headers["connection"] == "close"
        assert c.closed_by_server()


def test_half_closed_client_gets_its_answers(served):
    """The client shuts its sending side after its requests: it still gets every answer, then the close."""
    with Conn(served.port) as c:
        c.send(RELOAD + _request("GET", "/v2/health/live"))
        c.sock.shutdown(socket.SHUT_WR)
        _assert_reloaded(c.read_answer())
        live = c.read_answer()
        _assert_json_answer(live, 200)
        assert live.body == LIVE_BODY
        assert c.closed_by_server()


LOST_ANSWERS = ("src bug: TandemHTTP closes the transport on a refused request (413 / 400) while an earlier "
                "pipelined request is still being answered: both answers are lost, the client gets EOF")


def _over_limit_request(served, *, expect: bool = False, chunked: bool = False) -> bytes:
    body = _predict_body(served.rows[:2], pad_to=5000)
    if chunked:
        return _request("POST", PREDICT, b"", headers={"Transfer-Encoding": "chunked"}) + b"".join(
            _chunked(body[:2500], body[2500:]))
    request = _request("POST", PREDICT, body, headers={"Expect": "100-continue"} if expect else None)
    return request[: -len(body)] if expect else request


@pytest.mark.parametrize("kind", ["content-length", "expect-100-continue", "chunked"])
def test_over_limit_request_pipelined_behind_a_later_answer(served, kind):
    refused = _over_limit_request(served, expect=kind == "expect-100-continue", chunked=kind == "chunked")
    with Conn(served.port) as c:
        c.send(RELOAD + refused)
        _assert_reloaded(c.read_answer())
        answer = c.read_answer()
        _assert_json_answer(answer, 413)
        assert "over the limit" in answer.json()["error"]
        assert answer.headers["connection"] == "close"
        assert c.closed_by_server()


def test_malformed_request_pipelined_behind_a_later_answer(served):
    with Conn(served.port) as c:
        c.send(RELOAD + b"GARBAGE\r\n\r\n")
        _assert_reloaded(c.read_answer())
        answer = c.read_answer()
        _assert_json_answer(answer, 400)
        assert answer.json()["error"].startswith("malformed HTTP request: ")
        assert c.closed_by_server()


EARLY_CONTINUE = ("src bug: on_headers_complete writes '100 Continue' at once, ahead of the answer still owed "
                  "to an earlier pipelined request")


def test_100_continue_pipelined_behind_a_later_answer_comes_after_it(served):
    body = _predict_body(served.rows[:1])
    head = _request("POST", PREDICT, body, headers={"Expect": "100-continue"})[: -len(body)]
    with Conn(served.port) as c:
        c.send(RELOAD + head)
        _assert_reloaded(c.read_answer())  # the first bytes back must be the reload's answer
        assert c.read_head() == ("HTTP/1.1", 100, "Continue", {})
        c.send(body)
        _assert_json_answer(c.read_answer(), 200)


# -- request bodies: 100-continue, chunked ---------------------------------------------------------------------
def test_expect_100_continue(served):
    body = _predict_body(served.rows[:4])
    head = _request("POST", PREDICT, body, headers={"Expect": "100-continue"})[: -len(body)]
    with Conn(served.port) as c:
        c.send(head)
        version, status, reason, headers = c.read_head()
        assert (version, status, reason, headers) == ("HTTP/1.1", 100, "Continue", {})
        assert c.buf == b""  # nothing more until the body is sent
        c.send(body)
        answer = c.read_answer()
        _assert_json_answer(answer, 200)
        assert answer.json()["predictions"] == served.model.predict(served.x.iloc[:4]).tolist()
        assert c.still_open()


def test_chunked_request_body(served):
    body = _predict_body(served.rows[:5])
    parts = [body[:7], body[7:60], body[60:]]
    head = _request("POST", PREDICT, b"", headers={"Transfer-Encoding": "chunked"})
    with Conn(served.port) as c:
        c.send(head)
        for chunk in _chunked(*parts):
            c.send(chunk)
            time.sleep(0.02)  # separate reads on the server
        answer = c.read_answer()
        _assert_json_answer(answer, 200)
        result = answer.json()
        assert result["predictions"] == served.model.predict(served.x.iloc[:5]).tolist()
        assert np.allclose(result["probabilities"], served.model.predict_proba(served.x.iloc[:5]), atol=1e-6)
        # the connection goes on: a second chunked request, all in one write
        c.send(head + b"".join(_chunked(body[:100], body[100:])))
        again = c.read_answer()
        _assert_json_answer(again, 200)
        assert again.json() == result


# -- the body size limit -------------------------------------------------------------------------------------
def test_body_under_the_limit_is_served(served):
    body = _predict_body(served.rows[:2], pad_to=MAX_BODY)
    assert len(body) == MAX_BODY
    with Conn(served.port) as c:
        c.send(_request("POST", PREDICT, body))
        answer = c.read_answer()
    _assert_json_answer(answer, 200)
    assert answer.json()["predictions"] == served.model.predict(served.x.iloc[:2]).tolist()


def test_declared_content_length_over_the_limit(served):
    body = _predict_body(served.rows[:2], pad_to=5000)
    request = _request("POST", PREDICT, body)
    head = request[: -len(body)]
    with Conn(served.port) as c:
        c.send(head)
        answer = c.read_answer()  # answered as soon as the headers are read, before any of the body
        _assert_json_answer(answer, 413)
        assert answer.reason == "Request Entity Too Large"
        assert answer.json() == {"error": _too_large_message(5000)}
        assert "over the limit" in answer.json()["error"]
        assert answer.headers["connection"] == "close"
        assert c.still_open()  # it waits for the body...
        c.send(body)  # ...which the client can send whole, without a reset
        assert c.closed_by_server()  # and then it closes


def test_declared_content_length_over_the_limit_sent_in_one_write(served):
    body = _predict_body(served.rows[:2], pad_to=300_000)
    with Conn(served.port) as c:
        c.send(_request("POST", PREDICT, body))  # the whole body goes out before the answer is read
        answer = c.read_answer()
        _assert_json_answer(answer, 413)
        assert answer.json() == {"error": _too_large_message(300_000)}
        assert answer.headers["connection"] == "close"
        assert c.closed_by_server()


def test_declared_content_length_over_the_limit_with_expect_100_continue(served):
    body = _predict_body(served.rows[:2], pad_to=MAX_BODY + 1)
    head = _request("POST", PREDICT, body, headers={"Expect": "100-continue"})[: -len(body)]
    with Conn(served.port) as c:
        c.send(head)
        answer = c.read_answer()  # the first thing back is the 413, no 100 Continue before it
        _assert_json_answer(answer, 413)
        assert answer.json() == {"error": _too_large_message(MAX_BODY + 1)}
        assert answer.headers["connection"] == "close"
        assert c.closed_by_server()


def test_chunked_body_growing_over_the_limit(served):
    body = _predict_body(served.rows[:2], pad_to=3000)
    head = _request("POST", PREDICT, b"", headers={"Transfer-Encoding": "chunked"})
    first, second, end = _chunked(body[:1500], body[1500:])
    with Conn(served.port) as c:
        c.send(head + first)
        assert c.still_open()  # 1500 bytes: under the limit, no answer yet
        c.send(second)
        answer = c.read_answer()
        _assert_json_answer(answer, 413)
        error = answer.json()["error"]
        match = re.fullmatch(rf"body of (\d+) bytes is over the limit of {MAX_BODY} bytes", error)
        assert match and MAX_BODY < int(match.group(1)) <= 3000, error
        assert answer.headers["connection"] == "close"
        c.send(end)  # the client finishes its body, then the server closes
        assert c.closed_by_server()


# -- malformed requests, HTTP/1.0, Connection: close, HEAD ----------------------------------------------------------
@pytest.mark.parametrize(("raw", "reason"), [
    (b"GARBAGE\r\n\r\n", "method"),
    (b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", "header"),
])
def test_malformed_request_is_answered_400_and_closed(served, raw, reason):
    with Conn(served.port) as c:
        c.send(raw)
        answer = c.read_answer()
        _assert_json_answer(answer, 400)
        assert answer.headers["connection"] == "close"
        body = answer.json()
        assert list(body) == ["error"]
        assert body["error"].startswith("malformed HTTP request: ")
        assert reason in body["error"].lower()
        assert c.closed_by_server()


def test_malformed_request_after_a_good_one_on_the_same_connection(served):
    with Conn(served.port) as c:
        c.send(_request("GET", "/v2/health/live"))
        _assert_json_answer(c.read_answer(), 200)
        c.send(b"NOT HTTP AT ALL\r\n\r\n")
        answer = c.read_answer()
        _assert_json_answer(answer, 400)
        assert answer.json()["error"].startswith("malformed HTTP request: ")
        assert answer.headers["connection"] == "close"
        assert c.closed_by_server()


def test_http_1_0_without_keep_alive_is_closed_after_the_answer(served):
    with Conn(served.port) as c:
        c.send(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
        answer = c.read_answer()
        _assert_json_answer(answer, 200)
        assert answer.body == LIVE_BODY
        assert answer.headers["connection"] == "close"
        assert c.closed_by_server()


def test_http_1_0_post_with_keep_alive_stays_open(served):
    body = _predict_body(served.rows[:1])
    with Conn(served.port) as c:
        for _ in range(2):
            c.send(_request("POST", PREDICT, body, version="HTTP/1.0", headers={"Connection": "keep-alive"}))
            answer = c.read_answer()
            _assert_json_answer(answer, 200)
            assert answer.json()["predictions"] == served.model.predict(served.x.iloc[:1]).tolist()
            assert "connection" not in answer.headers or answer.headers["connection"].lower() == "keep-alive"
        assert c.still_open()


def test_connection_close_on_http_1_1(served):
    with Conn(served.port) as c:
        c.send(_request("POST", PREDICT, _predict_body(served.rows[:2]), headers={"Connection": "close"}))
        answer = c.read_answer()
        _assert_json_answer(answer, 200)
        assert answer.json()["predictions"] == served.model.predict(served.x.iloc[:2]).tolist()
        assert answer.headers["connection"] == "close"
        assert c.closed_by_server()


def test_head_has_headers_but_no_body(served):
    with Conn(served.port) as c:
        c.send(_request("HEAD", "/v2/health/live"))
        answer = c.read_answer(head=True)
        assert answer.status == 200 and answer.version == "HTTP/1.1"
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["content-length"] == str(len(LIVE_BODY))
        assert "date" in answer.headers
        assert c.buf == b"" and c.still_open()  # no body bytes follow
        c.send(_request("GET", "/v2/health/live"))  # the next bytes are the next answer's status line
        after = c.read_answer()
        _assert_json_answer(after, 200)
        assert after.body == LIVE_BODY


def test_head_then_get_pipelined(served):
    with Conn(served.port) as c:
        c.send(_request("HEAD", "/v2/health/live") + _request("GET", "/v2/health/live"))
        head = c.read_answer(head=True)
        assert head.status == 200 and head.headers["content-length"] == str(len(LIVE_BODY))
        get = c.read_answer()
        _assert_json_answer(get, 200)
        assert get.body == LIVE_BODY


HEAD_THEN_400 = ("src bug: the 400 for a malformed request after a HEAD is written with HEAD's no-body rule "
                 "(TandemHTTP.head is not reset in _refuse)")


def test_malformed_request_after_head_still_has_a_body(served):
    with Conn(served.port) as c:
        c.send(_request("HEAD", "/v2/health/live"))
        c.read_answer(head=True)
        c.send(b"GARBAGE\r\n\r\n")
        answer = c.read_answer()
        _assert_json_answer(answer, 400)
        assert answer.json()["error"].startswith("malformed HTTP request: ")


# -- idle connections -----------------------------------------------------------------------------------------------
def test_idle_keep_alive_connections_are_closed(served):
    """uvicorn's keep-alive timeout is 5 s; the sweep runs once a second. A connection used again meanwhile stays."""
    with Conn(served.port) as idle, Conn(served.port) as busy:
        for c in (idle, busy):
            c.send(_request("GET", "/v2/health/live"))
            _assert_json_answer(c.read_answer(), 200)
        answered = time.monotonic()
        closed: list[float] = []
        waiter = threading.Thread(target=lambda: closed.append(idle.closed_by_server(9.5) and time.monotonic()))
        waiter.start()
        time.sleep(3.0)
        busy.send(_request("GET", "/v2/health/live"))  # activity resets this connection's idle time
        _assert_json_answer(busy.read_answer(), 200)
        waiter.join(timeout=12)
        assert closed and closed[0], "the idle connection was not closed within 9.5 s"
        idle_s = closed[0] - answered
        assert 4.9 <= idle_s <= 8.0, idle_s
        busy.send(_request("GET", "/v2/health/live"))  # used 3 s in: still open when the other is closed
        _assert_json_answer(busy.read_answer(), 200)


# -- paths ------------------------------------------------------------------------------------------------------------
def test_percent_encoded_path_and_query_string(served):
    with Conn(served.port) as c:
        c.send(_request("GET", "/v2/models/ch%75rn"))
        meta = c.read_answer()
        _assert_json_answer(meta, 200)
        assert meta.json()["name"] == "churn"
        c.send(_request("GET", "/v2/health/live?x=1"))
        live = c.read_answer()
        _assert_json_answer(live, 200)
        assert live.body == LIVE_BODY
        c.send(_request("POST", "/v1/models/%63hurn/predict?verbose=%zz", _predict_body(served.rows[:1])))
        predicted = c.read_answer()
        _assert_json_answer(predicted, 200)
        assert predicted.json()["predictions"] == served.model.predict(served.x.iloc[:1]).tolist()
        c.send(_request("GET", "/v2/health/nope?x=/v2/health/live"))
        missing = c.read_answer()
        _assert_json_answer(missing, 404)
        assert missing.json() == {"error": "no route GET /v2/health/nope"}


# -- the ASGI adapter, in-process -------------------------------------------------------------------------------------
def _asgi_post(app, path: str, chunks: list[bytes]) -> list[dict]:
    """Run lifespan startup, one HTTP request whose body arrives in ``chunks``, then lifespan shutdown."""

    async def main() -> list[dict]:
        lifespan_in: asyncio.Queue = asyncio.Queue()
        lifespan_out: list[dict] = []

        async def lifespan_send(message: dict) -> None:
            lifespan_out.append(message)

        await lifespan_in.put({"type": "lifespan.startup"})
        lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                           lifespan_in.get, lifespan_send))
        for _ in range(200):
            if lifespan_out:
                break
            await asyncio.sleep(0.01)
        assert lifespan_out == [{"type": "lifespan.startup.complete"}]
        assert app.ready

        pending = [{"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
                   for i, chunk in enumerate(chunks)]

        async def receive() -> dict:
            return pending.pop(0)

        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "root_path": "", "headers": [(b"host", b"test"), (b"content-type", b"application/json")],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        await asyncio.wait_for(app(scope, receive, send), TIMEOUT_S)
        assert pending == []  # the whole body was read

        await lifespan_in.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(lifespan, TIMEOUT_S)
        assert lifespan_out[-1] == {"type": "lifespan.shutdown.complete"}
        return sent

    return asyncio.run(main())


def _asgi_answer(sent: list[dict]) -> tuple[int, dict[bytes, bytes], dict]:
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    start, body = sent
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert not body.get("more_body", False)
    return start["status"], headers, json.loads(body["body"])


def test_asgi_adapter_in_process(served):
    from tandem.registry import Registry
    from tandem.serve.app import ServeApp
    from tandem.serve.models import load_model

    x = served.x.iloc[:20]
    body = _predict_body(records(x))
    app = ServeApp([load_model("churn", Registry(served.home))])
    status, _, answer = _asgi_answer(_asgi_post(app, PREDICT, [body[:37], body[37:]]))
    assert status == 200
    assert answer["model"] == "churn" and answer["version"] == 1 and answer["labels"] == ["no", "yes"]
    assert answer["predictions"] == served.model.predict(x).tolist()
    assert np.allclose(answer["probabilities"], served.model.predict_proba(x), atol=1e-6)


def test_asgi_adapter_body_over_the_limit(served):
    from tandem.registry import Registry
    from tandem.serve.app import ServeApp
    from tandem.serve.models import load_model

    body = _predict_body(served.rows[:3])
    assert len(body) > 200
    app = ServeApp([load_model("churn", Registry(served.home))], max_body_bytes=200)
    status, _, answer = _asgi_answer(_asgi_post(app, PREDICT, [body[:60], body[60:]]))
    assert status == 413
    assert answer == {"error": f"body of {len(body)} bytes is over the limit of 200 bytes"}
    # under the limit, the same app answers
    small = _predict_body(served.rows[:1])
    assert len(small) <= 200, len(small)
    status, _, answer = _asgi_answer(_asgi_post(app, PREDICT, [small[:10], small[10:]]))
    assert status == 200
    assert answer["predictions"] == served.model.predict(served.x.iloc[:1]).tolist()
