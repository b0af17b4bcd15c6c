"""What the footprint meter cannot find out by itself: the country, the PUE, forced powers, a forced intensity."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from tandem.errors import ConfigError
from tandem.footprint.grid import Grid, resolve_grid

__all__ = ["MeterSettings"]


@dataclass(frozen=True)
class MeterSettings:
    """What the meter cannot find out by itself. Every field falls back on an environment variable:
    TANDEM_COUNTRY, TANDEM_PUE, TANDEM_CPU_POWER_W, TANDEM_RAM_POWER_W, TANDEM_GRID_INTENSITY."""

    country: str | None = None  # ISO 3166-1 alpha-3; the world average when neither it nor the variable is set
    pue: float | None = None  # the data centre's power usage effectiveness (1.0: none counted)
    cpu_power_w: float | None = None  # force CodeCarbon's CPU power (the TDP of every thread together)
    ram_power_w: float | None = None
    intensity_g_per_kwh: float | None = None  # replace the country's carbon intensity

    @classmethod
    def from_env(cls, **given: object) -> MeterSettings:
        """Settings from keyword arguments, with the environment filling whatever is None."""
        env = {"country": "TANDEM_COUNTRY", "pue": "TANDEM_PUE", "cpu_power_w": "TANDEM_CPU_POWER_W",
               "ram_power_w": "TANDEM_RAM_POWER_W", "intensity_g_per_kwh": "TANDEM_GRID_INTENSITY"}
        values: dict[str, object] = {}
        for name, var in env.items():
            value = given.get(name)
            if value is None and os.environ.get(var):
                raw = os.environ[var]
                if name == "country":
                    value = raw
                else:
                    try:
                        value = float(raw)
                    except ValueError:
                        raise ConfigError(f"${var} must be a number, got {raw!r}") from None
            values[name] = value
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """A ConfigError for a value the meter cannot use (the country is checked by :meth:`grid`)."""
        if self.pue is not None and not (math.isfinite(self.pue) and self.pue >= 1.0):
            raise ConfigError(f"PUE must be a number >= 1.0 (1.0: no data-centre overhead), got {self.pue}")
        for what, watts in (("CPU power", self.cpu_power_w), ("RAM power", self.ram_power_w)):
            if watts is not None and not (math.isfinite(watts) and watts > 0):
                raise ConfigError(f"{what} must be a number of watts > 0, got {watts}")
        self.grid()

    def grid(self) -> Grid:
        """The grid these settings name: the country's (or the world's) intensity, or the forced one."""
        return resolve_grid(self.country, self.intensity_g_per_kwh)
