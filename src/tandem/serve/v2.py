"""The KServe v2 / Open Inference Protocol routes: health, server and model metadata, model readiness, infer.

The codecs (JSON and binary tensors) are in serve/kserve.py. Handlers take (app, request, model), as the
route table calls them (``model`` is None on the server's own routes).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from tandem.serve import kserve
from tandem.serve.batching import RunOutputs
from tandem.serve.protocol import JSON, Answer, HTTPError, Later, RawResponse, Request, check_json_depth, encode_values

if TYPE_CHECKING:
    from tandem.serve.app import ServeApp
    from tandem.serve.models import ServedModel


def live(app: ServeApp, request: Request, model: None) -> Answer:
    """Liveness: the process answers."""
    return 200, {"live": True}, ()


def ready(app: ServeApp, request: Request, model: None) -> Answer:
    """Readiness: 503 until the models are loaded and warmed up."""
    return (200 if app.ready else 503), {"ready": app.ready}, ()


def server_metadata(app: ServeApp, request: Request, model: None) -> Answer:
    """The server's name, version and protocol extensions."""
    return 200, {"name": "tandem", "version": "1", "extensions": ["binary_tensor_data"]}, ()


def model_metadata(app: ServeApp, request: Request, model: ServedModel) -> Answer:
    """The model's inputs (from its schema) and outputs."""
    return 200, kserve.metadata(model.name, model.version, model.predictor), ()


def model_ready(app: ServeApp, request: Request, model: ServedModel) -> Answer:
    """The model's readiness (the server's: every model is warmed up before any is served)."""
    return (200 if app.ready else 503), {"name": model.name, "ready": app.ready}, ()


def infer(app: ServeApp, request: Request, model: ServedModel) -> Answer | Later:
    """One input tensor per column, as JSON or binary tensors; the outputs as asked."""
    p = model.predictor
    header_length = request.headers.get(b"inference-header-content-length")
    if header_length is not None:
        if not header_length.isdigit() or len(header_length) > 15:
            raise HTTPError(400, "Inference-Header-Content-Length must be a number of bytes")
        header_length = int(header_length)
    # v2 clients may send no content type; binary requests are application/octet-stream
    raw = app.read_body(request, types=(JSON, b"", b"application/octet-stream"))
    app.admit(model)
    check_json_depth(raw if header_length is None else raw[:header_length])
    try:
        v2 = kserve.decode_request(raw, header_length, frozenset(c.name for c in p.encoder.image_columns),
                                   frozenset(c.name for c in p.encoder.tensor_columns))
    except kserve.V2Error as exc:
        raise HTTPError(400, str(exc)) from None
    app.check_rows(v2.n_rows)
    if p.recommendations is not None:
        return _recommend(app, model, v2)

    def answer(run: RunOutputs, start: int, stop: int) -> Answer:
        out = run.rows(start, stop)
        labels = p.decode(out) if p.task != "regression" else None
        try:
            body, ctype, extra = kserve.encode_answer(model.name, model.version, p, out, labels, v2)
        except kserve.V2Error as exc:
            raise HTTPError(400, str(exc)) from None
        return 200, RawResponse(body, ctype, extra), ()

    enc = encode_values(p.encode, v2.columns, "inputs")
    if enc.text is not None:  # BYTES cannot say null: an empty element is a mistake
        blank = np.flatnonzero((enc.text[:, 1::2] == "").any(axis=1))
        if len(blank):
            raise HTTPError(400, f"input text row {int(blank[0]) + 1}: empty text; send the text to read")
    return app.run_model(model, enc, answer)


def _recommend(app: ServeApp, model: ServedModel, v2: kserve.InferRequest) -> Answer:
    """A recommender's v2 answer: the users' ids in the one input (named as the user column), ``k`` and
    ``exclude_seen`` in the request's parameters; items, scores [users, k] and known [users] out."""
    p = model.predictor
    user = p.manifest["recommend"]["user"]
    unknown = [name for name in v2.columns if name != user]
    if unknown or user not in v2.columns:
        raise HTTPError(400, f"inputs: expected one input named '{user}' (the user ids); k and exclude_seen go in "
                             "the request's parameters" + (f", got {unknown[0][:100]!r}" if unknown else ""))
    k = v2.parameters.get("k", p.recommendations.default_k)
    exclude = v2.parameters.get("exclude_seen", True)
    users = v2.columns[user]
    started = time.perf_counter()
    answers = p.recommendations.answer(users.tolist() if isinstance(users, np.ndarray) else list(users), k, exclude,
                                       field_name=user)
    app.observe(model.name, 0.0, time.perf_counter() - started, len(answers))
    try:
        body, ctype, extra = kserve.encode_tensors(model.name, model.version,
                                                   kserve.recommend_tensors(p, answers, int(k)), v2)
    except kserve.V2Error as exc:
        raise HTTPError(400, str(exc)) from None
    return 200, RawResponse(body, ctype, extra), ()
