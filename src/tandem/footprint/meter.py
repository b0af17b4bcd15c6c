"""The meter: energy and CO2 of a block of work, on CodeCarbon's offline tracker in process mode.

CodeCarbon finds how this machine can be measured (RAPL counters, NVML for GPUs) or, failing
that, which power model applies (the CPU's TDP from its table, or a default per thread; RAM from
the DIMM count), and integrates it over the block. tandem adds what a figure needs to be honest:

- **how it was obtained**, per component: ``measured`` (a hardware energy counter), ``estimated``
  (a power model, named) or ``given`` (a power the user forced), and for estimates a low-high range;
- **the grid**: a validated country, its intensity and the intensity's source, and the PUE;
- **no gap**: CodeCarbon's first hardware detection in a process takes a few tenths of a second.
  The tracker starts in a background thread, so the work is not held up; the seconds before it
  measures are counted at its own model (an estimated CPU: TDP / threads per CPU second, over the
  whole block; counters: the rate they measured per CPU second; RAM and GPU: their power per
  second of wall time), and the footprint says how many seconds that was.

A block's parts (one trial of a study, one window of predictions) are attributed from the block's
total the same way, by :meth:`Footprint.between` two :meth:`Meter.mark` readings, which cost
microseconds; GPU parts come from NVML's energy counter directly.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache

from tandem.errors import ConfigError, FootprintError
from tandem.footprint.grid import WORLD, Grid, codecarbon_version, resolve_grid

# A low-high range per power model, as factors of the central estimate (the README says why).
CPU_RANGE_TDP_TABLE = (0.5, 1.2)  # package power at full load lies between about half TDP and turbo (~1.2x)
CPU_RANGE_TDP_DEFAULT = (0.5, 3.0)  # CPU not in CodeCarbon's table: its 4 W a thread is 2-12 W on real parts
RAM_RANGE = (0.5, 1.5)  # CodeCarbon's watts a DIMM (5 on x86, 1.5 on ARM) over a guessed DIMM count
KWH_PER_JOULE = 1 / 3.6e6
MIN_WINDOW_S = 0.06


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
        return resolve_grid(self.country, self.intensity_g_per_kwh)


@dataclass(frozen=True)
class Component:
    """The energy of one part of the machine, and how it was obtained."""

    kwh: float
    low_kwh: float
    high_kwh: float
    method: str  # measured, estimated or given
    how: str

    def scaled(self, factor: float) -> Component:
        return replace(self, kwh=self.kwh * factor, low_kwh=self.low_kwh * factor, high_kwh=self.high_kwh * factor)

    def to_dict(self) -> dict:
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
        return (sum(c.low_kwh for c in self.components.values()) * self.pue,
                sum(c.high_kwh for c in self.components.values()) * self.pue)

    @property
    def co2_kg(self) -> float:
        return self.energy_kwh * self.grid.g_per_kwh / 1000.0

    @property
    def method(self) -> str:
        kinds = {c.method for c in self.components.values() if c.kwh > 0 or c.method == "measured"}
        if "measured" in kinds:
            return "measured" if kinds == {"measured"} else "partly measured"
        return "given" if kinds == {"given"} else "estimated"

    def between(self, start: Mark, end: Mark) -> Footprint:
        """The part of this footprint spent from ``start`` to ``end``: CPU energy by CPU time, RAM (and
        GPU without counters) by wall time, GPU energy from NVML's counter when it has one."""
        assert self.start is not None and self.end is not None
        cpu_share = _share(end.cpu - start.cpu, self.end.cpu - self.start.cpu)
        wall_share = _share(end.wall - start.wall, self.end.wall - self.start.wall)
        parts = {}
        for name, comp in self.components.items():
            if name == "gpu" and start.gpu_mj is not None and end.gpu_mj is not None:
                total_mj = (self.end.gpu_mj or 0.0) - (self.start.gpu_mj or 0.0)
                parts[name] = comp.scaled(_share(end.gpu_mj - start.gpu_mj, total_mj))
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


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0


class Meter:
    """Energy and CO2 of the work done between :meth:`start` and :meth:`stop` (or a ``with`` block),
    by this process (CodeCarbon's process mode: other processes on the machine are not counted).

    The meter's own work (CodeCarbon's start, a few tenths of a second of CPU once a process) is
    inside the block and counted with it.

    >>> with Meter(MeterSettings(country="FRA")) as meter:
    ...     work()
    >>> meter.result.energy_kwh, meter.result.co2_kg, meter.result.method
    """

    def __init__(self, settings: MeterSettings | None = None):
        self.settings = settings if settings is not None else MeterSettings.from_env()
        self.settings.check()
        self.grid = self.settings.grid()
        self.result: Footprint | None = None
        self._tracker = None
        self._ready = threading.Event()
        self._lock = threading.Lock()  # the tracker's hand-over between the start-up thread and cancel()
        self._error: BaseException | None = None
        self._begin: Mark | None = None
        self._tracked_from: Mark | None = None
        self._cancelled = False
        self._gpu = _Nvml()

    # -- readings --------------------------------------------------------------------------------
    def mark(self) -> Mark:
        """A reading to cut the block into parts later (:meth:`Footprint.between`); microseconds.

        CPU time is ``time.process_time()`` (nanoseconds, every thread of this process) plus the
        reaped children's: /proc's per-process figures tick at 10 ms, too coarse for 1,000 predictions.
        """
        t = os.times()
        return Mark(time.perf_counter(), time.process_time() + t.children_user + t.children_system,
                    self._gpu.millijoules())

    def wait_ready(self) -> None:
        """Block until CodeCarbon measures (at most its hardware detection, once a process)."""
        self._require_started()
        self._ready.wait()

    def kwh_so_far(self) -> float:
        """Energy (times PUE) since :meth:`start`, while running: what an energy budget checks."""
        if not self._ready.is_set():
            return 0.0
        self._raise_if_failed()
        now, begin = self.mark(), self._begin
        cpu, ram_w = _cpu_model(self._tracker), _ram_watts(self._tracker)
        if cpu.tdp_w and not cpu.measured and ram_w is not None:
            # the power model on this process's clocks, exact from the first second
            joules = _modelled_cpu_joules(cpu, begin, now) + ram_w * (now.wall - begin.wall)
            return (joules + (_gpu_joules(begin, now) or 0.0)) * KWH_PER_JOULE * self._pue
        # counters: CodeCarbon's running reading (kg at the forced 1000 g/kWh: kWh, see _new_tracker),
        # the seconds before its window at the same rate. (Its scheduler thread may read at the same
        # moment; an energy budget is a projection anyway.)
        tracked = self._tracker.flush() or 0.0
        wall = now.wall - self._tracked_from.wall
        return tracked * _share(now.wall - begin.wall, wall) * self._pue if wall > 0 else 0.0

    # -- the block -------------------------------------------------------------------------------
    def start(self, begin: Mark | None = None) -> Meter:
        """Start measuring (from ``begin``, a mark of another meter, so that consecutive blocks leave no
        gap between them); CodeCarbon starts in a background thread."""
        if self._begin is not None:
            raise FootprintError("this meter was already started: use a new Meter for each block")
        self._begin = begin if begin is not None else self.mark()
        threading.Thread(target=self._start_tracker, name="tandem-meter", daemon=True).start()
        return self

    def stop(self) -> Footprint:
        """Stop and return the block's footprint (also kept as :attr:`result`)."""
        if self.result is not None:
            return self.result
        self.wait_ready()
        self._raise_if_failed()
        window = time.perf_counter() - self._tracked_from.wall
        if window < MIN_WINDOW_S:  # CodeCarbon skips its last reading within 50 ms of the one before
            time.sleep(MIN_WINDOW_S - window)
        self._tracker.stop()
        end = self.mark()
        data = getattr(self._tracker, "final_emissions_data", None)
        if data is None:  # CodeCarbon logs and swallows its own failures: its stop() left no figures
            raise FootprintError("CodeCarbon's tracker stopped without figures (its hardware readings failed)")
        self.result = self._footprint(data, end)
        return self.result

    def cancel(self) -> None:
        """Give up on the block (the work failed): the tracker stops without holding up the caller."""
        with self._lock:
            self._cancelled = True
            tracker, self._tracker = self._tracker, None
        if tracker is not None and self.result is None:
            tracker.stop()

    def __enter__(self) -> Meter:
        return self.start()

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is None:
            self.stop()
        else:  # the block's own error is the one to see
            self.cancel()

    @property
    def _pue(self) -> float:
        return float(self.settings.pue) if self.settings.pue is not None else 1.0

    def _require_started(self) -> None:
        if self._begin is None:
            raise FootprintError("the meter was never started: call start() or use it in a with block")

    def _start_tracker(self) -> None:
        try:
            tracker = _new_tracker(self.settings)
            with _cpu_name_from_proc():
                tracker.start()  # the first in a process detects the hardware (CodeCarbon caches it)
            if getattr(tracker, "_start_time", 0) is None:  # its start() logs and swallows a failure
                raise FootprintError("CodeCarbon's tracker did not start (its hardware detection failed)")
            _stop_load_sampling(tracker)
            _preload_stop_imports()
            self._tracked_from = self.mark()  # CodeCarbon's window begins about here
            _cpu_model(tracker)  # (and the TDP-table lookup its label needs, off the caller's thread)
            with self._lock:
                if not self._cancelled:
                    self._tracker, tracker = tracker, None
            if tracker is not None:  # cancelled meanwhile
                tracker.stop()
        except BaseException as exc:  # surfaced in the caller's thread by stop()
            self._error = exc
        finally:
            self._ready.set()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            if isinstance(self._error, FootprintError):
                raise self._error
            raise FootprintError(f"CodeCarbon's tracker failed to start: {self._error}") from self._error
        if self._tracker is None:
            raise FootprintError("the meter was cancelled")

    def _footprint(self, data: object, end: Mark) -> Footprint:
        begin = self._begin
        gap_wall = max(0.0, end.wall - begin.wall - float(data.duration))  # what CodeCarbon's window missed
        cpu = _cpu_model(self._tracker)
        if cpu.tdp_w and not cpu.measured:  # over the whole block, the seconds before its tracker included
            cpu_kwh = _modelled_cpu_joules(cpu, begin, end) * KWH_PER_JOULE
        else:  # counters measure the whole package over wall time: the seconds before, at their mean power
            cpu_kwh = float(data.cpu_energy) + float(data.cpu_power) * gap_wall * KWH_PER_JOULE
        components = {"cpu": _cpu_component(cpu_kwh, cpu),
                      # RAM: the model's mean power over the block's wall time (CodeCarbon's own sum over its
                      # readings came out up to 3% short of its constant forced power x its duration)
                      "ram": _ram_component(float(data.ram_power) * (end.wall - begin.wall) * KWH_PER_JOULE,
                                            self.settings.ram_power_w, float(data.ram_power))}
        gpu_count = int(getattr(data, "gpu_count", 0) or 0)
        gpu_joules = _gpu_joules(begin, end)
        if gpu_joules is not None:  # tandem's own NVML readings: the whole block
            kwh = gpu_joules * KWH_PER_JOULE
            components["gpu"] = Component(kwh, kwh, kwh, "measured", f"NVML energy counters of {self._gpu.count} "
                                          "GPU(s), whole devices")
        elif gpu_count:
            kwh = float(data.gpu_energy) + float(data.gpu_power) * gap_wall * KWH_PER_JOULE
            components["gpu"] = Component(kwh, kwh, kwh, "measured", f"CodeCarbon's NVML readings of {gpu_count} "
                                          f"GPU(s) ({data.gpu_model}), whole devices")
        hardware = {"cpu_model": str(data.cpu_model), "cpu_threads": int(data.cpu_count),
                    "ram_gb": round(float(data.ram_total_size), 1), "gpu_count": gpu_count,
                    "gpu_model": str(getattr(data, "gpu_model", "") or "") or None, "os": str(data.os)}
        library = {"cpu_kwh": float(data.cpu_energy), "ram_kwh": float(data.ram_energy),
                   "gpu_kwh": float(data.gpu_energy), "seconds": float(data.duration)}
        return Footprint(seconds=end.wall - begin.wall, cpu_seconds=end.cpu - begin.cpu, components=components,
                         pue=self._pue, grid=self.grid, library=f"codecarbon {codecarbon_version()}",
                         hardware=hardware, extrapolated_seconds=gap_wall, library_window=library,
                         start=begin, end=end)


def _modelled_cpu_joules(cpu: _CpuModel, begin: Mark, end: Mark) -> float:
    """CodeCarbon's process-mode CPU model (TDP / threads per CPU second, its external/hardware.py),
    computed by tandem on this process's own clocks."""
    return cpu.tdp_w / cpu.threads * (end.cpu - begin.cpu)


def _gpu_joules(begin: Mark, end: Mark) -> float | None:
    """Every GPU's energy between two marks, from NVML's counters; None without them."""
    if end.gpu_mj is None or begin.gpu_mj is None:
        return None
    return (end.gpu_mj - begin.gpu_mj) / 1000


_warm: set[MeterSettings] = set()
_warm_lock = threading.Lock()
_cpuinfo_lock = threading.Lock()


def warm_up(settings: MeterSettings | None = None) -> None:
    """Let CodeCarbon detect the hardware now (a few tenths of a second, cached per configuration for the process),
    so that a meter started later begins measuring within milliseconds. Optional: a meter that
    starts cold detects in its background thread and counts the seconds before at the same model."""
    settings = settings if settings is not None else MeterSettings.from_env()
    with _warm_lock:
        if settings in _warm:
            return
        tracker = _new_tracker(settings)
        with _cpu_name_from_proc():
            tracker.start()
        tracker.stop()
        _cpu_model(tracker)
        _warm.add(settings)


@contextlib.contextmanager
def _cpu_name_from_proc() -> Iterator[None]:
    """CodeCarbon asks py-cpuinfo for the CPU's name, which starts a second Python to find it (0.9 s of
    CPU, a third of the meter's cost); on Linux /proc/cpuinfo says the same, so read it there."""
    model = _proc_cpu_name()
    with _cpuinfo_lock:  # two meters starting at once must not save each other's stand-in as the original
        if model is None:
            yield
            return
        import cpuinfo

        real = cpuinfo.get_cpu_info
        cpuinfo.get_cpu_info = lambda: {"brand_raw": model}
        try:
            yield
        finally:
            cpuinfo.get_cpu_info = real


def _proc_cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return None


def _new_tracker(settings: MeterSettings) -> object:
    from codecarbon import OfflineEmissionsTracker

    _cache_socket_count()

    logging.getLogger("codecarbon").setLevel(logging.ERROR)  # its set-up logs at INFO before log_level applies

    # The grid is tandem's (validated, with its source); the tracker's own CO2 is asked at a forced
    # 1000 g/kWh so that its running kg reading (flush) is the energy in kWh. PUE is applied by tandem.
    country = resolve_grid(settings.country).country  # metadata only: the intensity is forced
    return OfflineEmissionsTracker(
        country_iso_code=country if country != WORLD else "USA", tracking_mode="process", output_methods=[],
        log_level="error", measure_power_secs=15, pue=1.0, force_carbon_intensity_g_co2e_kwh=1000.0,
        force_cpu_power=settings.cpu_power_w, force_ram_power=settings.ram_power_w, allow_multiple_runs=True)


def _stop_load_sampling(tracker: object) -> None:
    """Stop CodeCarbon's once-a-second sampling of the CPU load, where no GPU is tracked.

    Each sample scans every process on the machine for this one's children (psutil's ``children``
    reads all of /proc): about 5 ms of CPU a second here, most of the meter's cost over a training
    run. tandem's CPU figure comes from this process's own clock, not from those samples; and
    CodeCarbon's own figure (kept in ``library_window``) is unchanged, since its reading every 15 s
    takes one sample over the whole interval since the last, the same mean load as the duration-weighted
    mean of the 1 s samples. A GPU's power samples need the same thread: it is left running then.
    """
    if _device(tracker, "GPU") is not None:
        return
    monitor = getattr(tracker, "_scheduler_monitor_power", None)
    if monitor is not None and callable(getattr(monitor, "stop", None)):
        monitor.stop()


def _preload_stop_imports() -> None:
    """CodeCarbon's stop() first imports its geography module, and with it ``requests`` (0.08 s of CPU
    on the caller's thread, at the end of a study); import them here, in the start-up thread."""
    with contextlib.suppress(ImportError):  # a later release may have moved it: then stop() pays
        importlib.import_module("codecarbon.external.geography")


def _cache_socket_count() -> None:
    """CodeCarbon runs ``lscpu`` for the socket count at every tracker's start: a process forked from
    the server every window, on the load generator's core in the bench. The count cannot change
    while a process runs: ask once."""
    import codecarbon.emissions_tracker as tracker_module

    count = tracker_module.count_physical_cpus
    if not getattr(count, "tandem_cached", False):
        cached = lru_cache(maxsize=1)(count)
        cached.tandem_cached = True
        tracker_module.count_physical_cpus = cached


@dataclass(frozen=True)
class _CpuModel:
    mode: str  # CodeCarbon's CPU mode: cpu_load, intel_rapl, constant, ...
    tdp_w: float | None
    generic_tdp: bool
    model: str
    threads: int
    forced: bool

    @property
    def measured(self) -> bool:
        return "rapl" in self.mode or self.mode in ("intel_power_gadget", "apple_powermetrics", "windows_emi")


def _device(tracker: object, kind: str) -> object | None:
    """The tracker's first piece of hardware of CodeCarbon's class ``kind`` (CPU, RAM, GPU), or None."""
    return next((h for h in getattr(tracker, "_hardware", []) if type(h).__name__ == kind), None)


def _cpu_model(tracker: object) -> _CpuModel:
    # CodeCarbon exposes no public description of its CPU power model; these attributes are read
    # with defaults so that a change in a later release degrades the label, not the figure.
    cpu = _device(tracker, "CPU")
    forced = getattr(tracker, "_force_cpu_power", None) is not None
    tdp = getattr(cpu, "_tdp", None)
    model = str(getattr(cpu, "_model", "") or "")
    return _CpuModel(mode=str(getattr(cpu, "_mode", "unknown")), tdp_w=float(tdp) if tdp else None,
                     generic_tdp=bool(getattr(cpu, "_is_generic_tdp", False)) or not _in_tdp_table(model),
                     model=model or "unknown", threads=int(getattr(cpu, "_cpu_count", 0) or os.cpu_count() or 1),
                     forced=forced)


def _ram_watts(tracker: object) -> float | None:
    """CodeCarbon's RAM power now (its model, or the forced value); None if it cannot be read."""
    ram = _device(tracker, "RAM")
    try:
        return float(ram.total_power().W)
    except Exception:
        return None


@lru_cache(maxsize=8)
def _in_tdp_table(model: str) -> bool:
    """Whether CodeCarbon found ``model`` in its TDP table (else it assumed 4 W a thread)."""
    if not model or model == "Unknown":
        return False
    try:
        from codecarbon.core.cpu import TDP

        return TDP.__new__(TDP)._get_cpu_power_from_registry(model) is not None
    except Exception:  # a later CodeCarbon without this lookup: call it unknown, the wider range
        return False


def _cpu_component(kwh: float, cpu: _CpuModel) -> Component:
    if cpu.measured:
        return Component(kwh, kwh, kwh, "measured", f"CPU energy counters ({cpu.mode}) of the whole package")
    per_thread = f"{cpu.tdp_w / cpu.threads:.2f} W a busy thread" if cpu.tdp_w else "an unknown power"
    if cpu.forced:
        return Component(kwh, kwh, kwh, "given", f"{cpu.tdp_w:g} W given for all {cpu.threads} threads: "
                         f"{per_thread} x this process's CPU time (CodeCarbon's process-mode model)")
    if cpu.generic_tdp or cpu.tdp_w is None:
        low, high = CPU_RANGE_TDP_DEFAULT
        how = (f"CPU '{cpu.model}' is not in CodeCarbon's TDP table: its default of {per_thread} x this "
               "process's CPU time (CodeCarbon's process-mode model)")
    else:
        low, high = CPU_RANGE_TDP_TABLE
        how = (f"TDP of '{cpu.model}' from CodeCarbon's table ({cpu.tdp_w:g} W): {per_thread} x this process's "
               "CPU time (CodeCarbon's process-mode model)")
    return Component(kwh, kwh * low, kwh * high, "estimated", how)


def _ram_component(kwh: float, forced_w: float | None, watts: float) -> Component:
    if forced_w is not None:
        return Component(kwh, kwh, kwh, "given", f"{forced_w:g} W given for the RAM, x wall time")
    low, high = RAM_RANGE
    return Component(kwh, kwh * low, kwh * high, "estimated",
                     f"CodeCarbon's RAM model: {watts:g} W (a few W a DIMM, the DIMM count guessed from this "
                     "process's memory, two at least), x wall time")


class _Nvml:
    """NVML's total-energy counters of every GPU (mJ since the driver loaded); None without a GPU."""

    def __init__(self) -> None:
        self.handles = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self._read = pynvml.nvmlDeviceGetTotalEnergyConsumption
            for h in self.handles:
                self._read(h)
        except Exception:  # no driver, no GPU, or a GPU without the counter (pre-Volta)
            self.handles = []

    @property
    def count(self) -> int:
        return len(self.handles)

    def millijoules(self) -> float | None:
        if not self.handles:
            return None
        try:
            return float(sum(self._read(h) for h in self.handles))
        except Exception:  # a GPU lost mid-run (driver reset): no reading rather than a failed study
            return None
