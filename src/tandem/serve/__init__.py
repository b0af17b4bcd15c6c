"""The HTTP server over ``tandem.inference``: REST JSON and the KServe v2 protocol on a bare ASGI app."""

from tandem.serve.app import ServeApp, create_app

__all__ = ["ServeApp", "create_app"]
