"""The HTTP server over ``tandem.inference``: REST JSON and the KServe v2 protocol.

``app`` answers requests (``ServeApp.handle``; also an ASGI app) and ``create_app`` builds one from a
``ServeConfig`` (``config``); ``routes`` is the one route table (dispatch, OpenAPI, the README's list), with
the handlers in ``rest``, ``v2`` and ``admin``; ``protocol`` has the request and answer types, ``http`` is
tandem's HTTP/1.1 protocol that uvicorn runs it with (its bounds in ``limits``), ``batching`` the
micro-batcher, ``metrics`` the Prometheus figures.

The names below are imported on first use, so ``tandem.serve.config`` can be read (by ``tandem serve``
checking its options) without the server's packages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tandem.serve.app import ServeApp, create_app
    from tandem.serve.config import ServeConfig

__all__ = ["ServeApp", "ServeConfig", "create_app"]


def __getattr__(name: str) -> object:
    if name in ("ServeApp", "create_app"):
        from tandem.serve import app

        return getattr(app, name)
    if name == "ServeConfig":
        from tandem.serve.config import ServeConfig

        return ServeConfig
    raise AttributeError(f"module 'tandem.serve' has no attribute {name!r}")
