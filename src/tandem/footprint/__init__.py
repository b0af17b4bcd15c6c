"""Energy and CO2 of any block of work: a training study, one trial, N predictions.

Measured where the machine has energy counters (RAPL, NVML), estimated where it has not, and
every figure says which, with the power model, the grid's carbon intensity and its source.
"""

from tandem.footprint.grid import Grid, best_start, check_country, read_hourly_intensity, resolve_grid
from tandem.footprint.meter import Component, Footprint, Mark, Meter, MeterSettings

__all__ = ["Component", "Footprint", "Grid", "Mark", "Meter", "MeterSettings", "best_start", "check_country",
           "read_hourly_intensity", "resolve_grid"]
