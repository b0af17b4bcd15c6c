"""What the front doors print: a model's summary, tables of rows, quality findings, fairness figures.

Shared by the command line (``tandem.cli``) and the quickstart, with rich; it imports neither of them.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

SEVERITY_STYLE = {"error": "[red]error[/red]", "warning": "[yellow]warning[/yellow]", "info": "note"}


def fmt(v: object) -> str:
    """A table cell: '-' for a missing value, floats to 4 decimals (4 significant digits when large)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"
    return str(v)


def rows_table(rows: list[dict], title: str, columns: list[str] | None = None) -> Table:
    """A rich table of dicts: ``columns``, or every key in the order first seen."""
    table = Table(title=title, title_justify="left")
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    for c in cols:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*[fmt(r.get(c)) for c in cols])
    return table


def leaderboard_columns(rows: list[dict], metric: str) -> list[str]:
    """The leaderboard's columns worth showing, of those present."""
    wanted = ["model", "family", f"val_{metric}", f"train_{metric}", "fit_seconds", "predict_1row_us",
              "onnx_bytes", "ensemble_weight", "overfits"]
    present = {k for r in rows for k in r}
    return [c for c in wanted if c in present]


def leaderboard_rows(rows: list[dict], metric: str) -> list[dict]:
    """The leaderboard's rows with short column names."""
    short = {f"val_{metric}": "val", f"train_{metric}": "train", "fit_seconds": "fit s",
             "predict_1row_us": "1-row µs", "onnx_bytes": "onnx bytes", "ensemble_weight": "weight"}
    cols = leaderboard_columns(rows, metric)
    return [{short.get(c, c): r.get(c) for c in cols} for r in rows]


def print_model(model: object, *, console: Console = out) -> None:
    """A trained model's summary: its leaderboard, validation metrics, ensemble, footprint, findings, notes."""
    m = model.manifest
    if m["task"] == "recommend":
        r = m["recommend"]
        console.print(f"[bold]{m['name']}:{m.get('version')}[/bold]  task=recommend  user={r['user']}  "
                      f"item={r['item']}  metric={m['metric']}  ({r['users']} users x {r['items']} items, "
                      f"{r['interactions']} interactions)")
    else:
        console.print(f"[bold]{m['name']}:{m.get('version')}[/bold]  task={m['task']}  target={m['target']}  "
                      f"metric={m['metric']}  threshold={m['threshold']:.4f}")
    console.print(f"bundle: {model.path}")
    lb = m["leaderboard"]
    console.print(rows_table(leaderboard_rows(lb, m["metric"]), f"Leaderboard (scores: {m['metric']})"))
    console.print(rows_table([m["metrics"]["validation"]],
                             f"Validation metrics of the ensemble ({m['metrics']['validation_scheme']})"))
    ens = ", ".join(f"{e['model']} x{e['weight']:.2f}" for e in m["ensemble"])
    one = "one user's top-k" if m["task"] == "recommend" else "1-row predict"
    console.print(f"ensemble: {ens}; ONNX vs native max abs diff {m['parity']['max_abs_diff']:.2e}; "
                  f"{one} p50 {m['latency']['predict_1row_us_p50']} µs")
    if "inference" in (m.get("footprint") or {}):
        from tandem.footprint.life import life_lines, life_report

        for line in life_lines(life_report(m["footprint"]))[:3]:
            console.print(f"footprint: {line}", markup=False, highlight=False, soft_wrap=True)
    if m.get("fairness"):
        print_fairness(m["fairness"], console=console)
    if m.get("quality"):
        print_findings(m["quality"], console=console, least="warning")
    for w in m.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {w}")
    for n in m.get("notes", []):
        console.print(f"note: {n}")


def print_findings(report: dict, *, console: Console = out, least: str = "info") -> None:
    """One line per finding at least as severe as ``least``, after a one-line summary."""
    from rich.markup import escape

    from tandem.bundle.manifest import SEVERITIES

    shown = SEVERITIES[: SEVERITIES.index(least) + 1]
    c = report["counts"]
    console.print(f"quality gate: {c['error']} error(s), {c['warning']} warning(s), {c['info']} note(s) "
                  f"({report['rows']} rows, {report['columns']} columns, {report['seconds']:.2f} s)")
    for f in report["findings"]:
        if f["severity"] in shown:
            where = f"column '{f['column']}': " if f["column"] else ""
            console.print(f"  {SEVERITY_STYLE[f['severity']]} {f['check']}: {escape(where + f['message'])}",
                          highlight=False)


def print_fairness(f: dict, *, console: Console = out) -> None:
    """Fairness figures by group, and the disparities between groups."""
    console.print(rows_table([{f["column"]: g, **m} for g, m in f["groups"].items()],
                             f"Fairness by '{f['column']}' on {f['on']}"))
    console.print("disparity: " + ", ".join(f"{k} {fmt(v)}" for k, v in f["disparity"].items()), highlight=False)
