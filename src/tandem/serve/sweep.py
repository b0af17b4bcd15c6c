"""What the connections of a server share, once a second: the sweep that keeps their time limits (one timer
for all, none per request), and uvicorn's ``date`` and ``server`` headers as bytes."""

from __future__ import annotations

import asyncio
import logging

SWEEP_EVERY_S = 1.0
logger = logging.getLogger("uvicorn.error")
_defaults_cache: list = [None, b""]


def default_headers(server_state: object) -> bytes:
    """uvicorn's ``date`` and ``server`` headers, as bytes; uvicorn replaces the list once a second."""
    current = server_state.default_headers
    if current is not _defaults_cache[0]:
        _defaults_cache[0] = current
        _defaults_cache[1] = b"".join(name + b": " + value + b"\r\n" for name, value in current)
    return _defaults_cache[1]


class Sweep:
    """Once a second, each connection checks its time limits (one timer for all, none per request)."""

    running: dict[int, asyncio.TimerHandle] = {}

    @classmethod
    def ensure(cls, loop: asyncio.AbstractEventLoop, server_state: object, kind: type) -> None:
        """Start the sweep of ``server_state``'s connections of class ``kind`` (each has ``tick()``), once."""
        if id(server_state) not in cls.running:
            cls.running[id(server_state)] = loop.call_later(SWEEP_EVERY_S, cls._sweep, loop, server_state, kind)

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop, server_state: object, kind: type) -> None:
        for conn in list(server_state.connections):
            if isinstance(conn, kind):
                try:
                    conn.tick()
                except Exception as exc:  # one connection's bug must not stop the others' limits
                    logger.error("tandem serve: time limit check failed", exc_info=exc)
        cls.running[id(server_state)] = loop.call_later(SWEEP_EVERY_S, cls._sweep, loop, server_state, kind)
