"""Distillation: the parent (an ensemble, a CNN or an encoder model) taught to one fast student.

The parent's own graph is the teacher: run on the rows the caller gave to learn from
(``--train-data``, never the labelled rows the variants are scored on), its answers are the soft
labels. Each student learns a blend of them and the true labels (``ALPHA`` of the teacher), the way
AutoGluon's ``distill()`` teaches its students, and (LightGBM students) the teacher's answers on augmented
rows too: copies of the teaching rows with some columns' values taken from other rows (``_augment``):

- a LightGBM student (one per size in ``SIZES``) on the tree view, stopped early on a slice of the
  teaching rows: binary models learn the blended probability with LightGBM's ``cross_entropy``
  objective, regression models the blended value, and multiclass models the blended class
  probabilities as one weighted row per class (a weighted multiclass log loss is the cross-entropy
  against the soft labels);
- for models that read text, also a linear student on the dense view, which holds the text columns'
  TF-IDF blocks (the preprocessing always fits them on the training rows): a logistic regression on
  each teaching row twice, once with the teacher's class and once with the true one (the linear
  learner fits hard labels), or a ridge regression on the blended value.

The student is a real learner of the bundle: its bundle's graph is built by the study's
:func:`~tandem.study.graph.build_graph` with the student as the only member, its native files are the
learner's own, and the parent's member folders are left out of the bundle.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from tandem.bundle.files import ENCODER_FILE, EXPLAIN_FILE, NATIVE_DIR, PREPROCESSING_FILE, TOKENIZER_FILE
from tandem.bundle.inputs import EncodedInputs
from tandem.features.preprocess import Preprocessor
from tandem.learners import Learner
from tandem.learners.lgbm import LightGBMLearner
from tandem.learners.linear import LinearLearner
from tandem.optimize import measure
from tandem.optimize.natives import n_classes, native_files, native_parity
from tandem.optimize.variants import Parent, Variant
from tandem.study.graph import build_graph

NEEDS_ROWS = "distill needs rows to teach a student on: give --train-data (the model's training file)"
# the teacher's share of a student's label; the true label has the rest (Adult, 90 trees of 31 leaves: ROC-AUC
# loss 0.0012 at 0.5, 0.0014 at 0.7, 0.0022 at 1.0: the true labels still teach)
ALPHA = 0.5
STOP_SHARE = 0.1  # of the teaching rows, held out to stop a LightGBM student early
# augmentation (AutoGluon's idea, simplified): COPIES new rows per teaching row, each column's value taken from
# another random row at SWAP odds, labelled by the teacher alone. Measured on Adult (a 63-leaf, 100-tree student
# of a 482-tree parent): ROC-AUC loss 0.0008 without, 0.0006 with two copies (five copies: no better). The
# teacher labels them only as long as that takes at most AUGMENT_SECONDS (an encoder labels ~300 rows a second).
COPIES, SWAP, AUGMENT_SECONDS, AUGMENT_MAX_ROWS = 2, 0.2, 60.0, 400_000
MIN_ROWS = 50  # fewer teaching rows teach no student worth scoring
STUDENT_SECONDS = 600.0  # a student's fit stops here at the latest
THREADS = min(os.cpu_count() or 1, 4)
# LightGBM students, small then medium: at most 50 and 100 boosting rounds, fewer trees than a study's members
# (the graph's cost grows with trees x depth). On Adult (one thread), 50 trees of 63 leaves at rate 0.2 score
# within 0.0006 of a 482-tree parent and run ~240k rows/s, as fast as LightGBM's own default booster (100 trees
# of 31 leaves); 100 trees of 15 leaves run as fast but lose 0.0013-0.0015, 90 of 31 leaves lose 0.0012-0.0014.
# Soft labels are smooth: the students seldom stop before their last round.
SIZES = (
    {"num_leaves": 63, "learning_rate": 0.2, "n_estimators": 50, "min_data_in_leaf": 20, "lambda_l2": 1.0,
     "early_stopping_rounds": 20},
    {"num_leaves": 63, "learning_rate": 0.1, "n_estimators": 100, "min_data_in_leaf": 20, "lambda_l2": 1.0,
     "early_stopping_rounds": 20},
)
LINEAR_PARAMS = {"C": 1.0, "max_iter": 1000, "alpha": 1.0}
STUDENT_NAME = "distilled_{family}"  # the student's model name; its native folder is native/<name>


def variants(parent: Parent) -> list[Variant] | str:
    """A variant per student (LightGBM sizes, and a linear TF-IDF student for text models), or why
    distillation does not apply to this parent."""
    if parent.teach is None or parent.teach_y is None:
        return NEEDS_ROWS
    manifest = parent.manifest
    task = manifest["task"]
    pre = Preprocessor.from_dict(manifest["preprocessing"])
    if not pre.tree_feature_names:
        return ("distill: this model reads only images; its LightGBM and TF-IDF students read table and text "
                "columns")
    n = parent.teach.n_rows
    if n < MIN_ROWS:
        return f"distill: {n} training rows are too few to teach a student on (it needs {MIN_ROWS})"
    seed = int(manifest.get("lineage", {}).get("seed") or 0)
    rng = np.random.default_rng(seed)
    sess = measure.session(parent.graph, threads=THREADS)
    start = time.monotonic()
    teacher = measure.answer(task, measure.outputs(sess, parent.teach)).astype(np.float64)
    per_row = (time.monotonic() - start) / n
    y = np.asarray(parent.teach_y)
    order = rng.permutation(n)
    n_stop = max(1, int(round(n * STOP_SHARE)))
    stop, fit = np.sort(order[:n_stop]), np.sort(order[n_stop:])
    # the copies come from the fitting rows only: none is a near twin of a stopping row
    copies = int(min(COPIES, AUGMENT_SECONDS / max(per_row * len(fit), 1e-9), AUGMENT_MAX_ROWS // len(fit)))
    extra = _augment(parent.teach.take(fit), copies, rng) if copies else None
    extra_soft = (measure.answer(task, measure.outputs(sess, extra)).astype(np.float64)
                  if extra is not None else teacher[:0])
    tree, extra_tree = pre.view("tree", parent.teach), pre.view("tree", extra) if extra is not None else None
    out = []
    for params in SIZES:
        student = _lightgbm_student(params, task, n_classes(manifest), seed, pre, tree, teacher, y, fit, stop,
                                    extra_tree, extra_soft)
        out.append(_variant(parent, pre, student, {
            "student": "lightgbm", "trees": student.describe()["trees"], "num_leaves": params["num_leaves"],
            "learning_rate": params["learning_rate"], "teacher_share": ALPHA, "labels": _LABELS[task],
            "teach_rows": int(len(fit)), "stop_rows": int(len(stop)), "augmented_rows": int(len(extra_soft)),
            "fit_seconds": round(student.fit_seconds, 2)}))
    labels = [v.label for v in out]
    for v in out:  # two sizes that stopped at as many trees: their settings tell them apart
        if labels.count(v.label) > 1:
            v.label += f" ({v.settings['num_leaves']} leaves, rate {v.settings['learning_rate']:g})"
    if pre.text_names and pre.text_width:
        student = _linear_student(task, n_classes(manifest), seed, pre.view("dense", parent.teach), teacher, y)
        out.append(_variant(parent, pre, student, {
            "student": "linear", "view": "dense (TF-IDF of the text columns)", "coefficients":
            student.describe()["coefficients"], "teacher_share": ALPHA if task == "regression" else 0.5,
            "labels": _LINEAR_LABELS[task], "teach_rows": int(n), "fit_seconds": round(student.fit_seconds, 2)},
            label="distill linear tf-idf"))
    return out


_LABELS = {"binary": f"{ALPHA:g} x the teacher's probability + {1 - ALPHA:g} x the true class (cross_entropy)",
           "regression": f"{ALPHA:g} x the teacher's value + {1 - ALPHA:g} x the true value",
           "multiclass": (f"one row per class weighted {ALPHA:g} x the teacher's probability + {1 - ALPHA:g} x "
                          "the true class (soft cross-entropy)")}
_LINEAR_LABELS = {"binary": "each row twice: the teacher's class and the true class",
                  "multiclass": "each row twice: the teacher's class and the true class",
                  "regression": _LABELS["regression"]}


def _deadline() -> float:
    return time.monotonic() + STUDENT_SECONDS


def _lightgbm_student(params: dict, task: str, n_classes: int, seed: int, pre: Preprocessor, X: np.ndarray,
                      teacher: np.ndarray, y: np.ndarray, fit: np.ndarray, stop: np.ndarray,
                      X_extra: np.ndarray | None, extra: np.ndarray) -> LightGBMLearner:
    """A LightGBM student fitted on ``fit`` rows of the blended labels and the augmented rows ``X_extra`` of the
    teacher's answers ``extra``, stopped early on ``stop`` rows."""
    # one thread: a student is at most 100 rounds (seconds on Adult), while OpenMP threads of a machine shared
    # with other work were measured ~8x slower (a multiclass test student: 46 s on two threads, 6 s on one)
    params = {**params, "num_threads": 1}
    if task == "binary":
        params = {**params, "objective": "cross_entropy"}
    student = LightGBMLearner(params, task=task, n_classes=n_classes, seed=seed,
                              categorical=pre.tree_categorical_indices)
    X_fit = X[fit] if X_extra is None else np.concatenate([X[fit], X_extra])
    if task == "multiclass":
        soft = ALPHA * teacher + (1 - ALPHA) * np.eye(n_classes)[y]
        (Xf, yf, wf), (Xs, ys, ws) = _per_class(X_fit, np.concatenate([soft[fit], extra])), _per_class(
            X[stop], soft[stop])
        return student.fit(Xf, yf, Xs, ys, deadline=_deadline(), weight=wf, weight_val=ws)
    column = 1 if task == "binary" else 0
    blend = ALPHA * teacher[:, column] + (1 - ALPHA) * y.astype(np.float64)
    return student.fit(X_fit, np.concatenate([blend[fit], extra[:, column]]), X[stop], blend[stop],
                       deadline=_deadline())


def _augment(enc: EncodedInputs, copies: int, rng: np.random.Generator) -> EncodedInputs:
    """``copies`` new rows per row of ``enc``: the row with each column's value, at ``SWAP`` odds, taken from
    another random row (a text column's words, characters and token ids together)."""
    n = enc.n_rows
    out = enc.take(np.tile(np.arange(n), copies))  # fancy indexing: copies, changed in place below
    m = out.n_rows

    def donors() -> tuple[np.ndarray, np.ndarray]:
        rows = np.flatnonzero(rng.random(m) < SWAP)
        return rows, rng.integers(0, n, len(rows))

    for name in ("num", "cat"):
        values = getattr(enc, name)
        for j in range(0 if values is None else values.shape[1]):
            rows, src = donors()
            getattr(out, name)[rows, j] = values[src, j]
    for j in range(0 if enc.text is None else enc.text.shape[1] // 2):
        rows, src = donors()
        out.text[rows, 2 * j:2 * j + 2] = enc.text[src, 2 * j:2 * j + 2]
        if enc.tokens is not None:
            out.tokens[rows, j] = enc.tokens[src, j]
    return out


def _per_class(X: np.ndarray, soft: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row once per class its soft label gives weight to: (rows, class, weight)."""
    rows, classes = np.nonzero(soft > 1e-6)
    return X[rows], classes, soft[rows, classes]


def _linear_student(task: str, n_classes: int, seed: int, X: np.ndarray, teacher: np.ndarray,
                    y: np.ndarray) -> LinearLearner:
    """A linear student on the dense view of every teaching row (a linear model has nothing to stop early)."""
    student = LinearLearner(LINEAR_PARAMS, task=task, n_classes=n_classes, seed=seed)
    if task == "regression":
        return student.fit(X, ALPHA * teacher[:, 0] + (1 - ALPHA) * y.astype(np.float64), deadline=_deadline())
    return student.fit(np.concatenate([X, X]), np.concatenate([teacher.argmax(axis=1), y]), deadline=_deadline())


def _variant(parent: Parent, pre: Preprocessor, student: Learner, settings: dict, label: str | None = None) -> Variant:
    """The student as a bundle's variant: its graph, native files, explanation data and ensemble entry."""
    manifest = parent.manifest
    name = STUDENT_NAME.format(family=student.family)
    folder = f"{NATIVE_DIR}/{name}"
    model = build_graph(pre, manifest["task"], manifest.get("labels"), [(student, 1.0)],
                        float(manifest.get("threshold", 0.5)))
    graph = model.SerializeToString()
    files = native_files([(folder, student)])
    explain = _explain_data(parent, pre, student, name)
    files[EXPLAIN_FILE] = json.dumps(explain).encode()
    drop = [m["native"] for m in manifest["ensemble"] if m.get("native")]
    replaces: dict = {}
    if manifest["preprocessing"].get("text_encoder"):  # the student reads no token ids: the encoder leaves too
        preprocessing = {**manifest["preprocessing"], "text_encoder": None}
        replaces["preprocessing"] = preprocessing
        files[f"{NATIVE_DIR}/{PREPROCESSING_FILE}"] = json.dumps(preprocessing).encode()
        drop += [f"{NATIVE_DIR}/{ENCODER_FILE}", TOKENIZER_FILE]
    entry = {"model": name, "family": student.family, "weight": 1.0, "native": folder, "refit_on_all_rows": False,
             **student.describe()}
    parity = native_parity(graph, pre, [(student, 1.0)], parent.rows, manifest["task"])
    return Variant("distill", settings, graph=graph, native_parity=parity,
                   label=label or f"distill {student.family} {settings['trees']} trees", files=files,
                   drop=drop,
                   replaces={**replaces, "ensemble": [entry],
                             "explain": {"available": "unavailable" not in explain,
                                         "reason": explain.get("unavailable"), "output": explain["output"]}})


def _explain_data(parent: Parent, pre: Preprocessor, student: Learner, name: str) -> dict:
    """explain.json for the student alone (as the study writes it: tandem.study.export)."""
    task, labels = parent.manifest["task"], parent.manifest.get("labels")
    out: dict = {"task": task, "output": f"P({labels[1]})" if task == "binary" else "prediction", "members": []}
    if task == "multiclass":
        out["unavailable"] = "per-prediction contributions are for binary and regression models; this one is multiclass"
        return out
    means = None
    if student.view == "dense":
        teach = parent.teach
        sample = teach.take(np.random.default_rng(0).choice(teach.n_rows, min(teach.n_rows, 100_000), replace=False))
        means = pre.dense_view(sample).astype(np.float64).mean(axis=0)
    out["members"].append({**student.explainer(means), "model": name, "weight": 1.0})
    return out
