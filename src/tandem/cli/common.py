"""What every command shares: the typer apps, the options several commands take, the budget bar, the footprint
of a command's run, option ranges, and turning an OSError into one line naming the path."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tandem.console import err, out
from tandem.serve.config import check_ranges

__all__ = ["BudgetBar", "COUNTRY", "MAX_SEED", "OptionalMeter", "REQUIRE_SIGNED", "RUN_COUNTRY", "app", "check_ranges",
           "doing", "err", "keys_app", "models_app", "os_error_line", "out", "print_run_footprint",
           "set_require_signed"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train a model within a time budget, ship it as a verified ONNX bundle, predict fast.")
models_app = typer.Typer(no_args_is_help=True, help="The model registry: list, show, alias, delete.")
app.add_typer(models_app, name="models")
keys_app = typer.Typer(no_args_is_help=True, help="Signing keys for signed bundles.")
app.add_typer(keys_app, name="keys")


COUNTRY = typer.Option(None, "--country", help="Where the work runs, as an ISO 3166-1 alpha-3 code (FRA, USA, ...), "
                       "for the grid's carbon intensity (default $TANDEM_COUNTRY, else the world average).")


RUN_COUNTRY = typer.Option(None, "--country", help="Meter the run's energy and CO2 at this country's grid "
                           "(ISO 3166-1 alpha-3; also $TANDEM_COUNTRY); printed on stderr.")


REQUIRE_SIGNED = typer.Option(False, "--require-signed", envvar="TANDEM_REQUIRE_SIGNED",
                              help="Refuse a bundle not signed by a key in $TANDEM_TRUSTED_KEYS "
                                   "(also $TANDEM_REQUIRE_SIGNED=1).")


def set_require_signed(required: bool) -> None:
    """Every bundle this command loads must be signed by a trusted key: the loaders read the variable."""
    if required:
        os.environ["TANDEM_REQUIRE_SIGNED"] = "1"


class BudgetBar:
    """A progress bar that fills with the time budget and shows the study's current step."""

    def __init__(self, time_limit: float):
        self.time_limit = time_limit
        self.progress = Progress(TextColumn("{task.description:<44}"), BarColumn(), TimeElapsedColumn(),
                                 console=err, transient=True)
        self.task = self.progress.add_task("starting", total=time_limit)
        self._stop = threading.Event()
        self._start = time.monotonic()

    def say(self, message: str) -> None:
        self.progress.update(self.task, description=message[:44])

    def _tick(self) -> None:
        while not self._stop.wait(0.2):
            self.progress.update(self.task, completed=min(time.monotonic() - self._start, self.time_limit))

    def __enter__(self) -> BudgetBar:
        self.live = err.is_terminal  # off a terminal a bar is noise: errors stay one line
        if not self.live:
            return self
        self.progress.start()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.live:
            return
        self._stop.set()
        self._thread.join()
        self.progress.stop()


class OptionalMeter:
    """A footprint meter around a block when a country is given (option or $TANDEM_COUNTRY), else none:
    metering costs a few tenths of a second of hardware detection, worth it only when asked for."""

    def __init__(self, country: str | None):
        import os

        from tandem.footprint import Meter, MeterSettings

        wanted = country is not None or bool(os.environ.get("TANDEM_COUNTRY"))
        self.meter = Meter(MeterSettings.from_env(country=country)) if wanted else None

    def __enter__(self):
        return self.meter.start() if self.meter else None

    def __exit__(self, exc_type, *exc: object) -> None:
        if self.meter is None:
            return
        if exc_type is None:
            self.meter.stop()
        else:
            self.meter.cancel()


def print_run_footprint(meter, predictions: int | None = None) -> None:
    """What a metered run cost, on stderr (nothing when it was not metered)."""
    if meter is None or meter.result is None:
        return
    r = meter.result.summary()
    per = (f"; {r['energy_kwh'] / predictions * 1e6:.3g} Wh per 1,000 predictions" if predictions else "")
    err.print(f"footprint: {r['energy_kwh'] * 1000:.3g} Wh ({r['energy_kwh_low'] * 1000:.3g} to "
              f"{r['energy_kwh_high'] * 1000:.3g}), {r['co2_kg'] * 1000:.3g} g CO2e, {r['method']}, in "
              f"{r['seconds']:.1f} s; grid {meter.grid.country} {meter.grid.g_per_kwh:g} g/kWh{per}")


MAX_SEED = 2**31 - 1  # every learner takes it (LightGBM's C int, scikit-learn's 32-bit random_state)


@contextlib.contextmanager
def doing(what: str, path: Path | None = None) -> Iterator[None]:
    """Label an OSError raised in the block with what the command was doing and, when the error names no
    path a user knows (none, or a temp file), the path the command was writing."""
    try:
        yield
    except OSError as exc:
        if not hasattr(exc, "tandem_doing"):  # the innermost label is the most precise
            exc.tandem_doing = (what, path)  # read by main()
        raise


def os_error_line(exc: OSError) -> str:
    """``<path>: <reason> (while <what>)``, each part when known."""
    import os

    what, path = getattr(exc, "tandem_doing", (None, None))
    named = exc.filename
    if named is not None and not any(p.startswith(".") and p.endswith(".tmp") for p in Path(os.fsdecode(named)).parts):
        path = os.fsdecode(named)
    reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc)).strip()
    reason = reason.splitlines()[0] if reason else type(exc).__name__
    line = f"{path}: {reason}" if path is not None else reason
    return f"{line} (while {what})" if what else line
