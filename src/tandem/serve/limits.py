"""The bounds on what a client may send (``HTTPLimits``), checked once, and the open-file limit they need.

tandem's HTTP protocol (serve/http.py) keeps them: the URL (414), the header block's bytes and count (431),
the time to send the headers and then the body (408), the idle time between requests, the requests read
ahead of their answers, and the connections a worker holds (503 beyond).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, fields

from tandem.errors import ConfigError

FD_RESERVE = 64  # file descriptors kept free of connections: models, logs, the registry, the footprint meter


@dataclass(frozen=True)
class HTTPLimits:
    """The bounds on what a client may send; ``tandem serve`` options, documented in the README."""

    max_url_bytes: int = 8 * 1024  # the request target (414)
    max_header_bytes: int = 16 * 1024  # every header name and value together (431)
    max_headers: int = 100  # header lines (431)
    header_timeout_s: float = 10.0  # from a request's first byte to the end of its headers (408, close)
    body_timeout_s: float = 30.0  # from the end of the headers to the end of the body (408, close)
    keep_alive_s: float = 5.0  # idle between requests, or not reading its answers (closed quietly)
    max_connections: int = 1024  # a worker's open connections; beyond, 503 and close
    max_pipeline: int = 32  # requests read ahead of their answers; beyond, reading pauses

    def check(self) -> HTTPLimits:
        """Raise ConfigError for a limit out of its range (every one must let a request through)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_s"):
                if not 0 < value <= 86400:
                    raise ConfigError(f"--{option_of(f.name)} must be more than 0 and at most 86400 seconds, "
                                      f"got {value:g}")
            elif not 1 <= value <= 1 << 30 or (f.name == "max_header_bytes" and value < 256):
                least = 256 if f.name == "max_header_bytes" else 1
                raise ConfigError(f"--{option_of(f.name)} must be a whole number from {least} to {1 << 30}, "
                                  f"got {value}")
        return self

    def connection_cap(self) -> int:
        """``max_connections``, lowered to what this process's open-file limit leaves room for."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - FD_RESERVE))


def option_of(name: str) -> str:
    """The ``tandem serve`` option (without its dashes) that sets the limit ``name``."""
    return {"header_timeout_s": "header-timeout", "body_timeout_s": "body-timeout",
            "keep_alive_s": "keep-alive"}.get(name, name.replace("_", "-"))


def raise_open_file_limit(wanted: int = 65536) -> int:
    """Raise this process's soft open-file limit towards its hard limit (servers hold a file per
    connection; the usual soft default of 1024 is a desktop's); return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft
