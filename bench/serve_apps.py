"""The two baselines of ``bench/serve.py``, each run by uvicorn in its own process.

- ``floor``: a bare ASGI handler that reads the body and answers a constant: the cost of the HTTP
  stack alone (uvicorn, uvloop, httptools), below which no Python server can go.
- ``naive``: what users write by hand: FastAPI, a pydantic model of one row (built from the
  training columns, as a person would type it), a pandas frame per request, and the native
  LightGBM model's ``predict``. Configured by ``BENCH_NAIVE_MODEL`` (LightGBM text file) and
  ``BENCH_NAIVE_COLUMNS`` (JSON: column -> "number" or the list of training categories).
"""


import json
import os

# no `from __future__ import annotations`: FastAPI must see the request model's class, not its name

CONSTANT = b'{"predictions": [0]}'


async def floor(scope: dict, receive, send) -> None:
    """Read the whole request, answer a constant JSON body."""
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(CONSTANT)).encode())]})
    await send({"type": "http.response.body", "body": CONSTANT})


def naive():
    """The FastAPI app (a uvicorn factory)."""
    import lightgbm as lgb
    import pandas as pd
    from fastapi import FastAPI
    from pydantic import BaseModel, create_model

    booster = lgb.Booster(model_file=os.environ["BENCH_NAIVE_MODEL"])
    columns: dict = json.loads(os.environ["BENCH_NAIVE_COLUMNS"])
    Row = create_model("Row", **{name: ((float | None) if kind == "number" else (str | None), None)
                                 for name, kind in columns.items()})

    class Request(BaseModel):
        instances: list[Row]  # type: ignore[valid-type]

    app = FastAPI()

    @app.post("/predict")
    def predict(request: Request) -> dict:
        frame = pd.DataFrame([row.model_dump() for row in request.instances], columns=list(columns))
        for name, kind in columns.items():
            if kind != "number":
                frame[name] = pd.Categorical(frame[name], categories=kind)
        p = booster.predict(frame)
        return {"predictions": [int(v > 0.5) for v in p], "probabilities": [[1 - v, v] for v in p.tolist()]}

    return app
