"""The ``tandem`` command line: train, predict, evaluate, models, quickstart.

A user's mistake prints one line on stderr and exits non-zero; a traceback means a bug.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tandem.errors import ConfigError, TandemError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train a model within a time budget, ship it as a verified ONNX bundle, predict fast.")
models_app = typer.Typer(no_args_is_help=True, help="The model registry: list, show, alias, delete.")
app.add_typer(models_app, name="models")
keys_app = typer.Typer(no_args_is_help=True, help="Signing keys for signed bundles.")
app.add_typer(keys_app, name="keys")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


_COUNTRY = typer.Option(None, "--country", help="Where the work runs, as an ISO 3166-1 alpha-3 code (FRA, USA, ...), "
                        "for the grid's carbon intensity (default $TANDEM_COUNTRY, else the world average).")


_RUN_COUNTRY = typer.Option(None, "--country", help="Meter the run's energy and CO2 at this country's grid "
                            "(ISO 3166-1 alpha-3; also $TANDEM_COUNTRY); printed on stderr.")


_REQUIRE_SIGNED = typer.Option(False, "--require-signed", envvar="TANDEM_REQUIRE_SIGNED",
                               help="Refuse a bundle not signed by a key in $TANDEM_TRUSTED_KEYS "
                                    "(also $TANDEM_REQUIRE_SIGNED=1).")


def _require_signed(required: bool) -> None:
    """Every bundle this command loads must be signed by a trusted key: the loaders read the variable (the
    server's workers inherit it)."""
    import os

    if required:
        os.environ["TANDEM_REQUIRE_SIGNED"] = "1"


class _BudgetBar:
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

    def __enter__(self) -> _BudgetBar:
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


def _rows_table(rows: list[dict], title: str, columns: list[str] | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    for c in cols:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*[_fmt(r.get(c)) for c in cols])
    return table


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"
    return str(v)


def _leaderboard_columns(rows: list[dict], metric: str) -> list[str]:
    wanted = ["model", "family", f"val_{metric}", f"train_{metric}", "fit_seconds", "predict_1row_us",
              "onnx_bytes", "ensemble_weight", "overfits"]
    present = {k for r in rows for k in r}
    return [c for c in wanted if c in present]


def _leaderboard_rows(rows: list[dict], metric: str) -> list[dict]:
    short = {f"val_{metric}": "val", f"train_{metric}": "train", "fit_seconds": "fit s",
             "predict_1row_us": "1-row µs", "onnx_bytes": "onnx bytes", "ensemble_weight": "weight"}
    cols = _leaderboard_columns(rows, metric)
    return [{short.get(c, c): r.get(c) for c in cols} for r in rows]


def _print_model(model, *, console: Console = out) -> None:
    m = model.manifest
    console.print(f"[bold]{m['name']}:{m.get('version')}[/bold]  task={m['task']}  target={m['target']}  "
                  f"metric={m['metric']}  threshold={m['threshold']:.4f}")
    console.print(f"bundle: {model.path}")
    lb = m["leaderboard"]
    console.print(_rows_table(_leaderboard_rows(lb, m["metric"]), f"Leaderboard (scores: {m['metric']})"))
    console.print(_rows_table([m["metrics"]["validation"]],
                              f"Validation metrics of the ensemble ({m['metrics']['validation_scheme']})"))
    ens = ", ".join(f"{e['model']} x{e['weight']:.2f}" for e in m["ensemble"])
    console.print(f"ensemble: {ens}; ONNX vs native max abs diff {m['parity']['max_abs_diff']:.2e}; "
                  f"1-row predict p50 {m['latency']['predict_1row_us_p50']} µs")
    if "inference" in (m.get("footprint") or {}):
        from tandem.footprint.life import life_lines, life_report

        for line in life_lines(life_report(m["footprint"]))[:3]:
            console.print(f"footprint: {line}", markup=False, highlight=False, soft_wrap=True)
    if m.get("fairness"):
        _print_fairness(m["fairness"], console=console)
    if m.get("quality"):
        _print_findings(m["quality"], console=console, least="warning")
    for w in m.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {w}")
    for n in m.get("notes", []):
        console.print(f"note: {n}")


@app.command()
def train(
    data: Path = typer.Argument(..., help="Training data: CSV/TSV, Parquet, JSON lines or Arrow file."),
    target: str = typer.Option(..., "--target", "-t", help="The column to predict."),
    time_limit: float = typer.Option(60.0, "--time-limit", help="Seconds to spend, all in."),
    metric: str | None = typer.Option(None, help="accuracy, balanced_accuracy, f1, roc_auc, pr_auc, log_loss, "
                                                 "rmse, mae or r2 (default: roc_auc / log_loss / rmse)."),
    name: str | None = typer.Option(None, help="Registry name (default: the data file's stem)."),
    task: str | None = typer.Option(None, help="binary, multiclass or regression (default: inferred)."),
    seed: int = typer.Option(0, help="Seed of every random choice."),
    search: str | None = typer.Option(None, help="'optuna' to spend spare budget tuning the best family."),
    bagging: str = typer.Option("auto", help="auto, yes or no: k-fold bagging of every configuration."),
    split: str | None = typer.Option(None, help="stratified, random, group or time."),
    group: str | None = typer.Option(None, help="Group column for --split group."),
    time_column: str | None = typer.Option(None, help="Time column for --split time."),
    ignore: str | None = typer.Option(None, help="Comma-separated columns to leave out."),
    latency_budget_us: float = typer.Option(
        100.0, "--latency-budget-us", help="One-row latency (p50, one thread) the ensemble may cost, in µs."),
    families: str | None = typer.Option(None, help="Comma-separated learner families to try: lightgbm, linear, mlp, "
                                        "cnn, minilm_linear."),
    text_encoder: str = typer.Option("auto", "--text-encoder", help="Text columns through the all-MiniLM-L6-v2 "
                                     "sentence encoder too: auto (when installed and affordable), minilm or none."),
    encoder_layers: int = typer.Option(4, "--encoder-layers", help="How many of the encoder's 6 layers to use."),
    configs: Path | None = typer.Option(None, "--configs", help="JSON file of configurations to try instead of the "
                                        'built-in portfolio: [{"name", "family", "params"}, ...].'),
    out_dir: Path | None = typer.Option(None, "--out", help="Write the bundle here instead of the registry."),
    strict: bool = typer.Option(False, "--strict", help="Stop before fitting when the quality gate finds an error."),
    sensitive: str | None = typer.Option(None, "--sensitive", help="A column whose groups get fairness figures "
                                         "(accuracy, TPR, FPR, selection rate, disparities) in the bundle."),
    country: str | None = _COUNTRY,
    pue: float | None = typer.Option(None, "--pue", help="The data centre's power usage effectiveness (default 1.0, "
                                     "or $TANDEM_PUE)."),
    max_energy_kwh: float | None = typer.Option(None, "--max-energy-kwh", help="Energy budget: the study stops when "
                                                "it would run out, as at the time limit."),
    no_footprint: bool = typer.Option(False, "--no-footprint", help="Do not meter energy and CO2."),
    signing_key: Path | None = typer.Option(None, "--signing-key", envvar="TANDEM_SIGNING_KEY",
                                            help="Sign the bundle with this Ed25519 private key (PKCS8 PEM, "
                                                 "from `tandem keys generate`)."),
) -> None:
    """Train within the time limit and save the bundle (the quality gate runs first)."""
    _check_ranges(("--time-limit", time_limit, time_limit > 0, "greater than 0 (a positive time limit, in seconds)"),
                  ("--seed", seed, 0 <= seed <= _MAX_SEED, f"from 0 to {_MAX_SEED}"),
                  ("--latency-budget-us", latency_budget_us, latency_budget_us > 0, "greater than 0 µs"),
                  ("--encoder-layers", encoder_layers, 1 <= encoder_layers <= 6, "from 1 to 6 (the encoder's layers)"),
                  ("--pue", pue, pue is None or pue >= 1, "at least 1.0 (1.0: no data-centre overhead)"),
                  ("--max-energy-kwh", max_energy_kwh, max_energy_kwh is None or max_energy_kwh > 0,
                   "greater than 0 kWh"))
    from tandem.api import train as train_model
    from tandem.footprint import MeterSettings
    from tandem.registry.store import tandem_home

    name = name or _default_name(data)
    with _BudgetBar(time_limit) as bar, _doing("training and writing the bundle",
                                               out_dir or tandem_home() / "models" / name):
        model = train_model(str(data), target, time_limit=time_limit, metric=metric,
                            name=name, task=task, seed=seed, search=search, bagging=bagging,
                            split=split, group=group, time_column=time_column,
                            ignore=[c.strip() for c in ignore.split(",")] if ignore else None,
                            families=[f.strip() for f in families.split(",")] if families else None,
                            configs=_read_configs(configs) if configs else None,
                            latency_budget_us=latency_budget_us, path=out_dir, progress=bar.say, strict=strict,
                            sensitive=sensitive, text_encoder=text_encoder, encoder_layers=encoder_layers,
                            country=country, max_energy_kwh=max_energy_kwh,
                            footprint=False if no_footprint else MeterSettings(pue=pue), signing_key=signing_key)
    _print_model(model)


_SEVERITY_STYLE = {"error": "[red]error[/red]", "warning": "[yellow]warning[/yellow]", "info": "note"}


def _print_findings(report: dict, *, console: Console = out, least: str = "info") -> None:
    """One line per finding at least as severe as ``least``, after a one-line summary."""
    from rich.markup import escape

    from tandem.data.quality import SEVERITIES

    shown = SEVERITIES[: SEVERITIES.index(least) + 1]
    c = report["counts"]
    console.print(f"quality gate: {c['error']} error(s), {c['warning']} warning(s), {c['info']} note(s) "
                  f"({report['rows']} rows, {report['columns']} columns, {report['seconds']:.2f} s)")
    for f in report["findings"]:
        if f["severity"] in shown:
            where = f"column '{f['column']}': " if f["column"] else ""
            console.print(f"  {_SEVERITY_STYLE[f['severity']]} {f['check']}: {escape(where + f['message'])}",
                          highlight=False)


@app.command()
def report(
    model: str = typer.Argument(..., help="Registry reference (name, name:3, name@production) or bundle path."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="Where to write the HTML page."),
    require_signed: bool = _REQUIRE_SIGNED,
) -> None:
    """Write the model's report: one self-contained HTML page (data quality, leaderboard, ROC/PR curves,
    confusion matrix, calibration, learning curves, importances, fairness, footprint)."""
    from tandem.api import load
    from tandem.fsutil import write_text_atomic
    from tandem.report.html import render_report

    _require_signed(require_signed)
    m = load(model)
    try:
        write_text_atomic(output, render_report(m.manifest))
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write the report ({exc.strerror or exc})") from None
    err.print(f"wrote the report of {m.name}:{m.version} to {output}", highlight=False)


@app.command()
def drift(
    model: str = typer.Argument(..., help="Registry reference (name, name:3, name@production) or bundle path."),
    data: Path = typer.Argument(..., help="New data to compare with the training data (same columns)."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as one JSON object."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any feature moved."),
    country: str | None = _RUN_COUNTRY,
    require_signed: bool = _REQUIRE_SIGNED,
) -> None:
    """Compare new data with the training profile in the bundle: PSI and KS per feature, new categories,
    missing-rate changes; say which features moved."""
    from tandem.api import load

    _require_signed(require_signed)
    with _OptionalMeter(country) as meter:
        result = load(model).drift(str(data))
    _print_run_footprint(meter)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        rows = [{"feature": f["feature"], "kind": f["kind"], "verdict": f["verdict"], "PSI": f["psi"], "KS": f["ks"],
                 "missing train -> new": f"{f['missing_train'] or 0:.1%} -> {f['missing_new']:.1%}",
                 "new categories": "" if not f["new_categories"] else
                 f"{f['new_categories']['share']:.1%} {', '.join(f['new_categories']['values'][:3])}".strip(),
                 "why": "; ".join(f["why"])} for f in result["features"]]
        out.print(_rows_table(rows, f"Drift of {data} ({result['rows']} rows) against the training data "
                                    f"({result['training_rows']} rows)"))
        out.print(f"moved: {', '.join(result['moved']) or 'none'}" +
                  (f"; watch: {', '.join(result['watch'])}" if result["watch"] else ""), highlight=False)
    if strict and result["moved"]:
        raise typer.Exit(1)


@app.command()
def check(
    data: Path = typer.Argument(..., help="The training data (CSV/TSV, Parquet, JSON lines or Arrow)."),
    target: str = typer.Option(..., "--target", "-t", help="The column to predict."),
    test: Path | None = typer.Option(None, "--test", help="Test data, to look for rows shared with the training data."),
    task: str | None = typer.Option(None, help="binary, multiclass or regression (default: inferred)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any finding is an error."),
    country: str | None = _RUN_COUNTRY,
) -> None:
    """The quality gate: missing values, duplicates, leakage, id-like and constant columns, label conflicts,
    class imbalance, mixed types, high cardinality, outliers."""
    from tandem.api import check as check_data

    with _OptionalMeter(country) as meter:
        report = check_data(str(data), target, test=str(test) if test else None, task=task).to_dict()
    _print_run_footprint(meter)
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        _print_findings(report)
    if strict and report["counts"]["error"]:
        from tandem.data.quality import QualityError

        raise QualityError(f"the quality gate found {report['counts']['error']} error(s) (--strict)")


def _read_configs(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configurations file ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def _default_name(data: Path) -> str:
    import re
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", data.stem).strip("-._") or "model"
    return stem[:64]


@app.command()
def predict(
    model: str = typer.Argument(..., help="Registry reference (name, name:3, name@production) or bundle path."),
    input_path: Path = typer.Argument(..., metavar="INPUT", help="Rows to score (CSV, Parquet, JSON lines, Arrow)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write predictions (.csv or .parquet)."),
    batch_rows: int = typer.Option(65536, help="Rows per chunk: memory stays bounded whatever the input size."),
    escape_formulas: bool = typer.Option(True, "--escape-formulas/--no-escape-formulas",
                                         help="CSV output: put a ' before text that a spreadsheet would run as a "
                                              "formula (starting with = + - @, tab or carriage return)."),
    country: str | None = _RUN_COUNTRY,
    require_signed: bool = _REQUIRE_SIGNED,
) -> None:
    """Score a file in chunks; the output appears only when complete."""
    _check_ranges(("--batch-rows", batch_rows, batch_rows >= 1, "at least 1"))
    from tandem.batch import predict_file
    from tandem.registry import Registry

    _require_signed(require_signed)
    bundle = Registry().resolve(model)
    with _OptionalMeter(country) as meter, _doing("writing the predictions"):
        rows, notes = predict_file(bundle, input_path, output, batch_rows=batch_rows, console=err,
                                   escape_formulas=escape_formulas)
    for n in notes:
        err.print(f"note: {n}")
    err.print(f"wrote {rows} predictions to {output}")
    _print_run_footprint(meter, rows)


class _OptionalMeter:
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


def _print_run_footprint(meter, predictions: int | None = None) -> None:
    if meter is None or meter.result is None:
        return
    r = meter.result.summary()
    per = (f"; {r['energy_kwh'] / predictions * 1e6:.3g} Wh per 1,000 predictions" if predictions else "")
    err.print(f"footprint: {r['energy_kwh'] * 1000:.3g} Wh ({r['energy_kwh_low'] * 1000:.3g} to "
              f"{r['energy_kwh_high'] * 1000:.3g}), {r['co2_kg'] * 1000:.3g} g CO2e, {r['method']}, in "
              f"{r['seconds']:.1f} s; grid {meter.grid.country} {meter.grid.g_per_kwh:g} g/kWh{per}")


@app.command()
def evaluate(
    model: str = typer.Argument(..., help="Registry reference or bundle path."),
    data: Path = typer.Argument(..., help="Labelled data holding the target column."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: metrics and per_class."),
    sensitive: str | None = typer.Option(None, "--sensitive", help="A column of DATA: fairness figures per group."),
    country: str | None = _RUN_COUNTRY,
    require_signed: bool = _REQUIRE_SIGNED,
) -> None:
    """Metrics of a model on labelled data."""
    from tandem.api import load

    _require_signed(require_signed)
    m = load(model)
    with _OptionalMeter(country) as meter:
        result = m.evaluate(str(data), sensitive=sensitive)
    if meter is not None:
        result["footprint"] = meter.result.to_dict()
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    _print_run_footprint(meter, result["rows"])
    out.print(_rows_table([result["metrics"]], f"{m.name}:{m.version} on {data} ({result['rows']} rows)"))
    if "per_class" in result:
        out.print(_rows_table([{"label": k, **v} for k, v in result["per_class"].items()], "Per class"))
    if "fairness" in result:
        _print_fairness(result["fairness"])


def _print_fairness(f: dict, *, console: Console = out) -> None:
    console.print(_rows_table([{f["column"]: g, **m} for g, m in f["groups"].items()],
                              f"Fairness by '{f['column']}' on {f['on']}"))
    console.print("disparity: " + ", ".join(f"{k} {_fmt(v)}" for k, v in f["disparity"].items()), highlight=False)


@models_app.command("list")
def models_list(name: str | None = typer.Argument(None, help="Only this model name.")) -> None:
    """Every version in the registry."""
    from tandem.registry import Registry

    records = Registry().list(name)
    rows = [{"model": r.name, "version": r.version, "aliases": ",".join(r.aliases), "created": r.created_at,
             "task": r.summary.get("task"), "metric": r.summary.get("metric"), "score": r.summary.get("score")}
            for r in records]
    if not rows:
        out.print("no models yet: train one with `tandem train DATA --target COLUMN`")
        return
    out.print(_rows_table(rows, "Models"))


@models_app.command("show")
def models_show(ref: str = typer.Argument(..., help="name, name:VERSION or name@ALIAS."),
                require_signed: bool = _REQUIRE_SIGNED) -> None:
    """A model's summary and leaderboard (the bundle is verified)."""
    from tandem.api import load

    _require_signed(require_signed)
    _print_model(load(ref))


@models_app.command("alias")
def models_alias(ref: str = typer.Argument(..., help="NAME:VERSION"), alias: str = typer.Argument(...)) -> None:
    """Point ALIAS (production, staging, ...) at NAME:VERSION."""
    from tandem.registry import Registry, parse_ref

    name, version, _ = parse_ref(ref)
    if version is None:
        raise ConfigError(f"'{ref}': expected NAME:VERSION, e.g. {name}:1")
    record = Registry().set_alias(name, version, alias)
    out.print(f"{record.name}@{alias} -> version {record.version}")


@models_app.command("delete")
def models_delete(ref: str = typer.Argument(..., help="name:VERSION, or name for every version.")) -> None:
    """Delete a version (or every version of a name) and its bundle."""
    from tandem.registry import Registry

    for r in Registry().delete(ref):
        out.print(f"deleted {r.name}:{r.version}")


@app.command()
def serve(
    models: list[str] = typer.Argument(..., help="Models to serve: name, name:VERSION, name@ALIAS or bundle path."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    workers: int = typer.Option(1, help="Worker processes."),
    max_body_bytes: int = typer.Option(8 * 1024 * 1024, help="Largest request body accepted."),
    admin_token: str | None = typer.Option(None, envvar="TANDEM_ADMIN_TOKEN",
                                           help="Bearer token for /admin endpoints (off without one)."),
    api_key: str | None = typer.Option(None, envvar="TANDEM_API_KEY",
                                       help="Bearer token required on prediction endpoints."),
    max_batch_rows: int = typer.Option(64, help="Micro-batching: at most this many rows per model run (0: off). "
                                                "Requests that arrive together share a run; none waits."),
    queue_delay_us: float = typer.Option(0.0, help="How long a batch may wait for more rows while others are "
                                                   "in flight (µs)."),
    max_queue_rows: int = typer.Option(4096, help="Rows a model may have queued before answering 429."),
    request_timeout: float = typer.Option(10.0, help="Seconds a request may wait before 503."),
    watch_interval: float = typer.Option(2.0, help="Seconds between checks of the registry: a served alias "
                                                   "(or bare name) that moved is reloaded (0: off)."),
    country: str | None = typer.Option(None, "--country", help="Where the server runs (ISO 3166-1 alpha-3), for "
                                       "the CO2 of its energy per 1,000 predictions (default $TANDEM_COUNTRY)."),
    no_footprint: bool = typer.Option(False, "--no-footprint", help="Do not meter the energy of predictions."),
    require_signed: bool = _REQUIRE_SIGNED,
    max_header_bytes: int = typer.Option(16 * 1024, help="Largest header block (names and values) a request "
                                         "may send (431 beyond)."),
    max_headers: int = typer.Option(100, help="Most header lines a request may send (431 beyond)."),
    header_timeout: float = typer.Option(10.0, help="Seconds a client has to send a request's headers, from its "
                                         "first byte (408 and close beyond)."),
    body_timeout: float = typer.Option(30.0, help="Seconds a client has to send a request's body, after its "
                                       "headers (408 and close beyond)."),
    keep_alive: float = typer.Option(5.0, help="Seconds an idle connection stays open between requests."),
    max_connections: int = typer.Option(1024, help="Connections a worker holds (503 and close beyond; lowered "
                                        "to fit the open-file limit)."),
    max_pipeline: int = typer.Option(32, help="Pipelined requests read ahead of their answers (reading pauses "
                                     "beyond)."),
) -> None:
    """Serve models over HTTP: REST JSON and the KServe v2 protocol."""
    import os

    from tandem.bundle.format import read_manifest
    from tandem.registry import Registry

    _check_ranges(("--port", port, 1 <= port <= 65535, "a port from 1 to 65535"),
                  ("--max-body-bytes", max_body_bytes, max_body_bytes >= 1, "at least 1 byte"),
                  ("--max-batch-rows", max_batch_rows, 0 <= max_batch_rows <= 1_000_000, "0 (off) to 1000000 rows"),
                  ("--queue-delay-us", queue_delay_us, 0 <= queue_delay_us <= 1e7, "0 to 10000000 µs"),
                  ("--max-queue-rows", max_queue_rows, max_queue_rows >= 1, "at least 1 row"),
                  ("--request-timeout", request_timeout, 0 < request_timeout <= 86400,
                   "more than 0 and at most 86400 seconds"))
    try:
        from tandem.serve.http import HTTPLimits, raise_open_file_limit
    except ModuleNotFoundError as exc:
        raise ConfigError(f"serving needs the server's packages ({exc.name} is missing): "
                          "pip install 'tandem[serve]'") from None
    limits = HTTPLimits(max_header_bytes=max_header_bytes, max_headers=max_headers,
                        header_timeout_s=header_timeout, body_timeout_s=body_timeout, keep_alive_s=keep_alive,
                        max_connections=max_connections, max_pipeline=max_pipeline).check()
    _require_signed(require_signed)
    registry = Registry()
    names: dict[str, str] = {}
    for ref in models:
        name = read_manifest(registry.resolve(ref))["name"]
        if name in names:
            raise ConfigError(f"'{ref}' and '{names[name]}' are both named '{name}': serve one version per name")
        names[name] = ref
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if watch_interval < 0:
        raise ConfigError(f"--watch-interval must be 0 (off) or more seconds, got {watch_interval:g}")
    import shutil
    import tempfile

    import uvicorn

    if country is not None:
        from tandem.footprint import check_country

        os.environ["TANDEM_COUNTRY"] = check_country(country)
    os.environ.update(limits.to_env())
    raise_open_file_limit()  # (inherited by the workers) a connection is a file
    os.environ["TANDEM_SERVE_FOOTPRINT"] = "0" if no_footprint else "1"
    os.environ["TANDEM_SERVE_MODELS"] = ",".join(models)
    os.environ["TANDEM_SERVE_MAX_BODY"] = str(max_body_bytes)
    for var, value in (("TANDEM_ADMIN_TOKEN", admin_token), ("TANDEM_API_KEY", api_key)):
        if value:
            os.environ[var] = value
    os.environ.update(TANDEM_SERVE_MAX_BATCH_ROWS=str(max_batch_rows), TANDEM_SERVE_QUEUE_DELAY_US=str(queue_delay_us),
                      TANDEM_SERVE_MAX_QUEUE_ROWS=str(max_queue_rows), TANDEM_SERVE_TIMEOUT_S=str(request_timeout),
                      TANDEM_SERVE_WATCH_S=str(watch_interval))
    # several workers share their metrics through a folder that lives as long as this server
    metrics_dir = tempfile.mkdtemp(prefix="tandem-serve-metrics-") if workers > 1 else None
    if metrics_dir:
        os.environ["TANDEM_SERVE_METRICS_DIR"] = metrics_dir
    err.print(f"serving {', '.join(names)} on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''})")
    try:
        # uvicorn runs the server; tandem's own HTTP protocol replaces uvicorn's per-request ASGI machinery
        uvicorn.run("tandem.serve.app:create_app", factory=True, host=host, port=port, workers=workers,
                    http="tandem.serve.http:TandemHTTP", log_level="warning", access_log=False)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


@app.command()
def quickstart(time_limit: float = typer.Option(20.0, "--time-limit", help="Training budget in seconds."),
               country: str | None = _COUNTRY) -> None:
    """Train on scikit-learn's breast-cancer data, reload and verify the bundle, score held-out rows."""
    _check_ranges(("--time-limit", time_limit, time_limit > 0, "greater than 0 (a positive time limit, in seconds)"))
    from tandem.quickstart import run_quickstart

    run_quickstart(time_limit=time_limit, console=out, progress_console=err, bar=_BudgetBar, country=country)


@app.command()
def footprint(
    model: str = typer.Argument(..., help="Registry reference (name, name:3, name@production) or bundle path."),
    predictions_per_day: float | None = typer.Option(None, "--predictions-per-day", help="Serving volume, for a "
                                                     "year's CO2 and the days to break-even."),
    grid_intensity: float | None = typer.Option(None, "--grid-intensity", help="g CO2e per kWh where the model "
                                                "serves (default: the country's, else the training grid's)."),
    country: str | None = typer.Option(None, "--country", help="Where the model serves (ISO 3166-1 alpha-3)."),
    hourly_intensity: Path | None = typer.Option(None, "--hourly-intensity", help="CSV of timestamp,carbon_intensity "
                                                 "(g/kWh) by the hour: when a training run of this size would "
                                                 "have emitted least."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    require_signed: bool = _REQUIRE_SIGNED,
) -> None:
    """The model's life: training's cost, the cost per 1,000 predictions, the break-even, a year of serving."""
    _check_ranges(("--predictions-per-day", predictions_per_day,
                   predictions_per_day is None or predictions_per_day >= 0, "at least 0"),
                  ("--grid-intensity", grid_intensity, grid_intensity is None or grid_intensity >= 0,
                   "at least 0 g CO2e/kWh"))
    from tandem.bundle.format import read_manifest
    from tandem.footprint import best_start, read_hourly_intensity, resolve_grid
    from tandem.footprint.life import life_lines, life_report
    from tandem.registry import Registry

    _require_signed(require_signed)
    manifest = read_manifest(Registry().resolve(model))
    grid = resolve_grid(country, grid_intensity) if (country or grid_intensity is not None) else None
    report = life_report(manifest.get("footprint") or {}, predictions_per_day=predictions_per_day, grid=grid)
    if hourly_intensity is not None:
        t = report["training"]
        report["carbon_aware"] = best_start(read_hourly_intensity(hourly_intensity), t["seconds"], t["energy_kwh"])
    report = {"model": f"{manifest['name']}:{manifest.get('version')}", **report}
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    out.print(f"[bold]{report['model']}[/bold]: footprint over its life")
    for line in life_lines(report):
        out.print(line, markup=False, highlight=False, soft_wrap=True)


@keys_app.command("generate")
def keys_generate(folder: Path = typer.Argument(..., help="Where to write the key pair (created if missing).")) -> None:
    """Make an Ed25519 key pair for signed bundles: tandem-signing.pem (private, mode 0600: keep it where you train)
    and tandem-signing.pub.pem (public: list it in $TANDEM_TRUSTED_KEYS where you serve)."""
    from tandem.bundle.signing import generate_keys

    private, public, key_id = generate_keys(folder)
    out.print(f"key {key_id}: private key {private} (train with --signing-key {private} or "
              f"TANDEM_SIGNING_KEY), public key {public} (serve with TANDEM_TRUSTED_KEYS={public})",
              markup=False, highlight=False, soft_wrap=True)


_MAX_SEED = 2**31 - 1  # every learner takes it (LightGBM's C int, scikit-learn's 32-bit random_state)


def _check_ranges(*checks: tuple[str, float | int | None, bool, str]) -> None:
    """(option, value, whether it is fine, the range in words): one line naming the first option out of range.
    NaN and infinities are out of every range."""
    import math

    for option, value, fine, wanted in checks:
        if value is not None and not (fine and math.isfinite(value)):
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            raise ConfigError(f"{option} must be {wanted}, got {shown}")


@contextlib.contextmanager
def _doing(what: str, path: Path | None = None) -> Iterator[None]:
    """Label an OSError raised in the block with what the command was doing and, when the error names no
    path a user knows (none, or a temp file), the path the command was writing."""
    try:
        yield
    except OSError as exc:
        if not hasattr(exc, "tandem_doing"):  # the innermost label is the most precise
            exc.tandem_doing = (what, path)  # read by main()
        raise


def _os_error_line(exc: OSError) -> str:
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


def main() -> None:
    """Entry point: one line on stderr and a non-zero exit for a user's mistake."""
    try:
        status = app(standalone_mode=False)  # click hands back the status of a typer.Exit here
        if isinstance(status, int) and status:
            sys.exit(status)
    except TandemError as exc:
        err.print(f"tandem: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("tandem: aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:
        err.print(f"tandem: error: {exc.format_message()}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("tandem: interrupted")
        sys.exit(130)
    except OSError as exc:  # the disk or the system said no (full, read-only, ...): what, where, no traceback
        err.print(f"tandem: error: {_os_error_line(exc)}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
