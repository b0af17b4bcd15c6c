"""The refit phase: the ensemble members refit on all training rows, best-weighted first, while the clock
leaves the export its share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from tandem.learners import TEXT_ENCODER_VIEWS, Learner, learner_class
from tandem.study.plan import CONTINUED_EPOCHS, Plan, Recorder
from tandem.study.prepare import Prepared
from tandem.study.result import Candidate, Progress, StudyConfig


@dataclass
class Refit:
    """The final members and whether each one was refit on all rows."""

    members: list[tuple[Candidate, Learner, float]]  # candidate, final learner, weight
    complete: bool  # False: some keep their first-fold model


def _continued(name: str, cand: Candidate, fitted: Learner, prep: Prepared, plan: Plan, recorder: Recorder,
               say: Progress) -> Learner:
    """When a refit from scratch does not fit the time left: ``fitted`` (the fold model) trained a few more epochs
    over all rows, when its family can and one epoch fits before the export's reserve; else ``fitted``."""
    one_epoch = plan.continued_seconds(fitted, 1)
    if not one_epoch:
        return fitted
    clock, export_seconds = plan.clock, plan.export_seconds
    epochs = min(CONTINUED_EPOCHS, int((clock.left() - export_seconds) / one_epoch))
    if epochs < 1:
        return fitted
    say(f"{name}: {epochs} more epoch(s) over all rows (a refit from scratch does not fit the time left)")
    start = recorder.mark()
    learner = fitted.continued(prep.views[fitted.view], prep.y, epochs=epochs, deadline=clock.deadline - export_seconds)
    recorder.span(name, cand.family, "refit", start)
    if learner is None:
        return fitted
    how = f"{learner.continued_epochs} more epoch(s) over all rows"
    if learner.continued_runs > 1:
        how += f" in each of {learner.continued_runs} runs from it, their weights averaged"
    prep.notes.append(f"{name} was not refit from scratch (the time limit): its fold model went on {how}, the "
                      "validation rows included")
    return learner


def refit_members(prep: Prepared, plan: Plan, config: StudyConfig, usable: list[Candidate],
                  weights: dict[str, float], recorder: Recorder, say: Progress) -> Refit:
    """Refit each weighted member on all rows when its estimated fit time (scaled up from its fold fits) fits
    before the export's reserve; a member that does not fit, or whose refit hits the deadline, keeps its
    first-fold model. Drops the sentence encoder from ``prep`` when no member reads it."""
    by_name = {c.name: c for c in usable}
    members: list[tuple[Candidate, Learner, float]] = []
    refit_all = True
    clock, export_seconds = plan.clock, plan.export_seconds
    scale = plan.rows_scale
    for name, w in sorted(weights.items(), key=lambda kv: -kv[1]):
        cand = by_name[name]
        est = 1.3 * scale * float(np.mean(cand.fit_seconds))
        fitted = cand.fold_models[0]
        if clock.left() - export_seconds > est:
            say(f"refitting {name} on all rows")
            start = recorder.mark()
            cls = learner_class(cand.family)
            learner = cls(fitted.refit_params(scale), task=prep.task, n_classes=prep.n_classes, seed=config.seed,
                          categorical=prep.cat_idx if cls.view == "tree" else None)
            learner.fit(prep.views[cls.view], prep.y, deadline=clock.deadline - export_seconds)
            recorder.span(name, cand.family, "refit", start)
            if learner.stopped_by_deadline:
                learner, refit_all = fitted, False
        else:
            learner = _continued(name, cand, fitted, prep, plan, recorder, say)
            refit_all = refit_all and learner is not fitted
        members.append((cand, learner, w))
    if not refit_all:
        prep.notes.append("not every ensemble member could be refit on all rows in the time limit; "
                          "those keep their first-fold model")
    if prep.pre.text_encoder and not any(learner.view in TEXT_ENCODER_VIEWS for _, learner, _ in members):
        # no member reads the sentence encoder: the bundle neither carries it nor tokenizes
        prep.pre = dataclasses.replace(prep.pre, text_encoder=None)
        prep.encoder.tokenizer, prep.enc.tokens = None, None
    if prep.pre.image_encoder and not any(learner.view == "embedding" for _, learner, _ in members):
        prep.pre = dataclasses.replace(prep.pre, image_encoder=None)  # no member reads the backbone's features
    return Refit(members, refit_all)
