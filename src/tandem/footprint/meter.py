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

The meter's parts live beside it: its settings in :mod:`~tandem.footprint.settings`, the figures it reports in
:mod:`~tandem.footprint.figures`, CodeCarbon's tracker and the power models in :mod:`~tandem.footprint.tracker`.
Their names that were importable from here still are.
"""

from __future__ import annotations

import os
import threading
import time

from tandem.errors import FootprintError
from tandem.footprint.figures import Component, Footprint, Mark, share
from tandem.footprint.grid import codecarbon_version
from tandem.footprint.settings import MeterSettings
from tandem.footprint.tracker import (
    CPU_RANGE_TDP_DEFAULT,
    CPU_RANGE_TDP_TABLE,
    RAM_RANGE,
    Nvml,
    cpu_component,
    cpu_model,
    cpu_name_from_proc,
    gpu_joules,
    modelled_cpu_joules,
    new_tracker,
    preload_stop_imports,
    ram_component,
    ram_watts,
    stop_load_sampling,
    warm_up,
)

__all__ = ["CPU_RANGE_TDP_DEFAULT", "CPU_RANGE_TDP_TABLE", "KWH_PER_JOULE", "MIN_WINDOW_S", "RAM_RANGE", "Component",
           "Footprint", "Mark", "Meter", "MeterSettings", "warm_up"]

KWH_PER_JOULE = 1 / 3.6e6
MIN_WINDOW_S = 0.06


class Meter:
    """Energy and CO2 of the work done between :meth:`start` and :meth:`stop` (or a ``with`` block),
    by this process (CodeCarbon's process mode: other processes on the machine are not counted).

    The meter's own work (CodeCarbon's start, a few tenths of a second of CPU once a process) is
    inside the block and counted with it.

    >>> with Meter(MeterSettings(country="FRA")) as meter:
    ...     work()
    >>> meter.result.energy_kwh, meter.result.co2_kg, meter.result.method
    """

    def __init__(self, settings: MeterSettings | None = None) -> None:
        """A meter for ``settings`` (default: from the environment), checked now; nothing runs until :meth:`start`."""
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
        self._gpu = Nvml()

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
        cpu, ram_w = cpu_model(self._tracker), ram_watts(self._tracker)
        if cpu.tdp_w and not cpu.measured and ram_w is not None:
            # the power model on this process's clocks, exact from the first second
            joules = modelled_cpu_joules(cpu, begin, now) + ram_w * (now.wall - begin.wall)
            return (joules + (gpu_joules(begin, now) or 0.0)) * KWH_PER_JOULE * self._pue
        # counters: CodeCarbon's running reading (kg at the forced 1000 g/kWh: kWh, see new_tracker),
        # the seconds before its window at the same rate. (Its scheduler thread may read at the same
        # moment; an energy budget is a projection anyway.)
        tracked = self._tracker.flush() or 0.0
        wall = now.wall - self._tracked_from.wall
        return tracked * share(now.wall - begin.wall, wall) * self._pue if wall > 0 else 0.0

    def joules_per_cpu_second(self) -> float | None:
        """Energy (times PUE) per CPU second of this process since :meth:`start`, so far: what turns the CPU
        time of a piece of work (a prediction) into joules. None before the meter measures anything."""
        self.wait_ready()
        kwh, cpu = self.kwh_so_far(), self.mark().cpu - self._begin.cpu
        return kwh / KWH_PER_JOULE / cpu if kwh > 0 and cpu > 0 else None

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
            tracker = new_tracker(self.settings)
            with cpu_name_from_proc():
                tracker.start()  # the first in a process detects the hardware (CodeCarbon caches it)
            if getattr(tracker, "_start_time", 0) is None:  # its start() logs and swallows a failure
                raise FootprintError("CodeCarbon's tracker did not start (its hardware detection failed)")
            stop_load_sampling(tracker)
            preload_stop_imports()
            self._tracked_from = self.mark()  # CodeCarbon's window begins about here
            cpu_model(tracker)  # (and the TDP-table lookup its label needs, off the caller's thread)
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
        cpu = cpu_model(self._tracker)
        if cpu.tdp_w and not cpu.measured:  # over the whole block, the seconds before its tracker included
            cpu_kwh = modelled_cpu_joules(cpu, begin, end) * KWH_PER_JOULE
        else:  # counters measure the whole package over wall time: the seconds before, at their mean power
            cpu_kwh = float(data.cpu_energy) + float(data.cpu_power) * gap_wall * KWH_PER_JOULE
        components = {"cpu": cpu_component(cpu_kwh, cpu),
                      # RAM: the model's mean power over the block's wall time (CodeCarbon's own sum over its
                      # readings came out up to 3% short of its constant forced power x its duration)
                      "ram": ram_component(float(data.ram_power) * (end.wall - begin.wall) * KWH_PER_JOULE,
                                            self.settings.ram_power_w, float(data.ram_power))}
        gpu_count = int(getattr(data, "gpu_count", 0) or 0)
        block_gpu_joules = gpu_joules(begin, end)
        if block_gpu_joules is not None:  # tandem's own NVML readings: the whole block
            kwh = block_gpu_joules * KWH_PER_JOULE
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
