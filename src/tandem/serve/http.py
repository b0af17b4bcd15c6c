"""tandem's HTTP/1.1 protocol for uvicorn: requests go straight from the parser to ``ServeApp.handle``.

uvicorn still runs the server (sockets, worker processes, lifespan, signals, graceful shutdown);
this class replaces only its per-connection protocol (``uvicorn.run(http=...)``). uvicorn's own
httptools protocol builds an ASGI scope, a task, an event and two message dicts for every request,
and arms and cancels a keep-alive timer each time: about three quarters of the CPU a one-row
prediction costs. Here a request is parsed by httptools into a small ``Request``, answered by a
plain call (or later, by a callback, when it waits in a micro-batch), and written in one
``transport.write``. Idle connections are closed by one sweep a second instead of a timer per
request.

HTTP/1.1 as clients use it: keep-alive, pipelining (answers in order), ``Expect: 100-continue``,
chunked request bodies, ``Connection: close``, HTTP/1.0, HEAD. A body over the size limit is
answered 413 as soon as it is known to be too big; a malformed request gets 400 and the
connection is closed. No upgrades (WebSocket, h2c).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import deque
from http import HTTPStatus

import httptools

from tandem.serve.app import HTTPError, Request, Response, ServeApp, error_response

SWEEP_EVERY_S = 1.0
DISCARD_AT_MOST = 64 * 1024 * 1024  # bytes of a refused body read (and dropped) before the connection is cut
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HEAD = b"%scontent-type: %s\r\ncontent-length: %d\r\n%s"
METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")}
STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
logger = logging.getLogger("uvicorn.error")


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
        self.keep_alive_s = float(config.timeout_keep_alive)
        self.max_body = self.app.max_body_bytes
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.active = True  # data came in since the last idle sweep
        self.idle_sweeps = 0  # sweeps in a row that found the connection idle
        self.waiting: deque[tuple[Request | Response, bool]] = deque()  # what is behind the answer being made
        self.busy = False  # a request is being answered
        self.dispatching = False  # inside app.handle: an answer given now is written by the caller's loop
        self.receiving = False  # a request has begun and is not complete
        self.closing = False  # close once the current answer is written
        self.read_paused = False
        self.write_paused = False
        self.head = False
        self.keep_alive = True
        self.broken = False  # a malformed request was read: answer what is owed, a 400, then close
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
        self.server_state.connections.add(self)
        _IdleSweep.ensure(self.loop, self.server_state)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        self.closing = True
        self.waiting.clear()

    def data_received(self, data: bytes) -> None:
        self.active = True
        if self.broken:
            return  # after a malformed request nothing more is parsed; the connection closes once answered
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.closing = True  # upgrades are not spoken here: answer what was asked, then close
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request: {exc}")

    def eof_received(self) -> bool | None:
        if self.busy or self.waiting:
            self.closing = True
            return True  # the client is done sending: answer what it asked, then close
        return None

    def pause_writing(self) -> None:
        self.write_paused = True  # the client is not reading its answers: stop reading its requests
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.waiting:
            self._resume_reading()

    # -- called by uvicorn ----------------------------------------------------------------------
    def shutdown(self) -> None:
        """Graceful shutdown: close when idle, else once the request in progress is answered."""
        if self.busy or self.receiving:
            self.closing = True
        else:
            self.transport.close()

    def idle_too_long(self) -> bool:
        """Called once a sweep: has nothing happened on this connection for the keep-alive timeout?"""
        if self.active or self.busy:
            self.active = False
            self.idle_sweeps = 0
            return False
        self.idle_sweeps += 1
        return self.idle_sweeps * SWEEP_EVERY_S > self.keep_alive_s

    # -- httptools callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.receiving = True
        self.url = b""
        self.headers = {}
        self.body = []
        self.body_size = 0
        self.refused = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        expects = b"expect" in self.headers and self.headers[b"expect"].lower() == b"100-continue"
        declared = self.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            if expects:
                self.receiving = False  # the client waits for our word before sending the body: the 413 is it
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

    # -- answering ------------------------------------------------------------------------------
    def _request(self, body: bytes | None) -> Request:
        url = self.url
        raw = url.split(b"?", 1)[0] if url[:1] == b"/" else (httptools.parse_url(url).path or b"/")
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
        while self.waiting and not self.busy and not self.transport.is_closing():
            request, keep_alive = self.waiting.popleft()
            if isinstance(request, Response):  # a refusal made by the protocol itself (malformed request)
                self.busy, self.head, self.keep_alive = True, False, False
                self._respond(request)
            else:
                self._dispatch(request, keep_alive)
        if not self.waiting and not self.busy:
            if self.continue_owed:
                self.continue_owed = False
                self.transport.write(CONTINUE)
            if not self.write_paused:
                self._resume_reading()

    def _respond(self, response: Response) -> None:
        if not self.busy:
            return  # answered already (a late callback after an error answer)
        self.busy = False
        transport = self.transport
        if transport.is_closing():
            return
        status, body, content_type, extra = response
        close = self.closing or not self.keep_alive
        head = HEAD % (STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status, content_type, len(body),
                       _default_headers(self.server_state))
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
        elif (self.waiting or self.continue_owed) and not self.dispatching:
            self._serve_waiting()  # an answer given later: the requests behind it go on now

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
        """A malformed request: after the answers owed, a 4xx, then the connection closes."""
        self.broken = True
        self.receiving = False
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


_defaults_cache: list = [None, b""]


def _default_headers(server_state: object) -> bytes:
    """uvicorn's ``date`` and ``server`` headers, as bytes; uvicorn replaces the list once a second."""
    current = server_state.default_headers
    if current is not _defaults_cache[0]:
        _defaults_cache[0] = current
        _defaults_cache[1] = b"".join(name + b": " + value + b"\r\n" for name, value in current)
    return _defaults_cache[1]


class _IdleSweep:
    """Once a second, close connections idle for longer than uvicorn's keep-alive timeout."""

    running: dict[int, asyncio.TimerHandle] = {}

    @classmethod
    def ensure(cls, loop: asyncio.AbstractEventLoop, server_state: object) -> None:
        if id(server_state) not in cls.running:
            cls.running[id(server_state)] = loop.call_later(SWEEP_EVERY_S, cls._sweep, loop, server_state)

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop, server_state: object) -> None:
        for conn in list(server_state.connections):
            if isinstance(conn, TandemHTTP) and conn.idle_too_long():
                conn.transport.close()
        cls.running[id(server_state)] = loop.call_later(SWEEP_EVERY_S, cls._sweep, loop, server_state)
