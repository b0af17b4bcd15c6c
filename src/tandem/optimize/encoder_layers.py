"""Fewer encoder layers: the sentence encoder cut to its first layers, its heads refit on the new embeddings.

Structured pruning at the coarsest grain: whole transformer layers of the all-MiniLM-L6-v2 encoder a
bundle's ``minilm_linear`` members read (:mod:`tandem.features.sentence`). The encoder is the graph's
cost (a linear head is one Gemm), and its time grows with its layers, so each layer removed saves about
a layer's share of it. For a parent of ``L`` layers the variants keep ``L - 1`` down to ``MIN_LAYERS``.

Each variant's encoder is built exactly as ``tandem train --encoder-layers k`` would build it on the
same training file: :func:`~tandem.features.sentence.build_encoder` with the parent's int8 or float32
choice and token cut, its int8 scales calibrated on the texts of ``CALIBRATION_ROWS`` training rows
drawn with the parent's seed, the study's draw (``--train-data``, never the labelled rows the variants
are scored on). Given the parent's own training file, it draws the parent's calibration texts.

The heads then learn the new embeddings: every ``minilm_linear`` member is fitted again as the study fits
it (its portfolio configuration, on the true labels, not a teacher's), on the training rows' embedding
view through the smaller encoder: the variant is the model a study with that encoder would have made,
with the parent's members and weights. Members that do not read the embeddings (LightGBM, TF-IDF linear members,
a fine-tuned encoder member with its own layers) stay as they are, weights unchanged; the graph is rebuilt
by :func:`~tandem.study.graph.build_graph`, and the new encoder's graph, the refit heads' native files and
the preprocessing that names the encoder go with it.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np

from tandem.bundle.files import ENCODER_FILE, NATIVE_DIR, PREPROCESSING_FILE
from tandem.features import sentence
from tandem.features.preprocess import Preprocessor
from tandem.learners import Learner, family_view, load_portfolio
from tandem.learners.linear import EncoderLinearLearner
from tandem.optimize.natives import load_members, native_files, native_parity
from tandem.optimize.variants import Parent, Variant
from tandem.study.graph import build_graph

NONE_HERE = "encoder removes layers of the sentence encoder; this model has none"
NEEDS_ROWS = ("encoder needs rows to refit the heads on the smaller encoder: give --train-data (the model's "
              "training file)")
HEAD_FAMILY = EncoderLinearLearner.family
MIN_LAYERS = 2  # the shallowest encoder tried (a parent of two layers tries one)
CALIBRATION_ROWS = sentence.CALIBRATION_ROWS  # training rows whose texts set the int8 scales, as the study draws them
HEAD_LABELS = "the true labels: each head fitted as the study fits it, on the smaller encoder's embeddings"


def layer_counts(layers: int) -> list[int]:
    """The encoder depths tried for a parent encoder of ``layers``: one fewer, down to ``MIN_LAYERS``
    (one for a parent of two; none for a parent of one)."""
    return list(range(layers - 1, MIN_LAYERS - 1, -1)) or ([1] if layers == 2 else [])


def calibration_texts(texts: dict[str, list], n_rows: int, seed: int) -> list[str]:
    """The texts the study calibrates its int8 encoder on (:mod:`tandem.study.prepare`): the non-empty
    values of every text column in ``CALIBRATION_ROWS`` rows drawn with ``seed`` from the ``n_rows``
    training rows, column by column."""
    rows = np.random.default_rng(seed).choice(n_rows, min(n_rows, CALIBRATION_ROWS), replace=False)
    return [str(column[i]) for column in texts.values() for i in rows if column[i]]


def variants(parent: Parent) -> list[Variant] | str:
    """A variant per smaller encoder depth, or why the method does not apply to this parent."""
    manifest = parent.manifest
    described = (manifest.get("preprocessing") or {}).get("text_encoder")
    if not described:
        return NONE_HERE
    readers = [m for m in manifest.get("ensemble", []) if family_view(m["family"]) == "embedding"]
    if not readers:
        return ("encoder: no member of this model reads the sentence encoder's embeddings (a fine-tuned "
                "encoder member keeps its own layers)")
    other = next((m for m in readers if m["family"] != HEAD_FAMILY), None)
    if other is not None:
        return (f"encoder refits {HEAD_FAMILY} heads on the smaller encoder; member '{other['model']}' "
                f"({other['family']}) reads its embeddings too and has no refit here")
    if parent.teach is None or parent.teach_y is None or parent.teach_texts is None:
        return NEEDS_ROWS
    layers = int(described["layers"])
    depths = layer_counts(layers)
    if not depths:
        return f"encoder: the sentence encoder has {layers} layer; there is none to remove"
    seed = int(manifest.get("lineage", {}).get("seed") or 0)
    texts = calibration_texts(parent.teach_texts, parent.teach.n_rows, seed)
    if not texts:
        return "encoder: the training rows' text columns are empty; the int8 encoder has nothing to calibrate on"
    pre, members = load_members(parent.folder, manifest)
    return [_variant(parent, pre, members, depth, texts, seed) for depth in depths]


def _head_params(name: str) -> dict:
    """A head's configuration: the portfolio's of that name, else the family's first (a loaded learner
    keeps its fitted arrays, not its parameters)."""
    configs = [c for c in load_portfolio() if c["family"] == HEAD_FAMILY]
    return dict(next((c for c in configs if c["name"] == name), configs[0])["params"])


def _variant(parent: Parent, pre: Preprocessor, members: list[tuple[dict, Learner]], depth: int, texts: list[str],
             seed: int) -> Variant:
    """The encoder cut to ``depth`` layers, every head refit on its embeddings of the training rows."""
    manifest = parent.manifest
    task, labels = manifest["task"], manifest.get("labels")
    old = pre.text_encoder
    start = time.monotonic()
    described = sentence.build_encoder(sentence.EncoderVariant(layers=depth, quantized=bool(old["quantized"]),
                                                               max_tokens=int(old["max_tokens"])), texts)
    encoder_seconds = time.monotonic() - start
    small = dataclasses.replace(pre, text_encoder=described)
    start = time.monotonic()
    X = small.view("embedding", parent.teach)
    embed_seconds = time.monotonic() - start
    y = np.asarray(parent.teach_y)
    n_classes = len(labels) if labels else 1
    heads: dict[str, Learner] = {}
    params: dict[str, dict] = {}
    for m, _ in members:
        if m["family"] == HEAD_FAMILY:
            params[m["model"]] = _head_params(m["model"])
            heads[m["model"]] = EncoderLinearLearner(params[m["model"]], task=task, n_classes=n_classes,
                                                     seed=seed).fit(X, y)
    pairs = [(heads.get(m["model"], learner), float(m["weight"])) for m, learner in members]
    graph = build_graph(small, task, labels, pairs, float(manifest.get("threshold", 0.5))).SerializeToString()
    preprocessing = {**manifest["preprocessing"], "text_encoder": described}
    encoder = sentence.encoder_graph(described)
    files = {f"{NATIVE_DIR}/{ENCODER_FILE}": encoder,
             f"{NATIVE_DIR}/{PREPROCESSING_FILE}": json.dumps(preprocessing).encode(),
             **native_files([(m["native"], heads[m["model"]]) for m, _ in members if m["model"] in heads])}
    # no explain.json of its own: every variant keeps a minilm_linear head, which has no exact attribution, so
    # the parent's file (contributions unavailable, for that same member) holds for the variant too
    ensemble = [{**m, **heads[m["model"]].describe()} if m["model"] in heads else m for m, _ in members]
    parent_encoder = (parent.folder / NATIVE_DIR / ENCODER_FILE).read_bytes()
    settings = {"layers": depth, "parent_layers": int(old["layers"]), "quantized": bool(old["quantized"]),
                "max_tokens": int(old["max_tokens"]), "calibration_texts": len(texts[:CALIBRATION_ROWS]),
                "encoder_bytes": len(encoder), "parent_encoder_bytes": len(parent_encoder),
                "heads_refit": sorted(heads), "head_params": params, "head_labels": HEAD_LABELS,
                "teach_rows": int(parent.teach.n_rows), "encoder_seconds": round(encoder_seconds, 2),
                "embed_seconds": round(embed_seconds, 2),
                "fit_seconds": round(sum(h.fit_seconds for h in heads.values()), 2)}
    return Variant("encoder", settings, graph=graph,
                   native_parity=native_parity(graph, small, pairs, parent.rows, task),
                   label=f"encoder {depth}/{old['layers']} layers", files=files,
                   replaces={"preprocessing": preprocessing, "ensemble": ensemble})
