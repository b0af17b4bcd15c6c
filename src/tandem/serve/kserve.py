"""KServe v2 / Open Inference Protocol: metadata, and the infer request and answer codecs.

Both forms of the protocol are read and written: plain JSON, and Triton's binary tensor data
extension (an ``Inference-Header-Content-Length`` JSON header followed by raw tensor bytes),
which is what ``tritonclient`` sends by default.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import orjson

from tandem.bundle.recommend import FROM_FEATURES_NOTE
from tandem.inference.predictor import Predictor

FIXED_DTYPES = {"BOOL": "?", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "i1",
                "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
# the most dimensions a tensor may have (Triton's own limit is lower); a tensor's JSON data, when nested rather
# than flat, is as deep as its shape's rank, so this bounds how deep its lists are read
MAX_TENSOR_RANK = 16


class V2Error(ValueError):
    """A malformed v2 request: the message names the tensor and what was expected (answered 400)."""


@dataclass
class InferRequest:
    """A decoded v2 infer request: one list or array of values per input name."""

    columns: dict[str, object]
    n_rows: int
    request_id: object
    outputs: list[str] | None  # requested output names (None: all)
    binary_output: bool
    parameters: dict  # the request's own parameters (a recommender reads k and exclude_seen there)


def datatype_of(kind: str) -> str:
    return {"numeric": "FP32", "boolean": "BOOL", "datetime": "BYTES"}.get(kind, "BYTES")


#: a tensor column's numpy dtype as a v2 datatype
TENSOR_DATATYPES = {np.dtype(v).name: k for k, v in FIXED_DTYPES.items()}


def metadata(name: str, version: int | None, p: Predictor) -> dict:
    """The model metadata document: inputs from the bundle's schema, outputs from its task."""
    if p.recommendations is not None:
        return {"name": name, "versions": [str(version)] if version else [], "platform": "tandem-onnx",
                "inputs": recommend_inputs(p), "outputs": output_specs(p),
                "parameters": {"k": p.recommendations.default_k, "exclude_seen": True}}
    inputs = [{"name": c.name, "datatype": TENSOR_DATATYPES[c.dtype], "shape": [-1, *c.shape]} if c.kind == "tensor"
              else {"name": c.name, "datatype": datatype_of(c.kind), "shape": [-1]} for c in p.schema.features]
    return {"name": name, "versions": [str(version)] if version else [], "platform": "tandem-onnx",
            "inputs": inputs, "outputs": output_specs(p)}


def recommend_inputs(p: Predictor) -> list[dict]:
    """A recommender's one input: its users' ids (k and exclude_seen go in the request's parameters)."""
    info = p.manifest["recommend"]
    return [{"name": info["user"], "datatype": "INT64" if info["user_id_type"] == "int" else "BYTES", "shape": [-1]}]


def output_specs(p: Predictor) -> list[dict]:
    if p.recommendations is not None:
        items = "INT64" if p.manifest["recommend"]["item_id_type"] == "int" else "BYTES"
        return [{"name": "items", "datatype": items, "shape": [-1, -1]},
                {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
                {"name": "known", "datatype": "BOOL", "shape": [-1]},
                {"name": "from_features", "datatype": "BOOL", "shape": [-1]}]
    if p.task == "regression":
        return [{"name": "prediction", "datatype": "FP32", "shape": [-1]}]
    return [{"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(p.labels)]}]


def decode_request(body: bytes, header_length: int | None, raw_bytes_inputs: frozenset[str] = frozenset(),
                   tensor_inputs: frozenset[str] = frozenset()) -> InferRequest:
    """Parse an infer request (JSON, or JSON header + binary tensors); V2Error says what is wrong.

    Binary BYTES elements are text, except in the inputs named in ``raw_bytes_inputs`` (images), where an
    element that is not UTF-8 stays bytes. An input named in ``tensor_inputs`` (a tensor column) is a batch of
    arrays: its values come back shaped as sent, rows along the first dimension; any other input is one value
    per row, whatever its shape."""
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise V2Error(f"Inference-Header-Content-Length {header_length} does not fit a body of {len(body)} bytes")
        head, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        head, binary = body, memoryview(b"")
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise V2Error(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise V2Error('body: expected {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    columns: dict[str, object] = {}
    offset = 0
    for i, tensor in enumerate(doc["inputs"]):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise V2Error(f"inputs[{i}]: expected an object with a string 'name'")
        where = f"inputs[{i}] ('{tensor['name'][:100]}')"
        shape = tensor.get("shape")
        if shape is not None and not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise V2Error(f"{where}: 'shape' must be a list of non-negative integers")
        if shape is not None and len(shape) > MAX_TENSOR_RANK:
            raise V2Error(f"{where}: shape has {len(shape)} dimensions; a tensor has at most {MAX_TENSOR_RANK}")
        params = _object(tensor.get("parameters"), f"{where}: 'parameters' must be an object")
        size = params.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise V2Error(f"{where}: binary_data_size {size!r} does not fit the {len(binary) - offset} "
                              "bytes left in the body")
            values = _binary_values(binary[offset: offset + size], tensor.get("datatype"), where,
                                    None if tensor["name"] in raw_bytes_inputs else tensor["name"])
            offset += size
        else:
            data = tensor.get("data")
            if not isinstance(data, list):
                raise V2Error(f"{where}: field 'data' must be a list (or send binary data)")
            values = _flatten(data, where, shape)
        if shape is not None and math.prod(shape) != len(values):
            raise V2Error(f"{where}: shape {shape} does not match {len(values)} values")
        if tensor["name"] in tensor_inputs and shape is not None and len(shape) > 1:  # rows: the first axis
            try:
                values = np.asarray(values).reshape(shape)
            except (ValueError, TypeError):
                raise V2Error(f"{where}: 'data' must hold numbers of one type for shape {shape}") from None
        columns[tensor["name"]] = values
    if offset != len(binary):
        raise V2Error(f"body has {len(binary) - offset} bytes of binary data that no input claims")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise V2Error(f"inputs: every tensor needs the same number of rows, got {sorted(lengths)}")
    params = _object(doc.get("parameters"), "field 'parameters': expected an object")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2Error(f"field 'id': expected a string, got {_json_type(request_id)}")
    requested = doc.get("outputs")
    names = None
    binary_output = bool(params.get("binary_data_output", False))
    if requested is not None:
        if not isinstance(requested, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                       for o in requested):
            raise V2Error("field 'outputs': expected a list of {\"name\": ...} objects")
        names = [o["name"] for o in requested]
        for i, o in enumerate(requested):
            wanted = _object(o.get("parameters"),
                             f"field 'outputs' item {i + 1} ('{o['name'][:100]}'): 'parameters' must be an object")
            binary_output = binary_output or bool(wanted.get("binary_data"))
    return InferRequest(columns, lengths.pop(), request_id, names, binary_output, params)


def encode_answer(name: str, version: int | None, p: Predictor, out: dict[str, np.ndarray], labels: np.ndarray,
                  request: InferRequest) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """(body, content type, extra headers) of the infer answer, JSON or binary as the request asked."""
    n = request.n_rows
    if p.task == "regression":
        tensors = {"prediction": ("FP32", [n], out["prediction"].reshape(-1).astype(np.float32))}
    else:
        probs = out["probabilities"].astype(np.float32)
        tensors = {"label": ("BYTES", [n], [str(v) for v in labels.tolist()]),
                   "probabilities": ("FP32", [n, probs.shape[1]], probs.reshape(-1))}
    return encode_tensors(name, version, tensors, request)


#: a slot of a recommender's answer with nothing left to recommend (k beyond the items a user has not had)
EMPTY_SLOT_SCORE = float(np.finfo(np.float32).min)


def recommend_tensors(p: Predictor, answers: list[dict], k: int) -> dict[str, tuple[str, list[int], object]]:
    """A recommender's answers as v2 tensors [users, k]: a slot with nothing left to recommend holds item -1
    (or "") and the lowest float32 score."""
    is_int = p.manifest["recommend"]["item_id_type"] == "int"
    n = len(answers)
    items: list = []
    scores = np.full((n, k), EMPTY_SLOT_SCORE, dtype=np.float32)
    for i, a in enumerate(answers):
        got = len(a["items"])
        items += a["items"] + [-1 if is_int else ""] * (k - got)
        scores[i, :got] = a["scores"]
    return {"items": ("INT64" if is_int else "BYTES", [n, k], np.array(items, dtype=np.int64) if is_int else
                      [str(v) for v in items]),
            "scores": ("FP32", [n, k], scores.reshape(-1)),
            "known": ("BOOL", [n], np.array([a["known"] for a in answers], dtype=bool)),
            "from_features": ("BOOL", [n], np.array([a.get("note") == FROM_FEATURES_NOTE for a in answers],
                                                    dtype=bool))}


def encode_tensors(name: str, version: int | None, tensors: dict[str, tuple[str, list[int], object]],
                   request: InferRequest) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """(body, content type, extra headers) of an infer answer holding ``tensors`` (name: (datatype, shape,
    flat values)), those the request asked for, JSON or binary as it asked."""
    wanted = request.outputs if request.outputs is not None else list(tensors)
    unknown = [w for w in wanted if w not in tensors]
    if unknown:
        raise V2Error(f"field 'outputs': unknown output(s) {', '.join(map(repr, unknown))}; "
                      f"this model has {', '.join(map(repr, tensors))}")
    answer: dict = {"model_name": name, "model_version": str(version or ""), "outputs": []}
    if request.request_id is not None:
        answer["id"] = request.request_id
    if not request.binary_output:
        for w in wanted:
            datatype, shape, data = tensors[w]
            answer["outputs"].append({"name": w, "datatype": datatype, "shape": shape, "data": data})
        return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), b"application/json", []
    chunks = []
    for w in wanted:
        datatype, shape, data = tensors[w]
        raw = (_bytes_tensor(data) if datatype == "BYTES" else
               np.ascontiguousarray(data, dtype=FIXED_DTYPES[datatype]).tobytes())
        chunks.append(raw)
        answer["outputs"].append({"name": w, "datatype": datatype, "shape": shape,
                                  "parameters": {"binary_data_size": len(raw)}})
    head = orjson.dumps(answer)
    return (head + b"".join(chunks), b"application/octet-stream",
            [(b"inference-header-content-length", str(len(head)).encode())])


def _binary_values(raw: memoryview, datatype: object, where: str, text_input: str | None) -> object:
    """The values of one binary tensor; ``text_input`` names an input whose BYTES must be UTF-8 text (None:
    raw bytes are kept)."""
    if datatype == "BYTES":
        values, i = [], 0
        while i < len(raw):
            if i + 4 > len(raw):
                raise V2Error(f"{where}: BYTES data ends inside an element's 4-byte length")
            (length,) = struct.unpack_from("<I", raw, i)
            if i + 4 + length > len(raw):
                raise V2Error(f"{where}: BYTES element of {length} bytes runs past the tensor's data")
            element = bytes(raw[i + 4: i + 4 + length])
            try:
                values.append(element.decode("utf-8"))
            except UnicodeDecodeError:
                if text_input is not None:
                    raise V2Error(f"input '{text_input}': BYTES element {len(values) + 1} is not UTF-8 text") from None
                values.append(element)  # raw bytes of an image
            i += 4 + length
        return values
    dtype = FIXED_DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise V2Error(f"{where}: datatype {datatype!r} is not one of {', '.join(['BYTES', *FIXED_DTYPES])}")
    width = np.dtype(dtype).itemsize
    if len(raw) % width:
        raise V2Error(f"{where}: {len(raw)} bytes is not a whole number of {datatype} values")
    values = np.frombuffer(raw, dtype=dtype)
    return values.astype(np.float64) if values.dtype.kind == "f" else values


def _bytes_tensor(values: list[str]) -> bytes:
    parts = []
    for v in values:
        b = v.encode("utf-8")
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)


def _flatten(data: list, where: str, shape: list[int] | None) -> list:
    """A tensor's JSON data, flat or nested, as its elements in row-major order; lists nested deeper than the
    shape's rank (MAX_TENSOR_RANK without a shape) are refused. A stack, never recursion: the depth is the
    client's."""
    if not any(type(v) is list for v in data):
        return data
    deepest = max(1, len(shape)) if shape is not None else MAX_TENSOR_RANK
    values: list = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if type(v) is list:
                if len(stack) == deepest:
                    raise V2Error(f"{where}: field 'data' nests lists deeper than " + (
                        f"the {len(shape)} dimension(s) of its shape {shape}" if shape is not None else
                        f"{MAX_TENSOR_RANK} levels; a tensor has at most {MAX_TENSOR_RANK} dimensions"))
                stack.append(iter(v))
                break
            values.append(v)
        else:
            stack.pop()
    return values


def _object(value: object, mistake: str) -> dict:
    """``value`` when it is a JSON object, {} when it is missing (null); V2Error ``mistake`` otherwise."""
    if value is None:
        return {}
    if type(value) is not dict:
        raise V2Error(f"{mistake}, got {_json_type(value)}")
    return value


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string"}.get(type(value), "number")
