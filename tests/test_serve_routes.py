"""The one route table (serve/routes.py) and the one ServeConfig (serve/config.py).

Every route of the table is dispatched (HEAD with each GET), an unknown path is a JSON 404, the OpenAPI
document lists exactly the table's routes, the README shows exactly ``route_list_markdown()``; a ServeConfig
survives its serialisation, refuses bad values in one line, and reaches every worker of ``tandem serve``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import free_port, linear_churn, mixed_frame, records, start_server, stop_server
from tandem.errors import ConfigError
from tandem.serve.config import CONFIG_ENV, ServeConfig
from tandem.serve.limits import HTTPLimits
from tandem.serve.routes import ROUTES, openapi_document, route_list_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
API_KEY, ADMIN_TOKEN = "the-key", "the-admin"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("routes-home")
    frame, train = linear_churn(home)
    model = train()
    row = records(mixed_frame(3, seed=1).drop(columns=["churn"]))[0]
    return SimpleNamespace(home=home, model=model, row=row)


def _app(served, **kwargs: object):
    from tandem.registry import Registry
    from tandem.serve.app import ServeApp
    from tandem.serve.models import load_model

    registry = Registry(served.home)
    app = ServeApp([load_model("churn", registry)], registry=registry, **kwargs)
    app.ready = True
    app.test_loop = asyncio.new_event_loop()
    return app


def _ask(app, method: str, path: str, body: bytes = b"", headers: dict[bytes, bytes] | None = None):
    """(status, parsed body or raw bytes, headers) of one request answered in-process (now or later), on the
    app's own event loop (its micro-batchers keep the loop they started on)."""
    from tandem.serve.protocol import Request

    async def go():
        answered = asyncio.get_running_loop().create_future()
        app.handle(Request(method, path, {b"content-type": b"application/json", **(headers or {})}, body, len(body)),
                   lambda r: answered.done() or answered.set_result(r))
        return await asyncio.wait_for(answered, 30)

    response = app.test_loop.run_until_complete(go())
    payload = json.loads(response.body) if response.content_type == b"application/json" else response.body
    return response.status, payload, dict(response.headers)


def _v2_body(row: dict) -> bytes:
    def datatype(v: object) -> str:
        return "BOOL" if isinstance(v, bool) else "FP64" if isinstance(v, float) else "BYTES"

    return json.dumps({"inputs": [{"name": k, "shape": [1], "datatype": datatype(v), "data": [v]}
                                  for k, v in row.items() if k != "customer_id"]}).encode()


# -- dispatch --------------------------------------------------------------------------------------------------------
# what each route answers, asked rightly (with the tokens): the table's every route and form
EXPECTED = {
    "/v1/models/{name}/predict": 200, "/v2/health/live": 200, "/v2/health/ready": 200, "/v2": 200,
    "/v2/models/{name}[/versions/{version}]": 200, "/v2/models/{name}[/versions/{version}]/ready": 200,
    "/v2/models/{name}[/versions/{version}]/infer": 200, "/openapi.json": 200, "/metrics": 200,
    "/v1/models/{name}/footprint": 200, "/admin/models/{name}/reload": 200,
    "/v1/models/{name}/recommend": 400,  # churn classifies: the route says to POST .../predict instead
}


def test_every_route_of_the_table_is_dispatched(served):
    app = _app(served, api_key=API_KEY, admin_token=ADMIN_TOKEN)
    assert set(EXPECTED) == {r.path for r in ROUTES}
    bodies = {"rows": json.dumps({"instances": [served.row]}).encode(), "v2": _v2_body(served.row), "": b"",
              "recommend": b'{"user": 1}'}
    asked = 0
    for route in ROUTES:
        token = ADMIN_TOKEN if route.auth == "admin" else API_KEY
        for template in route.templates():
            path = template.replace("{name}", "churn").replace("{version}", "1")
            methods = [route.method, "HEAD"] if route.method == "GET" else [route.method]
            for method in methods:
                status, payload, _ = _ask(app, method, path, bodies[route.body],
                                          {b"authorization": f"Bearer {token}".encode()})
                assert status == EXPECTED[route.path], (method, path, payload)
                asked += 1
    assert asked == 2 * 10 + 5  # 10 GET forms (each with HEAD too), 5 POST forms (v2 routes with and without a version)


def test_route_answers_carry_their_values(served):
    app = _app(served)
    assert _ask(app, "GET", "/v2/health/live")[:2] == (200, {"live": True})
    server = {"name": "tandem", "version": "1", "extensions": ["binary_tensor_data"]}
    assert _ask(app, "GET", "/v2")[:2] == (200, server)
    assert _ask(app, "GET", "/v2/models/churn/versions/1/ready")[:2] == (200, {"name": "churn", "ready": True})
    status, payload, _ = _ask(app, "POST", "/v1/models/churn/predict", json.dumps({"instances": [served.row]}).encode())
    assert status == 200 and payload["model"] == "churn" and payload["version"] == 1
    x = mixed_frame(3, seed=1).drop(columns=["churn"]).iloc[:1]
    assert payload["predictions"] == served.model.predict(x).tolist()
    status, payload, _ = _ask(app, "POST", "/v2/models/churn/infer", _v2_body(served.row))
    assert status == 200 and payload["model_name"] == "churn" and payload["model_version"] == "1"
    status, text, _ = _ask(app, "GET", "/metrics")
    assert status == 200 and b'tandem_requests_total{model="churn",route="predict",code="200"} 1' in text


@pytest.mark.parametrize("method, path, status, error", [
    ("GET", "/nope", 404, "no route GET /nope"),
    ("POST", "/v2/health", 404, "no route POST /v2/health"),
    ("GET", "/v1/models/churn/other", 404, "no route GET /v1/models/churn/other"),
    ("GET", "/v1/models/nope/predict", 404, "model 'nope' is not served here; served: churn"),
    ("GET", "/v2/models/churn/versions/9/infer", 404, "model 'churn' is served at version 1, not 9"),
    ("POST", "/v2/health/live", 405, "/v2/health/live takes GET or HEAD, not POST"),
    ("GET", "/v1/models/churn/predict", 405, "/v1/models/churn/predict takes POST, not GET"),
    ("POST", "/admin/models/churn/reload", 403, "admin endpoints are off: start the server with --admin-token "
                                                "(or TANDEM_ADMIN_TOKEN)"),
])
def test_mistakes_are_json_errors(served, method, path, status, error):
    got, payload, headers = _ask(_app(served), method, path)
    assert (got, payload) == (status, {"error": error})
    if status == 405:
        assert headers[b"allow"] == (b"GET, HEAD" if "takes GET" in error else b"POST")


def test_tokens_are_asked_for(served):
    app = _app(served, api_key=API_KEY, admin_token=ADMIN_TOKEN)
    assert _ask(app, "GET", "/v2/models/churn")[:2] == (
        401, {"error": "missing or wrong API key token: send 'Authorization: Bearer <token>'"})
    assert _ask(app, "POST", "/admin/models/churn/reload", headers={b"authorization": f"Bearer {API_KEY}".encode()})[
        :2] == (401, {"error": "missing or wrong admin token: send 'Authorization: Bearer <token>'"})
    assert _ask(app, "GET", "/v2/health/live")[0] == 200  # health needs no token


# -- what is derived from the table ---------------------------------------------------------------------------------
@pytest.mark.parametrize("tokens", [{}, {"api_key": API_KEY, "admin_token": ADMIN_TOKEN}])
def test_the_openapi_document_lists_exactly_the_tables_routes(served, tokens):
    app = _app(served, **tokens)
    status, doc, _ = _ask(app, "GET", "/openapi.json")  # (the document needs no token)
    assert status == 200 and doc["openapi"] == "3.1.0"
    listed = {(path, method) for path, operations in doc["paths"].items() for method in operations}
    admin = bool(tokens)  # the admin routes are listed only where they are on
    expected = {(template.replace("{name}", "churn"), route.method.lower())
                for route in ROUTES if (admin or route.auth != "admin") and route.recommenders is not True
                for template in route.templates()}
    assert listed == expected
    assert len(listed) == (14 if admin else 13)  # 11 routes, 3 of them also with /versions/{version}
    guarded = {(path, method) for path, operations in doc["paths"].items()
               for method, operation in operations.items() if operation.get("security") == [{"bearer": []}]}
    assert guarded == ({(template.replace("{name}", "churn"), route.method.lower())
                        for route in ROUTES if route.auth and route.recommenders is not True
                        for template in route.templates()} if tokens else set())
    versioned = doc["paths"]["/v2/models/churn/versions/{version}/infer"]["post"]
    assert versioned["parameters"] == [{"name": "version", "in": "path", "required": True,
                                        "schema": {"type": "string", "enum": ["1"]},
                                        "description": "the version served (any other is 404)"}]
    inputs = versioned["requestBody"]["content"]["application/json"]["schema"]["properties"]["inputs"]
    assert [t["properties"]["name"]["const"] for t in inputs["prefixItems"]] == [
        "age", "income", "city", "member", "signup"]
    assert doc == openapi_document(list(app.models.values()), api_key=admin, admin=admin)


def test_the_readme_shows_the_tables_route_list():
    text = README.read_text(encoding="utf-8")
    shown = re.search(r"<!-- routes:start -->\n(.*?)\n<!-- routes:end -->", text, re.S)
    assert shown, "README.md: the route list between <!-- routes:start --> and <!-- routes:end --> is missing"
    assert shown.group(1) == route_list_markdown()
    assert route_list_markdown().count("\n") == len(ROUTES) + 1  # a header, a rule, a row per route


# -- ServeConfig -------------------------------------------------------------------------------------------------------
def _config() -> ServeConfig:
    return ServeConfig(models=("churn@production", "./other"), max_body_bytes=1234, max_batch_rows=0,
                       queue_delay_us=250.5, max_queue_rows=7, request_timeout_s=3.5, watch_interval_s=0,
                       metrics_dir="/tmp/m", footprint=False, footprint_window_s=1.5, country="FRA",
                       require_signed=True, admin_token="adm", api_key="key",
                       limits=HTTPLimits(max_header_bytes=4096, max_pipeline=3, keep_alive_s=0.5))


def test_a_config_survives_its_serialisation():
    config = _config()
    again = ServeConfig.from_json(config.to_json())
    assert again == config
    assert again.limits.max_pipeline == 3 and again.limits.keep_alive_s == 0.5 and again.models == config.models
    env = config.to_env()
    assert list(env) == [CONFIG_ENV]
    assert ServeConfig.from_env(env) == config
    assert ServeConfig.from_json(ServeConfig().to_json()) == ServeConfig()
    assert "'adm'" not in repr(config) and "'key'" not in repr(config)  # tokens stay out of logs


def test_without_a_config_the_users_variables_are_read():
    environ = {"TANDEM_API_KEY": "k1", "TANDEM_ADMIN_TOKEN": "a1", "TANDEM_SERVE_FOOTPRINT_WINDOW_S": "2.5"}
    config = ServeConfig.from_env(environ)
    assert (config.api_key, config.admin_token, config.footprint_window_s) == ("k1", "a1", 2.5)
    assert config.models == () and config.max_batch_rows == 64 and config.watch_interval_s == 2.0
    with pytest.raises(ConfigError, match=r"\$TANDEM_SERVE_FOOTPRINT_WINDOW_S must be a number of seconds"):
        ServeConfig.from_env({"TANDEM_SERVE_FOOTPRINT_WINDOW_S": "soon"})


@pytest.mark.parametrize("change, message", [
    ({"max_body_bytes": 0}, "--max-body-bytes must be at least 1 byte, got 0"),
    ({"max_batch_rows": 2_000_000}, "--max-batch-rows must be 0 (off) to 1000000 rows, got 2000000"),
    ({"queue_delay_us": float("nan")}, "--queue-delay-us must be 0 to 10000000 µs, got nan"),
    ({"max_queue_rows": 0}, "--max-queue-rows must be at least 1 row, got 0"),
    ({"request_timeout_s": 0}, "--request-timeout must be more than 0 and at most 86400 seconds, got 0"),
    ({"watch_interval_s": -1}, "--watch-interval must be 0 (off) or more seconds, got -1"),
    ({"footprint_window_s": -2}, "$TANDEM_SERVE_FOOTPRINT_WINDOW_S must be 0 or more seconds, got -2"),
    ({"limits": HTTPLimits(max_pipeline=0)}, "--max-pipeline must be a whole number from 1 to 1073741824, got 0"),
    ({"limits": HTTPLimits(body_timeout_s=0)}, "--body-timeout must be more than 0 and at most 86400 seconds, got 0"),
    ({"max_batch_rows": "64"}, "serve config: 'max_batch_rows' must be a whole number, got '64'"),
    ({"footprint": "no"}, "serve config: 'footprint' must be true or false, got 'no'"),
    ({"models": "churn"}, "serve config: 'models' must be a list of model references, got 'churn'"),
])
def test_a_bad_config_is_one_clear_line(change, message):
    with pytest.raises(ConfigError) as caught:
        ServeConfig(**change)
    assert str(caught.value) == message


@pytest.mark.parametrize("text, message", [
    ("{not json", "serve config: not valid JSON"),
    ("[1]", "serve config: expected a JSON object of settings"),
    ('{"max_body_bytez": 1}', "serve config: unknown setting(s) 'max_body_bytez'"),
    ('{"limits": {"max_pipe": 1}}', "serve config: 'limits' must be an object of max_url_bytes"),
    ('{"max_queue_rows": 1.5}', "serve config: 'max_queue_rows' must be a whole number, got 1.5"),
    ('{"limits": {"max_headers": 2.5}}', "serve config: 'limits.max_headers' must be a whole number, got 2.5"),
])
def test_a_bad_serialised_config_is_refused(text, message):
    with pytest.raises(ConfigError) as caught:
        ServeConfig.from_json(text)
    assert str(caught.value).startswith(message)


def test_create_app_takes_a_config(served, monkeypatch):
    from tandem.serve.app import create_app

    monkeypatch.setenv("TANDEM_HOME", str(served.home))
    app = create_app(ServeConfig(models=("churn",), max_body_bytes=300, api_key="k", footprint=False,
                                 watch_interval_s=0, limits=HTTPLimits(max_pipeline=7)))
    assert list(app.models) == ["churn"] and app.models["churn"].version == 1
    assert (app.max_body_bytes, app.api_key, app.admin_token, app.footprint, app.watch_interval_s) == (
        300, "k", None, None, 0.0)
    assert app.limits == HTTPLimits(max_pipeline=7)
    monkeypatch.setenv(CONFIG_ENV, ServeConfig(models=("churn",), max_queue_rows=9, footprint=False).to_json())
    assert create_app().max_queue_rows == 9  # uvicorn's factory: the config handed over in the environment


# -- the config reaches the workers ------------------------------------------------------------------------------------
def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_every_worker_gets_the_config(served):
    port = free_port()
    proc = start_server(served.home, port, "--workers", "2", "--api-key", API_KEY, "--max-body-bytes", "300",
                        "--max-header-bytes", "300", "--watch-interval", "0", "--no-footprint")
    try:
        workers = []
        deadline = time.monotonic() + 30
        while len(workers) < 2 and time.monotonic() < deadline:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            workers = [int(c) for c in children  # uvicorn's workers (not multiprocessing's resource tracker)
                       if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
            time.sleep(0.2)
        assert len(workers) == 2, workers
        for pid in workers:
            environ = dict(line.split(b"=", 1) for line in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                           if b"=" in line)
            config = ServeConfig.from_json(environ[CONFIG_ENV.encode()].decode())
            assert (config.models, config.api_key, config.max_body_bytes, config.limits.max_header_bytes,
                    config.footprint, config.watch_interval_s) == (("churn",), API_KEY, 300, 300, False, 0.0)
            assert config.metrics_dir and os.path.isdir(config.metrics_dir)  # shared by the workers
        body = json.dumps({"instances": [served.row] * 3}).encode()
        assert len(body) > 300
        for _ in range(12):  # fresh connections: whichever worker answers, it applies the config
            keyless = _raw(port, b"GET /v2/models/churn HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert keyless.startswith(b"HTTP/1.1 401 ")
            big = _raw(port, b"POST /v1/models/churn/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                             b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
            assert big.startswith(b"HTTP/1.1 413 ") and b"over the limit of 300 bytes" in big
            headers = _raw(port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 400 + b"\r\n\r\n")
            assert headers.startswith(b"HTTP/1.1 431 ")
    finally:
        stop_server(proc)


def test_serve_checks_its_options_before_loading_anything(tmp_path):
    env = dict(os.environ, TANDEM_HOME=str(tmp_path), TANDEM_SERVE_FOOTPRINT_WINDOW_S="-1")
    for args, line in ((["--watch-interval", "-1"], "--watch-interval must be 0 (off) or more seconds, got -1"),
                       ([], "$TANDEM_SERVE_FOOTPRINT_WINDOW_S must be 0 or more seconds, got -1")):
        done = subprocess.run([sys.executable, "-m", "tandem.cli", "serve", "not-a-model", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert done.stderr == f"tandem: error: {line}\n"
