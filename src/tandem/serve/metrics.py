"""Prometheus metrics of the server, cheap on the hot path and summed over worker processes.

Recording a request costs a few dictionary updates (no locks: each worker is one event loop).
With several workers, each writes a snapshot of its figures to a shared folder about once a
second; ``/metrics`` adds the others' snapshots to its own live figures, so any worker answers
for the whole server. Counters of a worker that died stay counted (counters never go down); its
in-flight gauge is dropped.
"""

from __future__ import annotations

import json
import os
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path

from tandem.fsutil import atomic_file

LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384)


class ServeMetrics:
    """Request counts by (model, route, code), latency by (model, phase), rows per model run, requests in flight."""

    def __init__(self, directory: str | Path | None = None, footprint: Callable[[], dict] | None = None):
        self.directory = Path(directory) if directory else None
        self.footprint = footprint  # the prediction meter's figures (tandem.footprint.serving), when metered
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], list] = {}  # key -> [bucket counts..., +Inf count, sum]
        self.batch_rows: dict[tuple[str], list] = {}
        self.in_flight = 0

    def answered(self, model: str, route: str, code: int, seconds: float) -> None:
        """One request answered: counted, and its total latency observed."""
        key = (model, route, str(code))
        self.requests[key] = self.requests.get(key, 0) + 1
        _observe(self.latency, (model, "total"), LATENCY_BUCKETS, seconds)

    def observe_latency(self, model: str, phase: str, seconds: float) -> None:
        _observe(self.latency, (model, phase), LATENCY_BUCKETS, seconds)

    def observe_rows(self, model: str, rows: int) -> None:
        _observe(self.batch_rows, (model,), ROWS_BUCKETS, rows)

    # -- several workers -----------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"pid": os.getpid(), "in_flight": self.in_flight,
                "requests": [[*k, v] for k, v in self.requests.items()],
                "latency": [[*k, v] for k, v in self.latency.items()],
                "batch_rows": [[*k, v] for k, v in self.batch_rows.items()],
                "energy": self._energy()}

    def _energy(self) -> list[float]:
        """Metered predictions, their kWh and kg CO2e (closed windows), summed over workers like counters."""
        if self.footprint is None:
            return [0, 0.0, 0.0]
        f = self.footprint()
        return [f["predictions"], f["energy_kwh"], f["co2_kg"]]

    def publish(self) -> None:
        """Write this worker's snapshot for the others (no-op with one worker)."""
        if self.directory is None:
            return
        with atomic_file(self.directory / f"{os.getpid()}.json") as tmp:
            tmp.write_text(json.dumps(self.snapshot()), encoding="utf-8")

    def live_workers(self) -> set[int]:
        """The pids of this server's live workers (those that published a snapshot), this one included."""
        pids = {os.getpid()}
        if self.directory is not None:
            pids |= {int(p.stem) for p in self.directory.glob("*.json") if p.stem.isdigit() and _alive(int(p.stem))}
        return pids

    def _others(self) -> list[dict]:
        if self.directory is None:
            return []
        out = []
        for path in self.directory.glob("*.json"):
            if path.stem == str(os.getpid()):
                continue
            try:
                snap = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # a worker replacing its file right now: next scrape has it
                continue
            if not _alive(int(snap["pid"])):
                snap["in_flight"] = 0
            out.append(snap)
        return out

    # -- exposition ----------------------------------------------------------------------------
    def render(self) -> bytes:
        """The Prometheus text format of this worker's figures plus the other workers' snapshots."""
        requests = dict(self.requests)
        latency = {k: list(v) for k, v in self.latency.items()}
        rows = {k: list(v) for k, v in self.batch_rows.items()}
        in_flight = self.in_flight
        energy = self._energy()
        for snap in self._others():
            in_flight += snap["in_flight"]
            energy = [a + b for a, b in zip(energy, snap.get("energy", [0, 0.0, 0.0]), strict=True)]
            for *key, value in snap["requests"]:
                requests[tuple(key)] = requests.get(tuple(key), 0) + value
            for target, series in ((latency, snap["latency"]), (rows, snap["batch_rows"])):
                for *key, value in series:
                    mine = target.setdefault(tuple(key), [0] * len(value))
                    for i, v in enumerate(value):
                        mine[i] += v
        lines = ["# HELP tandem_requests_total HTTP requests by model, route and status code",
                 "# TYPE tandem_requests_total counter"]
        lines += [f'tandem_requests_total{{model="{_esc(m)}",route="{r}",code="{c}"}} {v}'
                  for (m, r, c), v in sorted(requests.items())]
        lines += _histogram("tandem_request_seconds", "Request latency: queue, compute (model run) and total",
                            ("model", "phase"), LATENCY_BUCKETS, latency)
        lines += _histogram("tandem_batch_rows", "Rows per model run", ("model",), ROWS_BUCKETS, rows)
        lines += ["# HELP tandem_in_flight_requests Requests being handled", "# TYPE tandem_in_flight_requests gauge",
                  f"tandem_in_flight_requests {in_flight}"]
        if self.footprint is not None:
            predictions, kwh, kg = energy
            lines += ["# HELP tandem_metered_predictions_total Predictions in closed energy windows (>= 1,000 each)",
                      "# TYPE tandem_metered_predictions_total counter",
                      f"tandem_metered_predictions_total {predictions}",
                      "# HELP tandem_energy_kwh_total Energy of those predictions' windows (CodeCarbon, process mode)",
                      "# TYPE tandem_energy_kwh_total counter", f"tandem_energy_kwh_total {kwh!r}",
                      "# HELP tandem_co2_kg_total CO2e of that energy at the server's grid",
                      "# TYPE tandem_co2_kg_total counter", f"tandem_co2_kg_total {kg!r}",
                      "# HELP tandem_energy_kwh_per_1000_predictions Energy per 1,000 metered predictions",
                      "# TYPE tandem_energy_kwh_per_1000_predictions gauge"]
            if predictions:  # no figure before the first window closes, rather than a made-up zero
                lines.append(f"tandem_energy_kwh_per_1000_predictions {kwh / predictions * 1000!r}")
        return ("\n".join(lines) + "\n").encode()


def _observe(series: dict, key: tuple, buckets: tuple, value: float) -> None:
    counts = series.get(key)
    if counts is None:
        series[key] = counts = [0] * (len(buckets) + 2)
    counts[bisect_left(buckets, value)] += 1  # bucket i holds values <= buckets[i]; the last one is +Inf
    counts[-1] += value


def _histogram(name: str, help_text: str, label_names: tuple, buckets: tuple, series: dict) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for key, counts in sorted(series.items()):
        labels = ",".join(f'{n}="{_esc(v)}"' for n, v in zip(label_names, key, strict=True))
        running = 0
        for bound, n in zip((*(repr(float(b)) for b in buckets), "+Inf"), counts[:-1], strict=True):
            running += n
            lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {running}')
        lines.append(f"{name}_sum{{{labels}}} {counts[-1]}")
        lines.append(f"{name}_count{{{labels}}} {running}")
    return lines


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        pass
    return True
