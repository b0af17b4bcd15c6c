"""The time-budgeted search, in phases, and the export of its result to a bundle.

The public interface is what this package exports:

- :func:`run_study` (:mod:`~tandem.study.runner`) trains under a :class:`StudyConfig` and returns a
  :class:`StudyResult` of evaluated :class:`Candidate` configurations (:mod:`~tandem.study.result`);
- :func:`tandem.study.export.export` writes a StudyResult as a bundle (not re-exported here: the name
  is its module's too);
- :func:`native_predict` (:mod:`~tandem.study.native`) predicts with a bundle's native learners, the
  reference of the parity checks.

The phases run_study calls in turn are internal: prepare (:mod:`~tandem.study.prepare`), plan
(:mod:`~tandem.study.plan`), search (:mod:`~tandem.study.trials`, :mod:`~tandem.study.search`), ensemble
(:mod:`~tandem.study.ensemble`), refit (:mod:`~tandem.study.refit`).

The names load on first use: ``tandem.study.metrics`` alone (which evaluating a model needs) must not
pull in the training stack.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tandem.study.native import native_predict
    from tandem.study.result import Candidate, StudyConfig, StudyResult
    from tandem.study.runner import run_study

_WHERE = {"run_study": "runner", "StudyConfig": "result", "StudyResult": "result", "Candidate": "result",
          "native_predict": "native"}


def __getattr__(name: str) -> object:
    if name in _WHERE:
        return getattr(import_module(f"tandem.study.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'tandem.study' has no attribute {name!r}")


__all__ = ["Candidate", "StudyConfig", "StudyResult", "native_predict", "run_study"]
