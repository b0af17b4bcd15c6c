"""LightGBM and XGBoost boosters as one ONNX graph: ``input`` float32 [N, F] (NaN = missing) -> ``probabilities``
float32 [N, C] or ``values`` float32 [N, 1].

The trees become one ai.onnx.ml TreeEnsemble with double thresholds and double sums; the link (sigmoid, softmax,
exp) is applied in double and only the answer is cast to float32. LightGBM goes through tandem's own writer of
its ``dump_model()``; XGBoost through its JSON model (``save_raw("json")``), whose strict ``x < threshold``
float32 splits are kept exact as float32 values held in double.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper

from tandem.errors import ConfigError, DataError
from tandem.features.graph import DOUBLE, FLOAT, GraphBuilder, tensor_info
from tandem.foreign.source import OPSET, Converted
from tandem.learners.base import probabilities_from_logit
from tandem.learners.lgbm_onnx import ensemble_node, tree_ensemble
from tandem.schema import category_key

if TYPE_CHECKING:
    import lightgbm
    import xgboost

ML_OPSET = 5  # TreeEnsemble: double thresholds, per-node missing routing
INPUT = "input"
BRANCH_LT = 1
FLOAT32_MAX = float(np.finfo(np.float32).max)

#: LightGBM objective (first word of the dump's ``objective``) -> link from the raw score to the answer
LIGHTGBM_LINKS = {
    "binary": "logistic", "cross_entropy": "logistic",
    "multiclass": "softmax",
    "regression": "identity", "regression_l1": "identity", "huber": "identity", "fair": "identity",
    "quantile": "identity", "mape": "identity",
    "poisson": "exp", "gamma": "exp", "tweedie": "exp",
}
#: XGBoost objective -> (link from the margin to the answer, how base_score becomes a margin)
XGBOOST_LINKS = {
    "binary:logistic": ("logistic", "logit"), "reg:logistic": ("logistic", "logit"),
    "binary:logitraw": ("logistic", "identity"),
    "multi:softprob": ("softmax", "identity"), "multi:softmax": ("softmax", "identity"),
    "reg:squarederror": ("identity", "identity"), "reg:absoluteerror": ("identity", "identity"),
    "reg:pseudohubererror": ("identity", "identity"), "reg:quantileerror": ("identity", "identity"),
    "reg:squaredlogerror": ("identity", "identity"),
    "count:poisson": ("exp", "log"), "reg:gamma": ("exp", "log"), "reg:tweedie": ("exp", "log"),
}


def booster_of(obj: Any) -> tuple[Any, list[str] | None]:
    """The booster inside a LightGBM or XGBoost model, and its class labels when it is a scikit-learn classifier.

    Takes a ``lightgbm.Booster`` / ``xgboost.Booster`` (returned as is, labels None) or a scikit-learn wrapper
    (``LGBMClassifier``, ``LGBMRegressor``, ``XGBClassifier``, ``XGBRegressor``...): its fitted booster
    (``booster_``; ``get_booster()``, cut at ``best_iteration`` when early stopping set one, as the wrapper's
    ``predict`` does) and ``classes_`` as canonical strings (:func:`tandem.schema.category_key`).
    Raises :class:`ConfigError` for anything else or an unfitted wrapper.
    """
    kind = _kind(obj)
    if kind is None:
        raise ConfigError(f"{type(obj).__name__} is not a booster: expected a lightgbm.Booster, an xgboost.Booster "
                          "or one of their scikit-learn wrappers (LGBMClassifier, XGBRegressor...)")
    if kind in ("lightgbm.Booster", "xgboost.Booster"):
        return obj, None
    name = type(obj).__name__
    try:
        if kind == "lightgbm.sklearn":
            booster = obj.booster_
        else:
            booster = obj.get_booster()
    except Exception:  # each library raises its own "not fitted" error
        raise ConfigError(f"{name} is not fitted: expected a trained model (call fit first)") from None
    if kind == "xgboost.sklearn":
        missing = getattr(obj, "missing", np.nan)
        if missing is not None and not (isinstance(missing, float) and math.isnan(missing)):
            raise ConfigError(f"{name} reads {missing!r} as missing: converted boosters read NaN as missing "
                              "(refit with missing=np.nan)")
        try:
            best = obj.best_iteration  # set only by early stopping; the wrapper's predict stops there
        except AttributeError:
            best = None
        if best is not None and best + 1 < booster.num_boosted_rounds():
            booster = booster[: best + 1]
    classes = getattr(obj, "classes_", None) if hasattr(obj, "predict_proba") else None
    labels = None if classes is None else [category_key(v) for v in np.asarray(classes).tolist()]
    return booster, labels


def read_lightgbm(path: Path) -> lightgbm.Booster:
    """A LightGBM booster from its text model file (``Booster.save_model``)."""
    import lightgbm as lgb

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file: expected a LightGBM text model file")
    try:
        return lgb.Booster(model_file=str(path))
    except lgb.basic.LightGBMError as exc:
        raise DataError(f"{path}: not a LightGBM model file ({_first_line(exc)}): expected the text file "
                        "Booster.save_model writes") from None


def read_xgboost(path: Path) -> xgboost.Booster:
    """An XGBoost booster from its JSON or UBJSON model file (``save_model`` to ``.json`` / ``.ubj``).

    The format is read from the content, not the file name; pickles and the legacy binary format are refused.
    """
    import xgboost as xgb

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file: expected an XGBoost .json or .ubj model file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    # both JSON and UBJSON open with an object's '{'; the legacy binary format and pickles do not
    if not raw.lstrip()[:1] == b"{":
        what = "a pickle" if raw[:1] == b"\x80" else "not JSON or UBJSON"
        raise DataError(f"{path}: {what}: expected an XGBoost model saved with save_model to a .json or .ubj file")
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(raw))
    except xgb.core.XGBoostError as exc:
        raise DataError(f"{path}: not an XGBoost model ({_first_line(exc)}): expected the .json or .ubj file "
                        "save_model writes") from None
    return booster


def lightgbm_converted(booster: lightgbm.Booster) -> Converted:
    """A LightGBM model as one ONNX graph (see the module doc for its input and output).

    Takes a ``lightgbm.Booster`` (at its best iteration when it has one, as its ``predict`` does) or a
    scikit-learn wrapper (then ``labels`` are its classes). Objectives: binary and cross_entropy (sigmoid),
    multiclass (softmax), regression (also with reg_sqrt), regression_l1, huber, fair, quantile, mape
    (identity), poisson, gamma, tweedie (exp); gbdt, dart, goss and rf boosting; numeric and categorical
    splits (categories as LightGBM's integer codes). Raises :class:`ConfigError` for anything else
    (ranking, multiclassova, linear trees, a custom objective).
    """
    booster, labels = booster_of(booster)
    if _kind(booster) != "lightgbm.Booster":
        raise ConfigError(f"lightgbm_converted got {_qualified(booster)}: expected a lightgbm.Booster "
                          "or a LightGBM scikit-learn model")
    dump = booster.dump_model()
    objective = str(dump.get("objective", "custom"))
    words = objective.split()
    name = words[0] if words else "custom"
    link = LIGHTGBM_LINKS.get(name)
    if link is None:
        raise ConfigError(f"LightGBM objective '{name}' is not supported: expected one of "
                          f"{', '.join(LIGHTGBM_LINKS)}")
    if name == "regression" and "sqrt" in words:
        link = "signed_square"  # reg_sqrt: trained on sqrt(|y|), predicts sign(raw) * raw^2
    scale = 1.0
    for word in words[1:]:
        if word.startswith("sigmoid:"):
            scale = float(word.split(":", 1)[1])
    _check_lightgbm_trees(dump)
    _float32_thresholds(dump)
    n_targets = int(dump["num_tree_per_iteration"])
    if dump.get("average_output"):  # rf: the mean of each class's trees, not their sum
        scale /= max(1, len(dump["tree_info"]) // n_targets)
    n_features = int(dump["max_feature_idx"]) + 1
    names = list(booster.feature_name())
    columns = None if names == [f"Column_{i}" for i in range(n_features)] else names

    categorical = _lightgbm_categorical(dump)

    def trees(g: GraphBuilder, x_double: str) -> str:
        if categorical:
            # LightGBM reads a category as int(value) (2.7 is category 2, -0.5 is 0); the set test is exact
            mask = np.zeros(n_features, dtype=bool)
            mask[categorical] = True
            code = g.op("Mul", [g.op("Floor", [g.op("Abs", [x_double])]), g.op("Sign", [x_double])], prefix="code")
            x_double = g.op("Where", [g.const(mask, "categorical"), code, x_double], prefix="input_codes")
        return tree_ensemble(g, x_double, dump, n_targets)

    graph, output = _graph(n_features, n_targets, trees, link, scale, f"LightGBM {objective}")
    binary = link == "logistic"

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        pred = np.asarray(booster.predict(np.asarray(feeds[INPUT], dtype=np.float64)), dtype=np.float64)
        return _shaped(pred, binary, n_targets)

    notes = [f"LightGBM {objective}: {len(dump['tree_info'])} trees"]
    infos = dump.get("feature_infos") or {}
    category_columns = [n for n in names if (infos.get(n) or {}).get("values")]  # in the model's column order
    for column, cats in zip(category_columns, dump.get("pandas_categorical") or [], strict=False):
        notes.append(f"feature {column!r} takes the codes 0..{len(cats) - 1} of its pandas categories {cats}")
    if categorical:
        notes.append(f"features {categorical} are categories: LightGBM's integer codes (NaN, negative or unseen: "
                     "right branch)")
    return Converted(graph=graph, framework="lightgbm", reference=reference, output=output, meaning=output,
                     labels=_checked_labels(labels, output, n_targets, binary), columns=columns, notes=notes)


def _float32_thresholds(dump: dict) -> None:
    """Round every numeric threshold to the nearest float32. A bundle's numbers arrive as float32 while LightGBM
    learnt its thresholds on float64 data, often at a data value itself: 0.103 <= 0.103 must stay true once
    0.103 is float32 (rounding is monotonic, so no value at or below a threshold is sent right)."""
    stack = [tree["tree_structure"] for tree in dump["tree_info"]]
    while stack:
        node = stack.pop()
        if "leaf_value" in node:
            continue
        threshold = float(node["threshold"]) if node.get("decision_type") == "<=" else np.inf
        if abs(threshold) <= FLOAT32_MAX:  # (LightGBM writes ±1e300 for "everything": left as it is)
            node["threshold"] = float(np.float32(threshold))
        stack.extend((node["left_child"], node["right_child"]))


def xgboost_converted(booster: xgboost.Booster) -> Converted:
    """An XGBoost model as one ONNX graph (see the module doc for its input and output).

    Takes an ``xgboost.Booster`` (all its trees, as its ``predict`` does) or a scikit-learn wrapper (then
    ``labels`` are its classes and early stopping's best iteration is kept). Objectives: binary:logistic,
    reg:logistic, binary:logitraw (sigmoid), multi:softprob, multi:softmax (softmax: probabilities either way),
    reg:squarederror, reg:absoluteerror, reg:pseudohubererror, reg:quantileerror with one quantile,
    reg:squaredlogerror (identity), count:poisson, reg:gamma, reg:tweedie (exp); gbtree and dart boosters;
    numeric splits. Raises :class:`ConfigError` for anything else (gblinear, ranking or survival objectives,
    categorical splits, multi-output models).
    """
    booster, labels = booster_of(booster)
    if _kind(booster) != "xgboost.Booster":
        raise ConfigError(f"xgboost_converted got {_qualified(booster)}: expected an xgboost.Booster "
                          "or an XGBoost scikit-learn model")
    model = json.loads(bytes(booster.save_raw("json")))
    learner = model["learner"]
    objective = str(learner["objective"]["name"])
    if objective not in XGBOOST_LINKS:
        raise ConfigError(f"XGBoost objective '{objective}' is not supported: expected one of "
                          f"{', '.join(XGBOOST_LINKS)}")
    link, base_link = XGBOOST_LINKS[objective]
    gbm = learner["gradient_booster"]
    if gbm["name"] not in ("gbtree", "dart"):
        raise ConfigError(f"XGBoost booster '{gbm['name']}' is not supported: expected gbtree or dart")
    params = learner["learner_model_param"]
    if int(params.get("num_target", 1)) > 1:
        raise ConfigError(f"XGBoost model with {params['num_target']} targets is not supported: expected one "
                          "target (one regression output, or one class per softmax column)")
    trees_model = gbm["gbtree"]["model"] if gbm["name"] == "dart" else gbm["model"]
    weights = [float(w) for w in gbm.get("weight_drop", [])] or [1.0] * len(trees_model["trees"])
    if any(t == "c" for t in learner.get("feature_types") or []) or any(
            1 in tree.get("split_type", []) for tree in trees_model["trees"]):
        raise ConfigError("XGBoost categorical splits are not supported: expected numeric splits only "
                          "(train without enable_categorical, categories one-hot or as codes)")
    if any(int(tree["tree_param"].get("size_leaf_vector", "1")) > 1 for tree in trees_model["trees"]):
        raise ConfigError("XGBoost multi_output_tree models are not supported: expected one_output_per_tree")
    n_targets = max(1, int(params.get("num_class", "0")))
    base = _base_margin(str(params["base_score"]), base_link, n_targets)
    n_features = int(params["num_feature"])
    names = booster.feature_names
    columns = list(names) if names else None

    def trees(g: GraphBuilder, x_double: str) -> str:
        raw = _xgboost_ensemble(g, x_double, trees_model, weights, n_targets)
        return g.op("Add", [raw, g.const(base, "base_margin")], prefix="margin")

    graph, output = _graph(n_features, n_targets, trees, link, 1.0, f"XGBoost {objective}")
    binary = link == "logistic"
    from_margin = objective in ("multi:softmax", "binary:logitraw")  # their predict is a label or a margin

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        import xgboost as xgb

        x = np.asarray(feeds[INPUT], dtype=np.float32)
        data = xgb.DMatrix(x, missing=np.nan, feature_names=booster.feature_names,
                           feature_types=booster.feature_types)
        if not from_margin:
            return _shaped(np.asarray(booster.predict(data), dtype=np.float64), binary, n_targets)
        margin = np.asarray(booster.predict(data, output_margin=True), dtype=np.float64).reshape(len(x), -1)
        if binary:
            return _shaped(1.0 / (1.0 + np.exp(-margin[:, 0])), True, 1)
        e = np.exp(margin - margin.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    notes = [f"XGBoost {objective}: {len(trees_model['trees'])} trees"]
    if from_margin:
        notes.append(f"{objective} predicts {'a class' if n_targets > 1 else 'a margin'}; the graph gives "
                     "probabilities")
    return Converted(graph=graph, framework="xgboost", reference=reference, output=output, meaning=output,
                     labels=_checked_labels(labels, output, n_targets, binary), columns=columns, notes=notes)


def _xgboost_ensemble(g: GraphBuilder, x_double: str, trees_model: dict, weights: list[float],
                      n_targets: int) -> str:
    """Add a TreeEnsemble node for XGBoost's JSON trees; return its double [N, n_targets] sum of leaves."""
    feature, splits, true_ids, true_leaf, false_ids, false_leaf, missing_true = ([] for _ in range(7))
    roots, leaf_targets, leaf_weights = [], [], []
    tree_info = trees_model["tree_info"]
    for t, tree in enumerate(trees_model["trees"]):
        target = int(tree_info[t]) if n_targets > 1 else 0
        left, right = tree["left_children"], tree["right_children"]
        # leaf values and thresholds are float32 in XGBoost: round-trip the JSON's shortest repr through float32
        cond = np.asarray(tree["split_conditions"], dtype=np.float32).astype(np.float64)
        index, default_left = tree["split_indices"], tree["default_left"]
        weight = weights[t]

        def leaf(node: int, target: int = target, cond: np.ndarray = cond, weight: float = weight) -> int:
            leaf_targets.append(target)
            leaf_weights.append(float(cond[node]) * weight)
            return len(leaf_weights) - 1

        def new_node() -> int:
            for lst in (feature, splits, true_ids, true_leaf, false_ids, false_leaf, missing_true):
                lst.append(0)
            return len(feature) - 1

        if left[0] == -1:  # a tree with no split: route both ways to its one leaf
            i = new_node()
            true_ids[i] = false_ids[i] = leaf(0)
            true_leaf[i] = false_leaf[i] = 1
            roots.append(i)
            continue
        # walk from the root so that pruned (deleted) nodes left in the arrays are not written
        slots = {0: new_node()}
        roots.append(slots[0])
        stack = [0]
        while stack:
            node = stack.pop()
            i = slots[node]
            feature[i] = int(index[node])
            splits[i] = float(cond[node])
            missing_true[i] = int(bool(default_left[node]))
            for child, ids, is_leaf in ((left[node], true_ids, true_leaf), (right[node], false_ids, false_leaf)):
                if left[child] == -1:
                    ids[i], is_leaf[i] = leaf(child), 1
                else:
                    slots[child] = new_node()
                    ids[i], is_leaf[i] = slots[child], 0
                    stack.append(child)
    return ensemble_node(g, x_double, n_targets=n_targets, roots=roots, feature=feature, splits=splits,
                         modes=[BRANCH_LT] * len(feature), true_ids=true_ids, true_leaf=true_leaf, false_ids=false_ids,
                         false_leaf=false_leaf, missing_true=missing_true, leaf_targets=leaf_targets,
                         leaf_weights=leaf_weights)


def _graph(n_features: int, n_targets: int, trees: Callable[[GraphBuilder, str], str], link: str, scale: float,
           doc: str) -> tuple[onnx.ModelProto, str]:
    """The whole graph: input -> double -> trees' raw score [N, T] -> link (in double) -> float32 output."""
    g = GraphBuilder()
    g.reserve(INPUT)
    x_double = g.op("Cast", [INPUT], to=DOUBLE, prefix="input_double")
    raw = trees(g, x_double)
    if scale != 1.0:
        raw = g.op("Mul", [raw, g.const(np.array([scale], dtype=np.float64), "scale")], prefix="raw")
    if link == "logistic":
        answer = probabilities_from_logit(g, raw, np.float64)
    elif link == "softmax":
        answer = g.op("Softmax", [raw], axis=1)
    elif link == "exp":
        answer = g.op("Exp", [raw])
    elif link == "signed_square":
        answer = g.op("Mul", [raw, g.op("Abs", [raw])])
    else:
        answer = raw
    output = "values" if link in ("identity", "exp", "signed_square") else "probabilities"
    g.alias(g.op("Cast", [answer], to=FLOAT, prefix="answer"), output)
    n_out = 2 if link == "logistic" else n_targets
    graph = helper.make_graph(g.nodes, "tandem_foreign", [tensor_info(INPUT, FLOAT, ["N", n_features])],
                              [tensor_info(output, FLOAT, ["N", n_out])], g.initializers)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)]
    model = helper.make_model(graph, producer_name="tandem", doc_string=doc, opset_imports=opsets)
    model.ir_version = 10  # ai.onnx.ml 5 came with IR 10
    onnx.checker.check_model(model, full_check=True)
    return model, output


def _check_lightgbm_trees(dump: dict) -> None:
    """Refuse what the TreeEnsemble cannot reproduce: linear trees, and zero-as-missing splits that would send
    a zero down the other branch than LightGBM does."""
    stack = [t["tree_structure"] for t in dump["tree_info"]]
    while stack:
        node = stack.pop()
        if "leaf_value" in node:
            if node.get("leaf_coeff"):
                raise ConfigError("LightGBM linear trees (linear_tree=True) are not supported: expected trees with "
                                  "constant leaves")
            continue
        if node.get("missing_type") == "Zero" and node["decision_type"] != "==":
            if bool(node.get("default_left", True)) != (0.0 <= float(node["threshold"])):
                raise ConfigError("LightGBM zero_as_missing=True is not supported here: expected NaN as the "
                                  "only missing value (train with zero_as_missing=False)")
        stack.extend((node["left_child"], node["right_child"]))


def _base_margin(text: str, link: str, n_targets: int) -> np.ndarray:
    """XGBoost's base_score as a margin added to the trees' sum, one per target: 2.x stores one number, later
    versions may store a list (one per class)."""
    values = json.loads(text) if text.lstrip().startswith("[") else [text]
    base = np.asarray([np.float32(v) for v in values], dtype=np.float64)
    if len(base) not in (1, n_targets):
        raise ConfigError(f"XGBoost base_score {text} has {len(base)} values: expected 1 or {n_targets}")
    if link == "logit":
        base = np.log(base / (1.0 - base))
    elif link == "log":
        base = np.log(base)
    return base


def _lightgbm_categorical(dump: dict) -> list[int]:
    """The features LightGBM splits on as categories."""
    found: set[int] = set()
    stack = [t["tree_structure"] for t in dump["tree_info"]]
    while stack:
        node = stack.pop()
        if "leaf_value" not in node:
            if node["decision_type"] == "==":
                found.add(int(node["split_feature"]))
            stack.extend((node["left_child"], node["right_child"]))
    return sorted(found)


def _shaped(pred: np.ndarray, binary: bool, n_targets: int) -> np.ndarray:
    """A booster's predict as the graph's output: binary [1 - p, p]; multiclass [N, C]; values [N, 1]."""
    if binary:
        p = pred.reshape(-1)
        return np.column_stack([1.0 - p, p])
    return pred.reshape(-1, n_targets)


def _checked_labels(labels: list[str] | None, output: str, n_targets: int, binary: bool) -> list[str] | None:
    if labels is None or output != "probabilities":
        return None
    n = 2 if binary else n_targets
    if len(labels) != n:
        raise ConfigError(f"the model's classes_ hold {len(labels)} labels but it scores {n} classes: "
                          "expected one label per class")
    return labels


def _kind(obj: Any) -> str | None:
    """Which library an object comes from, without importing either: 'lightgbm.Booster', 'lightgbm.sklearn',
    'xgboost.Booster', 'xgboost.sklearn' or None."""
    for cls in type(obj).__mro__:
        module = cls.__module__.split(".")[0]
        if module not in ("lightgbm", "xgboost"):
            continue
        if cls.__name__ == "Booster":
            return f"{module}.Booster"
        if cls.__name__ in ("LGBMModel", "XGBModel"):
            return f"{module}.sklearn"
    return None


def _qualified(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
