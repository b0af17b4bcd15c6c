"""A bare ASGI application serving bundles: no framework, validation from each bundle's schema.

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
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tandem.bundle.inputs import EncodedInputs
from tandem.errors import TandemError
from tandem.inference.predictor import Predictor
from tandem.serve.batching import Batcher, QueueFull

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_ROWS = 10_000
Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


@dataclass
class RawResponse:
    """A non-JSON answer (Prometheus text)."""

    body: bytes
    content_type: bytes


class HTTPError(Exception):
    """An answer other than 200, with a message for the JSON body."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


@dataclass
class ServedModel:
    """One loaded bundle and how it is addressed."""

    name: str
    version: int | None
    predictor: Predictor
    ref: str = ""  # the reference it was loaded from: a reload resolves it again (an alias may have moved)


def load_model(ref: str, registry: object) -> ServedModel:
    """Resolve ``ref`` in the registry (or as a path), verify and load the bundle."""
    predictor = Predictor(registry.resolve(ref), threads=1)
    manifest = predictor.manifest
    return ServedModel(manifest["name"], manifest.get("version"), predictor, ref)


def _reject_constant(value: str) -> float:
    raise HTTPError(400, f"body: {value} is not allowed in JSON numbers; send null for a missing value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise HTTPError(400, f"body: number {text[:40]} is out of range")
    return value


def _v2_datatype(kind: str) -> str:
    return {"numeric": "FP32", "boolean": "BOOL", "datetime": "BYTES"}.get(kind, "BYTES")


class ServeApp:
    """ASGI callable serving a set of models by name."""

    def __init__(self, models: list[ServedModel], *, max_body_bytes: int = MAX_BODY_BYTES,
                 max_rows: int = MAX_ROWS, admin_token: str | None = None, api_key: str | None = None,
                 registry: object | None = None, max_batch_rows: int = 0, queue_delay_us: float = 0.0,
                 max_queue_rows: int = 4096, request_timeout_s: float = 10.0):
        self.models = {m.name: m for m in models}
        self.max_body_bytes = max_body_bytes
        self.max_rows = max_rows
        self.admin_token = admin_token or None
        self.api_key = api_key or None
        self.registry = registry
        self.ready = False
        self.metrics = ServeMetrics()
        self.max_batch_rows = max_batch_rows  # 0 or 1: batching off, each request runs on its own
        self.queue_delay_s = queue_delay_us / 1e6
        self.max_queue_rows = max_queue_rows
        self.request_timeout_s = request_timeout_s
        self.batchers: dict[str, tuple[Predictor, Batcher]] = {}
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        self.in_flight += 1
        extra_headers: list[tuple[bytes, bytes]] = []
        try:
            status, body = await self._route(scope, receive)
        except HTTPError as exc:
            status, body, extra_headers = exc.status, {"error": exc.message}, exc.headers
        except TandemError as exc:
            status, body = 422, {"error": str(exc)}
        finally:
            self.metrics.in_flight.dec()
            self.in_flight -= 1
        if isinstance(body, RawResponse):
            payload, ctype = body.body, body.content_type
        else:
            try:
                payload = json.dumps(body, allow_nan=False).encode()
            except ValueError:  # a model output that JSON cannot carry: say so rather than fail
                status, payload = 422, b'{"error": "the model produced a non-finite value for this input"}'
            ctype = b"application/json"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(payload)).encode()),
                                *extra_headers]})
        await send({"type": "http.response.body", "body": payload})
        model, route = _labels_of(scope["path"])
        self.metrics.requests.labels(model, route, str(status)).inc()
        self.metrics.latency.labels(model, "total").observe(time.perf_counter() - started)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._warm_up()
                self.ready = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _warm_up(self) -> None:
        """Run each model once so the first request pays no lazy initialisation."""
        for m in self.models.values():
            self._warm_one(m)

    @staticmethod
    def _warm_one(m: ServedModel) -> None:
        columns = m.predictor.schema.features
        row = {c.name: (0.0 if c.kind in ("numeric", "boolean") else "") for c in columns}
        for c in columns:
            if c.kind == "datetime":
                row[c.name] = "2000-01-01"
        m.predictor.run(m.predictor.encode(row))

    # -- routing ------------------------------------------------------------------------------
    async def _route(self, scope: Scope, receive: Receive) -> tuple[int, dict]:
        method, path = scope["method"], scope["path"].rstrip("/")
        parts = path.split("/")[1:]
        if path == "/v2/health/live":
            return 200, {"live": True}
        if path == "/v2/health/ready":
            return (200 if self.ready else 503), {"ready": self.ready}
        if path == "/v2":
            return 200, {"name": "tandem", "version": "1", "extensions": []}
        if path == "/openapi.json":
            return 200, openapi_document(list(self.models.values()))
        if path == "/metrics":
            return 200, RawResponse(self.metrics.render(), b"text/plain; version=0.0.4; charset=utf-8")
        if len(parts) == 4 and parts[:2] == ["admin", "models"] and parts[3] == "reload":
            self._expect(method, "POST", path)
            self._authorize(scope, self.admin_token, "admin", required=True)
            return self._reload(self._model(parts[2]))
        if len(parts) >= 3 and parts[0] in ("v1", "v2") and parts[1] == "models":
            self._authorize(scope, self.api_key, "API key", required=False)
            model = self._model(parts[2])
            tail = parts[3:]
            if parts[0] == "v1" and tail == ["predict"]:
                self._expect(method, "POST", path)
                return 200, await self._predict_rest(model, await self._json(scope, receive))
            if parts[0] == "v2" and not tail:
                self._expect(method, "GET", path)
                return 200, self._metadata(model)
            if parts[0] == "v2" and tail == ["ready"]:
                return (200 if self.ready else 503), {"name": model.name, "ready": self.ready}
            if parts[0] == "v2" and tail == ["infer"]:
                self._expect(method, "POST", path)
                return 200, await self._infer_v2(model, await self._json(scope, receive))
        raise HTTPError(404, f"no route {method} {scope['path']}")

    @staticmethod
    def _authorize(scope: Scope, secret: str | None, what: str, *, required: bool) -> None:
        if secret is None:
            if required:
                raise HTTPError(403, "admin endpoints are off: start the server with --admin-token "
                                     "(or TANDEM_ADMIN_TOKEN)")
            return
        given = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not token or not hmac.compare_digest(token.encode(), secret.encode()):
            raise HTTPError(401, f"missing or wrong {what} token: send 'Authorization: Bearer <token>'")

    def _reload(self, current: ServedModel) -> tuple[int, dict]:
        """Load the model's reference again beside the old one; swap only if the new one loads and runs."""
        try:
            fresh = load_model(current.ref, self.registry)
            if fresh.name != current.name:
                raise HTTPError(409, f"reference '{current.ref}' now names model '{fresh.name}', not '{current.name}'")
            self._warm_one(fresh)
        except TandemError as exc:
            return 409, {"error": f"reload of '{current.name}' failed, still serving version {current.version}: {exc}"}
        self.models[current.name] = fresh  # one assignment: requests in flight keep the old predictor
        return 200, {"name": fresh.name, "previous_version": current.version, "version": fresh.version}

    def _model(self, name: str) -> ServedModel:
        if name not in self.models:
            raise HTTPError(404, f"model '{name}' is not served here; served: {', '.join(sorted(self.models))}")
        return self.models[name]

    @staticmethod
    def _expect(method: str, wanted: str, path: str) -> None:
        if method != wanted:
            raise HTTPError(405, f"{path} takes {wanted}, not {method}")

    async def _json(self, scope: Scope, receive: Receive) -> object:
        headers = dict(scope.get("headers") or [])
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            raise HTTPError(415, f"content type must be application/json, got '{ctype.decode(errors='replace')}'")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise HTTPError(413, f"body of {int(declared)} bytes is over the limit of {self.max_body_bytes} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise HTTPError(413, f"body is over the limit of {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        try:
            return json.loads(b"".join(chunks), parse_constant=_reject_constant, parse_float=_finite_float)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HTTPError(400, f"body is not valid JSON: {exc}") from None

    async def _run(self, model: ServedModel, enc: EncodedInputs) -> dict[str, np.ndarray]:
        """Run encoded (so already validated) rows, on their own or in a micro-batch."""
        p = model.predictor
        if self.max_batch_rows <= 1:
            started = time.perf_counter()
            out = p.run(enc)
            self._observe(model.name, 0.0, time.perf_counter() - started, enc.n_rows)
            return out
        try:
            return await self._batcher(model).submit(enc, self.request_timeout_s)
        except QueueFull:
            raise HTTPError(429, f"model '{model.name}' has {self.max_queue_rows} rows queued: retry shortly",
                            [(b"retry-after", b"1")]) from None
        except asyncio.TimeoutError:
            raise HTTPError(503, f"model '{model.name}' did not answer within {self.request_timeout_s:g} s",
                            [(b"retry-after", b"1")]) from None

    def _batcher(self, model: ServedModel) -> Batcher:
        current = self.batchers.get(model.name)
        if current is None or current[0] is not model.predictor:  # first use, or a reload swapped the model
            name = model.name
            batcher = Batcher(model.predictor, max_batch_rows=self.max_batch_rows, queue_delay_s=self.queue_delay_s,
                              max_queue_rows=self.max_queue_rows, in_flight=lambda: self.in_flight,
                              observe=lambda q, c, n: self._observe(name, q, c, n))
            self.batchers[model.name] = current = (model.predictor, batcher)
        return current[1]

    def _observe(self, name: str, queue_s: float, compute_s: float, rows: int) -> None:
        self.metrics.latency.labels(name, "queue").observe(queue_s)
        self.metrics.latency.labels(name, "compute").observe(compute_s)
        self.metrics.batch_rows.labels(name).observe(rows)

    # -- REST ---------------------------------------------------------------------------------
    def _rows_to_input(self, body: object) -> object:
        if not isinstance(body, dict) or not ({"instances", "inputs"} & set(body)):
            raise HTTPError(400, 'body: expected {"instances": [{column: value}, ...]} or '
                                 '{"inputs": {column: [values]}}')
        if "instances" in body:
            rows = body["instances"]
            if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
                raise HTTPError(400, "field 'instances': expected a non-empty list of {column: value} objects")
            self._check_rows(len(rows))
            return rows[0] if len(rows) == 1 else rows
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

    async def _predict_rest(self, model: ServedModel, body: object) -> dict:
        p = model.predictor
        data = self._rows_to_input(body)
        if isinstance(data, list):
            enc = p.encoder.encode_table(_table_from_rows(data, p.encoder.required), what="field 'instances'")
        elif "instances" in body:  # one row: the fast path, whatever its values look like
            enc = p.encoder.encode_row(data, what="field 'instances'")
        else:
            enc = p.encode(data)
        out = await self._run(model, enc)
        answer = {"model": model.name, "version": model.version, "predictions": p.decode(out).tolist()}
        if p.task != "regression":
            answer["labels"] = list(p._typed_labels.tolist())
            answer["probabilities"] = out["probabilities"].round(7).tolist()
        return answer

    # -- KServe v2 ----------------------------------------------------------------------------
    def _metadata(self, model: ServedModel) -> dict:
        p = model.predictor
        inputs = [{"name": c.name, "datatype": _v2_datatype(c.kind), "shape": [-1]} for c in p.schema.features]
        if p.task == "regression":
            outputs = [{"name": "prediction", "datatype": "FP32", "shape": [-1]}]
        else:
            outputs = [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                       {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(p.labels)]}]
        return {"name": model.name, "versions": [str(model.version)] if model.version else [],
                "platform": "tandem-onnx", "inputs": inputs, "outputs": outputs}

    async def _infer_v2(self, model: ServedModel, body: object) -> dict:
        p = model.predictor
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
            raise HTTPError(400, "body: expected {\"inputs\": [{\"name\", \"shape\", \"datatype\", \"data\"}, ...]}")
        columns: dict[str, list] = {}
        for i, tensor in enumerate(body["inputs"]):
            if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
                raise HTTPError(400, f"inputs[{i}]: expected an object with a string 'name'")
            data = tensor.get("data")
            if not isinstance(data, list):
                raise HTTPError(400, f"inputs[{i}] ('{tensor['name']}'): field 'data' must be a list")
            flat = list(_flatten(data))
            shape = tensor.get("shape")
            if isinstance(shape, list) and shape and all(isinstance(d, int) for d in shape):
                if int(np.prod(shape)) != len(flat):
                    raise HTTPError(400, f"inputs[{i}] ('{tensor['name']}'): shape {shape} does not match "
                                         f"{len(flat)} values")
            columns[tensor["name"]] = flat
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise HTTPError(400, f"inputs: every tensor needs the same number of rows, got {sorted(lengths)}")
        n = lengths.pop()
        self._check_rows(n)
        out = await self._run(model, p.encode(columns))
        if p.task == "regression":
            outputs = [{"name": "prediction", "datatype": "FP32", "shape": [n],
                        "data": out["prediction"].reshape(-1).tolist()}]
        else:
            labels = [str(v) for v in p.decode(out).tolist()]
            outputs = [{"name": "label", "datatype": "BYTES", "shape": [n], "data": labels},
                       {"name": "probabilities", "datatype": "FP32", "shape": [n, len(p.labels)],
                        "data": out["probabilities"].reshape(-1).round(7).tolist()}]
        answer = {"model_name": model.name, "model_version": str(model.version or ""), "outputs": outputs}
        if "id" in body:
            answer["id"] = body["id"]
        return answer


def _value_schema(kind: str, categories: list[str] | None) -> dict:
    if kind == "numeric":
        return {"type": ["number", "null"]}
    if kind == "boolean":
        return {"type": ["boolean", "null"]}
    if kind == "datetime":
        return {"type": ["string", "null"], "description": "ISO 8601 date or timestamp"}
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
        paths[f"/v1/models/{m.name}/predict"] = {"post": {
            "summary": f"predict with {m.name} (version {m.version})",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["instances"],
                "properties": {"instances": {"type": "array", "minItems": 1, "maxItems": MAX_ROWS,
                                             "items": {"$ref": f"#/components/schemas/{row}"}}}}}}},
            "responses": {"200": {"description": "predictions",
                                  "content": {"application/json": {"schema": answer}}},
                          "400": error, "401": error, "413": error, "415": error, "422": error}}}
        paths[f"/v2/models/{m.name}"] = {"get": {"summary": f"KServe v2 metadata of {m.name}",
                                                 "responses": {"200": {"description": "metadata"}}}}
    return {"openapi": "3.1.0", "info": {"title": "tandem serve", "version": "1"}, "paths": paths,
            "components": {"schemas": schemas}}


class ServeMetrics:
    """Prometheus metrics of one app (its own registry, so several apps never collide)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("tandem_requests", "HTTP requests by model, route and status code",
                                ["model", "route", "code"], registry=self.registry)
        self.latency = Histogram("tandem_request_seconds", "Request latency: compute (model run) and total",
                                 ["model", "phase"], registry=self.registry,
                                 buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0))
        self.batch_rows = Histogram("tandem_batch_rows", "Rows per model run", ["model"], registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384))
        self.in_flight = Gauge("tandem_in_flight_requests", "Requests being handled", registry=self.registry)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def _labels_of(path: str) -> tuple[str, str]:
    """(model, route) metric labels of a request path; unknown paths share one label."""
    parts = path.rstrip("/").split("/")[1:]
    if len(parts) >= 3 and parts[1] == "models":
        tail = parts[3] if len(parts) > 3 else "metadata"
        route = {"predict": "predict", "infer": "infer", "ready": "ready", "reload": "reload"}.get(tail, "metadata")
        return parts[2][:64], route
    if parts[:1] == ["v2"] and len(parts) >= 2 and parts[1] == "health":
        return "", "health"
    if parts == ["metrics"]:
        return "", "metrics"
    return "", "other"


def _flatten(values: list) -> object:
    for v in values:
        if isinstance(v, list):
            yield from _flatten(v)
        else:
            yield v


def _table_from_rows(rows: list[dict], columns: list[str]) -> pa.Table:
    """The model's columns of ``rows`` as a table (other fields are ignored, never parsed)."""
    for i, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise HTTPError(422, f"field 'instances' row {i + 1} is missing column(s) "
                                 f"{', '.join(repr(m) for m in missing)}")
    try:
        return pa.Table.from_pylist([{c: row[c] for c in columns} for row in rows])
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        for c in columns:  # name the column and row at fault
            for i, row in enumerate(rows):
                v = row[c]
                if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
                    raise HTTPError(422, f"field 'instances' column '{c}' row {i + 1}: number {v} is out "
                                         "of range") from None
        raise HTTPError(422, f"field 'instances': values of one column must share a type ({exc})") from None


def create_app() -> ServeApp:
    """Build the app from the environment ``tandem serve`` sets: the uvicorn factory."""
    from tandem.registry import Registry

    refs = [r for r in os.environ.get("TANDEM_SERVE_MODELS", "").split(",") if r]
    registry = Registry()
    env = os.environ.get
    return ServeApp([load_model(ref, registry) for ref in refs],
                    max_body_bytes=int(env("TANDEM_SERVE_MAX_BODY", MAX_BODY_BYTES)),
                    admin_token=env("TANDEM_ADMIN_TOKEN"), api_key=env("TANDEM_API_KEY"), registry=registry,
                    max_batch_rows=int(env("TANDEM_SERVE_MAX_BATCH_ROWS", "0")),
                    queue_delay_us=float(env("TANDEM_SERVE_QUEUE_DELAY_US", "0")),
                    max_queue_rows=int(env("TANDEM_SERVE_MAX_QUEUE_ROWS", "4096")),
                    request_timeout_s=float(env("TANDEM_SERVE_TIMEOUT_S", "10")))
