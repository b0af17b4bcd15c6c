"""Refuse ONNX graphs that would make ONNX Runtime read files beside (or outside) the bundle.

An ONNX tensor may keep its data in an external file (``data_location: EXTERNAL`` and a
``location``). tandem's graphs never do, and a bundle's hashes cover only the files it lists, so
such a graph is refused before ONNX Runtime sees it. ONNX Runtime checks these paths itself, but
its checks depend on its version and options: a graph loaded from bytes with graph optimisations
off reads a relative ``location`` from the working directory.

This reads the protobuf wire format directly (the serving host has no ``onnx`` package), visiting
only the messages that can hold tensors: the graph, its nodes' attributes, subgraphs and functions.
"""

from __future__ import annotations

# field numbers from onnx.proto (stable since ONNX 1.0)
_MODEL_GRAPH, _MODEL_TRAINING_INFO, _MODEL_FUNCTIONS = 7, 20, 25
_TRAINING_INITIALIZATION, _TRAINING_ALGORITHM = 1, 2
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_ATTRIBUTE = 5
_FUNCTION_NODE, _FUNCTION_ATTRIBUTE_PROTO = 7, 11
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_EXTERNAL = 1
_MAX_NESTING = 64
_WINDOW = 1 << 20
_TENSOR_FIELDS = (_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION)


class GraphError(ValueError):
    """The bytes are not an ONNX model tandem will load (external data, or unreadable protobuf)."""


def check_no_external_data(model: bytes) -> None:
    """Raise :class:`GraphError` naming the tensor if any tensor in ``model`` (an ONNX ModelProto's bytes)
    keeps its data in an external file, or if the bytes are not well-formed protobuf."""
    _walk(bytes(model), 0, len(model), "model", 0)


def _walk(buf: bytes, start: int, end: int, kind: str, depth: int) -> None:
    if depth > _MAX_NESTING:
        raise GraphError("graphs nest too deeply")
    tensor_name = ""
    external = False
    location = ""
    children = _CHILDREN.get(kind, {})
    wanted = _TENSOR_FIELDS if kind == "tensor" else children.keys()
    for field, wire, value_start, value_end, value in _fields(buf, start, end, wanted):
        if kind == "tensor":
            if field == _TENSOR_NAME and wire == 2:
                tensor_name = buf[value_start:value_end].decode("utf-8", "replace")
            elif field == _TENSOR_DATA_LOCATION and wire == 0 and value == _EXTERNAL:
                external = True
            elif field == _TENSOR_EXTERNAL_DATA and wire == 2:
                external = True
                key, val = _entry(buf, value_start, value_end)
                if key == "location":
                    location = val
        elif wire == 2 and field in children:
            _walk(buf, value_start, value_end, children[field], depth + 1)
    if external:
        where = f" ('{location[:200]}')" if location else ""
        raise GraphError(f"tensor '{tensor_name[:100]}' keeps its data in an external file{where}")


_CHILDREN = {
    "model": {_MODEL_GRAPH: "graph", _MODEL_TRAINING_INFO: "training", _MODEL_FUNCTIONS: "function"},
    "training": {_TRAINING_INITIALIZATION: "graph", _TRAINING_ALGORITHM: "graph"},
    "graph": {_GRAPH_NODE: "node", _GRAPH_INITIALIZER: "tensor", _GRAPH_SPARSE_INITIALIZER: "sparse"},
    "function": {_FUNCTION_NODE: "node", _FUNCTION_ATTRIBUTE_PROTO: "attribute"},
    "node": {_NODE_ATTRIBUTE: "attribute"},
    "attribute": {_ATTR_T: "tensor", _ATTR_G: "graph", _ATTR_TENSORS: "tensor", _ATTR_GRAPHS: "graph",
                  _ATTR_SPARSE: "sparse", _ATTR_SPARSES: "sparse"},
    "sparse": {_SPARSE_VALUES: "tensor", _SPARSE_INDICES: "tensor"},
}


def _entry(buf: bytes, start: int, end: int) -> tuple[str, str]:
    key = val = ""
    for field, wire, s, e, _ in _fields(buf, start, end, (_ENTRY_KEY, _ENTRY_VALUE)):
        if wire == 2 and field == _ENTRY_KEY:
            key = buf[s:e].decode("utf-8", "replace")
        elif wire == 2 and field == _ENTRY_VALUE:
            val = buf[s:e].decode("utf-8", "replace")
    return key, val


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise GraphError("truncated or malformed protobuf")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes, pos: int, end: int, wanted):
    """(field, wire type, value start, value end, varint value) of each field in ``buf[pos:end]``.

    A run of a field not in ``wanted`` (proto2 repeated numbers are not packed: a tree ensemble's attribute is
    a million of them) yields its first item only, and the rest is skipped at C speed."""
    while pos < end:
        tag_start = pos
        tag, pos = _varint(buf, pos, end)
        tag_bytes = buf[tag_start:pos]
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, wire, pos, pos, value
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise GraphError("truncated or malformed protobuf")
            pos += width
            yield field, wire, pos - width, pos, None
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise GraphError("truncated or malformed protobuf")
            yield field, wire, pos, pos + length, None
            pos += length
        else:
            raise GraphError(f"unexpected protobuf wire type {wire}")
        if field not in wanted and buf.startswith(tag_bytes, pos):
            pos = _skip_run(buf, tag_bytes, wire, pos, end)


def _skip_run(buf: bytes, tag: bytes, wire: int, pos: int, end: int) -> int:
    """Skip the items of a run of the one-byte ``tag`` from ``pos``; stop at the first other field (or at the
    first item the fast paths do not cover: the caller's loop reads it)."""
    if len(tag) != 1:
        return pos
    t = tag[0]
    if wire == 2:  # short strings (a tree ensemble's node modes): one-byte lengths
        while pos + 1 < end and buf[pos] == t and buf[pos + 1] < 0x80:
            pos += 2 + buf[pos + 1]
        return min(pos, end) if pos <= end else _truncated()
    import numpy as np

    arr = np.frombuffer(buf, dtype=np.uint8, count=end - pos, offset=pos)
    if wire in (1, 5):  # fixed width: the tag recurs every 1 + width bytes
        stride = 9 if wire == 1 else 5
        tags = arr[::stride]
        other = np.flatnonzero(tags != t)
        items = other[0] if other.size else (len(arr) // stride)
        return pos + int(items) * stride
    # varints: bytes under 0x80 alternate between a tag and the last byte of its value; a window at a time
    # keeps the index arrays small
    done = 0
    while done < len(arr):
        window = arr[done:done + _WINDOW]
        low = np.flatnonzero(window < 0x80)
        n = len(low) // 2
        tags, ends = low[0:2 * n:2], low[1:2 * n:2]
        previous = np.concatenate(([-1], ends[:-1]))
        ok = (window[tags] == t) & (tags == previous + 1) & (ends - tags <= 10)
        bad = np.flatnonzero(~ok)
        items = int(bad[0]) if bad.size else n
        if items == 0:
            break
        done += int(ends[items - 1]) + 1
        if bad.size:
            break
    return pos + done


def _truncated() -> int:
    raise GraphError("truncated or malformed protobuf")
