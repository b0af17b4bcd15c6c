"""The REST routes: ``POST /v1/models/{name}/predict`` (JSON rows or columns, one raw image, one raw e-mail)
and ``GET /v1/models/{name}/footprint``. Handlers take (app, request, model), as the route table calls them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tandem.errors import TandemError
from tandem.serve.batching import RunOutputs
from tandem.serve.protocol import JSON, RFC822, Answer, HTTPError, Later, Request, encode_values, parse_json

if TYPE_CHECKING:
    from tandem.serve.app import ServeApp
    from tandem.serve.models import ServedModel


def predict(app: ServeApp, request: Request, model: ServedModel) -> Answer | Later:
    """Predict the body's rows: JSON, or for the models that read them, one raw image or one raw e-mail."""
    if model.predictor.recommendations is not None:
        raise HTTPError(400, f"model '{model.name}' recommends items: POST /v1/models/{model.name}/recommend "
                             '{"user": id, "k": 10}')
    ctype = request.headers.get(b"content-type", b"")
    if ctype != JSON:  # (the common request says exactly application/json: nothing to parse)
        ctype = ctype.split(b";")[0].strip().lower()
        if ctype == RFC822 and model.predictor.manifest.get("source") == "mail":
            return predict_message(app, request, model)
        if ctype.startswith(b"image/") and model.predictor.encoder.image_columns:
            return predict_image(app, request, model, ctype)
    raw = app.read_body(request)
    app.admit(model)
    return predict_rest(app, model, parse_json(raw))


def predict_image(app: ServeApp, request: Request, model: ServedModel, ctype: bytes) -> Answer | Later:
    """One raw image (``image/png``, ``image/jpeg``, ...) as the body, for a model with one image column."""
    raw = app.read_body(request, types=(ctype,))
    app.admit(model)
    encoder = model.predictor.encoder
    if len(encoder.required) != 1:
        raise HTTPError(415, "this model reads more than the image: send JSON rows with every column")
    return predict_rest(app, model, {"instances": [{encoder.image_columns[0].name: raw}]})


def predict_message(app: ServeApp, request: Request, model: ServedModel) -> Answer | Later:
    """A raw e-mail (``message/rfc822``) for a model trained on a mail folder: read as in training."""
    from tandem.bundle.mail import message_fields, parse_message

    raw = app.read_body(request, types=(RFC822,))
    app.admit(model)
    try:
        row = message_fields(parse_message(raw))
    except TandemError as exc:
        raise HTTPError(400, f"body: {exc}") from None
    # a message without a subject or text has them missing, as in training (not a blank-text mistake)
    return predict_rest(app, model, {"instances": [{k: (None if v == "" else v) for k, v in row.items()}]})


def rows_to_input(app: ServeApp, body: object) -> object:
    """The rows of a REST body: a list of {column: value} (``instances``) or {column: [values]} (``inputs``)."""
    if type(body) is dict and "instances" in body:  # the common request, checked first
        rows = body["instances"]
        if type(rows) is list and len(rows) == 1 and type(rows[0]) is dict:
            return rows
    if not isinstance(body, dict) or not ({"instances", "inputs"} & set(body)):
        raise HTTPError(400, 'body: expected {"instances": [{column: value}, ...]} or '
                             '{"inputs": {column: [values]}}')
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise HTTPError(400, "field 'instances': expected a non-empty list of {column: value} objects")
        app.check_rows(len(rows))
        return rows
    cols = body["inputs"]
    if not isinstance(cols, dict) or not cols or not all(isinstance(v, list) for v in cols.values()):
        raise HTTPError(400, "field 'inputs': expected {column: [values]} with one list per column")
    lengths = {len(v) for v in cols.values()}
    if len(lengths) != 1:
        raise HTTPError(400, f"field 'inputs': every column needs the same number of values, got {sorted(lengths)}")
    app.check_rows(lengths.pop())
    return cols


def predict_rest(app: ServeApp, model: ServedModel, body: object) -> Answer | Later:
    """Predict a parsed REST body: predictions, and for classifiers the labels and probabilities."""
    p = model.predictor
    data = rows_to_input(app, body)
    if isinstance(data, list):
        enc = encode_values(p.encoder.encode_rows, data, "field 'instances'", what="field 'instances'")
    else:
        enc = encode_values(p.encode, data, "field 'inputs'")
    explain = body.get("explain", False)  # (a dict: rows_to_input checked)
    if explain is not False and explain is not True:
        raise HTTPError(400, f"field 'explain': expected true or false, got {explain!r:.80}")

    def answer(run: RunOutputs, start: int, stop: int) -> Answer:
        predictions = run.cache.get("predictions")
        if predictions is None:  # decoded once per model run, whatever the number of requests it served
            run.cache["predictions"] = predictions = p.decode(run.out).tolist()
        result = {"model": model.name, "version": model.version, "predictions": predictions[start:stop]}
        if p.task != "regression":
            result["labels"] = model.labels
            result["probabilities"] = run.out["probabilities"][start:stop]  # float32: written as such
        if explain:  # this request's rows only, whatever it shared a model run with
            e = p.explain(enc)
            result["explanations"] = {"output": e["output"], "base": e["base"], "contributions": [
                dict(zip(e["columns"], row, strict=True)) for row in e["contributions"].tolist()]}
        return 200, result, ()

    return app.run_model(model, enc, answer)


RECOMMEND_FIELDS = ("user", "users", "k", "exclude_seen")


def recommend(app: ServeApp, request: Request, model: ServedModel) -> Answer:
    """Top-k items for one user (``{"user": id, "k": 10}``) or several (``{"users": [ids], "k": 10}``);
    ``"exclude_seen": false`` keeps what they already had. An unknown user gets the popular items and a note."""
    raw = app.read_body(request)
    app.admit(model)
    body = parse_json(raw)
    p = model.predictor
    if p.recommendations is None:
        raise HTTPError(400, f"model '{model.name}' does {p.task}, not recommendation: POST "
                             f"/v1/models/{model.name}/predict")
    if not isinstance(body, dict) or ("user" in body) == ("users" in body):
        raise HTTPError(400, 'body: expected {"user": id, "k": 10} or {"users": [id, ...], "k": 10}')
    unknown = [key for key in body if key not in RECOMMEND_FIELDS]
    if unknown:
        raise HTTPError(400, f"field '{unknown[0][:100]}' is not known: expected {', '.join(RECOMMEND_FIELDS)}")
    k = body.get("k", p.recommendations.default_k)
    exclude = body.get("exclude_seen", True)
    single = "user" in body
    users = [body["user"]] if single else body["users"]
    if not single and (not isinstance(users, list) or not users):
        raise HTTPError(400, "field 'users': expected a non-empty list of user ids")
    app.check_rows(len(users))
    started = time.perf_counter()
    answers = p.recommendations.answer(users, k, exclude, field_name="user",
                                       where=None if single else lambda i: f"field 'users[{i}]'")
    result = {"model": model.name, "version": model.version,
              **(answers[0] if single else {"recommendations": answers})}
    app.observe(model.name, 0.0, time.perf_counter() - started, len(users))
    return 200, result, ()


def footprint(app: ServeApp, request: Request, model: ServedModel) -> Answer:
    """The model's footprint: its training ledger's totals, what 1,000 predictions cost at export, and
    what they cost in this server (windows of at least 1,000, all served models together)."""
    ledger = model.predictor.manifest.get("footprint") or {}
    train = {k: v for k, v in (ledger.get("train") or {}).items() if k not in ("trials", "per_learner")}
    serving = (app.footprint.figures() if app.footprint is not None else
               {"available": False, "reason": "the server runs without a footprint meter (--no-footprint, or "
                                              "CodeCarbon is not installed: pip install 'tandem[footprint]')"})
    return 200, {"model": model.name, "version": model.version, "training": train,
                 "inference_at_export": ledger.get("inference"), "serving": serving}, ()
