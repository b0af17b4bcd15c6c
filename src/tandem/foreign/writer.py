"""An imported model's bundle: its graph, schema, drift profile, model card, parity and footprint."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from tandem.bundle.files import EXPLAIN_FILE, MANIFEST_FILE, MODEL_FILE, PROFILE_FILE, REPORT_FILE
from tandem.bundle.inputs import InputEncoder
from tandem.foreign.importer import Prepared, source_description
from tandem.inference.drift import training_profile
from tandem.study.export import INFERENCE_WINDOW, THREADS, library_versions

_VERSIONS = {"pytorch": "torch", "keras": "keras", "tensorflow": "tensorflow", "sklearn": "scikit-learn",
             "lightgbm": "lightgbm", "xgboost": "xgboost", "onnx": "onnx"}


def write_import(prepared: Prepared, target: Path, *, name: str, version: int | None, meter: object | None,
                 say=lambda _m: None) -> dict:
    """Write the bundle directory ``target`` (atomically) for ``prepared`` and return its manifest."""
    from tandem.bundle.format import write_bundle
    from tandem.report import render_report
    from tandem.study.graph import predict_one_row_each, single_row_seconds
    from tandem.study.metrics import DEFAULT_METRIC, check_metric

    request, converted, bound = prepared.request, prepared.converted, prepared.bound
    encoder = InputEncoder(bound.schema)
    enc = bound.enc
    latency, session = single_row_seconds(prepared.graph, enc, threads=THREADS)
    inference_marks = None
    if meter is not None and enc.n_rows:
        say(f"metering {INFERENCE_WINDOW} predictions")
        start = meter.mark()
        predict_one_row_each(session, enc, INFERENCE_WINDOW)
        inference_marks = (start, meter.mark())
    profile = training_profile(enc, encoder.num_feature_names, encoder.cat_feature_names, encoder.text_feature_names)
    metric = check_metric(request.metric, prepared.task) if request.metric else DEFAULT_METRIC[prepared.task]
    sample_metrics, quality, y_note = {}, None, []
    if bound.table is not None and request.target is not None:
        sample_metrics, quality, y_note = _sample_checks(prepared)
    framework = converted.framework
    source = source_description(request.source)
    notes = prepared.notes + y_note + [
        f"imported from {framework} ({source}); not trained by tandem: the report has no training sections"]
    manifest = {
        "name": name,
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": prepared.task,
        "source": source,
        "target": request.target or "target",
        "labels": prepared.labels,
        "label_type": prepared.label_type,
        "metric": metric,
        "threshold": request.threshold,
        "schema": bound.schema.to_dict(),
        "inputs": {"num": encoder.num_feature_names, "cat": encoder.cat_feature_names, "text": [],
                   "tensors": [c.name for c in encoder.tensor_columns]},
        "outputs": ["prediction"] if prepared.task == "regression" else ["probabilities", "label"],
        "imported": {"framework": framework, "from": source, "library_version": _version(framework),
                     "output": converted.output, "meaning": prepared.meaning,
                     "converted_by": _converter(framework)},
        "metrics": {"validation": sample_metrics,
                    "validation_scheme": f"not trained here: imported from {framework}" + (
                        f"; metrics on the {bound.rows}" if sample_metrics else "")},
        "ensemble": [{"model": f"imported-{framework}", "family": framework, "weight": 1.0}],
        "leaderboard": [],
        "parity": {"max_abs_diff": prepared.parity, "rows": int(enc.n_rows), "tolerance": request.max_diff,
                   "against": f"{framework} {_version(framework) or ''}".strip(), "on": bound.rows},
        "latency": {"predict_1row_us_p50": round(latency * 1e6, 1)},
        "quality": quality,
        "explain": {"available": False, "reason": "an imported model has no per-column attribution in tandem",
                    "output": None},
        "warnings": [],
        "notes": notes,
        "lineage": {"parent": None, "imported_from": source, "framework": framework,
                    "libraries": library_versions(_VERSIONS.get(framework, "onnx"), "tf2onnx", "skl2onnx")},
        "footprint": _footprint(meter, inference_marks, request.train_footprint, framework),
    }

    def write_files(tmp: Path) -> None:
        (tmp / MODEL_FILE).write_bytes(prepared.graph.SerializeToString())
        (tmp / PROFILE_FILE).write_text(json.dumps(profile, indent=1))
        (tmp / EXPLAIN_FILE).write_text(json.dumps({"task": prepared.task, "members": [], "output": "prediction",
                                                    "unavailable": manifest["explain"]["reason"]}))
        (tmp / REPORT_FILE).write_text(render_report(manifest), encoding="utf-8")

    write_bundle(target, write_files, manifest)
    return json.loads((target / MANIFEST_FILE).read_text())


def _sample_checks(prepared: Prepared) -> tuple[dict, dict | None, list[str]]:
    """The quality gate on the sample, and the model's metrics on its rows that carry the target."""
    from tandem.data.quality import check_quality
    from tandem.schema import categorical_strings
    from tandem.study.metrics import all_metrics

    request, table = prepared.request, prepared.bound.table
    try:
        quality = check_quality(table, request.target, task=prepared.task).to_dict()
    except Exception as exc:  # the gate reports on the sample; its failure must not lose the import
        return {}, None, [f"the quality gate could not run on the sample: {exc}"]
    target = table.column(request.target)
    keep = np.asarray(pc.is_valid(target))
    if prepared.task == "regression":
        y = np.asarray(target.to_numpy(zero_copy_only=False), dtype=np.float64)
        pred = prepared.answers["prediction"]
    else:
        index = {label: i for i, label in enumerate(prepared.labels)}
        y = np.array([index.get(s, -1) for s in categorical_strings(target)])
        pred = prepared.answers["probabilities"]
        if (keep & (y < 0)).any():
            return {}, quality, [f"sample target '{request.target}' holds values that are not among the labels "
                                 f"({', '.join(prepared.labels[:10])}): no metrics on the sample"]
    try:
        return ({k: float(v) for k, v in all_metrics(prepared.task, y[keep], pred[keep],
                                                     threshold=request.threshold).items()}, quality, [])
    except ValueError as exc:
        return {}, quality, [f"metrics on the sample could not be computed: {exc}"]


def _footprint(meter: object | None, marks: tuple | None, supplied: dict | None, framework: str) -> dict:
    """Inference per 1,000 one-row predictions (metered here), the import's own cost, and training: the user's
    figures when given, else "not trained here"."""
    train = {**supplied, "supplied_by_user": True} if supplied else {
        "not_trained_here": f"trained with {framework} outside tandem: its cost is unknown to tandem (give "
                            "--train-kwh to record it)"}
    out: dict = {"train": train}
    if meter is None:
        return out
    from tandem.errors import FootprintError
    from tandem.footprint.ledger import inference_ledger

    try:
        total = meter.stop()
    except FootprintError as exc:
        return {**out, "import": {"energy": None, "error": str(exc)}}
    if supplied and "grid" not in train:
        train.update({"grid": total.to_dict()["grid"], "method": "supplied by the user", "seconds": 0.0})
        train.setdefault("energy_kwh_low", train["energy_kwh"])
        train.setdefault("energy_kwh_high", train["energy_kwh"])
    out["import"] = {**total.to_dict(), "scope": "this process, from the call to import to the manifest"}
    if marks is not None:
        out["inference"] = inference_ledger(total, *marks, INFERENCE_WINDOW, "on the importing machine")
    return out


def _version(framework: str) -> str | None:
    try:
        return metadata.version(_VERSIONS[framework])
    except (KeyError, metadata.PackageNotFoundError):
        return None


def _converter(framework: str) -> str:
    return {"pytorch": "torch.onnx", "keras": "tf2onnx", "tensorflow": "tf2onnx", "sklearn": "skl2onnx",
            "lightgbm": "tandem's tree writer", "xgboost": "tandem's tree writer", "onnx": "as it is"}[framework]
