"""The figures a footprint meter reports: a block's :class:`Footprint`, its :class:`Component` parts, and the
:class:`Mark` readings that cut a block into parts."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tandem.footprint.grid import Grid

__all__ = ["Component", "Footprint", "Mark", "share"]


@dataclass(frozen=True)
class Component:
    """The energy of one part of the machine, and how it was obtained."""

    kwh: float
    low_kwh: float
    high_kwh: float
    method: str  # measured, estimated or given
    how: str

    def scaled(self, factor: float) -> Component:
        """This component's energy (and range) times ``factor``: a part of a block's."""
        return replace(self, kwh=self.kwh * factor, low_kwh=self.low_kwh * factor, high_kwh=self.high_kwh * factor)

    def to_dict(self) -> dict:
        """The energy, its range and how it was obtained, for the manifest."""
        return {"energy_kwh": self.kwh, "energy_kwh_low": self.low_kwh, "energy_kwh_high": self.high_kwh,
                "method": self.method, "how": self.how}


@dataclass(frozen=True)
class Mark:
    """A cheap reading to cut a block into parts: wall clock, process CPU time, GPU energy counters."""

    wall: float
    cpu: float
    gpu_mj: float | None


@dataclass(frozen=True)
class Footprint:
    """Energy and CO2 of a block of work, each figure with how it was obtained."""

    seconds: float
    cpu_seconds: float
    components: dict[str, Component]
    pue: float
    grid: Grid
    library: str
    hardware: dict
    extrapolated_seconds: float = 0.0  # the first seconds, before CodeCarbon was ready, counted at its rate
    library_window: dict | None = None  # CodeCarbon's own figures over its window, for comparison
    start: Mark | None = field(default=None, compare=False)
    end: Mark | None = field(default=None, compare=False)

    @property
    def it_kwh(self) -> float:
        """Energy at the machine (before PUE)."""
        return sum(c.kwh for c in self.components.values())

    @property
    def energy_kwh(self) -> float:
        """Energy at the meter of the building: the machine's times PUE."""
        return self.it_kwh * self.pue

    @property
    def energy_range_kwh(self) -> tuple[float, float]:
        """The low-high range of :attr:`energy_kwh`, from each component's range."""
        return (sum(c.low_kwh for c in self.components.values()) * self.pue,
                sum(c.high_kwh for c in self.components.values()) * self.pue)

    @property
    def co2_kg(self) -> float:
        """CO2 of :attr:`energy_kwh` at the grid's intensity."""
        return self.energy_kwh * self.grid.g_per_kwh / 1000.0

    @property
    def method(self) -> str:
        """How the figure was obtained: measured, partly measured, estimated or given."""
        kinds = {c.method for c in self.components.values() if c.kwh > 0 or c.method == "measured"}
        if "measured" in kinds:
            return "measured" if kinds == {"measured"} else "partly measured"
        return "given" if kinds == {"given"} else "estimated"

    def between(self, start: Mark, end: Mark) -> Footprint:
        """The part of this footprint spent from ``start`` to ``end``: CPU energy by CPU time, RAM (and
        GPU without counters) by wall time, GPU energy from NVML's counter when it has one."""
        assert self.start is not None and self.end is not None
        cpu_share = share(end.cpu - start.cpu, self.end.cpu - self.start.cpu)
        wall_share = share(end.wall - start.wall, self.end.wall - self.start.wall)
        parts = {}
        for name, comp in self.components.items():
            if name == "gpu" and start.gpu_mj is not None and end.gpu_mj is not None:
                total_mj = (self.end.gpu_mj or 0.0) - (self.start.gpu_mj or 0.0)
                parts[name] = comp.scaled(share(end.gpu_mj - start.gpu_mj, total_mj))
            else:
                parts[name] = comp.scaled(cpu_share if name == "cpu" else wall_share)
        return replace(self, seconds=end.wall - start.wall, cpu_seconds=end.cpu - start.cpu, components=parts,
                       extrapolated_seconds=0.0, library_window=None, start=start, end=end)

    def summary(self) -> dict:
        """The headline figures, for a ledger row."""
        low, high = self.energy_range_kwh
        return {"seconds": round(self.seconds, 3), "cpu_seconds": round(self.cpu_seconds, 3),
                "energy_kwh": self.energy_kwh, "energy_kwh_low": low, "energy_kwh_high": high,
                "co2_kg": self.co2_kg, "co2_kg_low": low * self.grid.g_per_kwh / 1000.0,
                "co2_kg_high": high * self.grid.g_per_kwh / 1000.0, "method": self.method}

    def per_1000(self, predictions: int) -> dict:
        """The energy and CO2 figures (with their ranges) per 1,000 of the ``predictions`` this block made."""
        row, scale = self.summary(), 1000 / predictions
        return {f"{k}_per_1000": row[k] * scale for k in ("energy_kwh", "energy_kwh_low", "energy_kwh_high",
                                                          "co2_kg", "co2_kg_low", "co2_kg_high")}

    def to_dict(self) -> dict:
        """Everything, for the manifest: figures, components with their methods, grid, PUE, library."""
        return {**self.summary(), "it_energy_kwh": self.it_kwh,
                "components": {k: c.to_dict() for k, c in self.components.items()},
                "pue": self.pue, "grid": self.grid.to_dict(), "library": self.library, "hardware": self.hardware,
                "extrapolated_seconds": round(self.extrapolated_seconds, 3), "library_window": self.library_window}


def share(part: float, whole: float) -> float:
    """``part / whole``, 0 when ``whole`` is not positive."""
    return part / whole if whole > 0 else 0.0
