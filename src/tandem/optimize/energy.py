"""Energy per 1,000 predictions of the parent and of every variant, metered in one block.

One :class:`~tandem.footprint.Meter` runs over the whole optimisation; each graph gets a window of
one-row predictions (a serving host's worst case, as the study meters a new bundle at export) cut
from it by two marks. The window is at least :data:`WINDOW` predictions and :data:`MIN_SECONDS`
long, so a fast graph is not metered on a few milliseconds. Where the machine has no energy counter
the figures are the power model's, and say so (``method``).
"""

from __future__ import annotations

import time

from tandem.bundle.inputs import EncodedInputs
from tandem.errors import FootprintError
from tandem.footprint import Footprint, Mark, Meter, MeterSettings
from tandem.optimize.measure import session
from tandem.study.graph import one_row_feeds

WINDOW = 1000  # one-row predictions at least
MIN_SECONDS = 0.25  # and at least this long
JOULES_PER_KWH = 3.6e6


class EnergyWindows:
    """Windows of one-row predictions, metered; :meth:`finish` turns them into per-1,000 figures."""

    def __init__(self, settings: MeterSettings | None = None) -> None:
        """Start the meter (``settings``: from the environment when None)."""
        self.meter = Meter(settings).start()
        self._windows: dict[str, tuple[Mark, Mark, int]] = {}
        self.total: Footprint | None = None

    def measure(self, key: str, graph: bytes, rows: EncodedInputs) -> None:
        """Meter one-row predictions of ``graph`` cycling over ``rows``, as window ``key``."""
        self.meter.wait_ready()  # CodeCarbon's start-up runs in this process: never inside a window
        sess = session(graph)
        feeds = one_row_feeds(sess, rows)
        for f in feeds[:10]:  # warm-up, outside the window
            sess.run(None, f)
        start, done = self.meter.mark(), 0
        began = time.perf_counter()
        while done < WINDOW or time.perf_counter() - began < MIN_SECONDS:
            for f in feeds:
                sess.run(None, f)
            done += len(feeds)
        self._windows[key] = (start, self.meter.mark(), done)

    def finish(self) -> dict[str, dict]:
        """Stop the meter; each window's figures: joules, kWh and CO2 per 1,000 predictions, and how measured.

        A meter that failed gives no figures (an empty dict) rather than failing the optimisation."""
        try:
            self.total = self.meter.stop()
        except FootprintError:
            return {}
        out = {}
        for key, (start, end, n) in self._windows.items():
            part = self.total.between(start, end)
            per = part.per_1000(n)
            out[key] = {"energy_j_per_1000": round(per["energy_kwh_per_1000"] * JOULES_PER_KWH, 4),
                        "predictions": n, "seconds": round(part.seconds, 3), **per, "method": part.method,
                        "mode": "one row per call, on one thread"}
        return out

    def cancel(self) -> None:
        """Give up (the optimisation failed)."""
        self.meter.cancel()
