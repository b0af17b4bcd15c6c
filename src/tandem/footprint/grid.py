"""Where the electricity comes from: the country's carbon intensity, validated, with its source.

Intensities are CodeCarbon's own offline data (``global_energy_mix.json``: Our World in Data's
energy mix per country, with its year), read as a file so that checking a country code costs
no import of CodeCarbon. A code CodeCarbon does not know is an error: its offline tracker would
quietly fall back on the world average.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from tandem.errors import ConfigError, DataError

COUNTRY_ENV = "TANDEM_COUNTRY"
WORLD = "WORLD"
HOUR = timedelta(hours=1)
_MIX = ("data", "private_infra", "global_energy_mix.json")
_PER_SOURCE = ("data", "private_infra", "carbon_intensity_per_source.json")


@dataclass(frozen=True)
class Grid:
    """A carbon intensity and where it comes from."""

    country: str  # ISO 3166-1 alpha-3, or WORLD
    country_name: str
    g_per_kwh: float
    source: str

    def to_dict(self) -> dict:
        return {"country": self.country, "country_name": self.country_name,
                "intensity_g_per_kwh": self.g_per_kwh, "source": self.source}


def _codecarbon_file(*parts: str) -> dict:
    # found without importing codecarbon (which loads pandas): checking a country stays instant
    spec = importlib.util.find_spec("codecarbon")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("footprint figures need CodeCarbon: pip install 'tandem[footprint]' (or codecarbon)")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    return json.loads(path.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _energy_mix() -> dict:
    return _codecarbon_file(*_MIX)


def codecarbon_version() -> str:
    return metadata.version("codecarbon")


def check_country(code: str) -> str:
    """``code`` as the upper-case ISO 3166-1 alpha-3 code CodeCarbon has data for; else a ConfigError
    that says what was expected (and, for a two-letter code, which three-letter one it likely means)."""
    given = code.strip().upper()
    mix = _energy_mix()
    if given in mix or given == WORLD:
        return given
    hint = ""
    if len(given) == 2:
        try:
            import pycountry

            found = pycountry.countries.get(alpha_2=given)
        except ImportError:
            found = None
        if found is not None and found.alpha_3 in mix:
            hint = f": did you mean {found.alpha_3} ({found.name})?"
    if not hint:
        hint = f" (known codes include FRA, DEU, USA, GBR, IND, CHN; {WORLD} for the world average)"
    raise ConfigError(f"country '{code}' is not an ISO 3166-1 alpha-3 code with grid data{hint}")


def resolve_grid(country: str | None = None, intensity_g_per_kwh: float | None = None) -> Grid:
    """The grid of ``country`` (or $TANDEM_COUNTRY, or the world average when neither is set);
    ``intensity_g_per_kwh`` replaces the country's figure by the user's own."""
    code = country if country is not None else (os.environ.get(COUNTRY_ENV) or None)
    if intensity_g_per_kwh is not None:
        if not (math.isfinite(intensity_g_per_kwh) and intensity_g_per_kwh >= 0):
            raise ConfigError(f"grid intensity must be a number of g CO2e per kWh >= 0, got {intensity_g_per_kwh}")
        name = check_country(code) if code else WORLD
        return Grid(name, _name(name), float(intensity_g_per_kwh), "given by the user")
    if code is None:
        return _world("no --country or $TANDEM_COUNTRY given")
    code = check_country(code)
    if code == WORLD:
        return _world("asked for")
    row = _energy_mix()[code]
    return Grid(code, row["country_name"], float(row["carbon_intensity"]),
                f"Our World in Data energy mix {row.get('year', '?')} (CodeCarbon {codecarbon_version()} data)")


def _name(code: str) -> str:
    return "World" if code == WORLD else _energy_mix()[code]["country_name"]


@lru_cache(maxsize=1)
def _per_source() -> dict:
    return _codecarbon_file(*_PER_SOURCE)


def _world(why: str) -> Grid:
    per_source = _per_source()
    return Grid(WORLD, "World", float(per_source["world_average"]),
                f"world average ({why}): IEA Global Energy & CO2 Status Report 2019 (CodeCarbon "
                f"{codecarbon_version()} data)")


# -- carbon-aware timing ---------------------------------------------------------------------------
def read_hourly_intensity(path: str | Path) -> list[tuple[datetime, float]]:
    """An hourly carbon-intensity CSV: a ``timestamp`` column (ISO 8601) and a ``carbon_intensity``
    column (g CO2e/kWh), one row an hour, in time order."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # (a spreadsheet's byte-order mark)
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            for wanted in ("timestamp", "carbon_intensity"):
                if wanted not in columns:
                    raise DataError(f"{path}: no '{wanted}' column (expected columns timestamp, carbon_intensity; "
                                    f"found {', '.join(columns) or 'none'})")
            rows = []
            for i, row in enumerate(reader, start=2):
                try:
                    when = datetime.fromisoformat(row["timestamp"].strip())
                except (ValueError, AttributeError):
                    raise DataError(f"{path} row {i}, column 'timestamp': expected an ISO 8601 time like "
                                    f"2026-05-31T14:00, got {row['timestamp']!r}") from None
                try:
                    value = float(row["carbon_intensity"])
                except (TypeError, ValueError):
                    value = float("nan")
                if not (math.isfinite(value) and value >= 0):
                    raise DataError(f"{path} row {i}, column 'carbon_intensity': expected g CO2e per kWh >= 0, "
                                    f"got {row['carbon_intensity']!r}")
                if rows:
                    if (when.tzinfo is None) != (rows[-1][0].tzinfo is None):
                        raise DataError(f"{path} row {i}, column 'timestamp': {row['timestamp']} mixes times with "
                                        "and without a time zone")
                    if when - rows[-1][0] != HOUR:
                        raise DataError(f"{path} row {i}, column 'timestamp': {row['timestamp']} is not one hour "
                                        "after the row before: expected one row an hour, in time order")
                rows.append((when, value))
    except OSError as e:
        raise DataError(f"{path}: cannot read the carbon-intensity file ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text CSV file") from None
    if not rows:
        raise DataError(f"{path}: no rows of carbon intensity")
    return rows


def best_start(hours: list[tuple[datetime, float]], seconds: float, energy_kwh: float) -> dict:
    """When a run of ``seconds`` using ``energy_kwh`` (spread evenly) would have emitted least.

    Every whole hour of the file is tried as a start; a run's CO2 is its energy times the hourly
    intensities it spans, weighted by the share of the run in each hour.
    """
    span = max(1, math.ceil(seconds / 3600))
    if span > len(hours):
        raise DataError(f"the carbon-intensity file covers {len(hours)} hours; a run of {seconds / 3600:.1f} h "
                        f"needs at least {span}")
    run_hours = seconds / 3600
    weights = [min(1.0, run_hours - k) / run_hours if run_hours > 0 else 1.0 for k in range(span)]
    starts = []
    for s in range(len(hours) - span + 1):
        g = sum(w * hours[s + k][1] for k, w in enumerate(weights))
        starts.append((g, hours[s][0]))
    best_g, best_at = min(starts, key=lambda t: t[0])
    worst_g, worst_at = max(starts, key=lambda t: t[0])
    mean_g = sum(g for g, _ in starts) / len(starts)
    kg = energy_kwh / 1000.0
    return {"run_hours": round(run_hours, 4), "starts_tried": len(starts),
            "best": {"start": best_at.isoformat(), "intensity_g_per_kwh": round(best_g, 3), "co2_kg": best_g * kg},
            "worst": {"start": worst_at.isoformat(), "intensity_g_per_kwh": round(worst_g, 3), "co2_kg": worst_g * kg},
            "mean_co2_kg": mean_g * kg,
            "saving_vs_worst": (1 - best_g / worst_g) if worst_g > 0 else 0.0,
            "saving_vs_mean": (1 - best_g / mean_g) if mean_g > 0 else 0.0}
