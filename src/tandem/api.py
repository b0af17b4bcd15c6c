"""The Python front door: ``tandem.train``, ``tandem.load`` and the ``Model`` they return."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tandem.bundle.files import PROFILE_FILE
from tandem.bundle.inputs import EncodedInputs
from tandem.errors import ConfigError, DataError, need
from tandem.footprint import Meter, MeterSettings
from tandem.inference.predictor import Predictor
from tandem.registry import Registry, check_name


class Model:
    """A trained model: a verified bundle plus its ONNX Runtime predictor.

    ``require_signed`` (default ``$TANDEM_REQUIRE_SIGNED``) refuses a bundle not signed by a trusted key.
    """

    def __init__(self, path: str | Path, *, require_signed: bool | None = None):
        self.predictor = Predictor(path, require_signed=require_signed)
        self.path = self.predictor.path
        self.manifest = self.predictor.manifest

    name = property(lambda self: self.manifest["name"], doc="Registry name.")
    version = property(lambda self: self.manifest.get("version"), doc="Registry version (None outside one).")
    task = property(lambda self: self.manifest["task"], doc="binary, multiclass or regression.")
    target = property(lambda self: self.manifest["target"], doc="The target column.")
    metric = property(lambda self: self.manifest["metric"], doc="The metric the study optimised.")
    threshold = property(lambda self: self.manifest["threshold"], doc="Decision threshold on P(positive).")

    @property
    def labels(self) -> list:
        """Class labels in the column order of :meth:`predict_proba`."""
        return list(self.predictor.typed_labels) if self.predictor.labels else []

    def predict(self, data: object, *, explain: bool = False) -> np.ndarray | dict:
        """Labels (classification) or values (regression) for every row of ``data``.

        With ``explain=True``, a dict: ``predictions``, ``output`` (what is explained: P(positive class) or
        the prediction), ``base`` (its value at the training data's average), ``columns`` and
        ``contributions`` [rows, columns], with base + a row's contributions = that row's output.
        """
        p = self.predictor
        enc = self._encode(data)
        out = p.decode(p.run(enc))
        return {"predictions": out, **p.explain(enc)} if explain else out

    def predict_proba(self, data: object) -> np.ndarray:
        """Class probabilities, one column per label of :attr:`labels`."""
        if self.task == "regression":
            raise DataError("predict_proba is for classification; this model does regression")
        return self.predictor.run(self._encode(data))["probabilities"]

    def _encode(self, data: object) -> EncodedInputs:
        """What the Predictor takes (rows, columns, frames), and files, which the front door reads."""
        if not isinstance(data, (str, os.PathLike)):
            return self.predictor.encode(data)
        from tandem.data.readers import read_table

        table = read_table(data, what="prediction input")
        return self.predictor.encoder.encode_table(table, what=describe_source(data, "input"))

    def recommend(self, user: object, k: int = 10, *, exclude_seen: bool = True) -> dict | list[dict]:
        """The top ``k`` items for ``user`` (one id, or a list of ids for a list of answers); see
        :meth:`tandem.inference.predictor.Predictor.recommend`."""
        return self.predictor.recommend(user, k, exclude_seen=exclude_seen)

    def leaderboard(self) -> list[dict]:
        """Every model the study tried: validation score, fit time, 1-row predict time, size."""
        return [dict(r) for r in self.manifest["leaderboard"]]

    def drift(self, data: object) -> dict:
        """How ``data`` differs from the training data, feature by feature (see tandem.inference.drift)."""
        import json

        from tandem.data.readers import read_table
        from tandem.inference.drift import compare

        p = self.predictor
        profile = json.loads((self.path / PROFILE_FILE).read_text(encoding="utf-8"))
        if p.recommendations is not None:
            return self._interaction_drift(profile, read_table(data, what="new data"), describe_source(data,
                                                                                                     "new data"))
        enc = p.encoder.encode_table(read_table(data, what="new data"), what=describe_source(data, "new data"))
        known = {c.name: c.categories for c in p.encoder.cat_columns}
        return compare(profile, enc, p.encoder.num_feature_names, p.encoder.cat_feature_names, known,
                       p.encoder.text_feature_names)

    def _interaction_drift(self, profile: dict, table: object, what: str) -> dict:
        """A recommender's drift: new interactions (a user column, and the item column when present)."""
        import json

        from tandem.bundle.recommend import IDS_FILE
        from tandem.data.infer import check_column
        from tandem.inference.drift import compare_interactions
        from tandem.schema import categorical_strings

        if profile.get("kind") != "interactions" or "columns" not in profile:
            from tandem.errors import BundleError

            raise BundleError(f"bundle '{self.path}': its profile.json holds no interaction profile (an earlier "
                              "tandem wrote it); train the recommender again to check its drift")
        info = self.manifest["recommend"]
        ids = json.loads((self.path / IDS_FILE).read_text(encoding="utf-8"))
        users = categorical_strings(check_column(table, info["user"], "user column", what=what))
        items = (categorical_strings(table.column(info["item"])) if info["item"] in table.column_names else None)
        return compare_interactions(profile, users, items, set(ids["user_ids"]), set(ids["item_ids"]))

    def evaluate(self, data: object, *, sensitive: str | None = None) -> dict:
        """Metrics on labelled ``data`` (which must hold the target column), and per-class figures;
        with ``sensitive`` (a column of ``data``), fairness figures per group of that column."""
        import pyarrow.compute as pc

        from tandem.data.infer import check_column
        from tandem.data.readers import read_table
        from tandem.study import metrics as M
        from tandem.study.fairness import fairness_report

        table = read_table(data, what="evaluation data")
        what = describe_source(data, "evaluation data")
        if self.target not in table.column_names:
            raise DataError(f"{what} has no target column '{self.target}'")
        col = table.column(self.target)
        keep = pc.is_valid(col)
        table = table.filter(keep)
        col = table.column(self.target)
        if table.num_rows == 0:
            raise DataError(f"{what} has no rows with a value in target column '{self.target}'")
        groups = check_column(table, sensitive, "sensitive column", what=what) if sensitive else None
        out = self.predictor.run(self.predictor.encoder.encode_table(table, what=what))

        def fairness(y: np.ndarray, pred: np.ndarray) -> dict:
            if groups is None:
                return {}
            n_classes = len(self.predictor.labels or []) or 1
            return {"fairness": fairness_report(self.task, y, pred, groups, sensitive, self.threshold, n_classes,
                                                on=f"{what} ({len(y)} rows)")}

        y = self.predictor.target_values(col, what)
        if self.task == "regression":
            return {"metrics": M.all_metrics("regression", y, out["prediction"]), "rows": int(len(y)),
                    **fairness(y, out["prediction"])}
        proba = out["probabilities"]
        return {"metrics": M.all_metrics(self.task, y, proba, threshold=self.threshold),
                "per_class": M.per_class(y, proba, self.predictor.labels, threshold=self.threshold),
                "rows": int(len(y)), **fairness(y, proba)}

    def __repr__(self) -> str:
        return f"Model({self.name}:{self.version}, task={self.task}, path={str(self.path)!r})"


def train(data: object, target: str | None = None, *, time_limit: float = 60.0, metric: str | None = None,
          name: str | None = None, task: str | None = None, seed: int = 0, search: str | None = None,
          bagging: str = "auto", split: str | None = None, group: str | None = None,
          time_column: str | None = None, ignore: list[str] | None = None, families: list[str] | None = None,
          latency_budget_us: float = 100.0, max_bytes: int | None = None,
          energy_per_1k_budget_j: float | None = None, configs: list[dict] | None = None,
          path: str | Path | None = None, home: str | Path | None = None, progress: Callable[[str], None] | None = None,
          strict: bool = False, sensitive: str | None = None, text_encoder: str = "auto",
          encoder_layers: int = 4, country: str | None = None, max_energy_kwh: float | None = None,
          footprint: bool | MeterSettings = True, signing_key: str | Path | None = None,
          user: str | None = None, item: str | None = None, rating: str | None = None,
          min_rating: float | None = None, k: int = 10, user_features: object = None,
          item_features: object = None, optuna_storage: str | None = None, optuna_study: str | None = None,
          devices: int = 1, cluster: str | None = None) -> Model:
    """Train within ``time_limit`` seconds on ``data`` (file path or frame) and return the saved model.

    ``task="recommend"`` learns recommendations from an interaction table instead: ``user`` and ``item`` name
    its id columns, ``rating`` an optional rating or weight column (``min_rating``: only interactions rated at
    least that count), ``time_column`` the time of each interaction (the split holds out each user's latest);
    the study optimises NDCG@``k`` and the model answers :meth:`Model.recommend` (``target`` is not used).
    ``user_features`` / ``item_features`` (a file or frame keyed by the user / item column) add the two-tower
    family, and answer the users table's users who had no interaction from their features.
    ``optuna_storage`` (default ``$TANDEM_OPTUNA_STORAGE``; an Optuna RDB URL such as ``postgresql://...``) with
    ``search="optuna"`` puts the search's trials in study ``optuna_study`` (default ``tandem-<name>``) there, so
    studies on several machines share one Optuna study. ``devices`` > 1 trains the neural learners (MLP, CNN,
    the fine-tuned image backbone) under torchrun DDP, one process per device: GPUs with NCCL, else CPU
    processes with gloo. ``cluster`` ("local", "auto", "HOST:PORT" or "ray://HOST:PORT") runs the folds' fits as
    Ray tasks on that cluster (see tandem.study.cluster); without it Ray is not imported.

    The bundle goes into the registry under ``name`` (default ``model``) as its next version, or
    to the directory ``path`` when given. ``latency_budget_us`` caps the one-row latency the
    ensemble may add up to (it never exceeds twice its best member's either); ``max_bytes`` caps the graph bytes
    of its members together (the preprocessing's nodes come on top); ``energy_per_1k_budget_j`` caps the joules of
    1,000 one-row predictions, at the joules per CPU second the study's meter measures. ``configs`` replaces
    the built-in portfolio: a list of ``{"name", "family", "params"}`` tried in order. The quality
    gate (:func:`check`) runs first; its report is in the manifest, and ``strict`` stops on an error.
    ``sensitive`` names a column whose groups get fairness figures (on the validation rows) in the manifest.
    ``text_encoder`` ("auto", "minilm" or "none") says whether text columns also go through the
    all-MiniLM-L6-v2 sentence encoder (its first ``encoder_layers`` layers) for a transfer-learning head.
    The whole call is metered (:mod:`tandem.footprint`): the manifest's footprint ledger gives its energy
    and CO2 at the grid of ``country`` (ISO 3166-1 alpha-3; else $TANDEM_COUNTRY, else the world average),
    per phase, trial and learner. ``max_energy_kwh`` stops the study like a time limit does. ``footprint``
    takes :class:`tandem.footprint.MeterSettings` (PUE, forced powers) or False for no meter.
    ``signing_key`` (a PKCS8 PEM Ed25519 private key file; default ``$TANDEM_SIGNING_KEY``) signs the bundle's
    manifest (see :mod:`tandem.bundle.signing`); the key is read before training starts.
    """
    from tandem.bundle.signing import load_signing_key, signing_key_from_env, use_signing_key
    from tandem.data.infer import check_target
    from tandem.data.readers import read_table

    started = time.monotonic()
    if task == "recommend":
        unused = {"metric": metric, "search": search, "group": group, "ignore": ignore, "configs": configs,
                  "sensitive": sensitive, "max_bytes": max_bytes, "energy_per_1k_budget_j": energy_per_1k_budget_j,
                  "optuna_storage": optuna_storage, "optuna_study": optuna_study,
                  "devices": devices if devices != 1 else None, "cluster": cluster}
        given = [k_ for k_, v in unused.items() if v]
        if given:
            raise ConfigError(f"{', '.join(given)} do not apply to recommendation (task 'recommend')")
        return _train_recommender(data, user=user, item=item, rating=rating, min_rating=min_rating,
                                  user_features=user_features, item_features=item_features,
                                  time_column=time_column, time_limit=time_limit, k=k, seed=seed, split=split,
                                  families=families, name=name, path=path, home=home, progress=progress,
                                  country=country, footprint=footprint, signing_key=signing_key, started=started)
    if target is None:
        raise ConfigError("a target column is needed (the column to predict); recommendation takes "
                          "task='recommend' with user and item columns instead")
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ConfigError(f"devices must be a whole number of at least 1, got {devices!r}")
    optuna_storage = optuna_storage or os.environ.get("TANDEM_OPTUNA_STORAGE") or None
    if (optuna_storage or optuna_study) and search != "optuna":
        raise ConfigError("an Optuna storage or study name needs search='optuna' (--search optuna)")
    if search == "optuna":  # a missing extra fails now, not once the search starts
        need("optuna", "optuna", "--search optuna")
    if user is not None or item is not None or user_features is not None or item_features is not None:
        raise ConfigError("user and item columns and feature tables are for recommendation: add task='recommend'")
    # a missing or wrong key fails now, not after the time budget is spent
    key = load_signing_key(signing_key) if signing_key is not None else signing_key_from_env()
    meter = _start_meter(footprint, country)
    try:
        name = check_name(name or "model")
        if path is not None and Path(path).exists():
            raise ConfigError(f"bundle path '{path}' already exists: bundles are never overwritten")
        if max_bytes is not None and not (isinstance(max_bytes, int) and max_bytes >= 1):
            raise ConfigError(f"max_bytes must be a whole number of bytes, at least 1, got {max_bytes!r}")
        if energy_per_1k_budget_j is not None:
            if not (isinstance(energy_per_1k_budget_j, (int, float)) and energy_per_1k_budget_j > 0):
                raise ConfigError("energy_per_1k_budget_j must be a positive number of joules, got "
                                  f"{energy_per_1k_budget_j!r}")
            if meter is None:
                raise ConfigError("an energy budget per 1,000 predictions needs the footprint meter, which is off")
        if configs is not None:
            from tandem.learners import check_configs

            configs = check_configs(configs)
        table = read_table(data, what="training data")
        check_target(table, target, what=describe_source(data, "training data"))
        # the training stack loads only once the data is known to be usable: mistakes fail fast
        from tandem.study.export import export
        from tandem.study.runner import StudyConfig, run_study

        config = StudyConfig(target=target, time_limit=float(time_limit), metric=metric, task=task, seed=seed,
                             bagging=bagging, split=split, group_column=group, time_column=time_column,
                             search=search, families=families, ignore=ignore, latency_budget_us=latency_budget_us,
                             optuna_storage=optuna_storage, devices=devices, cluster=cluster,
                             optuna_study=optuna_study or (f"tandem-{name}" if optuna_storage else None),
                             max_bytes=max_bytes, energy_per_1k_budget_j=energy_per_1k_budget_j,
                             configs=configs, strict=strict, sensitive=sensitive, text_encoder=text_encoder,
                             encoder_layers=encoder_layers, max_energy_kwh=max_energy_kwh)
        result = run_study(table, config, progress=progress, started=started, meter=meter)
        with use_signing_key(key):
            if path is not None:
                export(result, Path(path), name=name, version=None, say=progress or (lambda _m: None))
                return Model(path)
            summary = {"task": result.task, "metric": result.metric,
                       "score": result.validation_metrics.get(result.metric)}
            record = Registry(home).add(
                name, lambda folder, version: export(result, folder, name=name, version=version,
                                                     say=progress or (lambda _m: None)), summary=summary)
        return Model(record.path)
    except BaseException:
        if meter is not None:
            meter.cancel()
        raise


def _train_recommender(data: object, *, user: str | None, item: str | None, rating: str | None,
                       min_rating: float | None, user_features: object, item_features: object,
                       time_column: str | None, time_limit: float, k: int, seed: int,
                       split: str | None, families: list[str] | None, name: str | None, path: str | Path | None,
                       home: str | Path | None, progress: Callable[[str], None] | None, country: str | None,
                       footprint: bool | MeterSettings, signing_key: str | Path | None, started: float) -> Model:
    """tandem.train(task="recommend"): the interaction table checked, the recommendation study, the bundle."""
    from tandem.bundle.signing import load_signing_key, signing_key_from_env, use_signing_key
    from tandem.data.readers import read_table

    if not user or not item:
        raise ConfigError("recommendation needs the user column and the item column (--user, --item)")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
        raise ConfigError(f"k must be a whole number from 1 to 1000, got {k!r}")
    if not (isinstance(time_limit, (int, float)) and time_limit > 0):
        raise ConfigError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    key = load_signing_key(signing_key) if signing_key is not None else signing_key_from_env()
    name = check_name(name or "model")
    if path is not None and Path(path).exists():
        raise ConfigError(f"bundle path '{path}' already exists: bundles are never overwritten")
    meter = _start_meter(footprint, country)
    try:
        from tandem.data.interactions import InteractionSpec, read_interactions

        table = read_table(data, what="interaction data")
        spec = InteractionSpec(user=user, item=item, rating=rating, min_rating=min_rating, time=time_column)
        interactions = read_interactions(table, spec, what=describe_source(data, "interaction data"))
        from tandem.data.interactions import read_side_features
        from tandem.study.recommend import RecommendConfig, export_recommender, run_recommend_study

        sides = {}
        for role, id_column, source in (("user", user, user_features), ("item", item, item_features)):
            if source is not None:
                what = describe_source(source, f"{role} features")
                sides[role] = read_side_features(read_table(source, what=f"{role} features"), id_column, role, what)
        config = RecommendConfig(time_limit=float(time_limit), k=k, seed=seed, split=split, families=families,
                                 user_features=sides.get("user"), item_features=sides.get("item"))
        result = run_recommend_study(interactions, config, progress=progress, started=started, meter=meter)
        say = progress or (lambda _m: None)
        with use_signing_key(key):
            if path is not None:
                export_recommender(result, Path(path), name=name, version=None, say=say)
                return Model(path)
            summary = {"task": "recommend", "metric": f"ndcg@{k}", "score": result.validation.get(f"ndcg@{k}")}
            record = Registry(home).add(name, lambda folder, version: export_recommender(
                result, folder, name=name, version=version, say=say), summary=summary)
        return Model(record.path)
    except BaseException:
        if meter is not None:
            meter.cancel()
        raise


def import_model(source: object, *, name: str | None = None, sample: object = None, framework: str = "auto",
                 target: str | None = None, labels: list[str] | None = None, task: str | None = None,
                 max_diff: float = 1e-5, output: str | None = None, meaning: str | None = None,
                 metric: str | None = None, weights: str | Path | None = None, threshold: float = 0.5,
                 train_kwh: float | None = None, path: str | Path | None = None, home: str | Path | None = None,
                 progress: Callable[[str], None] | None = None, country: str | None = None,
                 footprint: bool | MeterSettings = True, signing_key: str | Path | None = None) -> Model:
    """Import a model trained elsewhere as a verified bundle, and return it loaded.

    ``source`` is a live model (``torch.nn.Module``, ``keras.Model``, scikit-learn estimator or ``Pipeline``,
    LightGBM or XGBoost booster or sklearn-API wrapper) or a file: ONNX, a ``torch.export`` program (``.pt2``),
    Keras v3 ``.keras`` (safe mode), a SavedModel folder, skops, LightGBM text, XGBoost JSON/UBJSON. Pickles
    are refused unread. With ``weights`` (a safetensors file), ``source`` is the torch module they fit.
    ``sample``: rows for a table model (file, frame, rows; it gives the schema, ranges, categories, the drift
    profile and, with ``target``, metrics and the quality gate) or arrays for a tensor model (numpy, a dict per
    input, ``.npy``/``.npz``). The bundle graph is checked against the source framework on the sample rows: a
    difference over ``max_diff`` refuses the import (nothing written). ``labels`` name the classes; ``task`` and
    ``meaning`` (probabilities, logits or values) are inferred from the answer when not given; ``output`` picks
    an ONNX file's answer. ``train_kwh`` records the energy of training done elsewhere. The bundle goes into the
    registry under ``name`` (default ``model``), or to ``path``.
    """
    from tandem.bundle.signing import load_signing_key, signing_key_from_env, use_signing_key
    from tandem.foreign import ImportRequest, prepare, write_import

    key = load_signing_key(signing_key) if signing_key is not None else signing_key_from_env()
    name = check_name(name or "model")
    if path is not None and Path(path).exists():
        raise ConfigError(f"bundle path '{path}' already exists: bundles are never overwritten")
    if train_kwh is not None and not (isinstance(train_kwh, (int, float)) and train_kwh >= 0):
        raise ConfigError(f"train_kwh must be a number of kWh >= 0, got {train_kwh!r}")
    module = None
    if weights is not None:
        source, module = weights, source
    request = ImportRequest(source=source, name=name, framework=framework, sample=sample, target=target,
                            labels=labels, task=task, output=output, meaning=meaning, metric=metric,
                            max_diff=max_diff, module=module, threshold=threshold,
                            train_footprint={"energy_kwh": float(train_kwh)} if train_kwh is not None else None)
    say = progress or (lambda _m: None)
    meter = _start_meter(footprint, country)
    try:
        prepared = prepare(request, say)
        with use_signing_key(key):
            if path is not None:
                write_import(prepared, Path(path), name=name, version=None, meter=meter, say=say)
                return Model(path)
            summary = {"task": prepared.task, "metric": None, "score": None, "imported": prepared.converted.framework}
            record = Registry(home).add(name, lambda folder, version: write_import(
                prepared, folder, name=name, version=version, meter=meter, say=say), summary=summary)
        return Model(record.path)
    except BaseException:
        if meter is not None:
            meter.cancel()
        raise


def _start_meter(footprint: bool | MeterSettings, country: str | None) -> Meter | None:
    if footprint is False:
        if country is not None:
            raise ConfigError("--country needs the footprint meter, which is off")
        return None
    settings = footprint if isinstance(footprint, MeterSettings) else MeterSettings()
    if country is not None:
        settings = dataclasses.replace(settings, country=country)
    return Meter(MeterSettings.from_env(**dataclasses.asdict(settings))).start()


def load(name_or_path: str | Path, *, home: str | Path | None = None, require_signed: bool | None = None) -> Model:
    """Load a model by registry reference (``name``, ``name:3``, ``name@production``) or bundle path.

    A bare name is always a registry reference; a folder needs a path form (a ``Path``, ``./churn``,
    ``/abs/churn``, ``~/churn``). ``require_signed`` (default ``$TANDEM_REQUIRE_SIGNED``) refuses a bundle
    that is not signed by a key in ``$TANDEM_TRUSTED_KEYS``; a signed bundle whose signature fails is refused
    either way.
    """
    return Model(Registry(home).resolve(name_or_path), require_signed=require_signed)


def check(data: object, target: str | None = None, *, test: object | None = None, task: str | None = None,
          seed: int = 0, user: str | None = None, item: str | None = None, rating: str | None = None,
          min_rating: float | None = None, time_column: str | None = None):
    """The quality gate on ``data`` (and ``test`` when given): a :class:`tandem.data.quality.QualityReport`.
    With ``task="recommend"``, the gate for an interaction table (``user``, ``item``, optional ``rating``,
    ``min_rating`` and ``time_column``): missing ids, duplicate pairs, users and items seen once, future
    timestamps, ids mixing numbers and text."""
    from tandem.data.quality import check_quality
    from tandem.data.readers import read_table

    if task == "recommend":
        from tandem.data.interactions import InteractionSpec, read_interactions

        if not user or not item:
            raise ConfigError("the recommendation gate needs the user column and the item column (--user, --item)")
        spec = InteractionSpec(user=user, item=item, rating=rating, min_rating=min_rating, time=time_column)
        return read_interactions(read_table(data, what="interaction data"), spec,
                                 what=describe_source(data, "interaction data")).quality_report()
    if target is None:
        raise ConfigError("a target column is needed (or task='recommend' with user and item columns)")

    table = read_table(data, what="data")
    test_table = read_table(test, what="test data") if test is not None else None
    return check_quality(table, target, test=test_table, task=task, seed=seed)


def describe_source(data: object, default: str) -> str:
    """How error messages name an input: the file as the user gave it, else ``default``."""
    if isinstance(data, (str, Path)):
        return f"'{data}'"
    return default
