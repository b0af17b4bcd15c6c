"""The server's logic, serving bundles: no framework, validation from each bundle's schema.

``ServeApp.handle(request, respond)`` answers one request, at once or later (a micro-batch, a
reload); tandem's HTTP protocol (serve/http.py) calls it directly, and ``ServeApp`` is also an ASGI
application for any ASGI server. ``create_app(config)`` builds one from a ``ServeConfig``.

The routes are one table, in serve/routes.py (``route_list_markdown()`` lists them); their handlers are in
serve/rest.py (REST), serve/v2.py (KServe v2) and serve/admin.py (reloads). Every user mistake answers 4xx
with ``{"error": "..."}`` naming the field and what was expected.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

import orjson

from tandem.bundle.inputs import EncodedInputs
from tandem.footprint.serving import PredictionMeter
from tandem.inference.predictor import Predictor
from tandem.serve import admin, routes
from tandem.serve.batching import Batcher, NonFiniteOutput, QueueFull, RunOutputs, all_finite
from tandem.serve.config import MAX_BODY_BYTES, ServeConfig
from tandem.serve.limits import HTTPLimits
from tandem.serve.metrics import ServeMetrics
from tandem.serve.models import ServedModel, load_model, warm_one
from tandem.serve.protocol import (
    JSON,
    MAX_ROWS,
    Answer,
    HTTPError,
    Later,
    RawResponse,
    Receive,
    Request,
    Respond,
    Response,
    Scope,
    Send,
    error_answer,
    error_response,
    logger,
)

# (names kept importable from here: bench/hostile.py runs an older serve/http.py that imports them from this module)
__all__ = ["MAX_BODY_BYTES", "MAX_ROWS", "HTTPError", "Request", "Response", "ServeApp", "ServedModel", "create_app",
           "error_response", "load_model", "serving_meter"]

# a request finds the server quiet when the event loop slept at least this long since the last answer (wall
# time minus this thread's CPU time: a busy loop reading a backlog never sleeps, whatever its pace)
QUIET_SLEPT_S = 20e-6


class ServeApp:
    """The server's logic: ``handle(request, respond)`` answers one request, now or later.

    It is also an ASGI application (lifespan, and HTTP through ``handle``), so any ASGI server can
    run it; ``tandem serve`` runs it on uvicorn with tandem's own HTTP protocol (serve/http.py),
    which calls ``handle`` directly and keeps the app's ``limits``."""

    def __init__(self, models: list[ServedModel], *, max_body_bytes: int = MAX_BODY_BYTES,
                 max_rows: int = MAX_ROWS, admin_token: str | None = None, api_key: str | None = None,
                 registry: object | None = None, max_batch_rows: int = 64, queue_delay_us: float = 0.0,
                 max_queue_rows: int = 4096, request_timeout_s: float = 10.0, watch_interval_s: float = 0.0,
                 metrics_dir: str | None = None, footprint: PredictionMeter | None = None,
                 limits: HTTPLimits | None = None, require_signed: bool = False):
        self.models = {m.name: m for m in models}
        self.footprint = footprint  # energy per 1,000 predictions (None: not metered)
        self.max_body_bytes = max_body_bytes
        self.max_rows = max_rows
        self.admin_token = admin_token or None
        self.api_key = api_key or None
        self.registry = registry
        self.limits = limits or HTTPLimits()  # what tandem's HTTP protocol lets a client send
        self.require_signed = require_signed  # (for reloads: load_model's require_signed)
        self.ready = False
        self.metrics = ServeMetrics(metrics_dir, footprint=footprint.figures if footprint else None)
        self.max_batch_rows = max_batch_rows  # 0 or 1: batching off, each request runs on its own
        self.queue_delay_s = queue_delay_us / 1e6
        self.max_queue_rows = max_queue_rows
        self.request_timeout_s = request_timeout_s
        self.watch_interval_s = watch_interval_s
        self.batchers: dict[str, tuple[Predictor, Batcher]] = {}
        self.failed_loads: dict[str, str] = {}  # model name -> bundle path that failed to load (not retried)
        self.reload_generations: dict[str, int] = {}  # model name -> the last reload broadcast seen (several workers)
        self._housekeeping: asyncio.Task | None = None
        self.answered_at = 0.0  # when the last answer was made (wall clock, and this thread's CPU clock)
        self.answered_cpu = 0.0
        self.current: tuple = (None, ("", ""), 0.0)  # (respond, labels, started) of the request being handled
        self._predict_paths = {routes.PREDICT.path.replace("{name}", name): name for name in self.models}

    # -- the core: one request in, one answer out --------------------------------------------------
    def handle(self, request: Request, respond: Respond) -> None:
        """Answer ``request`` by calling ``respond`` once: before returning, or later (micro-batch, reload)."""
        started = time.perf_counter()
        self.metrics.in_flight += 1
        name = self._predict_paths.get(request.path)  # the common request skips the general routing
        labels = (name, "predict") if name is not None else None
        try:
            if name is not None:
                self.current = (respond, labels, started)  # what a Later needs to answer this request
                answer = routes.predict_directly(self, request, self.models[name])
            else:
                parts = request.path.rstrip("/").split("/")[1:]
                labels = self._labels_of(parts)
                self.current = (respond, labels, started)
                answer = routes.ROUTER.dispatch(self, request, parts)
        except Exception as exc:
            answer = error_answer(exc)
        if type(answer) is tuple:
            respond(self.finish(answer, labels, started))

    def finish(self, answer: Answer, labels: tuple[str, str], started: float) -> Response:
        """The answer as a Response, counted in the metrics."""
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

    def _labels_of(self, parts: list[str]) -> tuple[str, str]:
        """(model, route) metric labels of a request path's parts; names not served share one label,
        so requests for made-up models cannot grow the metrics without bound."""
        if len(parts) >= 3 and parts[1] == "models":
            tail = parts[-1] if len(parts) > 3 else "metadata"
            route = tail if tail in ("predict", "recommend", "infer", "ready", "reload") else "metadata"
            return (parts[2] if parts[2] in self.models else ""), route
        if parts[:2] == ["v2", "health"]:
            return "", "health"
        return "", ("metrics" if parts == ["metrics"] else "other")

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
        """Publish metrics for the other workers each second, follow their reloads (several workers); follow
        moved aliases every watch interval."""
        next_watch = time.monotonic() + self.watch_interval_s
        tick = min(1.0, self.watch_interval_s) if self._watching() else 1.0
        if self.metrics.directory is not None:
            tick = min(tick, 0.25)  # a reload waits for the other workers to follow
        next_publish = 0.0
        while True:
            await asyncio.sleep(tick)
            try:
                if self.metrics.directory is not None:
                    await admin.follow_broadcasts(self, self.metrics.directory)
                if time.monotonic() >= next_publish:
                    next_publish = time.monotonic() + 1.0
                    self.metrics.publish()
                if self._watching() and time.monotonic() >= next_watch:
                    next_watch = time.monotonic() + self.watch_interval_s
                    for model in list(self.models.values()):
                        await admin.follow(self, model)
            except Exception as exc:  # housekeeping must never stop: say why and go on
                print(f"tandem serve: housekeeping: {exc}", file=sys.stderr)

    def _watching(self) -> bool:
        return self.watch_interval_s > 0 and self.registry is not None

    def _warm_up(self) -> None:
        """Run each model once so the first request pays no lazy initialisation."""
        for m in self.models.values():
            warm_one(m)

    # -- what the handlers use ------------------------------------------------------------------------
    def model(self, name: str) -> ServedModel:
        """The served model of that name; 404 naming those served."""
        model = self.models.get(name)
        if model is None:
            raise HTTPError(404, f"model '{name[:100]}' is not served here; served: {', '.join(sorted(self.models))}")
        return model

    def read_body(self, request: Request, types: tuple[bytes, ...] = (JSON,)) -> bytes:
        """The request's body: 413 over the size limit, 415 for another content type or a compressed body."""
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

    def check_rows(self, n: int) -> None:
        """413 for more rows than one request may send."""
        if n > self.max_rows:
            raise HTTPError(413, f"{n} rows in one request is over the limit of {self.max_rows}")

    def admit(self, model: ServedModel) -> None:
        """Refuse at once, before the body is parsed, while the model's queue is full: shedding load
        must cost far less than serving it."""
        current = self.batchers.get(model.name)
        if current is not None and current[1].queued_rows >= self.max_queue_rows:
            raise self._queue_full(model)

    def _queue_full(self, model: ServedModel) -> HTTPError:
        return HTTPError(429, f"model '{model.name}' has {self.max_queue_rows} rows queued: retry shortly",
                         [(b"retry-after", b"1")])

    def run_model(self, model: ServedModel, enc: EncodedInputs,
                  answer: Callable[[RunOutputs, int, int], Answer]) -> Answer | Later:
        """Run encoded (so already validated) rows, on their own or in a micro-batch, and make the answer."""
        started = time.perf_counter()
        batcher = self._batcher(model) if enc.n_rows < self.max_batch_rows else None
        if batcher is None or (batcher.idle() and self._found_quiet(started)):  # batching off, too big to share,
            out = model.predictor.run(enc)                                      # or nobody to share a run with
            self.observe(model.name, 0.0, time.perf_counter() - started, enc.n_rows)
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

    def batch_error(self, model: ServedModel | None, exc: BaseException) -> BaseException:
        """What a request is answered when its batch failed: a timeout is a 503 naming the model."""
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
                              observe=lambda q, c, n: self.observe(name, q, c, n))
            self.batchers[model.name] = current = (model.predictor, batcher)
        return current[1]

    def observe(self, name: str, queue_s: float, compute_s: float, rows: int) -> None:
        """Count a model run in the metrics (its queue and compute seconds, its rows) and the footprint."""
        self.metrics.observe_latency(name, "queue", queue_s)
        self.metrics.observe_latency(name, "compute", compute_s)
        self.metrics.observe_rows(name, rows)
        if self.footprint is not None:
            self.footprint.count(rows)


def create_app(config: ServeConfig | None = None) -> ServeApp:
    """Build the app from ``config``; without one, from the config ``tandem serve`` handed this process
    (``ServeConfig.from_env``): uvicorn's factory, in each worker."""
    from tandem.registry import Registry

    config = ServeConfig.from_env() if config is None else config
    registry = Registry()
    return ServeApp([load_model(ref, registry, require_signed=config.require_signed) for ref in config.models],
                    max_body_bytes=config.max_body_bytes, admin_token=config.admin_token, api_key=config.api_key,
                    registry=registry, max_batch_rows=config.max_batch_rows, queue_delay_us=config.queue_delay_us,
                    max_queue_rows=config.max_queue_rows, request_timeout_s=config.request_timeout_s,
                    watch_interval_s=config.watch_interval_s, metrics_dir=config.metrics_dir,
                    footprint=serving_meter(config), limits=config.limits, require_signed=config.require_signed)


def serving_meter(config: ServeConfig) -> PredictionMeter | None:
    """The server's prediction meter, unless the config turns it off or CodeCarbon is not installed; a window
    closes after 1,000 predictions and ``config.footprint_window_s`` seconds, on ``config.country``'s grid."""
    import importlib.util

    if not config.footprint or importlib.util.find_spec("codecarbon") is None:
        return None
    from tandem.footprint import MeterSettings

    settings = MeterSettings.from_env(country=config.country) if config.country is not None else None
    return PredictionMeter(settings, min_seconds=config.footprint_window_s)

