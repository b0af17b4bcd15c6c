"""Exam-day optimisation: a bundle in, faster or smaller variants out, each guarded by labelled rows.

The public interface:

- :func:`optimize` (:mod:`~tandem.optimize.run`): try methods on a registered model, score every variant on
  labelled rows the model never trained on, register those within ``max_loss`` and point ``@optimized`` at
  the best for the goal; it returns an :class:`OptimizeResult` of :class:`Variant` records
  (:mod:`~tandem.optimize.variants`);
- :data:`METHODS` and :data:`GOALS`: what this tandem can try, and for what.

How variants are scored and timed (:mod:`~tandem.optimize.measure`) and made
(:mod:`~tandem.optimize.quantize`: int8; :mod:`~tandem.optimize.trees`: fewer trees) is internal.

The package is callable, so ``tandem.optimize(...)`` is :func:`optimize` whether Python finds the function
or, once imported, this package under that name.
"""

from __future__ import annotations

import sys
import types

from tandem.optimize.run import GOALS, METHODS, optimize
from tandem.optimize.variants import OptimizeResult, Variant

__all__ = ["GOALS", "METHODS", "OptimizeResult", "Variant", "optimize"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: object, **kwargs: object) -> OptimizeResult:
        return optimize(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
