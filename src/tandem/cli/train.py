"""``tandem train``, ``report``, ``drift``, ``check`` and ``quickstart``: training, and what is known of the data
and the model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from tandem.cli.common import (
    COUNTRY,
    MAX_SEED,
    REQUIRE_SIGNED,
    RUN_COUNTRY,
    BudgetBar,
    OptionalMeter,
    check_ranges,
    doing,
    err,
    out,
    print_run_footprint,
    set_require_signed,
)
from tandem.console import print_findings, print_model, rows_table
from tandem.errors import ConfigError

# the options train and check share (the task, and an interaction table's columns)
TASK = typer.Option(None, help="binary, multiclass or regression (default: inferred), or recommend (an "
                               "interaction table: --user, --item).")
USER = typer.Option(None, "--user", help="--task recommend: the user id column.")
ITEM = typer.Option(None, "--item", help="--task recommend: the item id column.")
RATING = typer.Option(None, "--rating", help="--task recommend: a rating or weight column.")
MIN_RATING = typer.Option(None, "--min-rating", help="--task recommend: only interactions rated at least this "
                                                     "count.")


def train(
    data: Path = typer.Argument(..., help="Training data: CSV/TSV, Parquet, JSON lines or Arrow file."),
    target: str | None = typer.Option(None, "--target", "-t", help="The column to predict (not for --task "
                                                                    "recommend)."),
    time_limit: float = typer.Option(60.0, "--time-limit", help="Seconds to spend, all in."),
    metric: str | None = typer.Option(None, help="accuracy, balanced_accuracy, f1, roc_auc, pr_auc, log_loss, "
                                                 "rmse, mae or r2 (default: roc_auc / log_loss / rmse)."),
    name: str | None = typer.Option(None, help="Registry name (default: the data file's stem)."),
    task: str | None = TASK,
    seed: int = typer.Option(0, help="Seed of every random choice."),
    user: str | None = USER,
    item: str | None = ITEM,
    rating: str | None = RATING,
    min_rating: float | None = MIN_RATING,
    users: Path | None = typer.Option(None, "--users", help="--task recommend: a users table keyed by the user "
                                      "column (features for the two-tower family and for new users)."),
    items: Path | None = typer.Option(None, "--items", help="--task recommend: an items table keyed by the item "
                                      "column."),
    k: int = typer.Option(10, "--k", help="--task recommend: the k of NDCG@k the study optimises (and the "
                                          "default answer's length)."),
    search: str | None = typer.Option(None, help="'optuna' to spend spare budget tuning the best family."),
    optuna_storage: str | None = typer.Option(None, "--optuna-storage", envvar="TANDEM_OPTUNA_STORAGE",
                                              help="--search optuna: an Optuna RDB URL (postgresql://...) whose "
                                                   "study several machines share."),
    devices: int = typer.Option(1, "--devices", help="Train the neural learners (mlp, cnn, efficientnet_finetune) "
                                "under torchrun DDP on this many devices: GPUs (NCCL), else CPU processes (gloo)."),
    cluster: str | None = typer.Option(None, "--cluster", help="Run the folds' fits as Ray tasks: local (start "
                                       "Ray here), auto (the cluster this machine joined) or HOST:PORT / "
                                       "ray://HOST:PORT."),
    optuna_study: str | None = typer.Option(None, "--optuna-study", help="--search optuna: the shared study's "
                                            "name (default tandem-NAME)."),
    bagging: str = typer.Option("auto", help="auto, yes or no: k-fold bagging of every configuration."),
    split: str | None = typer.Option(None, help="stratified, random, group or time; recommendation: time "
                                                "(each user's latest), global_time or random."),
    group: str | None = typer.Option(None, help="Group column for --split group."),
    time_column: str | None = typer.Option(None, help="Time column for --split time (and for recommendation: "
                                                      "the time of each interaction)."),
    ignore: str | None = typer.Option(None, help="Comma-separated columns to leave out."),
    latency_budget_us: float = typer.Option(
        100.0, "--latency-budget-us", help="One-row latency (p50, one thread) the ensemble may cost, in µs."),
    max_bytes: int | None = typer.Option(
        None, "--max-bytes", help="Graph bytes the ensemble's members may take together (the preprocessing "
                                  "comes on top)."),
    energy_per_1k_budget: float | None = typer.Option(
        None, "--energy-per-1k-budget", help="Joules 1,000 one-row predictions of the ensemble may cost, at this "
                                             "machine's rate as the study measures it (needs the meter)."),
    families: str | None = typer.Option(None, help="Comma-separated learner families to try: lightgbm, linear, mlp, "
                                        "cnn, minilm_linear, minilm_finetune, efficientnet_finetune, "
                                        "efficientnet_linear."),
    text_encoder: str = typer.Option("auto", "--text-encoder", help="Text columns through the all-MiniLM-L6-v2 "
                                     "sentence encoder too: auto (when installed and affordable), minilm or none."),
    encoder_layers: int = typer.Option(4, "--encoder-layers", help="How many of the encoder's 6 layers to use."),
    configs: Path | None = typer.Option(None, "--configs", help="JSON file of configurations to try instead of the "
                                        'built-in portfolio: [{"name", "family", "params"}, ...].'),
    out_dir: Path | None = typer.Option(None, "--out", help="Write the bundle here instead of the registry."),
    strict: bool = typer.Option(False, "--strict", help="Stop before fitting when the quality gate finds an error."),
    sensitive: str | None = typer.Option(None, "--sensitive", help="A column whose groups get fairness figures "
                                         "(accuracy, TPR, FPR, selection rate, disparities) in the bundle."),
    country: str | None = COUNTRY,
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
    check_ranges(("--time-limit", time_limit, time_limit > 0, "greater than 0 (a positive time limit, in seconds)"),
                 ("--seed", seed, 0 <= seed <= MAX_SEED, f"from 0 to {MAX_SEED}"),
                 ("--latency-budget-us", latency_budget_us, latency_budget_us > 0, "greater than 0 µs"),
                 ("--max-bytes", max_bytes, max_bytes is None or max_bytes >= 1, "at least 1 byte"),
                 ("--energy-per-1k-budget", energy_per_1k_budget, energy_per_1k_budget is None or
                  energy_per_1k_budget > 0, "greater than 0 J"),
                 ("--k", k, 1 <= k <= 1000, "from 1 to 1000"),
                 ("--devices", devices, 1 <= devices <= 1024, "from 1 to 1024"),
                 ("--encoder-layers", encoder_layers, 1 <= encoder_layers <= 6, "from 1 to 6 (the encoder's layers)"),
                 ("--pue", pue, pue is None or pue >= 1, "at least 1.0 (1.0: no data-centre overhead)"),
                 ("--max-energy-kwh", max_energy_kwh, max_energy_kwh is None or max_energy_kwh > 0,
                  "greater than 0 kWh"))
    from tandem.api import train as train_model
    from tandem.footprint import MeterSettings
    from tandem.registry.store import tandem_home

    if task != "recommend" and not target:
        raise ConfigError("Missing option '--target': the column to predict (or --task recommend with --user and "
                          "--item)")
    if task != "recommend" and (user or item or rating or min_rating is not None or users or items):
        raise ConfigError("--user, --item, --rating, --min-rating, --users and --items are for --task recommend")

    name = name or _default_name(data)
    with BudgetBar(time_limit) as bar, doing("training and writing the bundle",
                                             out_dir or tandem_home() / "models" / name):
        model = train_model(str(data), target, time_limit=time_limit, metric=metric,
                            name=name, task=task, seed=seed, search=search, bagging=bagging,
                            split=split, group=group, time_column=time_column,
                            ignore=[c.strip() for c in ignore.split(",")] if ignore else None,
                            families=[f.strip() for f in families.split(",")] if families else None,
                            configs=_read_configs(configs) if configs else None,
                            latency_budget_us=latency_budget_us, max_bytes=max_bytes,
                            energy_per_1k_budget_j=energy_per_1k_budget, path=out_dir, progress=bar.say,
                            strict=strict,
                            sensitive=sensitive, text_encoder=text_encoder, encoder_layers=encoder_layers,
                            country=country, max_energy_kwh=max_energy_kwh,
                            footprint=False if no_footprint else MeterSettings(pue=pue), signing_key=signing_key,
                            user=user, item=item, rating=rating, min_rating=min_rating, k=k,
                            optuna_storage=optuna_storage, optuna_study=optuna_study, devices=devices,
                            cluster=cluster,
                            user_features=str(users) if users else None, item_features=str(items) if items else None)
    print_model(model)


def report(
    model: str = typer.Argument(..., help="Registry reference (name, name:3, name@production) or bundle path."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="Where to write the HTML page."),
    require_signed: bool = REQUIRE_SIGNED,
) -> None:
    """Write the model's report: one self-contained HTML page (data quality, leaderboard, ROC/PR curves,
    confusion matrix, calibration, learning curves, importances, fairness, footprint)."""
    from tandem.api import load
    from tandem.fsutil import write_text_atomic
    from tandem.report.html import render_report

    set_require_signed(require_signed)
    m = load(model)
    try:
        write_text_atomic(output, render_report(m.manifest))
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write the report ({exc.strerror or exc})") from None
    err.print(f"wrote the report of {m.name}:{m.version} to {output}", highlight=False)


def drift(
    model: str = typer.Argument(..., help="Registry reference (name, name:3, name@production) or bundle path."),
    data: Path = typer.Argument(..., help="New data to compare with the training data (same columns)."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as one JSON object."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any feature moved."),
    country: str | None = RUN_COUNTRY,
    require_signed: bool = REQUIRE_SIGNED,
) -> None:
    """Compare new data with the training profile in the bundle: PSI and KS per feature, new categories,
    missing-rate changes; say which features moved."""
    from tandem.api import load

    set_require_signed(require_signed)
    with OptionalMeter(country) as meter:
        result = load(model).drift(str(data))
    print_run_footprint(meter)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        rows = [{"feature": f["feature"], "kind": f["kind"], "verdict": f["verdict"], "PSI": f["psi"], "KS": f["ks"],
                 "missing train -> new": f"{f['missing_train'] or 0:.1%} -> {f['missing_new']:.1%}",
                 "new categories": "" if not f["new_categories"] else
                 f"{f['new_categories']['share']:.1%} {', '.join(f['new_categories']['values'][:3])}".strip(),
                 "why": "; ".join(f["why"])} for f in result["features"]]
        out.print(rows_table(rows, f"Drift of {data} ({result['rows']} rows) against the training data "
                                   f"({result['training_rows']} rows)"))
        out.print(f"moved: {', '.join(result['moved']) or 'none'}" +
                  (f"; watch: {', '.join(result['watch'])}" if result["watch"] else ""), highlight=False)
    if strict and result["moved"]:
        raise typer.Exit(1)


def check(
    data: Path = typer.Argument(..., help="The training data (CSV/TSV, Parquet, JSON lines or Arrow)."),
    target: str | None = typer.Option(None, "--target", "-t", help="The column to predict (not for --task "
                                                                    "recommend)."),
    test: Path | None = typer.Option(None, "--test", help="Test data, to look for rows shared with the training data."),
    task: str | None = TASK,
    user: str | None = USER,
    item: str | None = ITEM,
    rating: str | None = RATING,
    min_rating: float | None = MIN_RATING,
    time_column: str | None = typer.Option(None, "--time-column", help="--task recommend: the time of each "
                                           "interaction."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any finding is an error."),
    country: str | None = RUN_COUNTRY,
) -> None:
    """The quality gate: missing values, duplicates, leakage, id-like and constant columns, label conflicts,
    class imbalance, mixed types, high cardinality, outliers."""
    from tandem.api import check as check_data

    if task != "recommend" and not target:
        raise ConfigError("Missing option '--target': the column to predict (or --task recommend with --user and "
                          "--item)")
    with OptionalMeter(country) as meter:
        report = check_data(str(data), target, test=str(test) if test else None, task=task, user=user, item=item,
                            rating=rating, min_rating=min_rating, time_column=time_column).to_dict()
    print_run_footprint(meter)
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        print_findings(report)
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


def quickstart(time_limit: float = typer.Option(20.0, "--time-limit", help="Training budget in seconds."),
               country: str | None = COUNTRY) -> None:
    """Train on scikit-learn's breast-cancer data, reload and verify the bundle, score held-out rows."""
    check_ranges(("--time-limit", time_limit, time_limit > 0, "greater than 0 (a positive time limit, in seconds)"))
    from tandem.quickstart import run_quickstart

    run_quickstart(time_limit=time_limit, console=out, progress_console=err, bar=BudgetBar, country=country)
