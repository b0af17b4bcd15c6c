"""The protocol-level types of the server: a request, an answer now or later, the errors, and reading JSON.

``Request`` is what the HTTP layer read; a handler returns an ``Answer`` (status, payload, extra headers) or a
``Later`` that answers once a micro-batch or a reload is done; ``error_answer`` turns any exception into the
answer a client sees (``{"error": "..."}``, never a traceback). JSON bodies are parsed by ``parse_json``, which
refuses what the model could not read (NaN, huge numbers, nesting deeper than ``MAX_JSON_DEPTH``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import orjson

from tandem.bundle.inputs import EncodedInputs
from tandem.errors import TandemError
from tandem.serve.batching import NonFiniteOutput, RunOutputs

if TYPE_CHECKING:
    from tandem.serve.app import ServeApp
    from tandem.serve.models import ServedModel

# The deepest JSON a request needs: a REST body has 3 levels ({"instances": [{column: value}]}, a value is a
# scalar), a v2 body 3 plus its tensors' rank (at most kserve.MAX_TENSOR_RANK). Deeper bodies are refused before
# anything recurses on them: the standard JSON parser, repr() in error messages and orjson's writer all do.
MAX_JSON_DEPTH = 32
MAX_ROWS = 10_000  # rows in one request (413 beyond)
JSON = b"application/json"
RFC822 = b"message/rfc822"
Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
logger = logging.getLogger("tandem.serve")


class Request:
    """One HTTP request as the server read it: header names lower-case, the whole body.

    ``body`` is None when the body went over the size limit (``body_size`` says how big it was
    declared or had grown); the route that reads it answers 413."""

    __slots__ = ("method", "path", "headers", "body", "body_size")

    def __init__(self, method: str, path: str, headers: dict[bytes, bytes], body: bytes | None, body_size: int = 0):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.body_size = body_size


class Response(NamedTuple):
    """An answer, ready to write: the body is bytes, header names lower-case."""

    status: int
    body: bytes
    content_type: bytes
    headers: tuple | list


Respond = Callable[[Response], None]


@dataclass
class RawResponse:
    """A non-JSON answer (Prometheus text, v2 binary tensors)."""

    body: bytes
    content_type: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class HTTPError(Exception):
    """An answer other than 200, with a message for the JSON body."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


Answer = tuple  # (status, payload: JSON-able or RawResponse, extra headers)


class Later:
    """A request answered later: queued for a micro-batch, or waiting for a reload. Called once with its
    result (the model's outputs, a finished answer, or the exception that stopped it), it answers."""

    __slots__ = ("app", "model", "make_answer", "respond", "labels", "started")

    def __init__(self, app: ServeApp, model: ServedModel | None,
                 make_answer: Callable[[RunOutputs, int, int], Answer] | None):
        self.app = app
        self.model = model
        self.make_answer = make_answer  # (run, start, stop) -> answer (None: the result is the answer)
        self.respond, self.labels, self.started = app.current

    def __call__(self, result: object, start: int = 0, stop: int = 0) -> None:
        try:
            if isinstance(result, BaseException):
                answer = error_answer(self.app.batch_error(self.model, result))
            else:
                answer = result if self.make_answer is None else self.make_answer(result, start, stop)
        except Exception as exc:
            answer = error_answer(exc)
        try:
            self.respond(self.app.finish(answer, self.labels, self.started))
        except Exception as exc:  # a writer's bug must not stop the other requests of a batch from being answered
            logger.error("tandem serve: could not write an answer", exc_info=exc)

    def after(self, coro: Awaitable[Answer]) -> Later:
        """Answer with what ``coro`` returns, once it has run as a task."""
        def finished(task: asyncio.Task) -> None:
            self(task.exception() or task.result() if not task.cancelled()
                 else HTTPError(503, "the server is shutting down"))

        asyncio.get_running_loop().create_task(coro).add_done_callback(finished)
        return self


def error_answer(exc: BaseException) -> Answer:
    """The answer for an exception: HTTPError as it says, a user's mistake 422, anything else a logged 500."""
    if isinstance(exc, HTTPError):
        return exc.status, {"error": exc.message}, exc.headers
    if isinstance(exc, TandemError):
        return 422, {"error": str(exc)}, ()
    if isinstance(exc, NonFiniteOutput):
        return 422, {"error": "the model produced a non-finite value for this input"}, ()
    logger.error("tandem serve: unexpected error", exc_info=exc)
    return 500, {"error": f"internal error ({type(exc).__name__}); the server log has the details"}, ()


def error_response(exc: BaseException) -> Response:
    """``error_answer`` as a Response, ready to write."""
    status, payload, headers = error_answer(exc)
    return Response(status, orjson.dumps(payload), JSON, headers)


def one_line(exc: BaseException) -> str:
    """An exception as one line of at most 500 characters: ours say what is wrong, others also say their class."""
    text = " ".join(str(exc).split())[:500]
    return text if isinstance(exc, TandemError) else f"{type(exc).__name__}: {text}"


def encode_values(encode: Callable[..., EncodedInputs], data: object, field: str, **kwargs: str) -> EncodedInputs:
    """``encode(data)``: a request's values as the model's inputs. The encoder names a wrong value itself
    (TandemError, 422); a value that its libraries (numpy, Arrow) refuse in their own words is still the
    request's mistake, not the server's."""
    try:
        return encode(data, **kwargs)
    except TandemError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise HTTPError(422, f"{field}: the values could not be read as the model's columns "
                             f"({one_line(exc)})") from None


# -- JSON ---------------------------------------------------------------------------------------------
def _reject_constant(value: str) -> float:
    raise HTTPError(400, f"body: {value} is not allowed in JSON numbers; send null for a missing value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise HTTPError(400, f"body: number {text[:40]} is out of range")
    return value


_NOT_MARKS = bytes(range(256)).translate(None, b'[]{}"')  # what json_depth deletes before counting
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_STEP = np.zeros(256, np.int8)
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1
_CHUNK = 1 << 20


def json_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in UTF-8 JSON text, counted without parsing it (no recursion, memory
    bounded by chunks). Brackets inside strings do not count; past a syntax error the count goes on, so it
    is never less than what a parser would reach."""
    # escaped backslashes first, then escaped quotes: every '"' left opens or closes a string
    marks = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_MARKS)
    deepest = depth = in_string = 0
    for start in range(0, len(marks), _CHUNK):
        chunk = np.frombuffer(marks, np.uint8, min(_CHUNK, len(marks) - start), start)
        quotes = chunk == 34
        outside = (np.cumsum(quotes, dtype=np.int32) + in_string) % 2 == 0
        levels = np.cumsum(_STEP[chunk] * outside, dtype=np.int32) + depth
        deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
        in_string = (in_string + int(quotes.sum())) % 2
    return deepest


def check_json_depth(raw: bytes) -> None:
    """Refuse (400) a JSON body nested deeper than MAX_JSON_DEPTH."""
    brackets = raw.translate(None, _NOT_BRACKETS)  # one pass; a body of numbers leaves a few KB of brackets
    if brackets.count(b"[") + brackets.count(b"{") <= MAX_JSON_DEPTH:
        return  # too few opening brackets to nest deeper
    if len(brackets) <= 1 << 16:  # a request of many rows: a few passes that drop the innermost pairs settle it
        for _ in range(MAX_JSON_DEPTH):
            brackets = brackets.replace(b"[]", b"").replace(b"{}", b"")
            if not brackets:
                return
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise HTTPError(400, f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels; expected at most that: a REST "
                             'value is a scalar ({"instances": [{column: value}]}), a v2 tensor\'s data is nested '
                             "no deeper than its shape's rank")


def parse_json(raw: bytes) -> object:
    """The JSON document of a request body; a 400 saying precisely what is wrong when it is not one."""
    try:
        doc = orjson.loads(raw)  # (orjson itself stops at 1024 levels, without recursing)
    except orjson.JSONDecodeError:
        pass
    else:
        check_json_depth(raw)
        return doc
    check_json_depth(raw)
    try:  # the standard parser, only to say precisely what is wrong (it recurses: the depth is checked)
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPError(400, f"body is not valid JSON: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise HTTPError(400, f"body is not valid JSON: {exc}") from None
    except ValueError:  # Python's own bound on the digits of an int it reads
        raise HTTPError(400, f"body: a number has over {sys.get_int_max_str_digits()} digits") from None
    raise HTTPError(400, "body is not valid JSON (a number or string could not be read)")
