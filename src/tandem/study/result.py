"""What a study is asked (StudyConfig), what it evaluates (Candidate) and what it hands the export (StudyResult)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tandem.bundle.inputs import EncodedInputs, InputEncoder
from tandem.features.preprocess import Preprocessor
from tandem.footprint.ledger import Span
from tandem.footprint.meter import Mark, Meter
from tandem.learners import Learner
from tandem.schema import Schema
from tandem.study import metrics as M

Progress = Callable[[str], None]


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
    # an Optuna RDB storage URL (PostgreSQL, say) and a study name: several machines then share one study
    optuna_storage: str | None = None
    optuna_study: str | None = None
    families: list[str] | None = None
    ignore: list[str] | None = None
    latency_budget_us: float = 100.0  # one-row latency (p50, one thread) the ensemble's graph may cost
    max_bytes: int | None = None  # graph bytes the ensemble's members may take together (preprocessing apart)
    # joules per 1,000 one-row predictions the ensemble may cost, at the study's own measured rate (needs a meter)
    energy_per_1k_budget_j: float | None = None
    configs: list[dict] | None = None  # configurations to try instead of the portfolio (same shape)
    strict: bool = False  # stop before fitting when the quality gate finds an error
    sensitive: str | None = None  # a column whose groups get fairness figures (on the validation rows)
    # the all-MiniLM-L6-v2 sentence encoder for text columns: "auto" (when its weights are installed and
    # embedding the rows fits the budget), "minilm" (always; an error without the weights) or "none"
    text_encoder: str = "auto"
    encoder_layers: int = 4  # of its 6 layers (tandem.features.sentence.DEFAULT_LAYERS)
    max_energy_kwh: float | None = None  # an energy budget (needs a meter): the study stops as at a time limit
    devices: int = 1  # > 1: the neural learners train under torchrun DDP, one process per device (GPU or CPU)
    cluster: str | None = None  # a Ray cluster for the folds' fits: "local", "auto", "HOST:PORT", "ray://HOST:PORT"


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

    def loss(self, metric: str, n_active_folds: int) -> float:
        """The validation score as a loss (already computed: this runs before every fit); inf when the
        candidate was not evaluated on all ``n_active_folds`` folds."""
        if len(self.fold_models) != n_active_folds or self.val_score != self.val_score:
            return float("inf")
        return self.val_score if metric in M.LOWER_IS_BETTER else -self.val_score


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
    cluster: dict | None = None  # where the folds' fits ran (tandem.study.cluster.RayCluster.describe)

    def native_predict(self, enc: EncodedInputs) -> np.ndarray:
        """The ensemble's prediction in the learners' own runtimes (the parity reference)."""
        views = Views(self.preprocessor, enc)
        out = 0.0
        for _, learner, weight in self.members:
            out = out + weight * learner.predict(views[learner.view])
        return np.asarray(out)


class Views:
    """The inputs each learner family reads, computed on first use (see Preprocessor.view)."""

    def __init__(self, pre: Preprocessor, enc: EncodedInputs):
        self.pre, self.enc, self.cache = pre, enc, {}

    def __getitem__(self, view: str) -> np.ndarray:
        if view not in self.cache:
            self.cache[view] = self.pre.view(view, self.enc)
        return self.cache[view]
