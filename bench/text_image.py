"""Benchmark: text (SMS spam) and small images as tables (scikit-learn's digits), tandem against baselines.

- **SMS spam** (``../shared/data/sms_spam_collection``, stratified 80/20, seed 0): tandem at a time
  budget (default 120 s) against scikit-learn's TF-IDF (words 1-2) + logistic regression, the
  usual baseline, fitted on the same rows. Reported: F1 of the spam class, macro F1, seconds.
- **digits** (scikit-learn's bundled 8x8 digits, stratified 75/25, seed 0): tandem on the 64 pixel
  columns at a budget (default 60 s) against logistic regression on the same pixels. Accuracy.

- **GTSRB subset** (``../shared/data/gtsrb_subset``, 43 classes x 40 images, 32x32, stratified
  80/20, seed 0): tandem at a budget (default 300 s) with every image family (the pretrained
  EfficientNet-Lite0, fine-tuned or frozen, and the CNN), and restricted to the CNN from scratch,
  against logistic regression and a random forest (500 trees) on the raw pixels. Accuracy, what
  the ensemble chose, its one-row latency and bytes.
- **GTSRB with few images** (10 training images of each class, seeded; the same test rows): the
  same two tandem runs at a budget (default 60 s).
- **digits as images** (the same 8x8 digits as 8x8 grey images in an ``.npz``): tandem's CNN at a
  budget (default 120 s). Accuracy.

- **SMS through the sentence encoder** (same split): messages/s of tandem's all-MiniLM-L6-v2 path
  (its tokenizer and int8 ONNX graph, default variant: 4 layers, scales calibrated on the training
  messages) against sentence-transformers' own ``encode`` in fp32 PyTorch (batch 32, its default
  length sorting), both on the 1,115 test messages, alternated, median of 3 runs; and the spam F1 of
  the same logistic-regression head (C = 1, tandem's minilm_linear) on each one's embeddings.
- **SMS with the encoder fine-tuned** (same split): tandem restricted to ``minilm_finetune`` at a
  budget (default 300 s: at 120 s the whole portfolio leaves it no epoch). Spam F1, epochs.

Each tandem fit runs in this process after its baseline; progress goes to stderr, one JSON line to
stdout and to ``bench/results/text_image.json`` (``--only`` some parts: they replace theirs in that
file, each with its git head under ``part_git_heads``).

Run (from the repository root)::

    .venv/bin/python bench/text_image.py                 # ~30 minutes
    .venv/bin/python bench/text_image.py --only gtsrb,gtsrb_small    # ~14 minutes
    .venv/bin/python bench/text_image.py --quick         # 20 s and 10 s budgets, writes no file
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, HERE, git_head, machine, write_atomic  # noqa: E402


def say(msg: str) -> None:
    print(f"[text_image] {msg}", file=sys.stderr, flush=True)


def sms(budget: float) -> dict:
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    import tandem

    frame = pd.read_csv(DATA / "sms_spam_collection" / "SMSSpamCollection", sep="\t")
    train, test = train_test_split(frame, test_size=0.2, random_state=0, stratify=frame["Label"])
    say("SMS: TF-IDF + logistic regression")
    t = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    clf = LogisticRegression(C=10.0, max_iter=2000).fit(vec.fit_transform(train["SMS"]), train["Label"])
    base_pred = clf.predict(vec.transform(test["SMS"]))
    base_s = time.perf_counter() - t
    say(f"SMS: tandem, {budget:g} s budget")
    t = time.perf_counter()
    model = tandem.train(train, "Label", time_limit=budget, home=tempfile.mkdtemp(), name="sms")
    train_s = time.perf_counter() - t
    pred = model.predict(test.drop(columns=["Label"]))

    def scores(p) -> dict:
        return {"spam_f1": round(float(f1_score(test["Label"], p, pos_label="spam")), 4),
                "macro_f1": round(float(f1_score(test["Label"], p, average="macro")), 4)}

    t = time.perf_counter()
    model.predict(test.drop(columns=["Label"]))
    batch_s = time.perf_counter() - t
    return {"rows_train": len(train), "rows_test": len(test), "budget_s": budget,
            "tandem": {**scores(pred), "train_seconds": round(train_s, 1),
                       "messages_per_s_batch": round(len(test) / batch_s),
                       "ensemble": [e["model"] for e in model.manifest["ensemble"]]},
            "tfidf_logreg": {**scores(base_pred), "train_seconds": round(base_s, 2)}}


def sms_encoder(layers: int | None = None) -> dict:
    """Messages/s of tandem's int8 encoder graph (``layers`` of MiniLM's six; the default variant's when None)
    against sentence-transformers' fp32 ``encode``, and a logistic head's spam F1 on each one's embeddings."""
    import os

    import numpy as np
    import pandas as pd
    import torch
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    from tandem.features import sentence

    frame = pd.read_csv(DATA / "sms_spam_collection" / "SMSSpamCollection", sep="\t")
    train, test = train_test_split(frame, test_size=0.2, random_state=0, stratify=frame["Label"])
    threads = min(os.cpu_count() or 1, 4)
    torch.set_num_threads(threads)
    say("SMS encoder: building tandem's int8 graph (calibrated on training messages)")
    t = time.perf_counter()
    variant = sentence.EncoderVariant() if layers is None else sentence.EncoderVariant(layers=layers)
    described = sentence.build_encoder(variant, train["SMS"].sample(frac=1, random_state=0).tolist())
    build_s = time.perf_counter() - t
    tok = sentence.load_tokenizer(sentence.weights_dir() / "tokenizer.json", described["max_tokens"])
    session = sentence.EncoderSession(sentence.encoder_graph(described), threads=threads)
    st = SentenceTransformer(str(sentence.weights_dir()), device="cpu")
    messages = test["SMS"].tolist()

    def ours(texts: list[str]) -> np.ndarray:
        return session.embed(sentence.tokenize(tok, texts))

    def theirs(texts: list[str]) -> np.ndarray:
        return st.encode(texts, batch_size=32, normalize_embeddings=True)

    ours(messages[:64]), theirs(messages[:64])  # warm-up
    rates: dict[str, list[float]] = {"tandem": [], "sentence_transformers": []}
    for _ in range(3):
        for name, encode in (("sentence_transformers", theirs), ("tandem", ours)):
            t = time.perf_counter()
            encode(messages)
            rates[name].append(len(messages) / (time.perf_counter() - t))
    say("SMS encoder: the same head on each one's embeddings")
    f1 = {}
    for name, encode in (("sentence_transformers", theirs), ("tandem", ours)):
        head = LogisticRegression(C=1.0, max_iter=3000).fit(encode(train["SMS"].tolist()), train["Label"])
        f1[name] = round(float(f1_score(test["Label"], head.predict(encode(messages)), pos_label="spam")), 4)
    med = {k: float(np.median(v)) for k, v in rates.items()}
    return {"messages": len(messages), "threads": threads, "variant": {k: described[k] for k in
                                                                       ("layers", "quantized", "max_tokens")},
            "tandem_build_seconds": round(build_s, 1),
            "messages_per_s": {k: round(v) for k, v in med.items()},
            "speedup": round(med["tandem"] / med["sentence_transformers"], 2), "head_spam_f1": f1,
            "f1_difference_points": round(100 * (f1["tandem"] - f1["sentence_transformers"]), 2)}


def sms_finetune(budget: float) -> dict:
    import pandas as pd
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    import tandem

    frame = pd.read_csv(DATA / "sms_spam_collection" / "SMSSpamCollection", sep="\t")
    train, test = train_test_split(frame, test_size=0.2, random_state=0, stratify=frame["Label"])
    say(f"SMS: tandem fine-tuning the encoder, {budget:g} s budget")
    t = time.perf_counter()
    model = tandem.train(train, "Label", time_limit=budget, home=tempfile.mkdtemp(), name="sms_tuned",
                         families=["minilm_finetune"], text_encoder="minilm")
    train_s = time.perf_counter() - t
    pred = model.predict(test.drop(columns=["Label"]))
    member = model.manifest["ensemble"][0]
    return {"budget_s": budget, "train_seconds": round(train_s, 1), "epochs": member["epochs"],
            "encoder_layers": member["encoder_layers"], "refit_on_all_rows": member["refit_on_all_rows"],
            "spam_f1": round(float(f1_score(test["Label"], pred, pos_label="spam")), 4),
            "macro_f1": round(float(f1_score(test["Label"], pred, average="macro")), 4)}


def digits(budget: float) -> dict:
    import pandas as pd
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    import tandem

    d = load_digits()
    frame = pd.DataFrame(d.data, columns=[f"px{i}" for i in range(64)])
    frame["digit"] = d.target.astype(str)
    train, test = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["digit"])
    say("digits: logistic regression")
    feats = [c for c in frame.columns if c != "digit"]
    base = LogisticRegression(max_iter=5000).fit(train[feats] / 16.0, train["digit"])
    base_acc = float((base.predict(test[feats] / 16.0) == test["digit"]).mean())
    say(f"digits: tandem, {budget:g} s budget")
    t = time.perf_counter()
    model = tandem.train(train, "digit", time_limit=budget, home=tempfile.mkdtemp(), name="digits")
    train_s = time.perf_counter() - t
    acc = float((model.predict(test[feats]) == test["digit"].to_numpy()).mean())
    return {"rows_train": len(train), "rows_test": len(test), "budget_s": budget,
            "tandem": {"accuracy": round(acc, 4), "train_seconds": round(train_s, 1),
                       "ensemble": [e["model"] for e in model.manifest["ensemble"]]},
            "logreg_pixels": {"accuracy": round(base_acc, 4)}}


def _gtsrb_split(per_class: int | None = None):
    """The GTSRB subset's stratified 80/20 split (seed 0); with ``per_class``, that many training images of each
    class (seeded), the test rows unchanged."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    d = np.load(DATA / "gtsrb_subset" / "gtsrb_test_subset_32x32.npz")
    images, labels = d["images"], d["labels"]
    tr, te = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=0, stratify=labels)
    if per_class:
        rng = np.random.default_rng(0)
        tr = np.sort(np.concatenate([rng.choice(tr[labels[tr] == c], per_class, replace=False)
                                     for c in np.unique(labels)]))
    return images, labels, tr, te


def _tandem_images(images, labels, tr, te, budget: float, name: str, families: list[str] | None) -> dict:
    """tandem on the training images (an .npz) at ``budget``; accuracy on the test images, and what it chose."""
    import numpy as np

    import tandem

    folder = Path(tempfile.mkdtemp())
    np.savez(folder / "train.npz", images=images[tr], labels=labels[tr])
    np.savez(folder / "test.npz", images=images[te], labels=labels[te])
    say(f"GTSRB {name}: tandem ({', '.join(families) if families else 'every image family'}), {budget:g} s budget")
    t = time.perf_counter()
    model = tandem.train(str(folder / "train.npz"), "label", time_limit=budget, home=folder, name=name,
                         families=families)
    train_s = time.perf_counter() - t
    acc = float((model.predict(str(folder / "test.npz")) == labels[te].astype(str)).mean())
    return {"accuracy": round(acc, 4), "train_seconds": round(train_s, 1),
            "ensemble": {e["model"]: round(e["weight"], 3) for e in model.manifest["ensemble"]},
            # how the members came to all rows: refit from scratch, or the fold model went on (runs averaged)
            "members": {e["model"]: {k: e.get(k) for k in ("refit_on_all_rows", "continued_epochs_on_all_rows",
                                                           "continued_runs_averaged")}
                        for e in model.manifest["ensemble"]},
            "validation_accuracy": model.manifest["metrics"]["validation"].get("accuracy"),
            "leaderboard": {r["model"]: {k: r.get(k) for k in ("val_log_loss", "epochs", "side", "fit_seconds",
                                                                "predict_1row_us")} for r in model.leaderboard()},
            "predict_1row_us_p50": model.manifest["latency"]["predict_1row_us_p50"],
            "bundle_bytes": sum(f.stat().st_size for f in Path(model.path).rglob("*") if f.is_file()),
            "graph_bytes": (Path(model.path) / "model.onnx").stat().st_size}


def gtsrb(budget: float) -> dict:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    images, labels, tr, te = _gtsrb_split()
    pixels = images.reshape(len(images), -1) / 255.0
    say("GTSRB: logistic regression and random forest on pixels")
    lr_acc = float((LogisticRegression(max_iter=2000).fit(pixels[tr], labels[tr]).predict(pixels[te])
                    == labels[te]).mean())
    rf_acc = float((RandomForestClassifier(500, n_jobs=-1, random_state=0).fit(pixels[tr], labels[tr])
                    .predict(pixels[te]) == labels[te]).mean())
    return {"rows_train": len(tr), "rows_test": len(te), "budget_s": budget,
            "tandem": _tandem_images(images, labels, tr, te, budget, "gtsrb", None),
            "tandem_from_scratch": _tandem_images(images, labels, tr, te, budget, "gtsrb_cnn", ["cnn"]),
            "logreg_pixels": {"accuracy": round(lr_acc, 4)}, "random_forest_pixels": {"accuracy": round(rf_acc, 4)}}


def gtsrb_small(budget: float, per_class: int = 10) -> dict:
    """Few images: ``per_class`` training images of each class, the same test rows."""
    images, labels, tr, te = _gtsrb_split(per_class)
    return {"rows_train": len(tr), "rows_test": len(te), "per_class": per_class, "budget_s": budget,
            "tandem": _tandem_images(images, labels, tr, te, budget, "gtsrb_small", None),
            "tandem_from_scratch": _tandem_images(images, labels, tr, te, budget, "gtsrb_small_cnn", ["cnn"])}


def digits_images(budget: float) -> dict:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    import tandem

    d = load_digits()
    images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
    tr, te = train_test_split(np.arange(len(d.target)), test_size=0.25, random_state=0, stratify=d.target)
    folder = Path(tempfile.mkdtemp())
    np.savez(folder / "train.npz", images=images[tr], labels=d.target[tr])
    np.savez(folder / "test.npz", images=images[te], labels=d.target[te])
    say(f"digits as images: tandem, {budget:g} s budget")
    t = time.perf_counter()
    model = tandem.train(str(folder / "train.npz"), "label", time_limit=budget, home=folder, name="digits_img")
    train_s = time.perf_counter() - t
    acc = float((model.predict(str(folder / "test.npz")) == d.target[te].astype(str)).mean())
    return {"rows_train": len(tr), "rows_test": len(te), "budget_s": budget,
            "tandem": {"accuracy": round(acc, 4), "train_seconds": round(train_s, 1)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sms-budget", type=float, default=120.0)
    ap.add_argument("--digits-budget", type=float, default=60.0)
    ap.add_argument("--gtsrb-budget", type=float, default=300.0)
    ap.add_argument("--digits-images-budget", type=float, default=120.0)
    ap.add_argument("--finetune-budget", type=float, default=300.0)
    ap.add_argument("--gtsrb-small-budget", type=float, default=60.0)
    ap.add_argument("--only", default="sms,sms_encoder,sms_finetune,digits,gtsrb,gtsrb_small,digits_images",
                    help="comma-separated parts to run")
    ap.add_argument("--quick", action="store_true", help="20 s and 10 s budgets; writes no file")
    args = ap.parse_args()
    if args.quick:
        args.sms_budget, args.digits_budget, args.gtsrb_budget, args.digits_images_budget = 20.0, 10.0, 30.0, 20.0
        args.finetune_budget, args.gtsrb_small_budget = 60.0, 20.0
    parts = set(args.only.split(","))
    out = {"bench": "text_image", "machine": machine(("scikit-learn", "lightgbm", "onnxruntime", "torch",
                                                      "sentence-transformers", "tokenizers")),
           "git_head": git_head()}
    runs = {"sms": lambda: sms(args.sms_budget), "sms_encoder": sms_encoder,
            "sms_finetune": lambda: sms_finetune(args.finetune_budget),
            "digits": lambda: digits(args.digits_budget), "gtsrb": lambda: gtsrb(args.gtsrb_budget),
            "gtsrb_small": lambda: gtsrb_small(args.gtsrb_small_budget),
            "digits_images": lambda: digits_images(args.digits_images_budget)}
    for name, run in runs.items():
        if name in parts:
            out[name] = run()
    checks = {}
    if "sms" in out:
        s = out["sms"]
        checks["sms_spam_f1_ge_0.95"] = s["tandem"]["spam_f1"] >= 0.95 and s["tandem"]["train_seconds"] <= 126
        checks["sms_beats_tfidf_logreg"] = s["tandem"]["spam_f1"] >= s["tfidf_logreg"]["spam_f1"]
    if "sms_encoder" in out:
        e = out["sms_encoder"]
        checks["encoder_ge_3x_sentence_transformers"] = e["speedup"] >= 3.0
        checks["encoder_f1_within_0.5_point_of_torch"] = e["f1_difference_points"] >= -0.5
    if "gtsrb" in out:
        g = out["gtsrb"]
        best = max(g["logreg_pixels"]["accuracy"], g["random_forest_pixels"]["accuracy"])
        checks["gtsrb_ge_best_pixel_baseline_plus_10_points"] = g["tandem"]["accuracy"] >= best + 0.10
        checks["gtsrb_pretrained_ge_0.99"] = g["tandem"]["accuracy"] >= 0.99
    if "gtsrb_small" in out:
        g = out["gtsrb_small"]
        checks["gtsrb_small_pretrained_beats_scratch_by_10_points"] = (
            g["tandem"]["accuracy"] >= g["tandem_from_scratch"]["accuracy"] + 0.10)
    accuracies = [out[k]["tandem"]["accuracy"] for k in ("digits", "digits_images") if k in out]
    if accuracies:
        checks["digits_accuracy_ge_0.98"] = max(accuracies) >= 0.98
    out["checks"] = checks
    target = HERE / "results" / "text_image.json"
    if not args.quick and parts != set(runs) and target.is_file():
        # some parts rerun: they replace theirs in the last full run's file, each part naming its git head
        merged = json.loads(target.read_text())
        heads = merged.setdefault("part_git_heads", {})
        for name in parts & set(runs):
            merged[name] = out[name]
            heads[name] = out["git_head"]
        merged["checks"] = {**merged.get("checks", {}), **checks}
        write_atomic(target, merged)
    elif not args.quick:
        write_atomic(target, out)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
