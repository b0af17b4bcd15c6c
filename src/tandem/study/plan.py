"""The study's time plan: the clock (a time limit, brought forward by an energy budget), the reserve kept
for the refit and the export, what the search may still spend, and whether a fit or the sentence encoder
is affordable. With a footprint meter, the Recorder marks each trial, refit and phase for the ledger."""

from __future__ import annotations

import time

import numpy as np

from tandem.bundle.inputs import EncodedInputs, InputEncoder
from tandem.errors import ConfigError
from tandem.footprint.ledger import Span
from tandem.footprint.meter import Mark, Meter
from tandem.study.explain import importance_seconds
from tandem.study.result import Candidate, StudyConfig

LEARNING_FRACTIONS = (0.1, 0.25, 0.5)
# seconds of the export per input column (its drift profile, schema, manifest and report entries) and per
# number in the table (the profile's sorts); measured on 300 x 10,000 and 1M x 10 tables (2-core Xeon)
EXPORT_PER_COLUMN = 3.5e-4
EXPORT_PER_VALUE = 5e-8
EXPORT_ONE_ROW_RUNS = 1200  # tandem.study.export: ~200 to time one-row latency, 1,000 metered predictions
ENCODER_BUDGET_SHARE = 0.25  # "auto" embeds the rows only when that costs at most this share of the budget
# Fit time of a family relative to LightGBM's, before one of its own has been timed.
# No time is kept to refit these on all rows (or for their learning curve): a fine-tuned backbone's refit would
# cost its whole fit again for a quarter more rows, time the next image network turns into an ensemble member.
# They are refit only when time is left over.
# Their fold model goes on CONTINUED_EPOCHS epochs over all rows instead (Learner.continued), and that is reserved.
REFIT_NOT_RESERVED = ("efficientnet_finetune",)
CONTINUED_EPOCHS = 4  # at most (all runs together), for a member whose fold model goes on over all rows
CONTINUED_MARGIN = 1.15  # an epoch over all rows: the fold fit's epoch, scaled by the rows, times this
# The image networks plan their epochs to the time they are given: theirs say only that some time must be left.
RELATIVE_COST = {"lightgbm": 1.0, "linear": 0.1, "mlp": 2.0, "efficientnet_finetune": 20.0, "cnn": 10.0,
                 "efficientnet_linear": 1.0}


class Clock:
    """The study's deadline: the time limit, brought forward when an energy budget runs out sooner."""

    def __init__(self, time_limit: float, started: float, meter: Meter | None = None,
                 max_energy_kwh: float | None = None):
        self.started = started
        self.deadline = started + time_limit
        self.time_limit = time_limit
        self.meter, self.max_energy_kwh = meter, max_energy_kwh
        self.energy_capped = False
        self._checked, self._measured = started, False

    @classmethod
    def start(cls, config: StudyConfig, started: float | None, meter: Meter | None) -> Clock:
        """The clock of a study under ``config``, once its time limit and energy budget are checked."""
        if config.time_limit <= 0:
            raise ConfigError(f"time limit must be positive, got {config.time_limit}")
        if config.max_energy_kwh is not None:
            if not config.max_energy_kwh > 0:
                raise ConfigError(f"energy budget must be a positive number of kWh, got {config.max_energy_kwh}")
            if meter is None:
                raise ConfigError("an energy budget needs the footprint meter, which is off")
        return cls(config.time_limit, started if started is not None else time.monotonic(), meter,
                   config.max_energy_kwh)

    def left(self) -> float:
        """Seconds to the deadline (negative once it has passed)."""
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


class Recorder:
    """The meter marks of a study: a span per trial, refit and learning-curve fit, and where each phase ended.
    Without a meter it records nothing."""

    def __init__(self, meter: Meter | None):
        self.meter = meter
        self.spans: list[Span] = []
        self._phases: dict[str, Mark | None] = {}

    def mark(self) -> Mark | None:
        """The meter's reading now (None without a meter)."""
        return self.meter.mark() if self.meter is not None else None

    def span(self, model: str, family: str, kind: str, start: Mark | None) -> None:
        """Record that ``model`` ran a ``kind`` of fit from ``start`` to now."""
        if self.meter is not None:
            self.spans.append(Span(model, family, kind, start, self.meter.mark()))

    def phase(self, name: str) -> None:
        """Mark the end of the phase ``name``."""
        self._phases[name] = self.mark()

    @property
    def phase_marks(self) -> dict[str, Mark]:
        """The phase marks taken (none without a meter)."""
        return {k: v for k, v in self._phases.items() if v is not None}


class Plan:
    """Search, then refit of the ensemble members, then export (everything after the fits): what each may spend."""

    reserve_fraction = 0.15

    def __init__(self, clock: Clock, export_seconds: float, rows_scale: float = 1.0):
        self.clock = clock
        self.export_seconds = export_seconds
        self.rows_scale = rows_scale  # all rows / a fold's training rows: what a refit costs more than a fold fit

    def continued_seconds(self, fold_model: object, epochs: int = CONTINUED_EPOCHS) -> float | None:
        """What ``epochs`` more epochs of ``fold_model`` over all rows should take (None: it cannot go on)."""
        per_epoch = fold_model.epoch_seconds()
        return epochs * CONTINUED_MARGIN * self.rows_scale * per_epoch if per_epoch else None

    def search_left(self, candidates: list[Candidate], metric: str, n_active_folds: int, *,
                    learning_curve: bool = True) -> float:
        """Seconds the search may still spend: the clock less the reserve for refitting the best three
        candidates (or continuing, for a family in REFIT_NOT_RESERVED), the export and (with ``learning_curve``)
        the report's learning curve."""
        ranked = sorted((c for c in candidates if c.oof is not None), key=lambda c: c.loss(metric, n_active_folds))
        best = ranked[:3]
        refit_est = sum((self.continued_seconds(c.fold_models[0]) or 0.0) if c.family in REFIT_NOT_RESERVED
                        else 1.3 * float(np.mean(c.fit_seconds)) for c in best)
        # the export's one-row runs (its latency check and the metered predictions) at the ensemble's latency
        refit_est += EXPORT_ONE_ROW_RUNS * 1e-6 * sum(c.latency_us for c in best if c.latency_us == c.latency_us)
        refitted = [c for c in ranked if c.family not in REFIT_NOT_RESERVED]
        if refitted and learning_curve:  # the report's learning curve refits the best one on shares of its rows
            refit_est += 1.3 * float(refitted[0].fit_seconds[0]) * sum(LEARNING_FRACTIONS)
        reserve = max(self.reserve_fraction * self.clock.time_limit, refit_est + self.export_seconds)
        return self.clock.left() - reserve

    def first_fit_budget(self, left: float) -> float:
        """The first fit gets a fifth of the limit, but never the export's share of what is left."""
        return max(left, min(0.2 * self.clock.time_limit, self.clock.left() - self.export_seconds), 0.0)


def export_seconds(n: int, encoder: InputEncoder, n_configs: int, time_limit: float) -> float:
    """What the export will cost after the fits (graph, checks, explanation data, the metered predictions,
    drift profile, report, files), growing with the rows and columns, and the share kept for permutation
    importance, which cuts itself down to the time it is left (tandem.study.explain)."""
    columns = (len(encoder.num_columns) + len(encoder.cat_columns) + len(encoder.text_columns) +
               len(encoder.image_columns))
    width = len(encoder.num_feature_names) + len(encoder.cat_feature_names) + 2 * len(encoder.text_feature_names)
    fixed = 0.8 + 2e-6 * n + 0.03 * n_configs + EXPORT_PER_COLUMN * columns + EXPORT_PER_VALUE * n * width
    return fixed + importance_seconds(n, columns, width, time_limit)


def worth_trying(cfg: dict, candidates: list[Candidate], left: float, n_fits: int) -> bool:
    """Whether ``n_fits`` fits of ``cfg`` likely fit in ``left`` seconds, judged by the fits timed so far."""
    same = [c for c in candidates if c.family == cfg["family"]]
    if same:
        per_fit = float(np.mean([np.mean(c.fit_seconds) for c in same]))
    else:
        per_fit = min(float(np.mean(c.fit_seconds)) / RELATIVE_COST.get(c.family, 1.0) for c in candidates)
        per_fit *= RELATIVE_COST.get(cfg["family"], 1.0)
    return per_fit * n_fits <= left


def encoder_affordable(text_encoder: dict, enc: EncodedInputs, clock: Clock, notes: list[str]) -> dict | None:
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
