"""A self-contained HTML page from a bundle manifest: metrics, leaderboard, ensemble, notes."""

from __future__ import annotations

import html


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>none</p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _bars(rows: list[dict], key: str) -> str:
    """A horizontal bar chart (inline SVG) of one leaderboard column."""
    vals = [(r["model"], r.get(key)) for r in rows if isinstance(r.get(key), (int, float))]
    if not vals:
        return ""
    top = max(abs(v) for _, v in vals) or 1.0
    h = 22
    bars = []
    for i, (name, v) in enumerate(vals):
        w = 360 * abs(v) / top
        bars.append(f'<text x="0" y="{i * h + 15}" font-size="12">{html.escape(name)}</text>'
                    f'<rect x="150" y="{i * h + 4}" width="{w:.1f}" height="14" fill="#4a7fb5"/>'
                    f'<text x="{155 + w:.1f}" y="{i * h + 15}" font-size="12">{v:.4f}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="600" height="{len(vals) * h + 6}" '
            f'role="img" aria-label="{html.escape(key)} by model">{"".join(bars)}</svg>')


def render_report(manifest: dict) -> str:
    """The report page for ``manifest``."""
    metric = manifest["metric"]
    metrics = manifest["metrics"]["validation"]
    lb = manifest["leaderboard"]
    notes = manifest.get("warnings", []) + manifest.get("notes", [])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tandem: {html.escape(str(manifest['name']))}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}th{{background:#eee}}</style></head>
<body><h1>{html.escape(str(manifest['name']))} v{manifest.get('version')}</h1>
<p>Task: {html.escape(manifest['task'])}; target: <code>{html.escape(manifest['target'])}</code>;
metric: {html.escape(metric)}; validation: {html.escape(manifest['metrics']['validation_scheme'])}.</p>
<h2>Validation metrics (ensemble)</h2>{_table([metrics])}
<h2>Leaderboard</h2>{_bars(lb, f'val_{metric}')}{_table(lb)}
<h2>Ensemble</h2>{_table(manifest['ensemble'])}
<h2>Notes</h2><ul>{''.join(f'<li>{html.escape(n)}</li>' for n in notes) or '<li>none</li>'}</ul>
<h2>Footprint</h2>{_table([manifest['footprint']['train']])}
</body></html>
"""
