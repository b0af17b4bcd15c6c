"""Energy and CO2 of any block of work: a training study, one trial, N predictions.

Measured where the machine has energy counters (RAPL, NVML), estimated where it has not, and
every figure says which, with the power model, the grid's carbon intensity and its source.

The public interface is what this package exports:

- :class:`Meter` (:mod:`~tandem.footprint.meter`) around a block, with its :class:`MeterSettings`
  (:mod:`~tandem.footprint.settings`); it reports a :class:`Footprint` made of :class:`Component` parts, and
  :class:`Mark` readings cut it into parts (:mod:`~tandem.footprint.figures`);
- :class:`Grid` and the grid's functions: :func:`resolve_grid`, :func:`check_country`,
  :func:`read_hourly_intensity`, :func:`best_start` (:mod:`~tandem.footprint.grid`);
- a study's :func:`training_ledger` of :class:`Span` parts (:mod:`~tandem.footprint.ledger`), a model's
  :func:`life_report` and its :func:`life_lines` (:mod:`~tandem.footprint.life`), and a server's
  :class:`PredictionMeter` (:mod:`~tandem.footprint.serving`).

How CodeCarbon's tracker is started and this machine's power read or modelled
(:mod:`~tandem.footprint.tracker`) is internal.
"""

from tandem.footprint.figures import Component, Footprint, Mark
from tandem.footprint.grid import Grid, best_start, check_country, read_hourly_intensity, resolve_grid
from tandem.footprint.ledger import Span, training_ledger
from tandem.footprint.life import life_lines, life_report
from tandem.footprint.meter import Meter
from tandem.footprint.serving import PredictionMeter
from tandem.footprint.settings import MeterSettings

__all__ = ["Component", "Footprint", "Grid", "Mark", "Meter", "MeterSettings", "PredictionMeter", "Span",
           "best_start", "check_country", "life_lines", "life_report", "read_hourly_intensity", "resolve_grid",
           "training_ledger"]
