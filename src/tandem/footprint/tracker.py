"""CodeCarbon's offline tracker as the meter uses it, and how this machine's power is read or modelled.

Starting a tracker fast (the CPU's name from /proc, the socket count once a process, no load sampling
without a GPU), the CPU and RAM power models CodeCarbon chose and the range each figure gets, and NVML's
GPU energy counters. Internal to :mod:`tandem.footprint`: :class:`~tandem.footprint.meter.Meter` is the API.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from tandem.footprint.figures import Component, Mark
from tandem.footprint.grid import WORLD, resolve_grid
from tandem.footprint.settings import MeterSettings

__all__ = ["CPU_RANGE_TDP_DEFAULT", "CPU_RANGE_TDP_TABLE", "RAM_RANGE", "CpuModel", "Nvml", "cpu_component",
           "cpu_model", "cpu_name_from_proc", "gpu_joules", "modelled_cpu_joules", "new_tracker",
           "preload_stop_imports", "ram_component", "ram_watts", "stop_load_sampling", "warm_up"]

# A low-high range per power model, as factors of the central estimate (the README says why).
CPU_RANGE_TDP_TABLE = (0.5, 1.2)  # package power at full load lies between about half TDP and turbo (~1.2x)
CPU_RANGE_TDP_DEFAULT = (0.5, 3.0)  # CPU not in CodeCarbon's table: its 4 W a thread is 2-12 W on real parts
RAM_RANGE = (0.5, 1.5)  # CodeCarbon's watts a DIMM (5 on x86, 1.5 on ARM) over a guessed DIMM count


def modelled_cpu_joules(cpu: CpuModel, begin: Mark, end: Mark) -> float:
    """CodeCarbon's process-mode CPU model (TDP / threads per CPU second, its external/hardware.py),
    computed by tandem on this process's own clocks."""
    return cpu.tdp_w / cpu.threads * (end.cpu - begin.cpu)


def gpu_joules(begin: Mark, end: Mark) -> float | None:
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
        tracker = new_tracker(settings)
        with cpu_name_from_proc():
            tracker.start()
        tracker.stop()
        cpu_model(tracker)
        _warm.add(settings)


@contextlib.contextmanager
def cpu_name_from_proc() -> Iterator[None]:
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


def new_tracker(settings: MeterSettings) -> object:
    """A new CodeCarbon offline tracker in process mode for ``settings``, not started."""
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


def stop_load_sampling(tracker: object) -> None:
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


def preload_stop_imports() -> None:
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
class CpuModel:
    """The CPU power model CodeCarbon chose, as far as its attributes tell."""

    mode: str  # CodeCarbon's CPU mode: cpu_load, intel_rapl, constant, ...
    tdp_w: float | None
    generic_tdp: bool
    model: str
    threads: int
    forced: bool

    @property
    def measured(self) -> bool:
        """Whether CodeCarbon reads an energy counter (RAPL and the like) rather than a model."""
        return "rapl" in self.mode or self.mode in ("intel_power_gadget", "apple_powermetrics", "windows_emi")


def _device(tracker: object, kind: str) -> object | None:
    """The tracker's first piece of hardware of CodeCarbon's class ``kind`` (CPU, RAM, GPU), or None."""
    return next((h for h in getattr(tracker, "_hardware", []) if type(h).__name__ == kind), None)


def cpu_model(tracker: object) -> CpuModel:
    """The CPU power model of a started ``tracker``."""
    # CodeCarbon exposes no public description of its CPU power model; these attributes are read
    # with defaults so that a change in a later release degrades the label, not the figure.
    cpu = _device(tracker, "CPU")
    forced = getattr(tracker, "_force_cpu_power", None) is not None
    tdp = getattr(cpu, "_tdp", None)
    model = str(getattr(cpu, "_model", "") or "")
    return CpuModel(mode=str(getattr(cpu, "_mode", "unknown")), tdp_w=float(tdp) if tdp else None,
                     generic_tdp=bool(getattr(cpu, "_is_generic_tdp", False)) or not _in_tdp_table(model),
                     model=model or "unknown", threads=int(getattr(cpu, "_cpu_count", 0) or os.cpu_count() or 1),
                     forced=forced)


def ram_watts(tracker: object) -> float | None:
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


def cpu_component(kwh: float, cpu: CpuModel) -> Component:
    """The CPU's ``kwh`` as a component: its method, its range and the model it came from."""
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


def ram_component(kwh: float, forced_w: float | None, watts: float) -> Component:
    """The RAM's ``kwh`` as a component: given (``forced_w``) or CodeCarbon's model of ``watts``, with a range."""
    if forced_w is not None:
        return Component(kwh, kwh, kwh, "given", f"{forced_w:g} W given for the RAM, x wall time")
    low, high = RAM_RANGE
    return Component(kwh, kwh * low, kwh * high, "estimated",
                     f"CodeCarbon's RAM model: {watts:g} W (a few W a DIMM, the DIMM count guessed from this "
                     "process's memory, two at least), x wall time")


class Nvml:
    """NVML's total-energy counters of every GPU (mJ since the driver loaded); None without a GPU."""

    def __init__(self) -> None:
        """Open NVML and every GPU's handle; none when a GPU, the driver or the counter is missing."""
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
        """How many GPUs are read."""
        return len(self.handles)

    def millijoules(self) -> float | None:
        """Every GPU's energy counter summed, in mJ; None without GPUs or when a reading fails."""
        if not self.handles:
            return None
        try:
            return float(sum(self._read(h) for h in self.handles))
        except Exception:  # a GPU lost mid-run (driver reset): no reading rather than a failed study
            return None
