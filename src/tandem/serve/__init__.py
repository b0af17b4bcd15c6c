"""The HTTP server over ``tandem.inference``: REST JSON and the KServe v2 protocol.

``app`` answers requests (``ServeApp.handle``; also an ASGI app), ``http`` is tandem's HTTP/1.1 protocol
that uvicorn runs it with, ``batching`` the micro-batcher, ``metrics`` the Prometheus figures.
"""

from tandem.serve.app import ServeApp, create_app

__all__ = ["ServeApp", "create_app"]
