"""From a study result to a bundle: one ONNX graph (preprocessing + ensemble), native files, manifest."""

from __future__ import annotations

import json
import platform
import resource
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from tandem.bundle.inputs import EncodedInputs
from tandem.features.graph import FLOAT, INT64, STRING, GraphBuilder, tensor_info
from tandem.learners import Learner
from tandem.report.html import render_report
from tandem.study.runner import StudyResult

PARITY_TOLERANCE = 1e-5


def build_graph(result: StudyResult, members: list[tuple[Learner, float]], threshold: float) -> onnx.ModelProto:
    """The whole inference pipeline for ``members`` (learner, weight) as one ONNX model."""
    g = GraphBuilder()
    pre = result.preprocessor
    has_num, has_cat = bool(pre.num_names), bool(pre.cat_names)
    num = "num" if has_num else None
    cat = "cat" if has_cat else None
    view_out: dict[str, str] = {}
    parts = []
    for learner, weight in members:
        if learner.view not in view_out:
            build = pre.onnx_tree_view if learner.view == "tree" else pre.onnx_dense_view
            view_out[learner.view] = build(g, num, cat)
        out = learner.to_onnx(g, view_out[learner.view])
        parts.append(g.op("Mul", [out, g.const(np.array([[weight]], dtype=np.float32), "weight")]))
    total = parts[0] if len(parts) == 1 else g.op("Sum", parts, prefix="ensemble")
    inputs = []
    if has_num:
        inputs.append(tensor_info("num", FLOAT, ["N", len(pre.num_names)]))
    if has_cat:
        inputs.append(tensor_info("cat", STRING, ["N", len(pre.cat_names)]))
    if result.task == "regression":
        g.alias(total, "prediction")
        outputs = [tensor_info("prediction", FLOAT, ["N", 1])]
    else:
        g.alias(total, "probabilities")
        if result.task == "binary":
            positive = g.op("Gather", [total, g.const(np.array(1, dtype=np.int64), "pos")], axis=1)
            hit = g.op("GreaterOrEqual", [positive, g.const(np.array(threshold, dtype=np.float32), "threshold")])
            label = g.op("Cast", [hit], to=INT64)
        else:
            label = g.op("ArgMax", [total], axis=1, keepdims=0)
        g.alias(label, "label")
        outputs = [tensor_info("probabilities", FLOAT, ["N", len(result.labels)]), tensor_info("label", INT64, ["N"])]
    return g.model(inputs, outputs, doc="tandem pipeline: preprocessing and ensemble")


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _single_row_seconds(sess: ort.InferenceSession, enc: EncodedInputs, repeats: int = 50) -> float:
    one = enc.take(np.arange(1)).feeds()
    for _ in range(5):
        sess.run(None, one)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, one)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("tandem", "numpy", "pyarrow", "onnx", "onnxruntime", "lightgbm", "scikit-learn", "torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _profile(result: StudyResult, enc: EncodedInputs) -> dict:
    cols = {}
    if enc.num is not None:
        for j, name in enumerate(result.encoder.num_feature_names):
            col = enc.num[:, j].astype(np.float64)
            ok = col[~np.isnan(col)]
            cols[name] = {
                "kind": "numeric", "missing_fraction": round(1 - len(ok) / max(len(col), 1), 6),
                "mean": float(ok.mean()) if len(ok) else None, "std": float(ok.std()) if len(ok) else None,
                "quantiles": np.quantile(ok, np.linspace(0, 1, 11)).round(6).tolist() if len(ok) else None,
            }
    if enc.cat is not None:
        for j, name in enumerate(result.encoder.cat_feature_names):
            values, counts = np.unique(enc.cat[:, j].astype(str), return_counts=True)
            order = np.argsort(-counts)[:50]
            cols[name] = {"kind": "categorical", "rows": int(len(enc.cat)),
                          "frequencies": {str(values[i]): int(counts[i]) for i in order}}
    return {"rows": int(enc.n_rows), "columns": cols}


def export(result: StudyResult, target: Path, *, name: str, version: int | None, say=lambda _m: None) -> dict:
    """Write the bundle directory ``target`` (atomically) and return its manifest."""
    from tandem.bundle.format import write_bundle

    say("exporting to ONNX")
    members = [(learner, w) for _, learner, w in result.members]
    model = build_graph(result, members, result.threshold)
    sess = _session(model)
    holdout = result.holdout
    onnx_out = sess.run(None, holdout.feeds())[0]
    native_out = result.native_predict(holdout)
    parity = float(np.max(np.abs(onnx_out.astype(np.float64) - native_out))) if len(native_out) else 0.0
    latency = _single_row_seconds(sess, holdout)

    weights = {cand.name: w for cand, _, w in result.members}
    leaderboard = []
    for cand in sorted(result.candidates, key=lambda c: -_sortable(result.metric, c.val_score)):
        row = {
            "model": cand.name, "family": cand.family, f"val_{result.metric}": _r(cand.val_score),
            f"train_{result.metric}": _r(cand.train_score), "fit_seconds": round(float(sum(cand.fit_seconds)), 3),
            "folds": len(cand.fold_models), "ensemble_weight": round(weights.get(cand.name, 0.0), 4),
            "overfits": cand.overfit, "stopped_by_time_limit": cand.stopped_by_deadline,
            **cand.fold_models[0].describe(),
        }
        single = build_graph(result, [(cand.fold_models[0], 1.0)], 0.5)
        row["predict_1row_us"] = round(_single_row_seconds(_session(single), holdout, 20) * 1e6, 1)
        row["onnx_bytes"] = single.ByteSize()
        leaderboard.append(row)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - result.started
    manifest = {
        "name": name,
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": result.task,
        "target": result.config.target,
        "labels": result.labels,
        "label_type": result.label_type,
        "metric": result.metric,
        "threshold": result.threshold,
        "schema": result.schema.to_dict(),
        "inputs": {"num": result.encoder.num_feature_names, "cat": result.encoder.cat_feature_names},
        "outputs": ["prediction"] if result.task == "regression" else ["probabilities", "label"],
        "preprocessing": result.preprocessor.to_dict(),
        "metrics": {"validation": result.validation_metrics,
                    "validation_scheme": f"{len(result.candidates[0].fold_models)}-fold out-of-fold"
                    if result.bagged else "holdout fold"},
        "ensemble": [{"model": c.name, "family": c.family, "weight": w, "native": f"native/{c.name}",
                      "refit_on_all_rows": learner is not c.fold_models[0], **learner.describe()}
                     for c, learner, w in result.members],
        "leaderboard": leaderboard,
        "parity": {"max_abs_diff": parity, "rows": int(holdout.n_rows), "tolerance": PARITY_TOLERANCE},
        "latency": {"predict_1row_us_p50": round(latency * 1e6, 1)},
        "warnings": result.warnings,
        "notes": result.notes,
        "lineage": {"data_fingerprint": result.fingerprint, "rows": result.n_rows, "parent": None,
                    "seed": result.config.seed, "time_limit": result.config.time_limit,
                    "search": result.config.search, "libraries": _library_versions()},
        "footprint": {"train": {"wall_seconds": round(wall, 3),
                                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
                                "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "measured": True}},
    }

    def write_files(tmp: Path) -> None:
        (tmp / "model.onnx").write_bytes(model.SerializeToString())
        for cand, learner, _ in result.members:
            folder = tmp / "native" / cand.name
            folder.mkdir(parents=True)
            learner.save(folder)
        (tmp / "native" / "preprocessing.json").write_text(json.dumps(result.preprocessor.to_dict()))
        (tmp / "profile.json").write_text(json.dumps(_profile(result, result.train_inputs), indent=1))
        (tmp / "report.html").write_text(render_report(manifest), encoding="utf-8")

    write_bundle(target, write_files, manifest)
    return json.loads((target / "manifest.json").read_text())


def _r(v: float) -> float | None:
    return None if v != v else round(float(v), 6)


def _sortable(metric: str, v: float) -> float:
    from tandem.study.metrics import LOWER_IS_BETTER
    if v != v:
        return -np.inf
    return -v if metric in LOWER_IS_BETTER else v
