"""How a server is set up: one typed, checked ``ServeConfig``, handed to uvicorn's workers in one variable.

``tandem serve`` builds it from its options; uvicorn's worker processes are started by an import string
(``tandem.serve.app:create_app``), so the front door writes the config once, as JSON in
``$TANDEM_SERVE_CONFIG`` (inherited by the workers), and ``create_app`` reads it back there
(``ServeConfig.from_env``). From Python, ``create_app(ServeConfig(models=("churn",)))``.

The variables a user sets stay theirs: ``TANDEM_ADMIN_TOKEN`` and ``TANDEM_API_KEY`` (read by ``tandem serve``'s
options, or by ``from_env`` when no config was handed over), ``TANDEM_SERVE_FOOTPRINT_WINDOW_S``, and those
the loaders and the meter read themselves (``TANDEM_REQUIRE_SIGNED``, ``TANDEM_TRUSTED_KEYS``,
``TANDEM_COUNTRY``, ``TANDEM_HOME``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

from tandem.errors import ConfigError
from tandem.serve.limits import HTTPLimits

CONFIG_ENV = "TANDEM_SERVE_CONFIG"
FOOTPRINT_WINDOW_ENV = "TANDEM_SERVE_FOOTPRINT_WINDOW_S"
MAX_BODY_BYTES = 8 * 1024 * 1024


def check_ranges(*checks: tuple[str, float | int | None, bool, str]) -> None:
    """(option, value, whether it is fine, the range in words): one line naming the first option out of range.
    NaN and infinities are out of every range."""
    for option, value, fine, wanted in checks:
        if value is not None and not (fine and math.isfinite(value)):
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            raise ConfigError(f"{option} must be {wanted}, got {shown}")


def footprint_window_from_env(environ: Mapping[str, str] | None = None) -> float:
    """Seconds a serving footprint window lasts at least: ``$TANDEM_SERVE_FOOTPRINT_WINDOW_S``, default 5."""
    raw = (os.environ if environ is None else environ).get(FOOTPRINT_WINDOW_ENV)
    if raw is None:
        return 5.0
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"${FOOTPRINT_WINDOW_ENV} must be a number of seconds, got {raw[:80]!r}") from None


_INTS = ("max_body_bytes", "max_batch_rows", "max_queue_rows")
_FLOATS = ("queue_delay_us", "request_timeout_s", "watch_interval_s", "footprint_window_s")
_BOOLS = ("footprint", "require_signed")
_TEXTS = ("metrics_dir", "country", "admin_token", "api_key")


@dataclass(frozen=True)
class ServeConfig:
    """Everything a server process needs to know, checked when made (ConfigError names the option at fault).

    The defaults are ``tandem serve``'s. ``models`` are registry references or bundle paths."""

    models: tuple[str, ...] = ()
    max_body_bytes: int = MAX_BODY_BYTES  # largest request body (413 beyond)
    max_batch_rows: int = 64  # micro-batching: rows per model run (0 or 1: off)
    queue_delay_us: float = 0.0  # how long a batch may wait for more rows while others are in flight
    max_queue_rows: int = 4096  # rows a model may have queued (429 beyond)
    request_timeout_s: float = 10.0  # a request waiting longer gets 503
    watch_interval_s: float = 2.0  # seconds between checks of the registry for moved aliases (0: off)
    metrics_dir: str | None = None  # where several workers share their metrics (None: one worker)
    footprint: bool = True  # meter the energy of predictions (when CodeCarbon is installed)
    footprint_window_s: float = 5.0  # a footprint window lasts at least this (and 1,000 predictions)
    country: str | None = None  # the grid of the footprint meter (None: $TANDEM_COUNTRY, else the world's)
    require_signed: bool = False  # refuse a bundle not signed by a trusted key (False: $TANDEM_REQUIRE_SIGNED says)
    admin_token: str | None = field(default=None, repr=False)  # bearer token of /admin routes (None: off)
    api_key: str | None = field(default=None, repr=False)  # bearer token of the prediction routes (None: open)
    limits: HTTPLimits = field(default_factory=HTTPLimits)

    def __post_init__(self) -> None:
        self._check_types()
        check_ranges(("--max-body-bytes", self.max_body_bytes, self.max_body_bytes >= 1, "at least 1 byte"),
                     ("--max-batch-rows", self.max_batch_rows, 0 <= self.max_batch_rows <= 1_000_000,
                      "0 (off) to 1000000 rows"),
                     ("--queue-delay-us", self.queue_delay_us, 0 <= self.queue_delay_us <= 1e7, "0 to 10000000 µs"),
                     ("--max-queue-rows", self.max_queue_rows, self.max_queue_rows >= 1, "at least 1 row"),
                     ("--request-timeout", self.request_timeout_s, 0 < self.request_timeout_s <= 86400,
                      "more than 0 and at most 86400 seconds"))
        self.limits.check()
        if self.watch_interval_s < 0:
            raise ConfigError(f"--watch-interval must be 0 (off) or more seconds, got {self.watch_interval_s:g}")
        check_ranges((f"${FOOTPRINT_WINDOW_ENV}", self.footprint_window_s, self.footprint_window_s >= 0,
                      "0 or more seconds"))

    def _check_types(self) -> None:
        """A field of the wrong type is a ConfigError naming it (a config may come from JSON); a whole-number
        float is taken where a number of seconds is wanted, the models as a tuple."""
        def wrong(name: str, wanted: str, value: object) -> ConfigError:
            return ConfigError(f"serve config: '{name}' must be {wanted}, got {value!r:.80}")

        models = self.models
        if isinstance(models, str) or not isinstance(models, (list, tuple)) or \
                not all(isinstance(m, str) for m in models):
            raise wrong("models", "a list of model references", models)
        object.__setattr__(self, "models", tuple(models))
        for name in _INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise wrong(name, "a whole number", value)
        for name in _FLOATS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise wrong(name, "a number", value)
            object.__setattr__(self, name, float(value))
        for name in _BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise wrong(name, "true or false", getattr(self, name))
        for name in _TEXTS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise wrong(name, "text or null", value)
        if not isinstance(self.limits, HTTPLimits):
            raise wrong("limits", "HTTPLimits", self.limits)
        for f in fields(self.limits):
            value = getattr(self.limits, f.name)
            seconds = f.name.endswith("_s")
            if isinstance(value, bool) or not isinstance(value, (int, float) if seconds else int):
                raise wrong(f"limits.{f.name}", "a number" if seconds else "a whole number", value)

    def to_json(self) -> str:
        """The config as one line of JSON (``from_json`` reads it back equal)."""
        return json.dumps({**asdict(self), "models": list(self.models)})

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        """The config ``to_json`` wrote, checked again; ConfigError for anything else."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"serve config: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError("serve config: expected a JSON object of settings")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"serve config: unknown setting(s) {', '.join(map(repr, unknown))}; "
                              f"known: {', '.join(sorted(known))}")
        limits, names = data.get("limits", {}), [f.name for f in fields(HTTPLimits)]
        if not isinstance(limits, dict) or set(limits) - set(names):
            raise ConfigError(f"serve config: 'limits' must be an object of {', '.join(names)}")
        return cls(**{**data, "limits": HTTPLimits(**limits)})

    def to_env(self) -> dict[str, str]:
        """The environment that hands this config to uvicorn's worker processes: one variable."""
        return {CONFIG_ENV: self.to_json()}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeConfig:
        """The config ``tandem serve`` handed this process (``to_env``). Without one (uvicorn run by hand), the
        defaults, with the tokens of ``$TANDEM_ADMIN_TOKEN`` and ``$TANDEM_API_KEY`` and the footprint window
        of ``$TANDEM_SERVE_FOOTPRINT_WINDOW_S``."""
        environ = os.environ if environ is None else environ
        raw = environ.get(CONFIG_ENV)
        if raw is not None:
            return cls.from_json(raw)
        return cls(admin_token=environ.get("TANDEM_ADMIN_TOKEN") or None, api_key=environ.get("TANDEM_API_KEY") or None,
                   footprint_window_s=footprint_window_from_env(environ))
