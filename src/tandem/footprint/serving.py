"""Energy per 1,000 predictions of a serving process, metered over windows of at least 1,000.

A window is one :class:`~tandem.footprint.meter.Meter` block. A background thread closes it once
it holds ``min_predictions`` predictions and ``min_seconds`` of time, and opens the next from the
closed one's end reading (no gap, no overlap), so the request path only adds to a counter. Idle
time between requests counts in the window it falls in: the figure is what this process spent per
1,000 predictions, waiting included.
"""

from __future__ import annotations

import threading
import time

from tandem.footprint.meter import Footprint, Mark, Meter, MeterSettings


class PredictionMeter:
    """Windows of metered predictions: totals, the latest window, and per-1,000 figures."""

    def __init__(self, settings: MeterSettings | None = None, *, min_predictions: int = 1000,
                 min_seconds: float = 5.0, check_seconds: float = 0.5):
        self.settings = settings if settings is not None else MeterSettings.from_env()
        self.min_predictions, self.min_seconds, self.check_seconds = min_predictions, min_seconds, check_seconds
        self._lock = threading.Lock()
        self._pending = 0  # predictions in the open window
        self._meter: Meter | None = None
        self._opened = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.windows = 0
        self.predictions = 0  # in closed windows
        self.energy_kwh = self.energy_kwh_low = self.energy_kwh_high = self.co2_kg = 0.0
        self.seconds = 0.0
        self.latest: dict | None = None
        self.method: str | None = None
        self.error: str | None = None

    def count(self, predictions: int) -> None:
        """``predictions`` answered (the request path: a locked addition)."""
        with self._lock:
            self._pending += predictions

    def start(self) -> PredictionMeter:
        self._open()
        self._thread = threading.Thread(target=self._run, name="tandem-prediction-meter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._meter is not None:
            self._meter.cancel()

    def figures(self) -> dict:
        """What ``/v1/models/{name}/footprint`` and ``/metrics`` show (a consistent snapshot)."""
        with self._lock:
            pending, n, windows, seconds = self._pending, self.predictions, self.windows, self.seconds
            kwh, low, high, kg = self.energy_kwh, self.energy_kwh_low, self.energy_kwh_high, self.co2_kg
            latest, method, meter = self.latest, self.method, self._meter

        def per_1000(v: float) -> float | None:
            return v / n * 1000 if n else None

        return {"windows": windows, "predictions": n, "open_window_predictions": pending,
                "min_window_predictions": self.min_predictions, "seconds": round(seconds, 3),
                "energy_kwh": kwh, "co2_kg": kg, "energy_kwh_per_1000": per_1000(kwh),
                "energy_kwh_low_per_1000": per_1000(low), "energy_kwh_high_per_1000": per_1000(high),
                "co2_kg_per_1000": per_1000(kg), "method": method, "latest_window": latest,
                "grid": meter.grid.to_dict() if meter else None,
                "scope": "this server process, every model it serves, idle time included", "error": self.error}

    # -- the window thread -------------------------------------------------------------------------
    def _open(self, begin: Mark | None = None) -> None:
        self._meter = Meter(self.settings).start(begin)
        self._opened = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.check_seconds):
            with self._lock:
                due = self._pending >= self.min_predictions and time.monotonic() - self._opened >= self.min_seconds
            if not due:
                continue
            try:
                fp = self._meter.stop()
                with self._lock:  # the predictions answered up to (within microseconds of) its end mark
                    n, self._pending = self._pending, 0
                self._open(begin=fp.end)  # the next window starts where this one ended: no gap, no overlap
                self._close(fp, n)
                self.error = None
            except Exception as exc:  # the meter must never take the server down: say so in the figures
                self.error = f"metering failed: {exc}"
                try:
                    self._open()
                except Exception:
                    pass

    def _close(self, fp: Footprint, n: int) -> None:
        low, high = fp.energy_range_kwh
        latest = {"predictions": n, **fp.summary(), **fp.per_1000(n),
                  "components": {k: c.to_dict() for k, c in fp.components.items()}, "pue": fp.pue,
                  "library": fp.library}
        with self._lock:
            self.windows += 1
            self.predictions += n
            self.seconds += fp.seconds
            self.energy_kwh += fp.energy_kwh
            self.energy_kwh_low += low
            self.energy_kwh_high += high
            self.co2_kg += fp.co2_kg
            self.method, self.latest = fp.method, latest
