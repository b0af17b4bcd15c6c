"""scikit-learn estimators over the Python front door: :class:`TandemClassifier` and :class:`TandemRegressor`.

Each ``fit`` runs :func:`tandem.api.train` on ``X`` and ``y`` and keeps the verified bundle it writes, so a model
fitted in a ``Pipeline``, ``cross_val_score`` or ``GridSearchCV`` is the bundle ``tandem serve`` answers with, and
its predictions come from the bundle's ONNX graph. A pickle carries the bundle's files, never a path or an ONNX
Runtime session: unpickling writes them to a new folder and loads them, every hash verified.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_consistent_length, check_is_fitted, validate_data

from tandem.api import Model, train
from tandem.errors import ConfigError, DataError
from tandem.fsutil import atomic_dir

#: The fewest rows tandem's study trains and validates on (tandem.study.prepare.MIN_ROWS, which this layer may not
#: import); fewer is sklearn's "Found array with n sample(s)" ValueError before any work.
MIN_ROWS = 10


class _TandemEstimator(BaseEstimator):
    """What both estimators share: the parameters, X as tandem's columns, the bundle's folder, pickling."""

    _regression = True

    def __init__(self, *, time_limit: float = 60.0, metric: str | None = None,
                 families: str | Sequence[str] | None = None, search: str | None = None, bagging: str = "auto",
                 random_state: int | np.random.RandomState | None = 0, footprint: bool = False,
                 latency_budget_us: float = 100.0, max_bytes: int | None = None, name: str | None = None,
                 home: str | Path | None = None):
        self.time_limit = time_limit
        self.metric = metric
        self.families = families
        self.search = search
        self.bagging = bagging
        self.random_state = random_state
        self.footprint = footprint
        self.latency_budget_us = latency_budget_us
        self.max_bytes = max_bytes
        self.name = name
        self.home = home

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # a missing value is a missing value to tandem's preprocessing
        tags.input_tags.categorical = True  # in pandas/polars frames (tandem infers each column's kind)
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return "model_" in self.__dict__

    # -- fitting ------------------------------------------------------------------------------
    def _validate_fit(self, X: object, y: object) -> tuple[object, np.ndarray]:
        """sklearn's checks of ``X`` and ``y`` (with its error messages), setting ``n_features_in_`` and
        ``feature_names_in_``: a frame comes back as a pandas frame, anything else as a float array."""
        if not _is_frame(X):
            return validate_data(self, X, y, dtype=np.float64, ensure_all_finite="allow-nan",
                                 ensure_min_samples=MIN_ROWS, y_numeric=self._regression)
        y = validate_data(self, y=y, y_numeric=self._regression)  # first: it forgets the feature names, X sets them
        X = self._validate_frame(X, reset=True, min_rows=MIN_ROWS)
        check_consistent_length(X, y)
        return X, y

    def _validate_predict(self, X: object) -> object:
        check_is_fitted(self)
        if _is_frame(X):
            return self._validate_frame(X, reset=False, min_rows=1)
        return validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan")

    def _validate_frame(self, X: object, *, reset: bool, min_rows: int) -> object:
        """A pandas or polars frame checked as sklearn checks an array, its columns kept as they are (text,
        categories, dates): only the numeric ones are checked for infinity."""
        if type(X).__module__.split(".", 1)[0] == "polars":
            X = X.to_pandas()
        validate_data(self, X, reset=reset, skip_check_array=True)
        n_rows, n_columns = X.shape
        if n_columns < 1:
            raise ValueError(f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required by "
                             f"{type(self).__name__}.")
        if n_rows < min_rows:
            raise ValueError(f"Found array with {n_rows} sample(s) (shape={X.shape}) while a minimum of {min_rows} "
                             f"is required by {type(self).__name__}.")
        numeric = X.select_dtypes(include="number")
        if numeric.shape[1]:
            check_array(numeric, dtype=None, ensure_all_finite="allow-nan", estimator=self, input_name="X")
        return X

    def _table(self, X: object) -> object:
        """Validated ``X`` as tandem takes it, its columns named as in fit (the frame's names, else x0, x1...):
        a frame stays a pandas frame (its column kinds kept), an array becomes a dict of columns."""
        names = [str(n) for n in getattr(self, "feature_names_in_", [f"x{i}" for i in range(self.n_features_in_)])]
        if _is_frame(X):
            return X.set_axis(names, axis=1).reset_index(drop=True)
        return {name: X[:, i] for i, name in enumerate(names)}

    def _train(self, X: object, y: np.ndarray, task: str, split: str | None = None) -> None:
        """Run tandem's study on validated ``X`` and target values ``y``; keep the model and its bundle."""
        data = self._table(X)
        target = _free_name("y", list(data))
        data = data.assign(**{target: y}) if _is_frame(data) else {**data, target: y}
        seed = (int(self.random_state) if isinstance(self.random_state, (int, np.integer))
                else int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max)))
        families = [self.families] if isinstance(self.families, str) else self.families
        self._release_bundle()
        folder = None
        if self.name is None:  # a bundle of its own, gone with the estimator
            folder = Path(tempfile.mkdtemp(prefix="tandem-sklearn-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
        try:
            model = train(data, target, task=task, split=split, time_limit=self.time_limit, metric=self.metric,
                          families=None if families is None else list(families), search=self.search,
                          bagging=self.bagging, seed=seed, footprint=self.footprint,
                          latency_budget_us=self.latency_budget_us, max_bytes=self.max_bytes, name=self.name,
                          home=self.home, path=None if folder is None else folder / "bundle")
        except BaseException as exc:
            self._release_bundle()
            if isinstance(exc, (DataError, ConfigError)):  # sklearn's callers expect bad data or params as this
                raise ValueError(f"{type(self).__name__}: {exc}") from exc
            raise
        self.model_ = model
        self.bundle_path_ = Path(model.path)

    # -- the bundle ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Copy the fitted bundle to the new folder ``path`` (an existing one is refused: bundles are never
        overwritten), for ``tandem serve PATH`` or ``tandem.load(Path(path))``. Returns the folder."""
        check_is_fitted(self)
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"bundle path '{path}' already exists: bundles are never overwritten")
        with atomic_dir(path) as tmp:
            shutil.copytree(self.bundle_path_, tmp, dirs_exist_ok=True)
        return path

    def _release_bundle(self) -> None:
        """Forget the bundle of an earlier fit; its temp folder goes now (a registered bundle stays)."""
        cleanup = self.__dict__.pop("_cleanup", None)
        if cleanup is not None:
            cleanup()
        self.__dict__.pop("model_", None)
        self.__dict__.pop("bundle_path_", None)

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state.pop("_cleanup", None)
        if state.pop("model_", None) is not None:
            folder = Path(state.pop("bundle_path_"))
            state["_bundle_files"] = {p.relative_to(folder).as_posix(): p.read_bytes()
                                      for p in sorted(folder.rglob("*")) if p.is_file()}
        return state

    def __setstate__(self, state: dict) -> None:
        files = state.pop("_bundle_files", None)
        super().__setstate__(state)
        if files is None:
            return
        folder = Path(tempfile.mkdtemp(prefix="tandem-sklearn-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
        bundle = folder / "bundle"
        for rel, content in files.items():
            file = bundle / rel
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(content)
        self.model_ = Model(bundle)  # as tandem.load: every file's hash verified, and the signature when signed
        self.bundle_path_ = bundle


class TandemClassifier(ClassifierMixin, _TandemEstimator):
    """A classifier trained by tandem's time-budgeted study, predicting with its verified ONNX bundle.

    ``X`` is an array-like of numbers (its columns are named x0, x1... in the bundle) or a pandas/polars frame
    whose columns keep their names and kinds (numbers, categories, text, dates: tandem infers each). Missing
    values (NaN, None) are allowed; infinity is not.

    Parameters
    ----------
    time_limit : float, default=60.0
        Seconds the study may take; it stops earlier once it has tried every configuration.
    metric : str, optional
        What the study optimises: accuracy, balanced_accuracy, f1, roc_auc, pr_auc or log_loss (default roc_auc
        for two classes, log_loss for more). With a threshold metric (accuracy, balanced_accuracy, f1) the study
        also tunes the two-class decision threshold that :meth:`predict` applies.
    families : str or list of str, optional
        The learner families to try (lightgbm, linear, mlp...; see tandem's portfolio); default: all that fit.
    search : str, optional
        "optuna" adds Optuna trials on the best family after the portfolio.
    bagging : str, default="auto"
        "auto" bags the models over every fold when the budget allows (decided from measured fit times), "yes"
        always does, "no" keeps one holdout fold.
    random_state : int, RandomState or None, default=0
        The study's seed. An int gives the same model for the same data when the study is not cut by its time
        limit and ``bagging="no"``; None or a RandomState draws a seed.
    footprint : bool, default=False
        Meter the fit's energy and CO2 into the bundle's manifest. Off by default: the meter costs time on every
        fit, and cross-validation fits many models.
    latency_budget_us : float, default=100.0
        The one-row latency, in microseconds, the ensemble may add up to.
    max_bytes : int, optional
        A cap on the graph bytes of the ensemble's members.
    name : str, optional
        Also register each fit's bundle in the registry at ``home`` under this name, as its next version.
        Without it, the bundle lives in a temp folder removed with the estimator.
    home : str or Path, optional
        The registry's home (default ``$TANDEM_HOME``), used with ``name``.

    Attributes
    ----------
    classes_ : ndarray
        The class labels of ``y``, sorted, in ``y``'s dtype; :meth:`predict_proba`'s columns follow them.
    n_features_in_ : int
        The number of columns of ``X`` in fit.
    feature_names_in_ : ndarray of str
        The column names of ``X``, when it was a frame with string column names.
    model_ : tandem.api.Model
        The trained model: its manifest, leaderboard, ``evaluate``, ``drift``...
    bundle_path_ : Path
        The bundle's folder (:meth:`save` copies it elsewhere).
    """

    _regression = False

    def fit(self, X: object, y: object) -> TandemClassifier:
        """Train on ``X`` and the class labels ``y`` (any sortable labels: numbers, strings, booleans)."""
        X, y = self._validate_fit(X, y)
        check_classification_targets(y)
        self.classes_, counts = np.unique(y, return_counts=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two classes in y; it has one class: "
                             f"{self.classes_.tolist()[0]!r}")
        split = None
        if counts.min() < 2:
            rare = self.classes_.tolist()[int(np.argmin(counts))]
            warnings.warn(f"class {rare!r} has a single row in y: tandem's stratified validation split needs two "
                          "rows per class, so this study splits at random", UserWarning, stacklevel=2)
            split = "random"
        self._train(X, y, "binary" if len(self.classes_) == 2 else "multiclass", split)
        # the bundle's labels (its order, and types as tandem reads them back) -> positions in classes_
        position = {c: i for i, c in enumerate(self.classes_.tolist())}
        try:
            self._class_order = np.array([position[label] for label in self.model_.labels], dtype=np.int64)
        except KeyError as exc:
            self._release_bundle()
            raise RuntimeError(f"the bundle's labels {self.model_.labels} do not match classes_ "
                               f"{self.classes_.tolist()}: label {exc} is not one") from None
        return self

    def predict(self, X: object) -> np.ndarray:
        """The class of every row, as the bundle answers it (with its tuned threshold for two classes)."""
        labels = self._run(X)["label"]  # (first: it checks that the estimator is fitted)
        return self.classes_[self._class_order[labels]]

    def predict_proba(self, X: object) -> np.ndarray:
        """Class probabilities [rows, classes] in float64, columns in :attr:`classes_` order, each row summing to 1
        (the bundle's float32 answers, renormalised)."""
        proba = self._run(X)["probabilities"].astype(np.float64)
        out = np.empty_like(proba)
        out[:, self._class_order] = proba
        return out / out.sum(axis=1, keepdims=True)

    def _run(self, X: object) -> dict[str, np.ndarray]:
        """The bundle graph's outputs for ``X``: ``label`` (indices into the bundle's labels), ``probabilities``."""
        table = self._table(self._validate_predict(X))
        predictor = self.model_.predictor
        try:
            return predictor.run(predictor.encode(table))
        except DataError as exc:
            raise ValueError(f"{type(self).__name__}: {exc}") from exc


class TandemRegressor(RegressorMixin, _TandemEstimator):
    """A regressor trained by tandem's time-budgeted study, predicting with its verified ONNX bundle.

    ``X`` and the parameters are as for :class:`TandemClassifier`, except that ``metric`` is rmse (the default),
    mae or r2.

    Attributes
    ----------
    n_features_in_ : int
        The number of columns of ``X`` in fit.
    feature_names_in_ : ndarray of str
        The column names of ``X``, when it was a frame with string column names.
    model_ : tandem.api.Model
        The trained model: its manifest, leaderboard, ``evaluate``, ``drift``...
    bundle_path_ : Path
        The bundle's folder (:meth:`save` copies it elsewhere).
    """

    def fit(self, X: object, y: object) -> TandemRegressor:
        """Train on ``X`` and the numeric target ``y``."""
        X, y = self._validate_fit(X, y)
        self._train(X, np.asarray(y, dtype=np.float64), "regression")
        return self

    def predict(self, X: object) -> np.ndarray:
        """The predicted value of every row (float64)."""
        table = self._table(self._validate_predict(X))
        try:
            return np.asarray(self.model_.predict(table), dtype=np.float64)
        except DataError as exc:
            raise ValueError(f"{type(self).__name__}: {exc}") from exc


def _is_frame(X: object) -> bool:
    """Whether ``X`` is a pandas or polars DataFrame: its columns go to tandem with their own kinds."""
    return hasattr(X, "columns") and type(X).__module__.split(".", 1)[0] in ("pandas", "polars")


def _free_name(base: str, taken: list[str]) -> str:
    """``base``, with underscores added until no feature column has that name."""
    while base in taken:
        base += "_"
    return base
