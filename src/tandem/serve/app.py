"""The server's logic, serving bundles: no framework, validation from each bundle's schema.

``ServeApp.handle(request, respond)`` answers one request, at once or later (a micro-batch, a
reload); tandem's HTTP protocol (serve/http.py) calls it directly, and ``ServeApp`` is also an ASGI
application for any ASGI server.

Routes:
- ``POST /v1/models/{name}/predict``: ``{"instances": [{col: value}, ...]}`` or ``{"inputs": {col: [values]}}``
- KServe v2 / Open Inference Protocol: ``GET /v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/{name}``, ``/v2/models/{name}/ready``; ``POST /v2/models/{name}/infer``.
Every user mistake answers 4xx with ``{"error": "..."}`` naming the field and what was expected.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import orjson

from tandem.bundle.inputs import EncodedInputs
from tandem.errors import TandemError
from tandem.footprint.serving import PredictionMeter
from tandem.inference.predictor import Predictor
from tandem.serve import kserve
from tandem.serve.batching import Batcher, NonFiniteOutput, QueueFull, RunOutputs, all_finite
from tandem.serve.metrics import ServeMetrics

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_ROWS = 10_000
# The deepest JSON a request needs: a REST body has 3 levels ({"instances": [{column: value}]}, a value is a
# scalar), a v2 body 3 plus its tensors' rank (at most kserve.MAX_TENSOR_RANK). Deeper bodies are refused before
# anything recurses on them: the standard JSON parser, repr() in error messages and orjson's writer all do.
MAX_JSON_DEPTH = 32
# a request finds the server quiet when the event loop slept at least this long since the last answer (wall
# time minus this thread's CPU time: a busy loop reading a backlog never sleeps, whatever its pace)
QUIET_SLEPT_S = 20e-6
JSON = b"application/json"
Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
logger = logging.getLogger("tandem.serve")


class Request:
    """One HTTP request as the server read it: header names lower-case, the whole body.

    ``body`` is None when the body went over the size limit (``body_size`` says how big it was
    declared or had grown); the route that reads it answers 413."""

    __slots__ = ("method", "path", "headers", "body", "body_size")

    def __init__(self, method: str, path: str, headers: dict[bytes, bytes], body: bytes | None, body_size: int = 0):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.body_size = body_size


class Response(NamedTuple):
    """An answer, ready to write: the body is bytes, header names lower-case."""

    status: int
    body: bytes
    content_type: bytes
    headers: tuple | list


Respond = Callable[[Response], None]


@dataclass
class RawResponse:
    """A non-JSON answer (Prometheus text, v2 binary tensors)."""

    body: bytes
    content_type: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class HTTPError(Exception):
    """An answer other than 200, with a message for the JSON body."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


Answer = tuple  # (status, payload: JSON-able or RawResponse, extra headers)


class Later:
    """A request answered later: queued for a micro-batch, or waiting for a reload. Called once with its
    result (the model's outputs, a finished answer, or the exception that stopped it), it answers."""

    __slots__ = ("app", "model", "make_answer", "respond", "labels", "started")

    def __init__(self, app: ServeApp, model: ServedModel | None,
                 make_answer: Callable[[RunOutputs, int, int], Answer] | None):
        self.app = app
        self.model = model
        self.make_answer = make_answer  # (run, start, stop) -> answer (None: the result is the answer)
        self.respond, self.labels, self.started = app._current

    def __call__(self, result: object, start: int = 0, stop: int = 0) -> None:
        try:
            if isinstance(result, BaseException):
                answer = error_answer(self.app._batch_error(self.model, result))
            else:
                answer = result if self.make_answer is None else self.make_answer(result, start, stop)
        except Exception as exc:
            answer = error_answer(exc)
        try:
            self.respond(self.app._finish(answer, self.labels, self.started))
        except Exception as exc:  # a writer's bug must not stop the other requests of a batch from being answered
            logger.error("tandem serve: could not write an answer", exc_info=exc)

    def after(self, coro: Awaitable[Answer]) -> Later:
        """Answer with what ``coro`` returns, once it has run as a task."""
        def finished(task: asyncio.Task) -> None:
            self(task.exception() or task.result() if not task.cancelled()
                 else HTTPError(503, "the server is shutting down"))

        asyncio.get_running_loop().create_task(coro).add_done_callback(finished)
        return self


def error_answer(exc: BaseException) -> Answer:
    """The answer for an exception: HTTPError as it says, a user's mistake 422, anything else a logged 500."""
    if isinstance(exc, HTTPError):
        return exc.status, {"error": exc.message}, exc.headers
    if isinstance(exc, TandemError):
        return 422, {"error": str(exc)}, ()
    if isinstance(exc, NonFiniteOutput):
        return 422, {"error": "the model produced a non-finite value for this input"}, ()
    logger.error("tandem serve: unexpected error", exc_info=exc)
    return 500, {"error": f"internal error ({type(exc).__name__}); the server log has the details"}, ()


def error_response(exc: BaseException) -> Response:
    status, payload, headers = error_answer(exc)
    return Response(status, orjson.dumps(payload), JSON, headers)


@dataclass
class ServedModel:
    """One loaded bundle and how it is addressed."""

    name: str
    version: int | None
    predictor: Predictor
    ref: str = ""  # the reference it was loaded from: a reload resolves it again (an alias may have moved)

    def __post_init__(self) -> None:
        self.labels = self.predictor._typed_labels.tolist() if self.predictor.task != "regression" else None


def load_model(ref: str, registry: object) -> ServedModel:
    """Resolve ``ref`` in the registry (or as a path), verify and load the bundle."""
    predictor = Predictor(registry.resolve(ref), threads=1)
    manifest = predictor.manifest
    return ServedModel(manifest["name"], manifest.get("version"), predictor, ref)


GET_ROUTES = frozenset({"/v2/health/live", "/v2/health/ready", "/v2", "/openapi.json", "/metrics"})
ALLOW = {"GET": [(b"allow", b"GET, HEAD")], "POST": [(b"allow", b"POST")]}


def _reject_constant(value: str) -> float:
    raise HTTPError(400, f"body: {value} is not allowed in JSON numbers; send null for a missing value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise HTTPError(400, f"body: number {text[:40]} is out of range")
    return value


_NOT_MARKS = bytes(range(256)).translate(None, b'[]{}"')  # what json_depth deletes before counting
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_STEP = np.zeros(256, np.int8)
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1
_CHUNK = 1 << 20


def json_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in UTF-8 JSON text, counted without parsing it (no recursion, memory
    bounded by chunks). Brackets inside strings do not count; past a syntax error the count goes on, so it
    is never less than what a parser would reach."""
    # escaped backslashes first, then escaped quotes: every '"' left opens or closes a string
    marks = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_MARKS)
    deepest = depth = in_string = 0
    for start in range(0, len(marks), _CHUNK):
        chunk = np.frombuffer(marks, np.uint8, min(_CHUNK, len(marks) - start), start)
        quotes = chunk == 34
        outside = (np.cumsum(quotes, dtype=np.int32) + in_string) % 2 == 0
        levels = np.cumsum(_STEP[chunk] * outside, dtype=np.int32) + depth
        deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
        in_string = (in_string + int(quotes.sum())) % 2
    return deepest


def check_json_depth(raw: bytes) -> None:
    """Refuse (400) a JSON body nested deeper than MAX_JSON_DEPTH."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return  # too few opening brackets to nest deeper: all a small request pays is two counts
    brackets = raw.translate(None, _NOT_BRACKETS)
    if len(brackets) <= 1 << 16:  # a request of many rows: a few passes that drop the innermost pairs settle it
        for _ in range(MAX_JSON_DEPTH):
            brackets = brackets.replace(b"[]", b"").replace(b"{}", b"")
            if not brackets:
                return
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise HTTPError(400, f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels; expected at most that: a REST "
                             'value is a scalar ({"instances": [{column: value}]}), a v2 tensor\'s data is nested '
                             "no deeper than its shape's rank")


def _one_line(exc: BaseException) -> str:
    """An exception as one line of at most 500 characters: ours say what is wrong, others also say their class."""
    text = " ".join(str(exc).split())[:500]
    return text if isinstance(exc, TandemError) else f"{type(exc).__name__}: {text}"


class _LoadFailed(Exception):
    """A new version of a served model that could not be loaded or warmed up; the message says why."""


class ServeApp:
    """The server's logic: ``handle(request, respond)`` answers one request, now or later.

    It is also an ASGI application (lifespan, and HTTP through ``handle``), so any ASGI server can
    run it; ``tandem serve`` runs it on uvicorn with tandem's own HTTP protocol (serve/http.py),
    which calls ``handle`` directly."""

    def __init__(self, models: list[ServedModel], *, max_body_bytes: int = MAX_BODY_BYTES,
                 max_rows: int = MAX_ROWS, admin_token: str | None = None, api_key: str | None = None,
                 registry: object | None = None, max_batch_rows: int = 64, queue_delay_us: float = 0.0,
                 max_queue_rows: int = 4096, request_timeout_s: float = 10.0, watch_interval_s: float = 0.0,
                 metrics_dir: str | None = None, footprint: PredictionMeter | None = None):
        self.models = {m.name: m for m in models}
        self.footprint = footprint  # energy per 1,000 predictions (None: not metered)
        self.max_body_bytes = max_body_bytes
        self.max_rows = max_rows
        self.admin_token = admin_token or None
        self.api_key = api_key or None
        self.registry = registry
        self.ready = False
        self.metrics = ServeMetrics(metrics_dir, footprint=footprint.figures if footprint else None)
        self.max_batch_rows = max_batch_rows  # 0 or 1: batching off, each request runs on its own
        self.queue_delay_s = queue_delay_us / 1e6
        self.max_queue_rows = max_queue_rows
        self.request_timeout_s = request_timeout_s
        self.watch_interval_s = watch_interval_s
        self.batchers: dict[str, tuple[Predictor, Batcher]] = {}
        self.failed_loads: dict[str, str] = {}  # model name -> bundle path that failed to load (not retried)
        self._housekeeping: asyncio.Task | None = None
        self.answered_at = 0.0  # when the last answer was made (wall clock, and this thread's CPU clock)
        self.answered_cpu = 0.0
        self._current: tuple = (None, ("", ""), 0.0)
        self._predict_paths = {f"/v1/models/{name}/predict": name for name in self.models}

    # -- the core: one request in, one answer out --------------------------------------------------
    def handle(self, request: Request, respond: Respond) -> None:
        """Answer ``request`` by calling ``respond`` once: before returning, or later (micro-batch, reload)."""
        started = time.perf_counter()
        self.metrics.in_flight += 1
        name = self._predict_paths.get(request.path)  # the common request skips the general routing
        labels = (name, "predict") if name is not None else None
        try:
            if name is not None:
                self._current = (respond, labels, started)  # what a Later needs to answer this request
                answer = self._predict_route(request, self.models[name])
            else:
                parts = request.path.rstrip("/").split("/")[1:]
                labels = self._labels_of(parts)
                self._current = (respond, labels, started)
                answer = self._route(request, parts)
        except Exception as exc:
            answer = error_answer(exc)
        if type(answer) is tuple:
            respond(self._finish(answer, labels, started))

    def _finish(self, answer: Answer, labels: tuple[str, str], started: float) -> Response:
        status, payload, headers = answer
        if type(payload) is RawResponse:
            response = Response(status, payload.body, payload.content_type, payload.headers)
        else:
            response = Response(status, orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), JSON, headers)
        metrics = self.metrics
        metrics.in_flight -= 1
        self.answered_at = now = time.perf_counter()
        if self.max_batch_rows > 1 and metrics.in_flight == 0:  # (while others wait, none can find it quiet)
            self.answered_cpu = time.thread_time()
        metrics.answered(*labels, status, now - started)
        return response

    # -- ASGI ---------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = dict(scope.get("headers") or [])
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self.max_body_bytes:
                chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks) if size <= self.max_body_bytes else None
        answered: asyncio.Future = asyncio.get_running_loop().create_future()
        # (a client gone meanwhile cancels the wait: a late answer is then dropped)
        self.handle(Request(scope["method"], scope["path"], headers, body, size),
                    lambda response: answered.done() or answered.set_result(response))
        response: Response = await answered
        await send({"type": "http.response.start", "status": response.status,
                    "headers": [(b"content-type", response.content_type),
                                (b"content-length", str(len(response.body)).encode()), *response.headers]})
        await send({"type": "http.response.body", "body": response.body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self._warm_up()
                except Exception as exc:  # never serve a model that cannot answer: say why and stop
                    logger.error("tandem serve: warming up the models failed", exc_info=exc)
                    await send({"type": "lifespan.startup.failed", "message": f"warm-up failed: {exc}"})
                    return
                if self.footprint is not None:
                    self.footprint.start()
                self.ready = True
                if self.metrics.directory or self._watching():
                    self._housekeeping = asyncio.get_running_loop().create_task(self._keep_house())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._housekeeping is not None:
                    self._housekeeping.cancel()
                if self.footprint is not None:
                    self.footprint.stop()
                self.metrics.publish()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _keep_house(self) -> None:
        """Publish metrics for the other workers each second; follow moved aliases every watch interval."""
        next_watch = time.monotonic() + self.watch_interval_s
        tick = min(1.0, self.watch_interval_s) if self._watching() else 1.0
        while True:
            await asyncio.sleep(tick)
            try:
                self.metrics.publish()
                if self._watching() and time.monotonic() >= next_watch:
                    next_watch = time.monotonic() + self.watch_interval_s
                    for model in list(self.models.values()):
                        await self._follow(model)
            except Exception as exc:  # housekeeping must never stop: say why and go on
                print(f"tandem serve: housekeeping: {exc}", file=sys.stderr)

    def _watching(self) -> bool:
        return self.watch_interval_s > 0 and self.registry is not None

    async def _follow(self, model: ServedModel) -> None:
        """Reload ``model`` when its reference (an alias, or a bare name: the latest version) resolves anew."""
        if Path(model.ref).exists() or ":" in model.ref:
            return  # a path or a pinned version never moves
        loop = asyncio.get_running_loop()
        try:
            path = str(await loop.run_in_executor(None, self.registry.resolve, model.ref))
        except TandemError:
            return  # the alias was removed: keep serving what we have
        if path == str(model.predictor.path) or self.failed_loads.get(model.name) == path:
            return
        try:
            fresh = await self._load_again(model, path)
        except _LoadFailed as exc:
            self.failed_loads[model.name] = path  # said once: tried again only when the reference moves
            print(f"tandem serve: '{model.ref}' moved to {path}, which failed to load: {exc}; still serving version "
                  f"{model.version}, and not trying it again until '{model.ref}' moves", file=sys.stderr)
            return
        self._swap(model, fresh)

    def _warm_up(self) -> None:
        """Run each model once so the first request pays no lazy initialisation."""
        for m in self.models.values():
            _warm_one(m)

    # -- routing ------------------------------------------------------------------------------
    def _route(self, request: Request, parts: list[str]) -> Answer | Later:
        method = request.method
        if len(parts) >= 3 and parts[1] == "models" and parts[0] in ("v1", "v2"):
            if self.api_key is not None:
                self._authorize(request, self.api_key, "API key")
            model = self._model(parts[2])
            tail = parts[3:]
            if parts[0] == "v1" and tail == ["predict"]:
                return self._predict(request, model)
            if parts[0] == "v2" and tail[:1] == ["versions"] and len(tail) >= 2:
                if tail[1] != str(model.version):
                    raise HTTPError(404, f"model '{model.name}' is served at version {model.version}, not {tail[1]}")
                tail = tail[2:]
            if parts[0] == "v2" and not tail:
                self._expect(method, "GET", request)
                return 200, kserve.metadata(model.name, model.version, model.predictor), ()
            if parts[0] == "v2" and tail == ["ready"]:
                self._expect(method, "GET", request)
                return (200 if self.ready else 503), {"name": model.name, "ready": self.ready}, ()
            if parts[0] == "v2" and tail == ["infer"]:
                self._expect(method, "POST", request)
                return self._infer_v2(model, request)
            if parts[0] == "v1" and tail == ["footprint"]:
                self._expect(method, "GET", request)
                return 200, self._footprint(model), ()
        path = "/" + "/".join(parts)
        if path in GET_ROUTES:
            self._expect(method, "GET", request)
        if path == "/v2/health/live":
            return 200, {"live": True}, ()
        if path == "/v2/health/ready":
            return (200 if self.ready else 503), {"ready": self.ready}, ()
        if path == "/v2":
            return 200, {"name": "tandem", "version": "1", "extensions": ["binary_tensor_data"]}, ()
        if path == "/openapi.json":
            return 200, openapi_document(list(self.models.values())), ()
        if path == "/metrics":
            return 200, RawResponse(self.metrics.render(), b"text/plain; version=0.0.4; charset=utf-8"), ()
        if len(parts) == 4 and parts[:2] == ["admin", "models"] and parts[3] == "reload":
            self._expect(method, "POST", request)
            if self.admin_token is None:
                raise HTTPError(403, "admin endpoints are off: start the server with --admin-token "
                                     "(or TANDEM_ADMIN_TOKEN)")
            self._authorize(request, self.admin_token, "admin")
            return Later(self, None, None).after(self._reload(self._model(parts[2])))
        raise HTTPError(404, f"no route {method} {request.path[:200]}")

    def _predict_route(self, request: Request, model: ServedModel) -> Answer | Later:
        """``POST /v1/models/{name}/predict`` found by its exact path (``_route`` checks the key itself)."""
        if self.api_key is not None:
            self._authorize(request, self.api_key, "API key")
        return self._predict(request, model)

    def _predict(self, request: Request, model: ServedModel) -> Answer | Later:
        self._expect(request.method, "POST", request)
        ctype = request.headers.get(b"content-type", b"")
        if ctype != JSON:  # (the common request says exactly application/json: nothing to parse)
            ctype = ctype.split(b";")[0].strip().lower()
            if ctype == RFC822 and model.predictor.manifest.get("source") == "mail":
                return self._predict_message(request, model)
            if ctype.startswith(b"image/") and model.predictor.encoder.image_columns:
                return self._predict_image(request, model, ctype)
        raw = self._body(request)
        self._admit(model)
        return self._predict_rest(model, self._parse_json(raw))

    def _predict_image(self, request: Request, model: ServedModel, ctype: bytes) -> Answer | Later:
        """One raw image (``image/png``, ``image/jpeg``, ...) as the body, for a model with one image column."""
        raw = self._body(request, types=(ctype,))
        self._admit(model)
        encoder = model.predictor.encoder
        if len(encoder.required) != 1:
            raise HTTPError(415, "this model reads more than the image: send JSON rows with every column")
        return self._predict_rest(model, {"instances": [{encoder.image_columns[0].name: raw}]})

    def _predict_message(self, request: Request, model: ServedModel) -> Answer | Later:
        """A raw e-mail (``message/rfc822``) for a model trained on a mail folder: read as in training."""
        from tandem.data.mail import message_fields, parse_message

        raw = self._body(request, types=(RFC822,))
        self._admit(model)
        try:
            row = message_fields(parse_message(raw))
        except TandemError as exc:
            raise HTTPError(400, f"body: {exc}") from None
        # a message without a subject or text has them missing, as in training (not a blank-text mistake)
        return self._predict_rest(model, {"instances": [{k: (None if v == "" else v) for k, v in row.items()}]})

    def _labels_of(self, parts: list[str]) -> tuple[str, str]:
        """(model, route) metric labels of a request path's parts; names not served share one label,
        so requests for made-up models cannot grow the metrics without bound."""
        if len(parts) >= 3 and parts[1] == "models":
            tail = parts[-1] if len(parts) > 3 else "metadata"
            route = tail if tail in ("predict", "infer", "ready", "reload") else "metadata"
            return (parts[2] if parts[2] in self.models else ""), route
        if parts[:2] == ["v2", "health"]:
            return "", "health"
        return "", ("metrics" if parts == ["metrics"] else "other")

    @staticmethod
    def _authorize(request: Request, secret: str, what: str) -> None:
        given = request.headers.get(b"authorization", b"").decode("latin-1")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not token or not hmac.compare_digest(token.encode(), secret.encode()):
            raise HTTPError(401, f"missing or wrong {what} token: send 'Authorization: Bearer <token>'")

    async def _reload(self, current: ServedModel) -> Answer:
        """Load the model's reference again beside the old one (off the event loop); swap only if the
        new one loads and runs: any failure answers 409 and the old one keeps serving."""
        try:
            fresh = await self._load_again(current)
        except _LoadFailed as exc:
            return 409, {"error": f"reload of '{current.name}' failed, still serving version {current.version}: "
                                  f"{exc}"}, ()
        fresh = self._swap(current, fresh)
        return 200, {"name": fresh.name, "previous_version": current.version, "version": fresh.version}, ()

    async def _load_again(self, current: ServedModel, path: str | None = None) -> ServedModel:
        """The model's reference (or ``path``, what it resolved to) loaded and warmed up off the event loop;
        _LoadFailed says why it could not be, whatever failed (ONNX Runtime raises its own classes)."""
        def load() -> ServedModel:
            fresh = load_model(path or current.ref, self.registry)
            if fresh.name != current.name:
                raise TandemError(f"reference '{current.ref}' now names model '{fresh.name}', not '{current.name}'")
            fresh.ref = current.ref
            try:
                _warm_one(fresh)
            except Exception as exc:
                raise _LoadFailed(f"version {fresh.version} ({fresh.predictor.path}) loads, but its warm-up run "
                                  f"failed: {_one_line(exc)}") from None
            return fresh

        try:
            return await asyncio.get_running_loop().run_in_executor(None, load)
        except _LoadFailed:
            raise
        except Exception as exc:
            raise _LoadFailed(_one_line(exc)) from None

    def _swap(self, current: ServedModel, fresh: ServedModel) -> ServedModel:
        """Serve ``fresh`` in place of ``current``; the one served afterwards."""
        if self.models.get(current.name) is not current:
            return self.models[current.name]  # another reload won the race: keep its result
        self.models[current.name] = fresh  # one assignment: requests in flight keep the old predictor
        self.failed_loads.pop(current.name, None)
        return fresh

    def _model(self, name: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise HTTPError(404, f"model '{name[:100]}' is not served here; served: {', '.join(sorted(self.models))}")
        return model

    @staticmethod
    def _expect(method: str, wanted: str, request: Request) -> None:
        """405 unless ``method`` is ``wanted``; HEAD goes with GET (the protocol drops the body)."""
        if method != wanted and not (method == "HEAD" and wanted == "GET"):
            takes = "GET or HEAD" if wanted == "GET" else wanted
            raise HTTPError(405, f"{request.path[:200]} takes {takes}, not {method[:20]}", ALLOW[wanted])

    def _admit(self, model: ServedModel) -> None:
        """Refuse at once, before the body is parsed, while the model's queue is full: shedding load
        must cost far less than serving it."""
        current = self.batchers.get(model.name)
        if current is not None and current[1].queued_rows >= self.max_queue_rows:
            raise self._queue_full(model)

    def _queue_full(self, model: ServedModel) -> HTTPError:
        return HTTPError(429, f"model '{model.name}' has {self.max_queue_rows} rows queued: retry shortly",
                         [(b"retry-after", b"1")])

    def _body(self, request: Request, types: tuple[bytes, ...] = (JSON,)) -> bytes:
        headers = request.headers
        if request.body is None:
            raise HTTPError(413, f"body of {request.body_size} bytes is over the limit of {self.max_body_bytes} bytes")
        ctype = headers.get(b"content-type", b"")
        if ctype != JSON:
            ctype = ctype.split(b";")[0].strip().lower()
            if ctype not in types:
                raise HTTPError(415, f"content type must be application/json, got '{ctype.decode(errors='replace')}'")
        if b"content-encoding" in headers and headers[b"content-encoding"].lower() != b"identity":
            raise HTTPError(415, "compressed bodies are not accepted: send the body without Content-Encoding")
        return request.body

    @staticmethod
    def _parse_json(raw: bytes) -> object:
        try:
            doc = orjson.loads(raw)  # (orjson itself stops at 1024 levels, without recursing)
        except orjson.JSONDecodeError:
            pass
        else:
            check_json_depth(raw)
            return doc
        check_json_depth(raw)
        try:  # the standard parser, only to say precisely what is wrong (it recurses: the depth is checked)
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HTTPError(400, f"body is not valid JSON: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        try:
            json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        except json.JSONDecodeError as exc:
            raise HTTPError(400, f"body is not valid JSON: {exc}") from None
        except ValueError:  # Python's own bound on the digits of an int it reads
            raise HTTPError(400, f"body: a number has over {sys.get_int_max_str_digits()} digits") from None
        raise HTTPError(400, "body is not valid JSON (a number or string could not be read)")

    def _run(self, model: ServedModel, enc: EncodedInputs,
             answer: Callable[[RunOutputs, int, int], Answer]) -> Answer | Later:
        """Run encoded (so already validated) rows, on their own or in a micro-batch, and make the answer."""
        started = time.perf_counter()
        batcher = self._batcher(model) if enc.n_rows < self.max_batch_rows else None
        if batcher is None or (batcher.idle() and self._found_quiet(started)):  # batching off, too big to share,
            out = model.predictor.run(enc)                                      # or nobody to share a run with
            self._observe(model.name, 0.0, time.perf_counter() - started, enc.n_rows)
            if not all_finite(out):
                raise NonFiniteOutput()
            return answer(RunOutputs(out), 0, enc.n_rows)
        later = Later(self, model, answer)
        try:
            batcher.submit(enc, later)
        except QueueFull:
            raise self._queue_full(model) from None
        return later

    def _found_quiet(self, now: float) -> bool:
        """Did the event loop sleep since the last answer? Then no backlog is being read: run at once."""
        wall = now - self.answered_at
        return wall > QUIET_SLEPT_S and wall - (time.thread_time() - self.answered_cpu) > QUIET_SLEPT_S

    def _batch_error(self, model: ServedModel | None, exc: BaseException) -> BaseException:
        if isinstance(exc, TimeoutError) and model is not None:
            return HTTPError(503, f"model '{model.name}' did not answer within {self.request_timeout_s:g} s",
                             [(b"retry-after", b"1")])
        return exc

    def _batcher(self, model: ServedModel) -> Batcher:
        current = self.batchers.get(model.name)
        if current is None or current[0] is not model.predictor:  # first use, or a reload swapped the model
            name = model.name
            batcher = Batcher(model.predictor, max_batch_rows=self.max_batch_rows, queue_delay_s=self.queue_delay_s,
                              max_queue_rows=self.max_queue_rows, timeout_s=self.request_timeout_s,
                              observe=lambda q, c, n: self._observe(name, q, c, n))
            self.batchers[model.name] = current = (model.predictor, batcher)
        return current[1]

    def _observe(self, name: str, queue_s: float, compute_s: float, rows: int) -> None:
        self.metrics.observe_latency(name, "queue", queue_s)
        self.metrics.observe_latency(name, "compute", compute_s)
        self.metrics.observe_rows(name, rows)
        if self.footprint is not None:
            self.footprint.count(rows)

    def _footprint(self, model: ServedModel) -> dict:
        """The model's footprint: its training ledger's totals, what 1,000 predictions cost at export, and
        what they cost in this server (windows of at least 1,000, all served models together)."""
        ledger = model.predictor.manifest.get("footprint") or {}
        train = {k: v for k, v in (ledger.get("train") or {}).items() if k not in ("trials", "per_learner")}
        serving = (self.footprint.figures() if self.footprint is not None else
                   {"available": False, "reason": "the server runs without a footprint meter (--no-footprint, or "
                                                  "CodeCarbon is not installed: pip install 'tandem[footprint]')"})
        return {"model": model.name, "version": model.version, "training": train,
                "inference_at_export": ledger.get("inference"), "serving": serving}

    # -- REST ---------------------------------------------------------------------------------
    def _rows_to_input(self, body: object) -> object:
        if type(body) is dict and "instances" in body:  # the common request, checked first
            rows = body["instances"]
            if type(rows) is list and len(rows) == 1 and type(rows[0]) is dict:
                return rows
        if not isinstance(body, dict) or not ({"instances", "inputs"} & set(body)):
            raise HTTPError(400, 'body: expected {"instances": [{column: value}, ...]} or '
                                 '{"inputs": {column: [values]}}')
        if "instances" in body:
            rows = body["instances"]
            if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
                raise HTTPError(400, "field 'instances': expected a non-empty list of {column: value} objects")
            self._check_rows(len(rows))
            return rows
        cols = body["inputs"]
        if not isinstance(cols, dict) or not cols or not all(isinstance(v, list) for v in cols.values()):
            raise HTTPError(400, "field 'inputs': expected {column: [values]} with one list per column")
        lengths = {len(v) for v in cols.values()}
        if len(lengths) != 1:
            raise HTTPError(400, f"field 'inputs': every column needs the same number of values, got {sorted(lengths)}")
        self._check_rows(lengths.pop())
        return cols

    def _check_rows(self, n: int) -> None:
        if n > self.max_rows:
            raise HTTPError(413, f"{n} rows in one request is over the limit of {self.max_rows}")

    def _predict_rest(self, model: ServedModel, body: object) -> Answer | Later:
        p = model.predictor
        data = self._rows_to_input(body)
        if isinstance(data, list):
            enc = _encode(p.encoder.encode_rows, data, "field 'instances'", what="field 'instances'")
        else:
            enc = _encode(p.encode, data, "field 'inputs'")
        explain = body.get("explain", False)  # (a dict: _rows_to_input checked)
        if explain is not False and explain is not True:
            raise HTTPError(400, f"field 'explain': expected true or false, got {explain!r:.80}")

        def answer(run: RunOutputs, start: int, stop: int) -> Answer:
            predictions = run.cache.get("predictions")
            if predictions is None:  # decoded once per model run, whatever the number of requests it served
                run.cache["predictions"] = predictions = p.decode(run.out).tolist()
            result = {"model": model.name, "version": model.version, "predictions": predictions[start:stop]}
            if p.task != "regression":
                result["labels"] = model.labels
                result["probabilities"] = run.out["probabilities"][start:stop]  # float32: written as such
            if explain:  # this request's rows only, whatever it shared a model run with
                e = p.explain(enc)
                result["explanations"] = {"output": e["output"], "base": e["base"], "contributions": [
                    dict(zip(e["columns"], row, strict=True)) for row in e["contributions"].tolist()]}
            return 200, result, ()

        return self._run(model, enc, answer)

    # -- KServe v2 ----------------------------------------------------------------------------
    def _infer_v2(self, model: ServedModel, request: Request) -> Answer | Later:
        p = model.predictor
        header_length = request.headers.get(b"inference-header-content-length")
        if header_length is not None:
            if not header_length.isdigit() or len(header_length) > 15:
                raise HTTPError(400, "Inference-Header-Content-Length must be a number of bytes")
            header_length = int(header_length)
        # v2 clients may send no content type; binary requests are application/octet-stream
        raw = self._body(request, types=(JSON, b"", b"application/octet-stream"))
        self._admit(model)
        check_json_depth(raw if header_length is None else raw[:header_length])
        try:
            v2 = kserve.decode_request(raw, header_length, frozenset(c.name for c in p.encoder.image_columns))
        except kserve.V2Error as exc:
            raise HTTPError(400, str(exc)) from None
        self._check_rows(v2.n_rows)

        def answer(run: RunOutputs, start: int, stop: int) -> Answer:
            out = run.rows(start, stop)
            labels = p.decode(out) if p.task != "regression" else None
            try:
                body, ctype, extra = kserve.encode_answer(model.name, model.version, p, out, labels, v2)
            except kserve.V2Error as exc:
                raise HTTPError(400, str(exc)) from None
            return 200, RawResponse(body, ctype, extra), ()

        enc = _encode(p.encode, v2.columns, "inputs")
        if enc.text is not None:  # BYTES cannot say null: an empty element is a mistake
            blank = np.flatnonzero((enc.text[:, 1::2] == "").any(axis=1))
            if len(blank):
                raise HTTPError(400, f"input text row {int(blank[0]) + 1}: empty text; send the text to read")
        return self._run(model, enc, answer)


def _encode(encode: Callable[..., EncodedInputs], data: object, field: str, **kwargs: str) -> EncodedInputs:
    """``encode(data)``: a request's values as the model's inputs. The encoder names a wrong value itself
    (TandemError, 422); a value that its libraries (numpy, Arrow) refuse in their own words is still the
    request's mistake, not the server's."""
    try:
        return encode(data, **kwargs)
    except TandemError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise HTTPError(422, f"{field}: the values could not be read as the model's columns "
                             f"({_one_line(exc)})") from None


def _blank_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


def _warm_one(m: ServedModel) -> None:
    columns = m.predictor.schema.features
    row = {c.name: (0.0 if c.kind in ("numeric", "boolean") else "warm up" if c.kind == "text" else
                    _blank_png() if c.kind == "image" else "") for c in columns}
    for c in columns:
        if c.kind == "datetime":
            row[c.name] = "2000-01-01"
    m.predictor.run(m.predictor.encode(row))


RFC822 = b"message/rfc822"


def _value_schema(kind: str, categories: list[str] | None) -> dict:
    if kind == "numeric":
        return {"type": ["number", "null"]}
    if kind == "boolean":
        return {"type": ["boolean", "null"]}
    if kind == "datetime":
        return {"type": ["string", "null"], "description": "ISO 8601 date or timestamp"}
    if kind == "text":
        return {"type": ["string", "null"], "description": "free text"}
    schema: dict = {"type": ["string", "number", "null"]}
    if categories:
        schema["description"] = "categories seen in training: " + ", ".join(categories[:20]) + (
            ", ..." if len(categories) > 20 else "") + "; any other value is read as unknown"
    return schema


def openapi_document(models: list[ServedModel]) -> dict:
    """OpenAPI 3.1 for the served models, generated from each bundle's schema."""
    error = {"description": "the request is wrong; the body says what and where",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    paths: dict = {
        "/v2/health/live": {"get": {"summary": "liveness", "responses": {"200": {"description": "live"}}}},
        "/v2/health/ready": {"get": {"summary": "readiness", "responses": {"200": {"description": "ready"},
                                                                             "503": {"description": "warming up"}}}},
    }
    schemas: dict = {"Error": {"type": "object", "required": ["error"],
                               "properties": {"error": {"type": "string"}}}}
    for m in models:
        p = m.predictor
        row = f"{m.name}_row"
        schemas[row] = {"type": "object", "required": [c.name for c in p.schema.features],
                        "properties": {c.name: _value_schema(c.kind, c.categories) for c in p.schema.features}}
        prediction = {"type": "number"} if p.task == "regression" else {"type": ["string", "number", "boolean"]}
        answer = {"type": "object", "properties": {
            "model": {"type": "string"}, "version": {"type": ["integer", "null"]},
            "predictions": {"type": "array", "items": prediction}}}
        if p.task != "regression":
            answer["properties"]["labels"] = {"type": "array"}
            answer["properties"]["probabilities"] = {"type": "array", "items": {
                "type": "array", "items": {"type": "number"}, "minItems": len(p.labels), "maxItems": len(p.labels)}}
        answer["properties"]["explanations"] = {
            "type": "object", "description": "with explain: true. base + a row's contributions = its output",
            "properties": {"output": {"type": "string"}, "base": {"type": "number"},
                           "contributions": {"type": "array", "items": {
                               "type": "object", "additionalProperties": {"type": "number"}}}}}
        paths[f"/v1/models/{m.name}/predict"] = {"post": {
            "summary": f"predict with {m.name} (version {m.version})",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["instances"],
                "properties": {"instances": {"type": "array", "minItems": 1, "maxItems": MAX_ROWS,
                                             "items": {"$ref": f"#/components/schemas/{row}"}},
                               "explain": {"type": "boolean", "description": "add per-column contributions "
                                           "(tree and linear models; 422 where the model has none)"}}}}}},
            "responses": {"200": {"description": "predictions",
                                  "content": {"application/json": {"schema": answer}}},
                          "400": error, "401": error, "413": error, "415": error, "422": error}}}
        if [c.kind for c in p.schema.features] == ["image"]:  # an image model: one raw image as the body
            paths[f"/v1/models/{m.name}/predict"]["post"]["requestBody"]["content"]["image/*"] = {
                "schema": {"type": "string", "format": "binary", "description": "one encoded image"}}
        if p.manifest.get("source") == "mail":  # trained on a mail folder: raw messages are read as in training
            paths[f"/v1/models/{m.name}/predict"]["post"]["requestBody"]["content"]["message/rfc822"] = {
                "schema": {"type": "string", "format": "binary", "description": "one raw e-mail (RFC 822)"}}
        paths[f"/v2/models/{m.name}"] = {"get": {"summary": f"KServe v2 metadata of {m.name}",
                                                 "responses": {"200": {"description": "metadata"}}}}
    return {"openapi": "3.1.0", "info": {"title": "tandem serve", "version": "1"}, "paths": paths,
            "components": {"schemas": schemas}}


def create_app() -> ServeApp:
    """Build the app from the environment ``tandem serve`` sets: the uvicorn factory."""
    from tandem.registry import Registry

    refs = [r for r in os.environ.get("TANDEM_SERVE_MODELS", "").split(",") if r]
    registry = Registry()
    env = os.environ.get
    return ServeApp([load_model(ref, registry) for ref in refs],
                    max_body_bytes=int(env("TANDEM_SERVE_MAX_BODY", MAX_BODY_BYTES)),
                    admin_token=env("TANDEM_ADMIN_TOKEN"), api_key=env("TANDEM_API_KEY"), registry=registry,
                    max_batch_rows=int(env("TANDEM_SERVE_MAX_BATCH_ROWS", "64")),
                    queue_delay_us=float(env("TANDEM_SERVE_QUEUE_DELAY_US", "0")),
                    max_queue_rows=int(env("TANDEM_SERVE_MAX_QUEUE_ROWS", "4096")),
                    request_timeout_s=float(env("TANDEM_SERVE_TIMEOUT_S", "10")),
                    watch_interval_s=float(env("TANDEM_SERVE_WATCH_S", "2")),
                    metrics_dir=env("TANDEM_SERVE_METRICS_DIR") or None, footprint=serving_meter())


def serving_meter() -> PredictionMeter | None:
    """The server's prediction meter, unless $TANDEM_SERVE_FOOTPRINT is 0 or CodeCarbon is not installed; a
    window closes after 1,000 predictions and $TANDEM_SERVE_FOOTPRINT_WINDOW_S seconds (default 5)."""
    import importlib.util

    if os.environ.get("TANDEM_SERVE_FOOTPRINT", "1") == "0" or importlib.util.find_spec("codecarbon") is None:
        return None
    return PredictionMeter(min_seconds=float(os.environ.get("TANDEM_SERVE_FOOTPRINT_WINDOW_S", "5")))
