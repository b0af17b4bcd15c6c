"""The time-budgeted training loop, as its phases.

Portfolio configurations are tried best-first on a seeded split (a holdout fold, or every fold
of a k-fold split when the budget allows it: bagging), the best members are blended by greedy
ensemble selection on their out-of-fold predictions, and the chosen members are refit on all
training rows. The deadline is checked throughout and a time reserve is kept for the refit and
the export, so the whole call ends within a few percent of ``time_limit``.

The phases: prepare (tandem.study.prepare), plan (tandem.study.plan), search (tandem.study.trials,
tandem.study.search), ensemble (tandem.study.ensemble), refit (tandem.study.refit); the export
(tandem.study.export) follows, given the StudyResult.
"""

from __future__ import annotations

import pyarrow as pa

from tandem.footprint.meter import Meter
from tandem.study.curves import evaluation_curves
from tandem.study.ensemble import choose_ensemble
from tandem.study.plan import Clock, Plan, Recorder, export_seconds
from tandem.study.prepare import fingerprint, prepare
from tandem.study.refit import refit_members
from tandem.study.result import Candidate, Progress, StudyConfig, StudyResult
from tandem.study.trials import Search

__all__ = ["Candidate", "Progress", "StudyConfig", "StudyResult", "run_study"]


def run_study(table: pa.Table, config: StudyConfig, *, progress: Progress | None = None,
              started: float | None = None, meter: Meter | None = None) -> StudyResult:
    """Train within ``config.time_limit`` seconds (and ``config.max_energy_kwh``, read off ``meter``)
    and return the fitted ensemble; with a ``meter``, each trial and refit is marked for the ledger."""
    say = progress or (lambda _msg: None)
    clock = Clock.start(config, started, meter)
    recorder = Recorder(meter)
    prep = prepare(table, config, clock, say)
    plan = Plan(clock, export_seconds(prep.n, prep.encoder, len(prep.portfolio), clock.time_limit),
                rows_scale=prep.n / len(prep.folds[0][0]))

    search = Search(prep, plan, config, recorder, say)
    recorder.phase("prepare")
    search.run_portfolio()
    search.run_optuna()
    usable = search.usable()
    learning = search.learning_curve(usable)
    recorder.phase("search")
    if clock.energy_capped:
        prep.notes.append(f"the energy budget of {config.max_energy_kwh:g} kWh brought the deadline forward to "
                          f"{clock.time_limit:.0f} s, from the {config.time_limit:g} s time limit")

    ens = choose_ensemble(prep, config, usable, search.rows(), say, meter)
    refit = refit_members(prep, plan, config, usable, ens.weights, recorder, say)
    holdout_rows = prep.folds[0][1][:2000]
    recorder.phase("refit")

    y = prep.y
    curves = {"evaluation": evaluation_curves(prep.task, y[ens.rows], ens.blended, prep.labels, ens.threshold),
              "training": {c.name: c.fold_models[0].curve for c in search.candidates if c.fold_models[0].curve},
              "learning": learning}
    return StudyResult(
        config=config, schema=prep.schema, encoder=prep.encoder, preprocessor=prep.pre, task=prep.task,
        labels=prep.labels, label_type=prep.label_type, metric=prep.metric, members=refit.members,
        candidates=search.candidates, refit=refit.complete, bagged=search.bagged and len(prep.folds) > 1,
        threshold=ens.threshold, validation_metrics=ens.validation_metrics, warnings=prep.warnings,
        notes=prep.notes, holdout=prep.enc.take(holdout_rows), started=clock.started, deadline=clock.deadline,
        n_rows=prep.n, fingerprint=fingerprint(prep.enc, y), train_inputs=prep.enc, quality=prep.quality.to_dict(),
        fairness=ens.fairness, y=y, fold_rows=[prep.folds[f][1] for f in search.active_folds], curves=curves,
        source=prep.source, meter=meter, spans=recorder.spans, phase_marks=recorder.phase_marks,
        cluster=search.cluster.describe() if search.cluster is not None else None)
