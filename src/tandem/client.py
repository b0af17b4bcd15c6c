"""A small HTTP client for ``tandem serve``: stdlib only, frames in, arrays out."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import numpy as np

from tandem.errors import TandemError


class ServerError(TandemError):
    """The server answered with an error (its JSON ``error`` message is kept)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"server answered {status}: {message}")
        self.status = status


def _records(data: object) -> list[dict]:
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list):
        return data
    module = type(data).__module__
    if module.startswith("pandas"):
        return data.to_dict(orient="records")
    if module.startswith("polars"):
        return data.to_dicts()
    if module.startswith("pyarrow"):
        return data.to_pylist()
    raise TandemError(f"cannot send {type(data).__name__}: expected a dict, a list of dicts, or a pandas, "
                      "polars or Arrow table")


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return str(value)


class Client:
    """``Client("http://127.0.0.1:8080").predict(frame)``."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST")
        req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise ServerError(exc.code, message) from None

    def predict_response(self, model: str, data: object) -> dict:
        """The server's whole answer for ``data`` (predictions, probabilities, labels, version)."""
        rows = [{k: _jsonable(v) for k, v in r.items()} for r in _records(data)]
        return self._post(f"/v1/models/{model}/predict", {"instances": rows})

    def predict(self, model: str, data: object) -> np.ndarray:
        """Labels or values, one per row of ``data``."""
        return np.array(self.predict_response(model, data)["predictions"])

    def predict_proba(self, model: str, data: object) -> np.ndarray:
        """Class probabilities, one row per row of ``data``, columns in the server's label order."""
        return np.array(self.predict_response(model, data)["probabilities"])
