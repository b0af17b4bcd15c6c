"""``tandem optimize``: a registered bundle in, faster or smaller variants out, each guarded by labelled rows.

Each method makes a candidate graph; each candidate is scored on labelled rows the parent never
trained on (the training data itself is refused by its fingerprint) and timed the way the study
times members. Candidates within ``max_loss`` of the parent on the model's metric are registered as
new versions of the same name, their lineage naming the parent and the method; the best for the
goal gets the alias ``optimized``. The others are reported with their loss and never registered.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tandem.bundle.files import MANIFEST_FILE, MODEL_FILE, REPORT_FILE
from tandem.bundle.format import write_bundle
from tandem.data.readers import read_table
from tandem.errors import ConfigError, DataError
from tandem.footprint import MeterSettings
from tandem.inference import Predictor
from tandem.optimize import distill, encoder_layers, fast_trees, measure, members, nbits, prune, quantize, trees
from tandem.optimize.energy import EnergyWindows
from tandem.optimize.variants import OptimizeResult, Parent, Variant
from tandem.registry import Registry
from tandem.registry.names import check_name
from tandem.report import render_report
from tandem.study.prepare import fingerprint

GOALS = ("latency", "throughput", "size", "energy")
# each method: the parent in, its variants out (or one line on why it does not apply to this parent)
_MAKERS: dict[str, Callable[[Parent], list[Variant] | str]] = {
    "int8": quantize.variants, "int8w": nbits.int8w_variants, "int4": nbits.int4_variants,
    "int2": nbits.int2_variants, "prune": prune.variants, "members": members.variants, "trees": trees.variants,
    "distill": distill.variants, "fast_trees": fast_trees.variants, "encoder": encoder_layers.variants}
METHODS = tuple(_MAKERS)
ALIAS = "optimized"
_GOAL_FIGURE = {"latency": "one_row_us", "throughput": "rows_per_s", "size": "bytes", "energy": "energy_j_per_1000"}


def _goal_cost(goal: str, figures: Variant | dict) -> float:
    """What the goal minimises, of a variant or of the parent's figures."""
    value = (figures.get(_GOAL_FIGURE[goal]) if isinstance(figures, dict)
             else getattr(figures, _GOAL_FIGURE[goal]))
    if value is None:  # energy, where the meter gave no figure: nothing wins on it
        return float("inf")
    return -value if goal == "throughput" else value


def optimize(model: str, data: object, *, goal: str = "latency", max_loss: float = 0.002,
             methods: str | list[str] = "auto", train_data: object | None = None, name: str | None = None,
             home: str | Path | None = None, footprint: bool | MeterSettings = True,
             progress: Callable[[str], None] | None = None) -> OptimizeResult:
    """Try ``methods`` on registered ``model`` (``name``, ``name:3``, ``name@alias``), score every variant on
    labelled ``data`` (a file or frame holding the target column), register those within ``max_loss`` of the
    parent on its metric, and point ``name@optimized`` at the best for ``goal`` (latency, throughput, size
    or energy per 1,000 predictions).

    ``train_data`` (labelled rows, typically the parent's training file) is what the methods that learn
    train on: pruning's fine-tune and distillation's student. Without it pruning does not fine-tune and
    distillation says it needs them. It must not be ``data``: variants are scored on rows none of them saw.
    ``name`` registers the variants (and the alias) under another name than the parent's.

    With ``footprint`` (the default; :class:`~tandem.footprint.MeterSettings` or False for no meter) the
    energy of 1,000 one-row predictions of the parent and of every variant is metered, and each kept
    variant's ledger holds its own."""
    say = progress or (lambda _msg: None)
    chosen = _check_options(goal, max_loss, methods, footprint)
    registry = Registry(home)
    record = registry.get(model)
    target = record.name if name is None else check_name(name)
    parent = Predictor(record.path, threads=1)  # every hash verified: a tampered parent is refused here
    if parent.task == "recommend":
        raise ConfigError(f"model '{record.ref}' recommends: optimize's methods (int8, pruning, distillation, "
                          "faster trees) are for classifiers and regressors; a recommender's graph is a lookup and "
                          f"a TopK (one user's top-k: {parent.manifest['latency']['predict_1row_us_p50']} µs)")
    here, y = _labelled(parent, record.path, data, train_data)
    manifest, enc = parent.manifest, here.rows
    metric, threshold = manifest["metric"], float(manifest.get("threshold", 0.5))
    parent_out = measure.outputs(measure.session(here.graph), enc)
    parent_value, parent_loss = measure.metric_loss(metric, y, measure.answer(parent.task, parent_out), threshold)
    say(f"parent {record.name}:{record.version}: {metric} {parent_value:.4f} on {enc.n_rows} labelled rows")
    parent_figures = measure.costs(here.graph, enc)
    energy = None if footprint is False else EnergyWindows(footprint if isinstance(footprint, MeterSettings)
                                                           else None)
    try:
        if energy is not None:
            energy.measure("parent", here.graph, enc)
        variants = []
        for method in chosen:
            for variant in _try(method, here):
                if variant.graph is not None:
                    _judge(variant, parent.task, metric, threshold, y, enc, parent_out, parent_loss, max_loss)
                    if energy is not None:
                        energy.measure(str(len(variants)), variant.graph, enc)
                say(f"{variant.label}: {variant.why or variant.skipped}")
                variants.append(variant)
    except BaseException:
        if energy is not None:
            energy.cancel()
        raise
    ledgers = _energy_figures(energy, parent_figures, variants)
    for variant in (v for v in variants if v.kept):
        variant.version = registry.add(
            target, lambda folder, version, v=variant: _write_variant(
                here, folder, target, version, v, metric, parent_value,
                _candidates(variants, parent_value, parent_figures), ledgers),
            summary={"task": parent.task, "metric": metric, "score": variant.metric_value}).version
    # the alias moves only to a variant that beats its parent on the goal: kept is not the same as better
    better = [v for v in variants if v.kept and _goal_cost(goal, v) < _goal_cost(goal, parent_figures)]
    best = min(better, key=lambda v: _goal_cost(goal, v)) if better else None
    if best is not None:
        registry.set_alias(target, best.version, ALIAS)
        say(f"{target}@{ALIAS} -> version {best.version} ({best.label})")
    elif any(v.kept for v in variants):
        say(f"no kept variant beats the parent on {goal}: {target}@{ALIAS} is left as it was")
    return OptimizeResult(f"{record.name}:{record.version}", metric, parent_value, parent_figures, goal, max_loss,
                          variants, best)


def _labelled(parent: Predictor, folder: Path, data: object, train_data: object | None) -> tuple[Parent, np.ndarray]:
    """The parent as the methods see it, with the labelled rows encoded (and checked), and their targets."""
    manifest, target = parent.manifest, parent.manifest["target"]
    table = read_table(data, what="labelled data")
    if target not in table.column_names:
        raise DataError(f"labelled data has no target column '{target}': optimize scores variants on labelled rows")
    enc = parent.encoder.encode_table(table, what="labelled data")
    y = parent.target_values(table.column(target), "labelled data")
    if fingerprint(enc, y) == manifest.get("lineage", {}).get("data_fingerprint"):
        raise DataError("labelled data is the data this model was trained on: score variants on rows it never saw "
                        "(a held-out file)")
    teach, teach_y, teach_texts = None, None, None
    if train_data is not None:
        taught = read_table(train_data, what="training data")
        if target not in taught.column_names:
            raise DataError(f"training data has no target column '{target}': a student or a fine-tune learns "
                            "from labelled rows")
        teach = parent.encoder.encode_table(taught, what="training data")
        teach_y = parent.target_values(taught.column(target), "training data")
        teach_texts = {name: taught.column(name).to_pylist() for name in manifest.get("inputs", {}).get("text", [])}
        if fingerprint(teach, teach_y) == fingerprint(enc, y):
            raise DataError("training data and labelled data are the same rows: variants must be scored on rows "
                            "none of them trained on")
    return Parent(folder, manifest, (folder / MODEL_FILE).read_bytes(), enc, teach, teach_y, teach_texts), y


def _energy_figures(energy: EnergyWindows | None, parent_figures: dict, variants: list[Variant]) -> dict:
    """Stop the meter; set each graph's joules per 1,000 predictions; the ledger rows by window key."""
    if energy is None:
        return {}
    windows = energy.finish()
    if "parent" in windows:
        parent_figures["energy_j_per_1000"] = windows["parent"]["energy_j_per_1000"]
    for i, variant in enumerate(variants):
        if str(i) in windows:
            variant.energy_j_per_1000 = windows[str(i)]["energy_j_per_1000"]
    optimize_total = energy.total.summary() if energy.total is not None else None
    return {"windows": windows, "run": optimize_total, "index": {id(v): str(i) for i, v in enumerate(variants)}}


def _check_options(goal: str, max_loss: float, methods: str | list[str], footprint: object) -> list[str]:
    if goal not in GOALS:
        raise ConfigError(f"--goal must be one of {', '.join(GOALS)}, got '{goal}'")
    if goal == "energy" and footprint is False:
        raise ConfigError("--goal energy needs the footprint meter, which is off")
    if not isinstance(max_loss, (int, float)) or not np.isfinite(max_loss):
        raise ConfigError(f"--max-loss must be a finite number (how much worse than the parent a variant may "
                          f"score), got {max_loss!r}")
    names = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    if names in ([], ["auto"]):
        return list(METHODS)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ConfigError(f"--methods: unknown method '{unknown[0]}' (this tandem has: auto, {', '.join(METHODS)})")
    return list(dict.fromkeys(names))


#: the methods that rewrite the graph alone; the others rebuild tandem's own members from their native files
GRAPH_METHODS = ("int8", "int8w", "int4", "int2", "fast_trees")


def _try(method: str, parent: Parent) -> list[Variant]:
    """The method's variants of the parent (one, skipped, when the method does not apply)."""
    if parent.manifest.get("imported") and method not in GRAPH_METHODS:
        return [Variant(method, skipped=f"an imported model has no tandem members to rebuild: the graph methods "
                                        f"apply ({', '.join(GRAPH_METHODS)})")]
    made = _MAKERS[method](parent)
    return [Variant(method, skipped=made)] if isinstance(made, str) else made


def _candidates(variants: list[Variant], parent_value: float, parent_figures: dict) -> list[dict]:
    """Every candidate this run scored, the parent first: what a variant's report charts."""
    rows = [{"variant": "parent", "value": parent_value, "one_row_us": parent_figures["one_row_us"],
             "rows_per_s": parent_figures["rows_per_s"], "bytes": parent_figures["bytes"],
             "energy_j_per_1000": parent_figures.get("energy_j_per_1000"), "kept": True}]
    return rows + [{"variant": v.label, "value": v.metric_value, "loss": v.loss, "one_row_us": v.one_row_us,
                    "rows_per_s": v.rows_per_s, "bytes": v.bytes, "energy_j_per_1000": v.energy_j_per_1000,
                    "kept": v.kept}
                   for v in variants if v.skipped is None]


def _judge(variant: Variant, task: str, metric: str, threshold: float, y: np.ndarray, enc: object,
           parent_out: dict, parent_loss: float, max_loss: float) -> None:
    out = measure.outputs(measure.session(variant.graph), enc)
    value, loss = measure.metric_loss(metric, y, measure.answer(task, out), threshold)
    variant.metric_value, variant.loss = round(value, 6), round(loss - parent_loss, 6)
    variant.parity = float(np.max(np.abs(measure.answer(task, out) - measure.answer(task, parent_out))))
    figures = measure.costs(variant.graph, enc)
    variant.one_row_us, variant.rows_per_s, variant.bytes = (figures["one_row_us"], figures["rows_per_s"],
                                                             figures["bytes"])
    variant.kept = variant.loss <= max_loss
    variant.why = (f"{metric} {value:.4f} ({round(-variant.loss, 4) + 0.0:+.4f} against the "
                   f"parent): {'within' if variant.kept else 'beyond'} --max-loss {max_loss:g}"
                   + ("" if variant.kept else ", not registered"))


def _write_variant(parent: Parent, folder: Path, name: str, version: int, variant: Variant, metric: str,
                   parent_value: float, candidates: list[dict], ledgers: dict) -> None:
    """The variant as a bundle: the parent's files with the variant's own over them, and a manifest whose lineage
    names the parent."""
    skip = {MANIFEST_FILE, MODEL_FILE, REPORT_FILE, *variant.files}

    def write_files(tmp: Path) -> None:
        for path in sorted(p for p in parent.folder.rglob("*") if p.is_file()):
            rel = path.relative_to(parent.folder).as_posix()
            if rel in skip or any(rel == d or rel.startswith(f"{d}/") for d in variant.drop):
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp / rel)
        for rel, content in {MODEL_FILE: variant.graph, **variant.files}.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(content)
        (tmp / REPORT_FILE).write_text(render_report(manifest), encoding="utf-8")  # with its Optimization section

    source = parent.manifest
    rows = parent.rows.n_rows
    manifest = {**json.loads(json.dumps(source)), **json.loads(json.dumps(variant.replaces))}
    parent_ref = f"{source['name']}:{source.get('version')}"
    manifest.update(name=name, version=version, lineage={
        **manifest.get("lineage", {}), "parent": parent_ref,
        "parent_model_sha256": source["files"][MODEL_FILE]["sha256"]})
    manifest["optimization"] = {"method": variant.method, "settings": variant.settings, "metric": metric,
                                "value": variant.metric_value, "parent_value": parent_value, "loss": variant.loss,
                                "parity_vs_parent": variant.parity, "rows": rows, "one_row_us": variant.one_row_us,
                                "rows_per_s": variant.rows_per_s, "bytes": variant.bytes,
                                "energy_j_per_1000": variant.energy_j_per_1000, "candidates": candidates}
    if variant.native_parity is not None:  # its native files were rewritten: its own gap, measured
        manifest["parity"] = {**manifest["parity"], "max_abs_diff": variant.native_parity, "rows": rows}
    else:  # what the bundle claims against its native members: the parent's gap plus this graph's from the parent
        manifest["parity"] = {**manifest["parity"],
                              "max_abs_diff": float(manifest["parity"]["max_abs_diff"]) + variant.parity}
    manifest["latency"] = {**manifest.get("latency", {}), "predict_1row_us_p50": variant.one_row_us}
    window = ledgers.get("windows", {}).get(ledgers.get("index", {}).get(id(variant)))
    if ledgers:  # its own energy per 1,000 predictions, and what making it cost (the whole optimisation run)
        ledger = {k: v for k, v in manifest.get("footprint", {}).items() if k != "inference"}
        if window is not None:
            ledger["inference"] = {**window, "scope": f"this variant, metered by tandem optimize on {rows} "
                                   "labelled rows"}
        if ledgers.get("run") is not None:
            ledger["optimize"] = {**ledgers["run"], "scope": f"the whole tandem optimize run that made it "
                                  f"({len(candidates) - 1} candidates)"}
        manifest["footprint"] = ledger
    manifest["notes"] = [*manifest.get("notes", []),
                         f"optimized from {parent_ref} by {variant.label}: {variant.why}"]
    write_bundle(folder, write_files, manifest)
