"""``tandem serve``: the options become one ServeConfig, checked here, handed to uvicorn's workers in one
variable (serve/config.py), and read back by ``create_app`` in each."""

from __future__ import annotations

import typer

from tandem.cli.common import REQUIRE_SIGNED, check_ranges, err
from tandem.errors import ConfigError


def serve(
    models: list[str] = typer.Argument(..., help="Models to serve: name, name:VERSION, name@ALIAS or bundle path."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    workers: int = typer.Option(1, help="Worker processes."),
    max_body_bytes: int = typer.Option(8 * 1024 * 1024, help="Largest request body accepted."),
    admin_token: str | None = typer.Option(None, envvar="TANDEM_ADMIN_TOKEN",
                                           help="Bearer token for /admin endpoints (off without one)."),
    api_key: str | None = typer.Option(None, envvar="TANDEM_API_KEY",
                                       help="Bearer token required on prediction endpoints."),
    max_batch_rows: int = typer.Option(64, help="Micro-batching: at most this many rows per model run (0: off). "
                                                "Requests that arrive together share a run; none waits."),
    queue_delay_us: float = typer.Option(0.0, help="How long a batch may wait for more rows while others are "
                                                   "in flight (µs)."),
    max_queue_rows: int = typer.Option(4096, help="Rows a model may have queued before answering 429."),
    request_timeout: float = typer.Option(10.0, help="Seconds a request may wait before 503."),
    watch_interval: float = typer.Option(2.0, help="Seconds between checks of the registry: a served alias "
                                                   "(or bare name) that moved is reloaded (0: off)."),
    country: str | None = typer.Option(None, "--country", help="Where the server runs (ISO 3166-1 alpha-3), for "
                                       "the CO2 of its energy per 1,000 predictions (default $TANDEM_COUNTRY)."),
    no_footprint: bool = typer.Option(False, "--no-footprint", help="Do not meter the energy of predictions."),
    require_signed: bool = REQUIRE_SIGNED,
    max_header_bytes: int = typer.Option(16 * 1024, help="Largest header block (names and values) a request "
                                         "may send (431 beyond)."),
    max_headers: int = typer.Option(100, help="Most header lines a request may send (431 beyond)."),
    header_timeout: float = typer.Option(10.0, help="Seconds a client has to send a request's headers, from its "
                                         "first byte (408 and close beyond)."),
    body_timeout: float = typer.Option(30.0, help="Seconds a client has to send a request's body, after its "
                                       "headers (408 and close beyond)."),
    keep_alive: float = typer.Option(5.0, help="Seconds an idle connection stays open between requests."),
    max_connections: int = typer.Option(1024, help="Connections a worker holds (503 and close beyond; lowered "
                                        "to fit the open-file limit)."),
    max_pipeline: int = typer.Option(32, help="Pipelined requests read ahead of their answers (reading pauses "
                                     "beyond)."),
) -> None:
    """Serve models over HTTP: REST JSON and the KServe v2 protocol."""
    import os

    from tandem.bundle.format import read_manifest
    from tandem.registry import Registry
    from tandem.serve.config import ServeConfig, footprint_window_from_env
    from tandem.serve.limits import HTTPLimits

    check_ranges(("--port", port, 1 <= port <= 65535, "a port from 1 to 65535"))
    # every option checked at once, before anything is loaded (ConfigError names the option)
    config = ServeConfig(models=tuple(models), max_body_bytes=max_body_bytes, max_batch_rows=max_batch_rows,
                         queue_delay_us=queue_delay_us, max_queue_rows=max_queue_rows,
                         request_timeout_s=request_timeout, watch_interval_s=watch_interval,
                         footprint=not no_footprint, footprint_window_s=footprint_window_from_env(),
                         require_signed=require_signed, admin_token=admin_token or None, api_key=api_key or None,
                         limits=HTTPLimits(max_header_bytes=max_header_bytes, max_headers=max_headers,
                                           header_timeout_s=header_timeout, body_timeout_s=body_timeout,
                                           keep_alive_s=keep_alive, max_connections=max_connections,
                                           max_pipeline=max_pipeline))
    try:
        import tandem.serve.http  # noqa: F401 (uvicorn runs its protocol: the server's packages must be there)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"serving needs the server's packages ({exc.name} is missing): "
                          "pip install 'tandem[serve]'") from None
    registry = Registry()
    names: dict[str, str] = {}
    for ref in models:
        name = read_manifest(registry.resolve(ref), require_signed=True if require_signed else None)["name"]
        if name in names:
            raise ConfigError(f"'{ref}' and '{names[name]}' are both named '{name}': serve one version per name")
        names[name] = ref
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    import dataclasses
    import shutil
    import tempfile

    import uvicorn

    from tandem.serve.limits import raise_open_file_limit

    if country is not None:
        from tandem.footprint import check_country

        config = dataclasses.replace(config, country=check_country(country))
    raise_open_file_limit()  # (inherited by the workers) a connection is a file
    # several workers share their metrics through a folder that lives as long as this server
    metrics_dir = tempfile.mkdtemp(prefix="tandem-serve-metrics-") if workers > 1 else None
    if metrics_dir:
        config = dataclasses.replace(config, metrics_dir=metrics_dir)
    os.environ.update(config.to_env())  # uvicorn's workers (and its factory, create_app) read it back
    err.print(f"serving {', '.join(names)} on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''})")
    try:
        # uvicorn runs the server; tandem's own HTTP protocol replaces uvicorn's per-request ASGI machinery
        uvicorn.run("tandem.serve.app:create_app", factory=True, host=host, port=port, workers=workers,
                    http="tandem.serve.http:TandemHTTP", log_level="warning", access_log=False)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
