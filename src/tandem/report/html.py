"""One self-contained HTML page from a bundle manifest: data quality, leaderboard, ROC/PR curves,
confusion matrix, calibration, learning curves, importances, fairness, footprint. Charts are
inline SVG: the page needs no network and no script."""

from __future__ import annotations

import html

from tandem.report.charts import bar_chart, heatmap, line_chart, points_chart, scatter

SECTIONS = ("quality", "leaderboard", "curves", "confusion", "calibration", "learning", "importance", "fairness",
            "footprint", "ensemble", "notes")
_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0;display:block;overflow-x:auto;max-width:100%}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#eee}section{margin-bottom:2em}.charts{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
.sev-error{color:#fff;background:#c44e52;padding:1px 6px;border-radius:3px}
.sev-warning{background:#f2c14e;padding:1px 6px;border-radius:3px}
.sev-info{background:#ddd;padding:1px 6px;border-radius:3px}
.muted{color:#777}figure{margin:0}figcaption{font-size:12px;color:#555;max-width:420px}"""


def _esc(v: object) -> str:
    return html.escape(str(v))


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p class='muted'>none</p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_esc(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_esc(caption)}</figcaption></figure>" if svg else ""


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}"><h2>{_esc(title)}</h2>{body}</section>'


def _missing(what: str) -> str:
    return f"<p class='muted'>{_esc(what)} not recorded in this bundle.</p>"


# -- sections -----------------------------------------------------------------------------------
def _quality(m: dict) -> str:
    q = m.get("quality")
    if not q:
        return _missing("The quality gate's report is")
    c = q["counts"]
    rows = "".join(
        f"<tr><td><span class='sev-{_esc(f['severity'])}'>{_esc(f['severity'])}</span></td><td>{_esc(f['check'])}</td>"
        f"<td>{_esc(f.get('column') or '')}</td><td>{_esc(f['message'])}</td></tr>" for f in q["findings"])
    table = (f"<table><thead><tr><th>severity</th><th>check</th><th>column</th><th>finding</th></tr></thead>"
             f"<tbody>{rows}</tbody></table>") if rows else "<p>No findings: the data passed every check.</p>"
    return (f"<p>{q['rows']} rows, {q['columns']} feature columns: <b>{c['error']} error(s)</b>, {c['warning']} "
            f"warning(s), {c['info']} note(s) (checked in {q['seconds']:.2f} s).</p>{table}")


def _leaderboard(m: dict) -> str:
    lb = m["leaderboard"]
    key = f"val_{m['metric']}"
    bars = bar_chart([(r["model"], r[key], None) for r in lb if isinstance(r.get(key), (int, float))],
                     title=f"{key} by model")
    return f"<p>Validation {_esc(m['metric'])} of every configuration tried.</p>{bars}{_table(lb)}"


def _curves(m: dict) -> str:
    ev = (m.get("curves") or {}).get("evaluation")
    if not ev:
        return _missing("Validation curves are")
    if m["task"] == "regression":
        svg = scatter(ev["actual"], ev["predicted"], title="predicted against actual", x_label="actual",
                      y_label="predicted")
        q = ev["residual_quantiles"]
        return (_figure(svg, f"{len(ev['actual'])} validation rows (a sample); on the dashed line the prediction "
                        "is exact.") + f"<p>Residual (actual - predicted) quantiles 1/10/25/50/75/90/99%: "
                        f"{', '.join(_fmt(v) for v in q)}.</p>")
    roc = line_chart([(f"{k} (AUC {v['auc']:.3f})", v["fpr"], v["tpr"]) for k, v in ev["roc"].items()],
                     title="ROC curve", x_label="false positive rate", y_label="true positive rate",
                     x_range=(0, 1), y_range=(0, 1), diagonal=True)
    pr = line_chart([(f"{k} (AP {v['average_precision']:.3f})", v["recall"], v["precision"])
                     for k, v in ev["pr"].items()], title="precision-recall curve", x_label="recall",
                    y_label="precision", x_range=(0, 1), y_range=(0, 1))
    return (f"<div class='charts'>{_figure(roc, 'Out-of-fold validation predictions; the dashed line is chance.')}"
            f"{_figure(pr, 'Precision against recall as the decision threshold moves.')}</div>")


def _classification_curves(m: dict, what: str) -> tuple[dict | None, str]:
    """(the validation curves, "") for a classifier that has them, else (None, why the section is empty)."""
    if m["task"] == "regression":
        return None, "<p class='muted'>Not applicable to regression.</p>"
    ev = (m.get("curves") or {}).get("evaluation")
    return (ev, "") if ev else (None, _missing(what))


def _confusion(m: dict) -> str:
    ev, empty = _classification_curves(m, "The confusion matrix is")
    if ev is None:
        return empty
    at = f" at the tuned threshold {ev['threshold']:.3f}" if ev.get("threshold") is not None else ""
    return _figure(heatmap(ev["confusion"], ev["labels"], title="confusion matrix"),
                   f"Validation rows{at}: rows are the true labels, columns the predicted ones.")


def _calibration(m: dict) -> str:
    ev, empty = _classification_curves(m, "Calibration is")
    if ev is None:
        return empty
    cal = ev["calibration"]
    svg = line_chart([("observed", cal["predicted"], cal["observed"])], title="calibration",
                     x_label=f"predicted {cal['what']}", y_label="observed frequency", x_range=(0, 1),
                     y_range=(0, 1), diagonal=True, markers=True)
    return _figure(svg, f"Ten bins of the predicted probability; on the dashed line predictions are calibrated. "
                        f"Expected calibration error {cal['expected_calibration_error']:.4f}.")


def _learning(m: dict) -> str:
    curves = m.get("curves") or {}
    parts = []
    lc = curves.get("learning")
    if lc:
        svg = line_chart([(lc["model"], lc["rows"], lc["scores"])], title="learning curve",
                         x_label="training rows", y_label=f"validation {lc['metric']}", markers=True)
        parts.append(_figure(svg, f"{lc['model']} refit on growing shares of its training rows: {lc['verdict']}."))
    members = [e["model"] for e in m.get("ensemble", [])]
    training = curves.get("training") or {}
    for name in members + [n for n in training if n not in members][: max(0, 3 - len(members))]:
        c = training.get(name)
        if not c:
            continue
        svg = line_chart([("train", c["steps"], c["train"]), ("validation", c["steps"], c["valid"])],
                         title=f"{name}: training curve", x_label=c["unit"], y_label=c["metric"])
        parts.append(_figure(svg, f"{name}: {c['metric']} on its training and validation rows; the kept model is "
                                  f"the one at {c['unit']} {c['best']}. A widening gap is overfitting."))
    if not parts:
        return _missing("Learning curves are")
    return f"<div class='charts'>{''.join(parts)}</div>"


IMPORTANCE_BARS = 40  # the chart shows the largest; the manifest keeps every scored column


def _importance(m: dict) -> str:
    imp = m.get("importance")
    if not imp:
        return _missing("Permutation importance is")
    shown = imp["columns"][:IMPORTANCE_BARS]
    bars = bar_chart([(c["column"], c["importance"], c["std"]) for c in shown], title="permutation importance")
    more = (f" The {len(shown)} largest of the {len(imp['columns']):,} scored columns are shown."
            if len(shown) < len(imp["columns"]) else "")
    if imp.get("scored_on"):
        on = (f"Scored {_esc(imp['scored_on'])}: no row is scored by a model that trained on it, so the baseline "
              "is the ensemble's out-of-fold score on these rows.")
    else:  # a bundle from before importance was scored out of fold
        on = "Scored on the holdout fold's rows through the refit model, which had trained on them."
    note = f" <strong>{_esc(imp['note'][:1].upper() + imp['note'][1:])}.</strong>" if imp.get("note") else ""
    return (f"<p>Drop in validation {_esc(imp['metric'])} (baseline {imp['baseline']:.4f}) when one column's "
            f"values are shuffled across {imp['rows']} rows, mean of {imp['repeats']} shuffles (whisker: one "
            f"standard deviation). {on} Through the ensemble's ONNX graphs, preprocessing included.{note}{more}"
            f"</p>{bars}")


def _fairness(m: dict) -> str:
    f = m.get("fairness")
    if not f:
        return "<p class='muted'>No sensitive column was named (train with <code>--sensitive COL</code>).</p>"
    groups = [{f["column"]: g, **v} for g, v in f["groups"].items()]
    charts = ""
    if m["task"] == "binary":
        series = [(metric, [g[metric] for g in f["groups"].values()]) for metric in ("selection_rate", "tpr", "fpr")]
        captions = {"selection_rate": "selection rate (share predicted positive)", "tpr": "true positive rate",
                    "fpr": "false positive rate"}
        charts = "<div class='charts'>" + "".join(_figure(
            bar_chart([(name, v, None) for name, v in zip(f["groups"], values, strict=True) if v is not None],
                      title=f"{metric} by {f['column']}"), f"{captions[metric]} by {f['column']}")
            for metric, values in series) + "</div>"
    disparity = _table([f["disparity"]])
    return (f"<p>By <code>{_esc(f['column'])}</code> on {_esc(f['on'])}.</p>{_table(groups)}{charts}"
            f"<h3>Disparity</h3>{disparity}<p class='muted'>Demographic-parity ratio: lowest selection rate over "
            "the highest (1 is parity). Equalized-odds difference: the larger gap in TPR or FPR (0 is equal odds).</p>")


def _footprint(m: dict) -> str:
    fp = m.get("footprint") or {}
    train = fp.get("train") or {}
    if train.get("supplied_by_user"):
        return _supplied_footprint(fp)
    if "energy_kwh" not in train:
        return _table([{"phase": k, **v} for k, v in fp.items()]) if fp else _missing("The footprint is")
    from tandem.footprint.life import life_lines, life_report

    life = life_report(fp) if fp.get("inference") else None
    grid = train["grid"]
    parts = [f"<p>Energy and CO2e of training, {_esc(train['method'])} with {_esc(train['library'])} in process mode "
             f"(models: this process's CPU time and memory; counters, where present, whole devices), PUE "
             f"{train['pue']:g}, grid {_esc(grid['country'])} at "
             f"{grid['intensity_g_per_kwh']:g} g/kWh ({_esc(grid['source'])}). Ranges: the power models' low and "
             "high (see the README).</p>",
             _table([{"part": k, **v} for k, v in train["components"].items()])]
    if life is not None:
        parts.append("<ul>" + "".join(f"<li>{_esc(line)}</li>" for line in life_lines(life)) + "</ul>")
        parts.append(_life_chart(life))
    phases = [{"phase": k, **v} for k, v in train.get("phases", {}).items()]
    if phases:
        parts.append("<h3>Phases</h3>" + _table(phases))
    learners = train.get("per_learner") or []
    if learners:
        parts.append("<div class='charts'>" + _figure(
            bar_chart([(r["learner"], r["energy_kwh"] * 1000, None) for r in learners], title="energy per learner",
                      unit=" Wh"), "training energy per learner family (trials, refits and learning-curve fits)")
            + "</div>" + _table(learners))
    return "".join(parts)


def _supplied_footprint(fp: dict) -> str:
    """The ledger of a model trained elsewhere whose training energy the user gave."""
    from tandem.footprint.life import life_lines, life_report

    train = fp["train"]
    parts = [f"<p>Training (outside tandem): {_fmt(train['energy_kwh'])} kWh, as supplied by the user.</p>"]
    if fp.get("inference") and train.get("grid"):
        life = life_report(fp)
        parts.append("<ul>" + "".join(f"<li>{_esc(line)}</li>" for line in life_lines(life)) + "</ul>")
        parts.append(_life_chart(life))
    rest = [{"phase": k, **v} for k, v in fp.items() if k != "train"]
    return "".join(parts) + (_table(rest) if rest else "")


def _life_chart(life: dict) -> str:
    """Cumulative CO2e against predictions served: training's fixed cost, inference's growing one."""
    even = life["break_even"]["predictions"]
    if not even:
        return ""
    train_g = life["training"]["co2_kg"] * 1000
    per_g = life["per_1000_predictions"]["co2_kg"] * 1000  # g per 1,000 predictions
    xs = [even * f for f in (0, 0.5, 1, 1.5, 2, 3)]
    svg = line_chart([("training", xs, [train_g] * len(xs)),
                      ("inference", xs, [x / 1000 * per_g for x in xs]),
                      ("training + inference", xs, [train_g + x / 1000 * per_g for x in xs])],
                     title="life of the model", x_label="predictions served", y_label="g CO2e (cumulative)")
    return "<div class='charts'>" + _figure(svg, f"inference overtakes training after {even:,.0f} predictions") + \
        "</div>"


def _optimization(m: dict) -> str:
    """What ``tandem optimize`` tried for this variant's parent: every candidate, kept or not, on two charts."""
    o = m["optimization"]
    rows = o.get("candidates") or []
    metric = o.get("metric", m["metric"])
    points = [(r["variant"], r.get("one_row_us"), r.get("value"), r.get("kept", False)) for r in rows
              if r.get("one_row_us") is not None and r.get("value") is not None]
    sized = [(r["variant"], r["bytes"] / 1000, r.get("value"), r.get("kept", False)) for r in rows
             if r.get("bytes") is not None and r.get("value") is not None]
    spent = [(r["variant"], r["energy_j_per_1000"], r.get("value"), r.get("kept", False)) for r in rows
             if r.get("energy_j_per_1000") is not None and r.get("value") is not None]
    parent = m.get("lineage", {}).get("parent")
    intro = (f"<p>This bundle is the <b>{_esc(o['method'])}</b> variant of <code>{_esc(parent)}</code>, "
             f"scored on {_esc(o.get('rows'))} labelled rows its parent never trained on. Filled: kept "
             "(registered); rings: not kept.</p>")
    charts = (_figure(points_chart(points, title=f"{metric} against one-row latency", x_label="one-row p50 (µs)",
                                   y_label=metric), "Up and to the left is better.")
              + _figure(points_chart(sized, title=f"{metric} against size", x_label="graph size (KB)",
                                     y_label=metric), "Up and to the left is better.")
              + (_figure(points_chart(spent, title=f"{metric} against energy", x_label="J per 1,000 one-row "
                                      "predictions", y_label=metric), "Up and to the left is better.")
                 if spent else ""))
    return intro + f"<div class='charts'>{charts}</div>" + _table(rows)


def _imported(m: dict) -> str:
    """An imported model's card: where it came from, how it was converted and checked, what it takes."""
    i, parity = m["imported"], m["parity"]
    rows = [{"column": c["name"], "kind": c["kind"], "shape": c.get("shape"), "dtype": c.get("dtype"),
             "categories": len(c["categories"]) if c.get("categories") else None, "min": c.get("min"),
             "max": c.get("max"), "missing": c.get("missing")} for c in m["schema"]["columns"]]
    return (f"<p>Trained with <b>{_esc(i['framework'])}</b> {_esc(i.get('library_version') or '')} outside "
            f"tandem; imported from <code>{_esc(i['from'])}</code>, converted by {_esc(i['converted_by'])}. Its "
            f"answer (output <code>{_esc(i['output'])}</code>) is read as {_esc(i['meaning'])}. The bundle graph "
            f"agrees with the source framework to {_fmt(parity['max_abs_diff'])} (allowed "
            f"{_fmt(parity.get('tolerance'))}) on {_esc(parity.get('on', parity.get('rows')))}.</p>"
            + "<h3>Inputs</h3>" + _table(rows))


def _recommend_tradeoff(m: dict) -> str:
    """Each configuration's validation NDCG against the share of the catalogue it recommends."""
    k = m["recommend"]["k"]
    chosen = {e["model"] for e in m["ensemble"]}
    points = [(r["model"], r.get(f"val_coverage@{k}"), r.get(f"val_ndcg@{k}"), r["model"] in chosen)
              for r in m["leaderboard"]]
    points = [p for p in points if isinstance(p[1], (int, float)) and isinstance(p[2], (int, float))]
    if not points:
        return _missing("Coverage figures are")
    svg = points_chart(points, title=f"NDCG@{k} against catalogue coverage@{k}", x_label="coverage (share of items "
                       "recommended to someone)", y_label=f"NDCG@{k}")
    return _figure(svg, "Every configuration tried, on the validation users; the filled dot is the one kept. "
                   "Popularity sits bottom left: accurate for no one in particular, and always the same items.")


def render_report(manifest: dict) -> str:
    """The report page for ``manifest``: a model card without the training sections for an imported model."""
    m = manifest
    metrics = m["metrics"]["validation"]
    notes = m.get("warnings", []) + m.get("notes", [])
    if m["task"] == "recommend":
        body = [
            _section("quality", "Data quality", _quality(m)),
            _section("leaderboard", "Leaderboard", _leaderboard(m)),
            _section("tradeoff", "Accuracy against breadth", _recommend_tradeoff(m)),
            _section("footprint", "Footprint", _footprint(m)),
            _section("ensemble", "Chosen model", _table(m["ensemble"])),
            _section("notes", "Notes", "<ul>" + ("".join(f"<li>{_esc(n)}</li>" for n in notes) or "<li>none</li>")
                     + "</ul>"),
        ]
    elif m.get("imported"):
        body = [
            _section("imported", "Model card", _imported(m)),
            _section("quality", "Data quality (the sample)", _quality(m)) if m.get("quality") else "",
            _section("footprint", "Footprint", _footprint(m)),
            _section("optimization", "Optimization", _optimization(m)) if m.get("optimization") else "",
            _section("notes", "Notes", "<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>"),
        ]
    else:
        body = [
            _section("quality", "Data quality", _quality(m)),
            _section("leaderboard", "Leaderboard", _leaderboard(m)),
            _section("curves", "ROC and precision-recall" if m["task"] != "regression" else "Predictions",
                     _curves(m)),
            _section("confusion", "Confusion matrix", _confusion(m)),
            _section("calibration", "Calibration", _calibration(m)),
            _section("learning", "Learning curves", _learning(m)),
            _section("importance", "Importance", _importance(m)),
            _section("fairness", "Fairness", _fairness(m)),
            _section("footprint", "Footprint", _footprint(m)),
            _section("ensemble", "Ensemble", _table(m["ensemble"])),
            _section("optimization", "Optimization", _optimization(m)) if m.get("optimization") else "",
            _section("notes", "Notes", "<ul>" + ("".join(f"<li>{_esc(n)}</li>" for n in notes) or "<li>none</li>")
                     + "</ul>"),
        ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tandem: {_esc(m['name'])}</title><style>{_STYLE}</style></head>
<body><h1>{_esc(m['name'])} v{_esc(m.get('version'))}</h1>
<p>Task: {_esc(m['task'])}; target: <code>{_esc(m['target'])}</code>; metric: {_esc(m['metric'])}; validation:
{_esc(m['metrics']['validation_scheme'])}; created {_esc(m.get('created_at', ''))}.</p>
<h2>{"Metrics on the sample" if m.get("imported") else "Validation metrics (ensemble)"}</h2>{_table([metrics])}
{''.join(body)}
</body></html>
"""
