"""The server's routes: one table, ``ROUTES``, from which everything else about them is derived.

- dispatch: ``ROUTER.dispatch(app, request, parts)`` finds a request's route and calls its handler;
- the OpenAPI 3.1 document (``openapi_document``, served at ``/openapi.json``), with each served model's
  request and answer schemas generated from its bundle's schema;
- the route list the README shows (``route_list_markdown``; a test holds the README to it).

A path names a served model as ``{name}``; ``[/versions/{version}]`` is an optional part, and the version
must be the one served (else 404). HEAD goes with GET. Under a model's prefix (``/v1/models/{name}``,
``/v2/models/{name}``: the routes ``--api-key`` guards) the key and the model are checked first, then the
version, then the rest of the path; then, on every route, the method (405 with ``Allow``), then the admin token.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tandem.schema import ColumnSpec
from tandem.serve import admin, kserve, rest, v2
from tandem.serve.protocol import MAX_ROWS, Answer, HTTPError, Later, RawResponse, Request

if TYPE_CHECKING:
    from tandem.serve.app import ServeApp
    from tandem.serve.models import ServedModel

Handler = Callable[["ServeApp", Request, "ServedModel | None"], "Answer | Later"]
VERSIONS = ("versions", "{version}")  # the one optional part a path may have, right after {name}


@dataclass(frozen=True)
class Route:
    """One route: what answers it, and how the OpenAPI document and the README describe it."""

    method: str  # GET (HEAD goes with it) or POST
    path: str  # "/v2/models/{name}[/versions/{version}]/infer": {name} a served model, [...] optional
    handler: Handler  # (app, request, the served model or None) -> an answer, now or later
    summary: str  # OpenAPI's summary; {name} and {version} are the served model's
    doc: str  # the README's line
    auth: str = ""  # "api_key": --api-key guards it; "admin": it needs --admin-token's bearer token
    body: str = ""  # the request body (OpenAPI): "rows" (the model's JSON rows), "v2" (a v2 inference request)
    answer: str = "json"  # the 200 answer (OpenAPI): "json", "predictions" (the model's), "text" (Prometheus)
    responses: tuple[tuple[int, str], ...] = ((200, "ok"),)  # (status, description); "": the {"error": ...} body
    recommenders: bool | None = None  # True: only recommendation models have it; False: only the others

    def serves(self, m: ServedModel | None) -> bool:
        """Whether the route applies to ``m`` (the OpenAPI document lists it for that model)."""
        return m is None or self.recommenders is None or self.recommenders == (m.predictor.task == "recommend")

    def templates(self) -> tuple[str, ...]:
        """The concrete path templates: without and with the optional part (OpenAPI has no optional parts)."""
        head, bracket, rest = self.path.partition("[")
        if not bracket:
            return (self.path,)
        group, _, tail = rest.partition("]")
        return head + tail, head + group + tail


def openapi_route(app: ServeApp, request: Request, model: None) -> Answer:
    """This server's OpenAPI document."""
    document = openapi_document(list(app.models.values()), api_key=app.api_key is not None,
                                admin=app.admin_token is not None)
    return 200, document, ()


def metrics_route(app: ServeApp, request: Request, model: None) -> Answer:
    """The Prometheus exposition, summed over the workers."""
    return 200, RawResponse(app.metrics.render(), b"text/plain; version=0.0.4; charset=utf-8"), ()


_REST_ERRORS = ((400, ""), (401, ""), (413, ""), (415, ""), (422, ""))
ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/models/{name}/predict", rest.predict, "predict with {name} (version {version})",
          '`{"instances": [{col: value}, ...]}` or `{"inputs": {col: [values]}}` → `predictions`, `probabilities`, '
          '`labels`, `version`; `"explain": true` adds per-column contributions. A model of one image column also '
          "takes the raw image (`image/*`), a model trained on a mail folder a raw e-mail (`message/rfc822`)",
          auth="api_key", body="rows", answer="predictions", responses=((200, "predictions"), *_REST_ERRORS),
          recommenders=False),
    Route("POST", "/v1/models/{name}/recommend", rest.recommend, "top-k items from {name} (version {version})",
          '`{"user": id, "k": 10}` or `{"users": [ids], "k": 10}` (`"exclude_seen": false` keeps what the user '
          'already had) → `items`, `scores`, `known` per user (`recommendations` for a list); an unknown user gets '
          "the most popular items and a `note`. For models trained with `--task recommend`",
          auth="api_key", body="recommend", answer="recommendations",
          responses=((200, "recommendations"), *_REST_ERRORS), recommenders=True),
    Route("GET", "/v2/health/live", v2.live, "liveness", "KServe v2 liveness", responses=((200, "live"),)),
    Route("GET", "/v2/health/ready", v2.ready, "readiness",
          "KServe v2 readiness: 200 after the models are loaded and warmed up, 503 before",
          responses=((200, "ready"), (503, "warming up"))),
    Route("GET", "/v2", v2.server_metadata, "server metadata",
          "KServe v2 server metadata: name, version, extensions (`binary_tensor_data`)",
          responses=((200, "metadata"),)),
    Route("GET", "/v2/models/{name}[/versions/{version}]", v2.model_metadata, "KServe v2 metadata of {name}",
          "v2 metadata (inputs from the schema); a version other than the one served is 404",
          auth="api_key", responses=((200, "metadata"),)),
    Route("GET", "/v2/models/{name}[/versions/{version}]/ready", v2.model_ready, "KServe v2 readiness of {name}",
          "v2 readiness of the model", auth="api_key", responses=((200, "ready"), (503, "warming up"))),
    Route("POST", "/v2/models/{name}[/versions/{version}]/infer", v2.infer, "KServe v2 inference with {name}",
          "v2 inference: one input tensor per column; outputs `label` and `probabilities` (or `prediction`). "
          "JSON, or the binary tensor extension (`Inference-Header-Content-Length`) that `tritonclient` uses by "
          "default; outputs come back binary when asked",
          auth="api_key", body="v2", responses=((200, "the outputs"), *_REST_ERRORS)),
    Route("GET", "/openapi.json", openapi_route, "this OpenAPI document",
          "OpenAPI 3.1 generated from each bundle's schema (columns, types, categories)",
          responses=((200, "the document"),)),
    Route("GET", "/metrics", metrics_route, "Prometheus metrics, summed over the workers",
          "Prometheus: `tandem_requests_total{model,route,code}`, `tandem_request_seconds{model,phase=queue\\|"
          "compute\\|total}`, `tandem_batch_rows{model}`, `tandem_in_flight_requests`; with the footprint meter "
          "`tandem_metered_predictions_total`, `tandem_energy_kwh_total`, `tandem_co2_kg_total`, "
          "`tandem_energy_kwh_per_1000_predictions`; summed over all workers",
          answer="text", responses=((200, "the metrics"),)),
    Route("GET", "/v1/models/{name}/footprint", rest.footprint, "footprint of {name}: training, export, serving",
          "the training ledger's totals, the energy of 1,000 predictions metered at export, and this server's own "
          "figure over its windows of >= 1,000 predictions (see Footprint)",
          auth="api_key", responses=((200, "the footprint"),)),
    Route("POST", "/admin/models/{name}/reload", admin.reload, "load {name} again and swap it in (admin token)",
          "resolve the model's reference again, load and warm the new version beside the old (off the event loop), "
          "swap in one step; a failed load keeps the old version and answers 409 saying why. With `--workers N` "
          "every worker follows, and `workers` in the answer says which did. Needs "
          "`Authorization: Bearer <admin token>` (`--admin-token` or `TANDEM_ADMIN_TOKEN`; off without one)",
          auth="admin", responses=((200, "reloaded"), (401, ""), (403, ""), (409, ""))),
)
PREDICT = ROUTES[0]  # found by its exact path before any other (the request a server mostly answers)


# -- dispatch -------------------------------------------------------------------------------------------
def _segments(path: str) -> tuple[str, ...]:
    return tuple(path.strip("/").split("/")) if path.strip("/") else ()


def _matches(segments: tuple[str, ...], parts: list[str]) -> bool:
    """Whether a path's parts fit a route's segments, a {parameter} fitting any part."""
    return len(segments) == len(parts) and all(s == p or s[:1] == "{" for s, p in zip(segments, parts, strict=True))


class Router:
    """Dispatch, derived from a route table."""

    def __init__(self, routes: tuple[Route, ...]):
        self.by_path: dict[str, dict[str, Route]] = {}  # route path -> method -> route
        scopes: dict[tuple[str, ...], dict[tuple[tuple[str, ...], bool], dict[str, Route]]] = {}
        self.static: dict[tuple[str, ...], dict[str, Route]] = {}
        patterns: dict[tuple[str, ...], dict[str, Route]] = {}
        for route in routes:
            methods = self.by_path.setdefault(route.path, {})
            methods[route.method] = route
            head, _, rest = route.path.partition("[")
            group, _, tail = rest.partition("]")
            segments = _segments(head)
            if route.auth == "api_key" and "{name}" in segments:
                n = segments.index("{name}")
                if group and (segments[n + 1:] or _segments(group) != VERSIONS):
                    raise ValueError(f"{route.path}: the one optional part is /versions/{{version}}, after {{name}}")
                table = scopes.setdefault(segments[:n], {})
                table[(segments[n + 1:] + _segments(tail), False)] = methods
                if group:
                    table[(_segments(tail), True)] = methods
            elif "{" in route.path:
                patterns[segments] = methods
            else:
                self.static[segments] = methods
        # (prefix, its routes by (rest of the path, whether a version was given), whether a version may be given)
        self.scopes = [(list(prefix), table, any(versioned for _, versioned in table))
                       for prefix, table in scopes.items()]
        self.patterns = list(patterns.items())
        for prefix, _, _ in self.scopes:
            for segments in [*self.static, *(s for s, _ in self.patterns)]:
                if len(segments) > len(prefix) and list(segments[:len(prefix)]) == prefix:
                    raise ValueError(f"/{'/'.join(segments)}: under a model's prefix, so the API key must guard it")

    def dispatch(self, app: ServeApp, request: Request, parts: list[str]) -> Answer | Later:
        """Answer ``request``, whose path is ``parts`` (split at '/', without the empty first and last)."""
        for prefix, table, versioned in self.scopes:
            n = len(prefix)
            if len(parts) > n and parts[:n] == prefix:
                if app.api_key is not None:
                    authorize(request, app.api_key, "API key")
                model = app.model(parts[n])
                tail, given = parts[n + 1:], False
                if versioned and tail[:1] == ["versions"] and len(tail) >= 2:
                    if tail[1] != str(model.version):
                        raise HTTPError(404, f"model '{model.name}' is served at version {model.version}, "
                                             f"not {tail[1]}")
                    tail, given = tail[2:], True
                methods = table.get((tuple(tail), given))
                if methods is None:
                    break
                return pick(methods, request).handler(app, request, model)
        else:
            methods = self.static.get(tuple(parts))
            if methods is not None:
                route = pick(methods, request)
                guard(app, request, route)
                return route.handler(app, request, None)
            for segments, methods in self.patterns:
                if _matches(segments, parts):
                    route = pick(methods, request)
                    guard(app, request, route)
                    name = parts[segments.index("{name}")] if "{name}" in segments else None
                    return route.handler(app, request, None if name is None else app.model(name))
        raise HTTPError(404, f"no route {request.method} {request.path[:200]}")


def pick(methods: dict[str, Route], request: Request) -> Route:
    """The route of the request's method among a path's; 405 unless there is one (HEAD goes with GET)."""
    method = request.method
    route = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
    if route is None:
        takes = " or ".join("GET or HEAD" if m == "GET" else m for m in methods)
        allow = ", ".join("GET, HEAD" if m == "GET" else m for m in methods)
        raise HTTPError(405, f"{request.path[:200]} takes {takes}, not {method[:20]}", [(b"allow", allow.encode())])
    return route


def guard(app: ServeApp, request: Request, route: Route) -> None:
    """The route's token, if it needs one: the admin token (403 while admin routes are off), or the API key."""
    if route.auth == "admin":
        if app.admin_token is None:
            raise HTTPError(403, "admin endpoints are off: start the server with --admin-token "
                                 "(or TANDEM_ADMIN_TOKEN)")
        authorize(request, app.admin_token, "admin")
    elif route.auth == "api_key" and app.api_key is not None:
        authorize(request, app.api_key, "API key")


def authorize(request: Request, secret: str, what: str) -> None:
    """401 unless the request sends ``Authorization: Bearer <secret>``."""
    given = request.headers.get(b"authorization", b"").decode("latin-1")
    token = given[7:] if given.lower().startswith("bearer ") else ""
    if not token or not hmac.compare_digest(token.encode(), secret.encode()):
        raise HTTPError(401, f"missing or wrong {what} token: send 'Authorization: Bearer <token>'")


ROUTER = Router(ROUTES)
_PREDICT_METHODS = ROUTER.by_path[PREDICT.path]


def predict_directly(app: ServeApp, request: Request, model: ServedModel) -> Answer | Later:
    """``POST /v1/models/{name}/predict`` found by its exact path: the checks dispatch makes, then the handler."""
    if app.api_key is not None:
        authorize(request, app.api_key, "API key")
    return pick(_PREDICT_METHODS, request).handler(app, request, model)


# -- the README's route list, and the OpenAPI document ---------------------------------------------------
def route_list_markdown() -> str:
    """The route list as the README shows it (a Markdown table, one row per route)."""
    rows = ["| route | what |", "|---|---|"]
    rows += [f"| `{r.method} {r.path}` | {r.doc} |" for r in ROUTES]
    return "\n".join(rows)


_ERROR = {"description": "the request is wrong; the body says what and where",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_BINARY_TENSORS = {"schema": {"type": "string", "format": "binary", "description": (
    "the binary tensor extension: the JSON header (Inference-Header-Content-Length bytes), then the tensors")}}


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


def _v2_value_schema(kind: str, categories: list[str] | None) -> dict:
    """A column's value in a v2 tensor's data: a number (null: missing), a boolean, or text (BYTES cannot say
    null; a text is never empty)."""
    if kind == "numeric":
        return {"type": ["number", "null"]}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "text":
        return {"type": "string", "minLength": 1}
    if kind == "datetime":
        return {"type": "string", "format": "date"}
    return {**_value_schema(kind, categories), "type": "string"}


def _tensor_item(dtype: str) -> dict:
    """One number of a tensor column of ``dtype``."""
    return {"type": "boolean"} if dtype == "bool" else {"type": "number"} if dtype.startswith("float") else {
        "type": "integer"}


def _tensor_row_schema(c: ColumnSpec) -> dict:
    """One row's array of a tensor column: nested arrays of its shape (a free dimension: any length)."""
    item = _tensor_item(c.dtype)
    for d in reversed(c.shape):
        item = {"type": "array", "items": item, **({"minItems": d, "maxItems": d} if d >= 0 else {})}
    return item


def _v2_tensor(c: ColumnSpec) -> dict:
    """A v2 tensor of one row of a column: one value, or a tensor column's one array, flat."""
    if c.kind != "tensor":
        return {"name": {"const": c.name}, "shape": {"const": [1]}, "datatype": {"const": kserve.datatype_of(c.kind)},
                "data": {"type": "array", "minItems": 1, "maxItems": 1,
                         "items": _v2_value_schema(c.kind, c.categories)}}
    fixed = all(d >= 0 for d in c.shape)
    size = math.prod(c.shape) if fixed else None
    flat = {"type": "array", "items": _tensor_item(c.dtype)}
    return {"name": {"const": c.name}, "shape": {"const": [1, *c.shape]} if fixed else {"type": "array"},
            "datatype": {"const": kserve.TENSOR_DATATYPES[c.dtype]},
            "data": {**flat, **({"minItems": size, "maxItems": size} if fixed else {})}}


def _v2_body(m: ServedModel) -> dict:
    """A v2 inference request of one row: one tensor per column, in the schema's order (any order is read)."""
    features = m.predictor.schema.features
    tensors = [{"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": _v2_tensor(c)}
               for c in features]
    if m.predictor.recommendations is not None:  # one tensor of user ids
        spec = kserve.recommend_inputs(m.predictor)[0]
        tensors = [{"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
            "name": {"const": spec["name"]}, "shape": {"const": [1]}, "datatype": {"const": spec["datatype"]},
            "data": {"type": "array", "minItems": 1, "maxItems": 1, "items": _user_id_schema(m)}}}]
    outputs = [o["name"] for o in kserve.output_specs(m.predictor)]
    request = {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "prefixItems": tensors, "items": False, "minItems": len(tensors),
                   "maxItems": len(tensors)},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
            "name": {"enum": outputs}, "parameters": {"type": "object", "properties": {
                "binary_data": {"type": "boolean"}}}}}}}}
    return {"required": True, "content": {"application/json": {"schema": request},
                                           "application/octet-stream": _BINARY_TENSORS}}


def _rows_body(m: ServedModel) -> dict:
    p = m.predictor
    body = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["instances"],
        "properties": {"instances": {"type": "array", "minItems": 1, "maxItems": MAX_ROWS,
                                     "items": {"$ref": f"#/components/schemas/{m.name}_row"}},
                       "explain": {"type": "boolean", "description": "add per-column contributions "
                                   "(tree and linear models; 422 where the model has none)"}}}}}}
    if [c.kind for c in p.schema.features] == ["image"]:  # an image model: one raw image as the body
        body["content"]["image/*"] = {
            "schema": {"type": "string", "format": "binary", "description": "one encoded image"}}
    if p.manifest.get("source") == "mail":  # trained on a mail folder: raw messages are read as in training
        body["content"]["message/rfc822"] = {
            "schema": {"type": "string", "format": "binary", "description": "one raw e-mail (RFC 822)"}}
    return body


def _predictions_schema(m: ServedModel) -> dict:
    p = m.predictor
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
    return answer


def _user_id_schema(m: ServedModel) -> dict:
    return {"type": "integer"} if m.predictor.manifest["recommend"]["user_id_type"] == "int" else {"type": "string"}


def _recommend_body(m: ServedModel) -> dict:
    info = m.predictor.manifest["recommend"]
    common = {"k": {"type": "integer", "minimum": 1, "maximum": info["items"], "default": info["k"]},
              "exclude_seen": {"type": "boolean", "default": True}}
    one = {"type": "object", "required": ["user"], "additionalProperties": False,
           "properties": {"user": _user_id_schema(m), **common}}
    many = {"type": "object", "required": ["users"], "additionalProperties": False,
            "properties": {"users": {"type": "array", "items": _user_id_schema(m), "minItems": 1,
                                     "maxItems": MAX_ROWS}, **common}}
    return {"required": True, "content": {"application/json": {"schema": {"oneOf": [one, many]}}}}


def _recommendations_schema(m: ServedModel) -> dict:
    item = {"type": "integer"} if m.predictor.manifest["recommend"]["item_id_type"] == "int" else {"type": "string"}
    answer = {"type": "object", "properties": {
        "user": _user_id_schema(m), "items": {"type": "array", "items": item},
        "scores": {"type": "array", "items": {"type": "number"}}, "known": {"type": "boolean"},
        "note": {"type": "string"}}}
    return {"type": "object", "properties": {
        "model": {"type": "string"}, "version": {"type": ["integer", "null"]},
        **answer["properties"], "recommendations": {"type": "array", "items": answer}}}


def _response(route: Route, status: int, text: str, m: ServedModel | None) -> dict:
    if status >= 400 and not text:
        return _ERROR
    if status == 200 and route.answer == "predictions":
        return {"description": text, "content": {"application/json": {"schema": _predictions_schema(m)}}}
    if status == 200 and route.answer == "recommendations":
        return {"description": text, "content": {"application/json": {"schema": _recommendations_schema(m)}}}
    if status == 200 and route.answer == "text":
        return {"description": text, "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {"description": text}


def _operation(route: Route, m: ServedModel | None, versioned: bool, guarded: bool) -> dict:
    operation: dict = {"summary": route.summary if m is None else route.summary.format(name=m.name, version=m.version)}
    if versioned:
        operation["parameters"] = [{"name": "version", "in": "path", "required": True,
                                    "schema": {"type": "string", "enum": [str(m.version)]},
                                    "description": "the version served (any other is 404)"}]
    if route.body == "rows":
        operation["requestBody"] = _rows_body(m)
    elif route.body == "recommend":
        operation["requestBody"] = _recommend_body(m)
    elif route.body == "v2":
        operation["requestBody"] = _v2_body(m)
    operation["responses"] = {str(status): _response(route, status, text, m) for status, text in route.responses}
    if guarded:
        operation["security"] = [{"bearer": []}]
    return operation


def openapi_document(models: list[ServedModel], *, api_key: bool = False, admin: bool = False) -> dict:
    """OpenAPI 3.1 for the served models: every route of the table that the server answers (the admin ones
    with ``admin``, an admin token), a model's routes once per served model, each model's rows and answers
    generated from its bundle's schema; the routes a token guards (``api_key``, ``admin``) say so."""
    schemas: dict = {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}
    for m in models:
        features = m.predictor.schema.features
        schemas[f"{m.name}_row"] = {"type": "object", "required": [c.name for c in features],
                                    "properties": {c.name: _tensor_row_schema(c) if c.kind == "tensor" else
                                                   _value_schema(c.kind, c.categories) for c in features}}
    paths: dict = {}
    guarded = {"": False, "api_key": api_key, "admin": True}
    for route in ROUTES:
        if route.auth == "admin" and not admin:
            continue  # (answered 403 while the server has no admin token)
        for template in route.templates():
            for m in (models if "{name}" in template else (None,)):
                if not route.serves(m):
                    continue
                path = template if m is None else template.replace("{name}", m.name)
                paths.setdefault(path, {})[route.method.lower()] = _operation(
                    route, m, "{version}" in template, guarded[route.auth])
    components: dict = {"schemas": schemas}
    if api_key or admin:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return {"openapi": "3.1.0", "info": {"title": "tandem serve", "version": "1"}, "paths": paths,
            "components": components}
