"""tandem's HTTP/1.1 protocol for uvicorn: requests go straight from the parser to ``ServeApp.handle``.

uvicorn still runs the server (sockets, worker processes, lifespan, signals, graceful shutdown);
this class replaces only its per-connection protocol (``uvicorn.run(http=...)``). uvicorn's own
httptools protocol builds an ASGI scope, a task, an event and two message dicts for every request,
and arms and cancels a keep-alive timer each time: about three quarters of the CPU a one-row
prediction costs. Here a request is parsed by httptools into a small ``Request``, answered by a
plain call (or later, by a callback, when it waits in a micro-batch), and written in one
``transport.write``. Time limits are kept by one sweep a second over all connections instead of a
timer per request.

HTTP/1.1 as clients use it: keep-alive, pipelining (answers in order), ``Expect: 100-continue``,
chunked request bodies, ``Connection: close``, HTTP/1.0, HEAD. No upgrades (WebSocket, h2c).

Everything a client controls is bounded (the app's ``limits``, serve/limits.py): the URL (414), the header
block's bytes and count (431), the time to send the headers and then the body (408, then the connection closes),
the idle time between requests (closed quietly), the body's size (413 as soon as it is known to be
too big), the requests read ahead of their answers (reading pauses), and the connections a worker
holds (503 and close beyond it). A malformed request gets 400 and the connection is closed; so does
an HTTP/1.1 request without exactly one Host header (RFC 9112, 3.2).
"""

from __future__ import annotations

import asyncio
import functools
import urllib.parse
from collections import deque
from http import HTTPStatus

import httptools

from tandem.serve.app import ServeApp
from tandem.serve.limits import HTTPLimits
from tandem.serve.protocol import HTTPError, Request, Response, error_response
from tandem.serve.sweep import SWEEP_EVERY_S, Sweep, default_headers

DISCARD_AT_MOST = 64 * 1024 * 1024  # bytes of a refused body read (and dropped) before the connection is cut
FEED_SLICE = 4096  # bytes parsed at a time from a large read, so pipelining stops at its depth (not a read's end)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HEAD = b"%scontent-type: %s\r\ncontent-length: %d\r\n%s"
METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")}
STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
IDLE, HEADERS, BODY = 0, 1, 2  # what a connection is receiving


@functools.cache
def connection_cap(limits: HTTPLimits) -> int:
    """``limits.connection_cap()``, worked out once per process (the open-file limit is raised before)."""
    return limits.connection_cap()


class _Refusal(Exception):
    """Raised inside a parser callback to stop parsing: the request is answered ``status`` and the connection
    closes (httptools hands it back as the context of its HttpParserCallbackError)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def find_serve_app(app: object) -> ServeApp:
    """The ServeApp inside uvicorn's middleware wrappers (each keeps the wrapped app as ``.app``)."""
    seen = 0
    while not isinstance(app, ServeApp) and hasattr(app, "app") and seen < 10:
        app, seen = app.app, seen + 1
    if not isinstance(app, ServeApp):
        raise TypeError(f"tandem's HTTP protocol serves a tandem ServeApp, not {type(app).__name__}")
    return app


class TandemHTTP(asyncio.Protocol):
    """One client connection (created by uvicorn for each accepted socket)."""

    def __init__(self, config: object, server_state: object, app_state: dict | None = None,
                 _loop: asyncio.AbstractEventLoop | None = None):
        if not config.loaded:
            config.load()
        self.app = find_serve_app(config.loaded_app)
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.limits = self.app.limits
        self.connection_cap = connection_cap(self.limits)
        self.max_body = self.app.max_body_bytes
        # a whole request head: the target, the headers, and the line breaks and colons around them
        self.head_cap = self.limits.max_url_bytes + self.limits.max_header_bytes + 4 * self.limits.max_headers + 1024
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.active = True  # data came in since the last sweep
        self.idle_sweeps = 0  # sweeps in a row that found the connection idle
        self.phase = IDLE  # receiving nothing, a request's headers, or its body
        self.phase_sweeps = 0  # sweeps since the phase began (while reading was not paused by tandem)
        self.head_streamed = 0  # bytes read while the headers were incomplete (after the read that began them)
        self.max_url_bytes = self.limits.max_url_bytes
        self.max_header_bytes, self.max_headers = self.limits.max_header_bytes, self.limits.max_headers
        self.header_lines_left = self.max_headers  # of the request being read
        self.read_size = 0  # bytes of the read being parsed
        self.waiting: deque[tuple[Request | Response, bool]] = deque()  # what is behind the answer being made
        self.unparsed: bytes | None = None  # read but not parsed: the pipelining depth was reached
        self.feed_due = False  # parsing ``unparsed`` is scheduled on the loop
        self.busy = False  # a request is being answered
        self.dispatching = False  # inside app.handle: an answer given now is written by the caller's loop
        self.receiving = False  # a request has begun and is not complete
        self.closing = False  # close once the current answer is written
        self.read_paused = False
        self.write_paused = False
        self.head = False
        self.keep_alive = True
        self.broken = False  # a request was refused at the protocol level: answer what is owed, then close
        self.continue_owed = False  # the request being read expects 100 Continue once earlier answers are out
        # the request being read (reset by on_message_begin)
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.body_size = 0
        self.refused = False  # answered 413 already: the rest of this body is read and dropped

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        connections = self.server_state.connections
        if len(connections) >= self.connection_cap:
            # (never added to the connections: uvicorn has nothing to wait for)
            self.broken, self.busy, self.keep_alive = True, True, False
            self._respond(error_response(HTTPError(
                503, f"the server holds its maximum of {self.connection_cap} connections: retry shortly",
                [(b"retry-after", b"1")])))
            return
        connections.add(self)
        Sweep.ensure(self.loop, self.server_state, TandemHTTP)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        self.closing = True
        self.waiting.clear()
        self.unparsed = None

    def data_received(self, data: bytes) -> None:
        self.active = True
        if self.broken:
            return  # after a refused request nothing more is parsed; the connection closes once answered
        if self.unparsed is not None:  # (read before reading paused: parsed after what came first)
            self.unparsed += data
            return
        if len(data) <= FEED_SLICE:
            self._parse(data)
        else:
            self._feed(data)

    def eof_received(self) -> bool | None:
        if self.busy or self.waiting or self.unparsed is not None:
            self.closing = True
            return True  # the client is done sending: answer what it asked, then close
        return None

    def pause_writing(self) -> None:
        self.write_paused = True  # the client is not reading its answers: stop reading its requests
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.busy and not self.dispatching:
            self._serve_waiting()

    # -- called by uvicorn ----------------------------------------------------------------------
    def shutdown(self) -> None:
        """Graceful shutdown: close when idle, else once the request in progress is answered."""
        if self.busy or self.receiving or self.waiting:
            self.closing = True
        else:
            self.transport.close()

    # -- parsing --------------------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        """Parse a large read a slice at a time: once ``max_pipeline`` requests wait for their answers (or the
        client stops reading them), the rest waits, unparsed, and reading pauses."""
        view = memoryview(data)
        for start in range(0, len(data), FEED_SLICE):
            if self.broken or self.transport.is_closing():
                return
            if len(self.waiting) >= self.limits.max_pipeline or self.write_paused:
                self.unparsed = bytes(view[start:])
                self._pause_reading()
                return
            self._parse(view[start:start + FEED_SLICE])

    def _parse(self, data: bytes | memoryview) -> None:
        self.read_size = len(data)
        if self.phase == HEADERS:
            self.head_streamed += self.read_size
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.closing = True  # upgrades are not spoken here: answer what was asked, then close
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if not isinstance(refusal, _Refusal):
                raise
            self._refuse(refusal.status, refusal.message)
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request: {exc}")
        else:
            # a header still being streamed is buffered by the parser, unseen by on_header: count its bytes here
            if self.phase == HEADERS and self.head_streamed > self.head_cap:
                self._refuse(431, self._too_many_header_bytes())

    def _feed_unparsed(self) -> None:
        self.feed_due = False
        data, self.unparsed = self.unparsed, None
        if data is None or self.transport.is_closing():
            return
        self._feed(data)
        if self.unparsed is not None or self.waiting or self.broken:
            return
        if self.closing and not self.busy:
            self.transport.close()  # the client half-closed and every whole request it sent is answered
        elif not self.write_paused:
            self._resume_reading()

    # -- httptools callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.receiving = True
        self.phase, self.phase_sweeps, self.head_streamed, self.header_lines_left = HEADERS, 0, 0, self.max_headers
        self.url = b""
        self.headers = {}
        self.body = []
        self.body_size = 0
        self.refused = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.max_url_bytes:
            raise _Refusal(414, f"request target over the limit of {self.limits.max_url_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        # (the lines are counted here; the bytes once the headers are complete, or as they stream in)
        self.header_lines_left -= 1
        if self.header_lines_left < 0:
            raise _Refusal(431, f"more than {self.max_headers} header lines")
        name = name.lower()
        headers = self.headers
        if name in headers:
            if name == b"host":
                raise _Refusal(400, "more than one Host header")
            headers[name] += b", " + value  # a repeated field is one list (RFC 9110, 5.3)
            return
        headers[name] = value

    def on_headers_complete(self) -> None:
        self.phase, self.phase_sweeps = BODY, 0
        headers = self.headers
        # a head that came in one read no larger than the limit is within it: count only the others
        if (self.head_streamed or self.read_size > self.max_header_bytes) and (
                sum(map(len, headers)) + sum(map(len, headers.values())) > self.max_header_bytes):
            raise _Refusal(431, self._too_many_header_bytes())
        if b"host" not in headers and self.parser.get_http_version() == "1.1":
            raise _Refusal(400, "an HTTP/1.1 request needs a Host header")
        expects = b"expect" in headers and headers[b"expect"].lower() == b"100-continue"
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            if expects:
                self.receiving = False  # the client waits for our word before sending the body: the 413 is it
                self.phase = IDLE
            self._too_large(int(declared))
            return
        if expects:
            if self.busy or self.waiting:
                self.continue_owed = True  # after the answers owed before it
            else:
                self.transport.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.refused:
            if self.body_size > DISCARD_AT_MOST:
                self.transport.close()  # the 413 is out; this client would keep us reading for nothing
            return
        if self.body_size > self.max_body:
            self._too_large(None)
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.receiving = False
        self.phase = IDLE
        self.continue_owed = False
        if self.refused:
            if not self.busy and not self.waiting:
                self.transport.close()  # the 413 is written and the client has finished sending
            return
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        request = self._request(body)
        keep_alive = self.parser.should_keep_alive()
        if self.busy or self.waiting:
            self.waiting.append((request, keep_alive))
            self._pause_reading()  # in-order answers: read no further ahead than this
            self._serve_waiting()
        else:
            self._dispatch(request, keep_alive)

    # -- time limits (called by the sweep once a second) ------------------------------------------
    def tick(self) -> None:
        """Cut a request whose headers or body take too long (408), or a connection idle for too long."""
        if self.transport is None or self.transport.is_closing() or self.broken:
            return
        if self.phase != IDLE and not self.read_paused and not self.continue_owed:
            self.phase_sweeps += 1
            limit = self.limits.header_timeout_s if self.phase == HEADERS else self.limits.body_timeout_s
            if self.phase_sweeps * SWEEP_EVERY_S > limit:
                what = "the request's headers" if self.phase == HEADERS else "the request's body"
                self._refuse(408, f"{what} did not arrive within {limit:g} s")
            return
        if self.active or self.busy or self.waiting or self.unparsed is not None:
            self.active = False
            self.idle_sweeps = 0
            return
        self.idle_sweeps += 1
        if self.idle_sweeps * SWEEP_EVERY_S > self.limits.keep_alive_s:
            self.transport.close()

    # -- answering ------------------------------------------------------------------------------
    def _request(self, body: bytes | None) -> Request:
        url = self.url
        if url[:1] == b"/":
            raw = url.split(b"?", 1)[0]
        else:  # absolute form (http://host/path); CONNECT's authority form and OPTIONS * name no path
            try:
                raw = httptools.parse_url(url).path or b""
            except httptools.HttpParserInvalidURLError:
                raw = b""
            if not raw.startswith(b"/"):
                raise _Refusal(400, f"request target {url[:100].decode('latin-1')!r}: expected a path such as "
                                    "/v2/health/ready (no CONNECT, no OPTIONS *)")
        path = raw.decode("latin-1")
        if "%" in path:
            path = urllib.parse.unquote(path)
        method = self.parser.get_method()
        return Request(METHODS.get(method) or method.decode("ascii", "replace"), path, self.headers, body)

    def _dispatch(self, request: Request, keep_alive: bool) -> None:
        self.busy = True
        self.keep_alive = keep_alive
        self.head = request.method == "HEAD"
        self.dispatching = True
        try:
            self.app.handle(request, self._respond)
        except Exception as exc:  # a bug in tandem: answered 500, logged with its traceback
            if self.busy:
                self._respond(error_response(exc))
        finally:
            self.dispatching = False

    def _serve_waiting(self) -> None:
        """Answer the requests that wait, in order; with none left, read on (what was left unparsed first)."""
        while self.waiting and not self.busy and not self.transport.is_closing():
            request, keep_alive = self.waiting.popleft()
            if isinstance(request, Response):  # a refusal made by the protocol itself (malformed request)
                self.busy, self.head, self.keep_alive = True, False, False
                self._respond(request)
            else:
                self._dispatch(request, keep_alive)
        if self.waiting or self.busy or self.transport.is_closing():
            return
        if self.continue_owed:
            self.continue_owed = False
            self.transport.write(CONTINUE)
        if self.write_paused:
            return
        if self.unparsed is not None:
            if not self.feed_due:  # (on the loop, not here: this may run inside a batch's delivery)
                self.feed_due = True
                self.loop.call_soon(self._feed_unparsed)
        elif not self.broken:
            self._resume_reading()

    def _respond(self, response: Response) -> None:
        if not self.busy:
            return  # answered already (a late callback after an error answer)
        self.busy = False
        transport = self.transport
        if transport.is_closing():
            return
        status, body, content_type, extra = response
        # (a client that half-closed, or a server shutting down, still gets the answers it is owed)
        close = not self.keep_alive or (self.closing and not self.waiting and self.unparsed is None)
        head = HEAD % (STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status, content_type, len(body),
                       default_headers(self.server_state))
        if extra or close:
            lines = [name + b": " + value + b"\r\n" for name, value in extra]
            if close:
                lines.append(b"connection: close\r\n")
            head += b"".join(lines)
        transport.write(head + b"\r\n" if self.head else head + b"\r\n" + body)
        self.server_state.total_requests += 1
        self.active = True
        if close:
            if not (self.refused and self.receiving):
                transport.close()  # (a refused body still arriving: closed once it is read, so no reset)
        elif not self.dispatching:
            self._serve_waiting()  # an answer given later: what waits behind it goes on now

    def _too_many_header_bytes(self) -> str:
        return f"request headers over the limit of {self.limits.max_header_bytes} bytes"

    def _too_large(self, declared: int | None) -> None:
        """Answer 413 at once (in order: after any answers still owed) and drop the rest of the body."""
        self.refused = True  # (its answer says connection: close and closes it: keep_alive False below)
        request = self._request(None)  # no body: the app answers 413 for it
        request.body_size = declared if declared is not None else self.body_size
        self.body = []
        if self.busy or self.waiting:
            self.waiting.append((request, False))
        else:
            self._dispatch(request, False)

    def _refuse(self, status: int, message: str) -> None:
        """A request refused by the protocol: after the answers owed, a 4xx, then the connection closes."""
        self.broken = True
        self.receiving = False
        self.phase = IDLE
        self.unparsed = None
        refusal = error_response(HTTPError(status, message))
        if self.busy or self.waiting:
            self.waiting.append((refusal, False))
        else:
            self.busy, self.head, self.keep_alive = True, False, False
            self._respond(refusal)

    def _pause_reading(self) -> None:
        if not self.read_paused and not self.transport.is_closing():
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and not self.transport.is_closing():
            self.read_paused = False
            self.transport.resume_reading()
