"""From a study result to a bundle: one ONNX graph (preprocessing + ensemble), native files, manifest."""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import time
from datetime import datetime, timezone
from functools import partial
from importlib import metadata
from pathlib import Path

import numpy as np

from tandem.bundle.files import (
    ENCODER_FILE,
    EXPLAIN_FILE,
    IMAGE_ENCODER_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    NATIVE_DIR,
    PREPROCESSING_FILE,
    PROFILE_FILE,
    REPORT_FILE,
    TOKENIZER_FILE,
)
from tandem.bundle.inputs import EncodedInputs
from tandem.footprint.ledger import Span
from tandem.footprint.meter import Mark, Meter
from tandem.inference.drift import training_profile
from tandem.inference.predictor import run_graph
from tandem.report.html import render_report
from tandem.study.explain import MIN_ROWS as IMPORTANCE_MIN_ROWS
from tandem.study.explain import ROWS as IMPORTANCE_ROWS
from tandem.study.explain import Fold, cheap_order, input_columns, permutation_importance
from tandem.study.graph import build_graph, predict_one_row_each, session, single_row_seconds
from tandem.study.result import StudyResult

PARITY_TOLERANCE = 1e-5
INFERENCE_WINDOW = 1000  # one-row predictions metered for the bundle's inference footprint
THREADS = min(os.cpu_count() or 1, 4)
# what is left after permutation importance (leaderboard, manifest, report, writing and hashing the files,
# then loading the bundle: the manifest's schema and preprocessing entries are converted, checked, hashed and
# read back several times): a fixed part, one per input column, the profile's bytes (measured: 300 x 10,000)
FINISH_SECONDS, FINISH_PER_COLUMN, WRITE_BYTES_PER_SECOND = 0.3, 1.5e-4, 50e6
IMPORTANCE_FLOOR = 0.01  # of the time limit: importance may overrun a spent budget by this much, no more


def library_versions(*extra: str) -> dict[str, str]:
    """The versions of Python and of the libraries a bundle was made with (``extra`` distributions too)."""
    out = {"python": platform.python_version()}
    for dist in dict.fromkeys(("tandem", "numpy", "pyarrow", "onnx", "onnxruntime", "lightgbm", "scikit-learn",
                               "torch", *extra)):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


PROXY_VALUES = 5_000_000  # numbers of training rows the cheap importance ordering reads at most


def _profile(result: StudyResult, enc: EncodedInputs) -> dict:
    """The training data as drift checks remember it (tandem.inference.drift)."""
    e = result.encoder
    return training_profile(enc, e.num_feature_names, e.cat_feature_names, e.text_feature_names)


def _importance(result: StudyResult, run, deadline: float, say) -> dict | None:
    """Permutation importance scored out of fold (tandem.study.explain): each fold's ensemble, built from the
    members' models of that fold with the ensemble's weights, on a share of its own validation rows."""
    if len(input_columns(result.encoder)) == 1:
        return None  # the one input column carries all of the model's skill: there is nothing to compare it with
    say("permutation importance")
    rng = np.random.default_rng(result.config.seed)
    enc = result.train_inputs
    # an image network costs milliseconds a row: fewer rows keep the shuffles within the time left
    rows_scored = IMPORTANCE_MIN_ROWS if result.encoder.image_columns else IMPORTANCE_ROWS
    share = -(-rows_scored // len(result.fold_rows))
    refit = any(learner is not cand.fold_models[0] for cand, learner, _ in result.members)
    folds: list[Fold] = []
    started = time.monotonic()
    for f, rows in enumerate(result.fold_rows):
        # the fold graphs may take a quarter of importance's time: the rest is for the shuffles
        if f and time.monotonic() + (time.monotonic() - started) / f > started + 0.25 * (deadline - started):
            break
        rows = rows if len(rows) <= share else np.sort(rng.choice(rows, share, replace=False))
        if f == 0 and not refit and len(result.fold_rows) == 1:
            fold_run = run  # the bundle's own graph is fold 0's ensemble
        else:
            graph = build_graph(result.preprocessor, result.task, result.labels,
                                [(cand.fold_models[f], w) for cand, _, w in result.members], result.threshold)
            sess = session(graph, threads=THREADS)
            fold_run = partial(_run, sess, sess.get_outputs()[0].name)
        folds.append(Fold(fold_run, enc.take(rows), result.y[rows]))
    k = len(result.fold_rows)
    if k == 1:
        scored_on = "out-of-fold: the holdout fold's ensemble on its own validation rows"
    elif len(folds) == k:
        scored_on = f"out-of-fold: each fold's ensemble on its own validation rows, pooled over the {k} folds"
    else:
        scored_on = (f"out-of-fold: each fold's ensemble on its own validation rows, pooled over {len(folds)} of "
                     f"the {k} folds (building the others' graphs would not fit the time limit)")
    sample = np.sort(rng.choice(enc.n_rows, min(enc.n_rows, max(200, PROXY_VALUES // max(_width(enc), 1))),
                                replace=False))
    proxy = enc.take(sample)
    order = cheap_order(input_columns(result.encoder), proxy, run(proxy))
    return permutation_importance(folds, result.encoder, result.metric, result.threshold, scored_on=scored_on,
                                  seed=result.config.seed, order=order, deadline=deadline)


def _run(sess, output: str, enc: EncodedInputs) -> np.ndarray:
    return run_graph(sess.run, [output], enc)[0]


def _width(enc: EncodedInputs) -> int:
    """Numbers (or strings) per row of ``enc``."""
    return sum(int(np.prod(a.shape[1:])) for a in (enc.num, enc.cat, enc.text, enc.image) if a is not None)


def _explain_data(result: StudyResult) -> dict:
    """explain.json: what each member needs for per-prediction contributions (tandem.inference.explain)."""
    binary = result.task == "binary"
    out: dict = {"task": result.task, "output": f"P({result.labels[1]})" if binary else "prediction",
                 "members": []}
    if result.task == "multiclass":
        out["unavailable"] = "per-prediction contributions are for binary and regression models; this one is multiclass"
        return out
    dense_means = None
    if any(learner.view == "dense" for _, learner, _ in result.members):
        enc = result.train_inputs
        sample = enc.take(np.random.default_rng(0).choice(enc.n_rows, min(enc.n_rows, 100_000), replace=False))
        dense_means = result.preprocessor.dense_view(sample).astype(np.float64).mean(axis=0)
    for cand, learner, weight in result.members:
        data = learner.explainer(dense_means if learner.view == "dense" else None)
        if data is None:
            return {**out, "members": [], "unavailable": (
                f"ensemble member '{cand.name}' ({cand.family}) has no exact attribution: per-prediction "
                "contributions need tree (LightGBM) or linear members (train with --families lightgbm,linear)")}
        out["members"].append({**data, "model": cand.name, "weight": weight})
    return out


def export(result: StudyResult, target: Path, *, name: str, version: int | None, say=lambda _m: None) -> dict:
    """Write the bundle directory ``target`` (atomically) and return its manifest."""
    from tandem.bundle.format import write_bundle

    say("exporting to ONNX")
    members = [(learner, w) for _, learner, w in result.members]
    model = build_graph(result.preprocessor, result.task, result.labels, members, result.threshold)
    holdout = result.holdout
    latency, sess = single_row_seconds(model, holdout, threads=THREADS)
    run = partial(_run, sess, sess.get_outputs()[0].name)
    onnx_out = run(holdout)
    native_out = result.native_predict(holdout)
    parity = float(np.max(np.abs(onnx_out.astype(np.float64) - native_out))) if len(native_out) else 0.0

    explain = _explain_data(result)
    inference_marks = None
    if result.meter is not None and holdout.n_rows:
        say(f"metering {INFERENCE_WINDOW} predictions")
        start = result.meter.mark()
        predict_one_row_each(sess, holdout, INFERENCE_WINDOW)
        inference_marks = (start, result.meter.mark())
    say("profiling the training data for drift")
    profile = _profile(result, result.train_inputs)
    profile_json = json.dumps(profile, indent=None if "note" in profile else 1)
    notes = result.notes + ([profile["note"]] if "note" in profile else [])
    # importance comes last but for the files: it takes the time left, less what writing them will cost
    finish = (FINISH_SECONDS + FINISH_PER_COLUMN * len(result.schema.features) +
              len(profile_json) / WRITE_BYTES_PER_SECOND)
    floor = IMPORTANCE_FLOOR * result.config.time_limit
    deadline = max(result.deadline - finish, time.monotonic() + floor)
    importance = _importance(result, run, deadline, say)
    if importance and "note" in importance:
        notes.append(f"permutation importance {importance['note']}")
    preprocessing = result.preprocessor.to_dict()  # once for the manifest and native/: slow for wide tables
    weights = {cand.name: w for cand, _, w in result.members}
    leaderboard = []
    for cand in sorted(result.candidates, key=lambda c: -_sortable(result.metric, c.val_score)):
        row = {
            "model": cand.name, "family": cand.family, f"val_{result.metric}": rounded_score(cand.val_score),
            f"train_{result.metric}": rounded_score(cand.train_score),
            "fit_seconds": round(float(sum(cand.fit_seconds)), 3),
            "folds": len(cand.fold_models), "ensemble_weight": round(weights.get(cand.name, 0.0), 4),
            "overfits": cand.overfit, "stopped_by_time_limit": cand.stopped_by_deadline,
            **cand.fold_models[0].describe(),
        }
        row["predict_1row_us"] = round(cand.latency_us, 1)
        row["onnx_bytes"] = cand.onnx_bytes
        leaderboard.append(row)
    marks = result.phase_marks  # (each marks the end of its phase)
    footprint = study_footprint(result.meter, result.started, [
        ("prepare", None), ("search", marks.get("prepare")), ("ensemble and refit", marks.get("search")),
        ("export", marks.get("refit"))], result.spans, inference_marks, "on the training machine at export")
    manifest = {
        "name": name,
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": result.task,
        "source": result.source,
        "target": result.config.target,
        "labels": result.labels,
        "label_type": result.label_type,
        "metric": result.metric,
        "threshold": result.threshold,
        "schema": result.schema.to_dict(),
        "inputs": {"num": result.encoder.num_feature_names, "cat": result.encoder.cat_feature_names,
                   "text": result.encoder.text_feature_names},
        "outputs": ["prediction"] if result.task == "regression" else ["probabilities", "label"],
        "preprocessing": preprocessing,
        "metrics": {"validation": result.validation_metrics,
                    "validation_scheme": f"{len(result.candidates[0].fold_models)}-fold out-of-fold"
                    if result.bagged else "holdout fold"},
        "ensemble": [{"model": c.name, "family": c.family, "weight": w, "native": f"{NATIVE_DIR}/{c.name}",
                      "refit_on_all_rows": learner is not c.fold_models[0], **learner.describe()}
                     for c, learner, w in result.members],
        "leaderboard": leaderboard,
        "parity": {"max_abs_diff": parity, "rows": int(holdout.n_rows), "tolerance": PARITY_TOLERANCE},
        "latency": {"predict_1row_us_p50": round(latency * 1e6, 1)},
        "quality": result.quality,
        "fairness": result.fairness,
        "importance": importance,
        "explain": {"available": "unavailable" not in explain, "reason": explain.get("unavailable"),
                    "output": explain["output"]},
        "curves": result.curves,
        "warnings": result.warnings,
        "notes": notes,
        "lineage": {"data_fingerprint": result.fingerprint, "rows": result.n_rows, "parent": None,
                    "seed": result.config.seed, "time_limit": result.config.time_limit,
                    "search": result.config.search, "libraries": library_versions()},
        "footprint": footprint,
        "cluster": result.cluster,
    }

    def write_files(tmp: Path) -> None:
        (tmp / MODEL_FILE).write_bytes(model.SerializeToString())
        for cand, learner, _ in result.members:
            folder = tmp / NATIVE_DIR / cand.name
            folder.mkdir(parents=True)
            learner.save(folder)
        (tmp / NATIVE_DIR / PREPROCESSING_FILE).write_text(json.dumps(preprocessing))
        if result.preprocessor.text_encoder:  # the tokenizer serves; the graph is the native side's reference
            from tandem.features import sentence

            shutil.copyfile(sentence.require_weights() / "tokenizer.json", tmp / TOKENIZER_FILE)
            if any(learner.view == "embedding" for _, learner, _ in result.members):
                graph = sentence.encoder_graph(result.preprocessor.text_encoder)
                (tmp / NATIVE_DIR / ENCODER_FILE).write_bytes(graph)
        if result.preprocessor.image_encoder:  # the native side's reference, as the sentence encoder's
            from tandem.features.sentence import encoder_graph

            graph = encoder_graph(result.preprocessor.image_encoder)
            (tmp / NATIVE_DIR / IMAGE_ENCODER_FILE).write_bytes(graph)
        (tmp / EXPLAIN_FILE).write_text(json.dumps(explain))
        (tmp / PROFILE_FILE).write_text(profile_json)
        (tmp / REPORT_FILE).write_text(render_report(manifest), encoding="utf-8")

    write_bundle(target, write_files, manifest)
    return json.loads((target / MANIFEST_FILE).read_text())


def study_footprint(meter: Meter | None, started: float, phases: list[tuple[str, Mark | None]], spans: list[Span],
                    inference_marks: tuple[Mark, Mark] | None, where: str) -> dict:
    """The footprint ledger of a study: this process's wall and CPU time and peak memory, and with a ``meter``
    its metered total (stopped here, before the manifest is written), each phase (``(name, its start)``: a
    phase runs to the next one's start, the first from the meter's start when it has no mark, the last to the
    meter's end; a phase between a missing mark is left out), trial and learner, and the energy of the
    predictions metered between ``inference_marks``."""
    from tandem.errors import FootprintError
    from tandem.footprint.ledger import inference_ledger, training_ledger

    usage = resource.getrusage(resource.RUSAGE_SELF)
    process = {"wall_seconds": round(time.monotonic() - started, 3),
               "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
               "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}
    if meter is None:
        return {"train": process}
    try:
        total = meter.stop()
    except FootprintError as exc:  # the model is worth keeping without its energy figures: say why
        return {"train": {**process, "energy": None, "error": str(exc)}}
    names = [name for name, _ in phases]
    cuts = [phases[0][1] or total.start, *[mark for _, mark in phases[1:]], total.end]
    ledger_phases = [(n, a, b) for n, a, b in zip(names, cuts, cuts[1:], strict=False)
                     if a is not None and b is not None]
    train = {**training_ledger(total, ledger_phases, spans), "wall_seconds": process["wall_seconds"],
             "peak_rss_mb": process["peak_rss_mb"],
             "scope": "this process, from the call to train to the manifest (CodeCarbon process mode)"}
    out = {"train": train}
    if inference_marks is not None:
        out["inference"] = inference_ledger(total, *inference_marks, INFERENCE_WINDOW, where)
    return out


def rounded_score(v: float) -> float | None:
    """A score as the leaderboard shows it: 6 decimals, None for NaN."""
    return None if v != v else round(float(v), 6)


def _sortable(metric: str, v: float) -> float:
    from tandem.study.metrics import LOWER_IS_BETTER
    if v != v:
        return -np.inf
    return -v if metric in LOWER_IS_BETTER else v
