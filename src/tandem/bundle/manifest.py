"""What a bundle's manifest must hold: every field a reader indexes, with its type, checked once on load.

:func:`check_manifest` runs in :func:`tandem.bundle.format.read_manifest` before anything else reads the
manifest, so the Predictor, the API, the server, the CLI and the HTML report may index the fields listed
here without guarding each access. A manifest whose checksum was recomputed after a careless (or
hostile) edit then fails with one line naming the field and what was expected, not a traceback.

Fields not listed here are allowed (older or newer tandems may add some); a reader that starts indexing
a new field adds it to :data:`RULES`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from tandem.bundle.files import MODEL_FILE, TOKENIZER_FILE
from tandem.errors import BundleError
from tandem.schema import TENSOR_DTYPES

#: Deeper JSON than this is refused before anything walks it recursively (tandem writes at most ~8 levels).
MAX_DEPTH = 64
TASKS = ("binary", "multiclass", "regression", "recommend")
LABEL_TYPES = ("string", "int", "float", "bool")
SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Rule:
    """A leaf rule: ``test(value)`` is true when the value is acceptable; ``expected`` says what is."""

    test: Callable[[object], bool]
    expected: str


@dataclass(frozen=True)
class Opt:
    """The field may be absent or null; when present it follows ``spec``."""

    spec: object


@dataclass(frozen=True)
class ListOf:
    """A JSON array whose items each follow ``spec``."""

    spec: object
    min_items: int = 0


@dataclass(frozen=True)
class MapOf:
    """A JSON object with any string keys, whose values each follow ``spec``."""

    spec: object


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: object) -> bool:
    return _is_number(v) and math.isfinite(v)


STR = Rule(lambda v: isinstance(v, str), "a string")
NAME = Rule(lambda v: isinstance(v, str) and bool(v), "a non-empty string")
BOOL = Rule(lambda v: isinstance(v, bool), "true or false")
INT = Rule(lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
COUNT = Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0")
NUMBER = Rule(_is_number, "a number")
DICT = Rule(lambda v: isinstance(v, dict), "an object")
LIST = Rule(lambda v: isinstance(v, list), "an array")
SHA256 = Rule(lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
              "64 lowercase hex digits (a sha256)")


def one_of(*values: str) -> Rule:
    return Rule(lambda v: v in values, "one of " + ", ".join(repr(x) for x in values))


_FILE = {"sha256": SHA256, "bytes": COUNT}
_COLUMN_KEYS = {"name", "kind", "nullable", "missing", "categories", "min", "max", "note", "size", "shape", "dtype"}
_COLUMN = {"name": NAME, "kind": NAME, "nullable": Opt(BOOL), "missing": Opt(COUNT), "categories": Opt(ListOf(STR)),
           "min": Opt(NUMBER), "max": Opt(NUMBER), "note": Opt(STR), "size": Opt(COUNT),
           "shape": Opt(ListOf(Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= -1,
                                    "an integer >= -1 (-1: any length)"))),
           "dtype": Opt(one_of(*TENSOR_DTYPES))}
_CURVE = {"fpr": ListOf(NUMBER), "tpr": ListOf(NUMBER), "auc": NUMBER}
_PR = {"recall": ListOf(NUMBER), "precision": ListOf(NUMBER), "average_precision": NUMBER}

#: Every field a reader indexes (Predictor, tandem.api.Model, the CLI, the server, the report), and its type.
RULES: dict[str, object] = {
    "files": MapOf(_FILE),
    "name": NAME,
    "version": Opt(Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1")),
    "task": one_of(*TASKS),
    "target": NAME,
    "metric": NAME,
    "threshold": Rule(lambda v: _finite(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "label_type": Opt(one_of(*LABEL_TYPES)),
    "labels": Opt(ListOf(STR)),
    "source": Opt(STR),
    "created_at": Opt(STR),
    "schema": {"columns": ListOf(_COLUMN, min_items=1), "target": Opt(STR), "task": Opt(STR),
               "labels": Opt(ListOf(STR)), "notes": Opt(ListOf(STR))},
    "preprocessing": Opt({"num_names": Opt(ListOf(STR)), "cat_names": Opt(ListOf(STR)),
                          "vocabularies": Opt(ListOf(ListOf(STR))), "indicator_columns": Opt(ListOf(COUNT)),
                          "text_names": Opt(ListOf(STR)), "text_terms": Opt(ListOf(ListOf(STR))),
                          "text_encoder": Opt({"max_tokens": Rule(lambda v: isinstance(v, int)
                                                                  and not isinstance(v, bool) and v > 0,
                                                                  "an integer > 0")}),
                          "image_size": Opt(COUNT),
                          "image_encoder": Opt({"side": COUNT, "input_side": COUNT, "dims": COUNT,
                                                "graph_sha256": STR})}),
    "metrics": {"validation": MapOf(Opt(NUMBER)), "validation_scheme": STR},
    "leaderboard": ListOf({"model": NAME}),
    "ensemble": ListOf({"model": NAME, "weight": NUMBER, "family": Opt(STR), "native": Opt(STR)}),
    "parity": {"max_abs_diff": NUMBER},
    "latency": {"predict_1row_us_p50": Opt(NUMBER)},
    "warnings": Opt(ListOf(STR)),
    "notes": Opt(ListOf(STR)),
    "quality": Opt({"counts": {"error": COUNT, "warning": COUNT, "info": COUNT}, "rows": COUNT, "columns": COUNT,
                    "seconds": NUMBER, "findings": ListOf({"severity": one_of(*SEVERITIES), "check": STR,
                                                            "message": STR, "column": Opt(STR)})}),
    "fairness": Opt({"column": STR, "on": STR, "groups": MapOf(MapOf(Opt(NUMBER))), "disparity": DICT}),
    "importance": Opt({"columns": ListOf({"column": STR, "importance": NUMBER, "std": Opt(NUMBER)}),
                       "metric": STR, "baseline": NUMBER, "rows": COUNT, "repeats": COUNT}),
    "curves": Opt({"evaluation": Opt(DICT), "learning": Opt({"model": STR, "rows": ListOf(NUMBER),
                                                             "scores": ListOf(Opt(NUMBER)), "metric": STR}),
                   "training": Opt(MapOf(Opt({"steps": ListOf(NUMBER), "train": ListOf(Opt(NUMBER)),
                                              "valid": ListOf(Opt(NUMBER)), "unit": STR, "metric": STR})))}),
    "footprint": Opt({"train": Opt(DICT), "inference": Opt(DICT)}),
    "explain": Opt({"available": BOOL, "reason": Opt(STR), "output": Opt(STR)}),
    "signature": Opt({"algorithm": one_of("ed25519"), "key_id": Rule(
        lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{16}", v) is not None, "16 lowercase hex digits"),
        "public_key": NAME, "value": NAME}),
}

#: What a recommendation bundle adds (task "recommend"): what its graph keys and returns
RECOMMEND = {"user": NAME, "item": NAME, "user_id_type": one_of("int", "string"),
             "item_id_type": one_of("int", "string"), "users": COUNT,
             "items": Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
             "interactions": COUNT, "k": Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                                              "an integer >= 1")}

# what the report's evaluation section indexes, by task
_EVALUATION = {
    "classification": {"roc": MapOf(_CURVE), "pr": MapOf(_PR), "confusion": ListOf(ListOf(NUMBER)),
                       "labels": ListOf(STR), "calibration": Opt({"predicted": ListOf(NUMBER),
                                                                  "observed": ListOf(NUMBER)})},
    "regression": {"actual": ListOf(NUMBER), "predicted": ListOf(NUMBER), "residual_quantiles": ListOf(Opt(NUMBER))},
}


class _Invalid(Exception):
    def __init__(self, path: str, value: object, expected: str):
        super().__init__(path)
        self.path, self.value, self.expected = path, value, expected


def _describe(value: object) -> str:
    if value is _MISSING:
        return "missing"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"an array of {len(value)}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_MISSING = object()


def _check(value: object, spec: object, path: str) -> None:
    if isinstance(spec, Opt):
        if value is _MISSING or value is None:
            return
        spec = spec.spec
    if value is _MISSING:
        raise _Invalid(path, value, _expected(spec))
    if isinstance(spec, Rule):
        if not spec.test(value):
            raise _Invalid(path, value, spec.expected)
    elif isinstance(spec, ListOf):
        if not isinstance(value, list) or len(value) < spec.min_items:
            raise _Invalid(path, value, _expected(spec))
        for i, item in enumerate(value):
            _check(item, spec.spec, f"{path}[{i}]")
    elif isinstance(spec, MapOf):
        if not isinstance(value, dict):
            raise _Invalid(path, value, "an object")
        for key, item in value.items():
            _check(item, spec.spec, f"{path}.{key}")
    else:  # a dict: these keys, others allowed
        if not isinstance(value, dict):
            raise _Invalid(path, value, _expected(spec))
        for key, sub in spec.items():
            _check(value.get(key, _MISSING), sub, f"{path}.{key}" if path else key)


def _expected(spec: object) -> str:
    if isinstance(spec, Opt):
        return _expected(spec.spec) + " or null"
    if isinstance(spec, Rule):
        return spec.expected
    if isinstance(spec, ListOf):
        least = f" of at least {spec.min_items}" if spec.min_items else ""
        return f"an array{least} of {_expected(spec.spec)}" if isinstance(spec.spec, Rule) else f"an array{least}"
    if isinstance(spec, MapOf):
        return "an object"
    return "an object with " + ", ".join(repr(k) for k, v in spec.items() if not isinstance(v, Opt))


def json_depth_ok(value: object, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests at most ``limit`` arrays/objects deep (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return True


def check_manifest(manifest: object, where: str) -> None:
    """Raise :class:`BundleError` unless ``manifest`` holds every field readers index, with its type.

    ``where`` names the manifest in messages (``"bundle 'x': manifest.json"``). Beyond types: a classifier
    has at least two distinct labels (exactly two for ``binary``) that its ``label_type`` can read, a
    regression has none, the file list has ``model.onnx`` (and ``tokenizer.json`` when the preprocessing
    has a text encoder), and schema columns have no keys tandem does not know.
    """
    if not isinstance(manifest, dict):
        raise BundleError(f"{where} is {_describe(manifest)}: expected a JSON object")
    if not json_depth_ok(manifest):
        raise BundleError(f"{where} nests deeper than {MAX_DEPTH} levels: expected a bundle manifest")
    try:
        _check(manifest, RULES, "")
        task = manifest["task"]
        if task == "recommend":
            _check(manifest.get("recommend", _MISSING), RECOMMEND, "recommend")
        evaluation = (manifest.get("curves") or {}).get("evaluation")
        if evaluation is not None:
            kind = "regression" if task == "regression" else "classification"
            _check(evaluation, _EVALUATION[kind], "curves.evaluation")
    except _Invalid as bad:
        raise BundleError(f"{where} field '{bad.path}' is {_describe(bad.value)}: expected {bad.expected}") from None
    for i, column in enumerate(manifest["schema"]["columns"]):
        unknown = sorted(set(column) - _COLUMN_KEYS)
        if unknown:
            raise BundleError(f"{where} field 'schema.columns[{i}]' has unknown key(s) "
                              f"{', '.join(repr(k) for k in unknown)}: expected only {', '.join(sorted(_COLUMN_KEYS))}")
        if column.get("kind") == "tensor" and (column.get("shape") is None or column.get("dtype") is None):
            raise BundleError(f"{where} field 'schema.columns[{i}]' is a tensor column without its shape and dtype: "
                              "expected both")
    _check_labels(manifest, where)
    files = manifest["files"]
    for rel in files:
        if not rel or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in rel.split("/")):
            raise BundleError(f"{where} field 'files' lists {rel!r}: expected a relative path inside the bundle "
                              "(no '..', no leading '/')")
    needed = [MODEL_FILE]
    if ((manifest.get("preprocessing") or {}).get("text_encoder")):
        needed.append(TOKENIZER_FILE)
    for rel in needed:
        if rel not in files:
            raise BundleError(f"{where} field 'files' does not list '{rel}': expected every file the bundle "
                              "loads to be listed with its sha256")


def _check_labels(manifest: dict, where: str) -> None:
    task, labels = manifest["task"], manifest.get("labels")
    if task in ("regression", "recommend"):
        if labels:
            raise BundleError(f"{where} field 'labels' is {_describe(labels)}: expected null for a {task} model")
        return
    least = "exactly 2" if task == "binary" else "at least 2"
    if not labels or len(labels) < 2 or (task == "binary" and len(labels) != 2):
        raise BundleError(f"{where} field 'labels' is {_describe(labels if labels is not None else _MISSING)}: "
                          f"expected {least} class labels for a {task} model")
    if len(set(labels)) != len(labels):
        raise BundleError(f"{where} field 'labels' repeats a label: expected distinct class labels")
    label_type = manifest.get("label_type") or "string"
    readable = {"int": lambda s: re.fullmatch(r"[+-]?\d+", s.strip()) is not None,
                "float": _float_text, "bool": lambda s: s in ("true", "false")}.get(label_type, lambda s: True)
    for i, label in enumerate(labels):
        if not readable(label):
            raise BundleError(f"{where} field 'labels[{i}]' is {label!r}: expected a label of type '{label_type}' "
                              "(the manifest's label_type)")


def _float_text(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
