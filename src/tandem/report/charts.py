"""Small inline-SVG charts for the HTML report: lines, bars, a heatmap, a scatter. No JavaScript, no network."""

from __future__ import annotations

import html
import math

PALETTE = ("#4a7fb5", "#e07b39", "#3a9d5d", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
W, H = 420, 300  # chart size
L, R, T, B = 52, 12, 14, 40  # margins: room for the axes' ticks and labels


def _esc(v: object) -> str:
    return html.escape(str(v))


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


class _Frame:
    """Axes mapping data coordinates to the SVG box."""

    def __init__(self, x: tuple[float, float], y: tuple[float, float]):
        self.x0, self.x1 = x if x[1] > x[0] else (x[0] - 1, x[0] + 1)
        self.y0, self.y1 = y if y[1] > y[0] else (y[0] - 1, y[0] + 1)

    def px(self, x: float) -> float:
        return L + (x - self.x0) / (self.x1 - self.x0) * (W - L - R)

    def py(self, y: float) -> float:
        return H - B - (y - self.y0) / (self.y1 - self.y0) * (H - T - B)

    def axes(self, x_label: str, y_label: str) -> str:
        parts = [f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#bbb"/>']
        for t in _ticks(self.x0, self.x1):
            parts.append(f'<text x="{self.px(t):.1f}" y="{H - B + 14}" font-size="10" text-anchor="middle">'
                         f'{_fmt(t)}</text>')
        for t in _ticks(self.y0, self.y1):
            parts.append(f'<line x1="{L}" x2="{W - R}" y1="{self.py(t):.1f}" y2="{self.py(t):.1f}" stroke="#eee"/>'
                         f'<text x="{L - 4}" y="{self.py(t) + 3:.1f}" font-size="10" text-anchor="end">'
                         f'{_fmt(t)}</text>')
        parts.append(f'<text x="{(L + W - R) / 2}" y="{H - 6}" font-size="11" text-anchor="middle">'
                     f'{_esc(x_label)}</text>')
        parts.append(f'<text x="12" y="{(T + H - B) / 2}" font-size="11" text-anchor="middle" '
                     f'transform="rotate(-90 12 {(T + H - B) / 2})">{_esc(y_label)}</text>')
        return "".join(parts)


def _svg(body: str, title: str, width: int = W, height: int = H) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="{_esc(title)}"><title>{_esc(title)}</title>{body}</svg>')


def _legend(names: list[str]) -> str:
    return "".join(f'<rect x="{L + 8}" y="{T + 6 + 14 * i}" width="10" height="3" fill="{PALETTE[i % len(PALETTE)]}"/>'
                   f'<text x="{L + 22}" y="{T + 10 + 14 * i}" font-size="10">{_esc(n)}</text>'
                   for i, n in enumerate(names))


def line_chart(series: list[tuple[str, list[float], list[float]]], *, title: str, x_label: str, y_label: str,
               x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None,
               diagonal: bool = False, markers: bool = False) -> str:
    """Lines (name, xs, ys); ``diagonal`` draws y = x (a chance line or perfect calibration)."""
    xs = [x for _, sx, _ in series for x in sx]
    ys = [y for _, _, sy in series for y in sy if y is not None and math.isfinite(y)]
    if not xs or not ys:
        return ""
    f = _Frame(x_range or (min(xs), max(xs)), y_range or (min(ys), max(ys)))
    body = [f.axes(x_label, y_label)]
    if diagonal:
        lo, hi = max(f.x0, f.y0), min(f.x1, f.y1)
        body.append(f'<line x1="{f.px(lo):.1f}" y1="{f.py(lo):.1f}" x2="{f.px(hi):.1f}" y2="{f.py(hi):.1f}" '
                    'stroke="#999" stroke-dasharray="4 3"/>')
    for i, (_, sx, sy) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        pts = " ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in zip(sx, sy, strict=False)
                       if y is not None and math.isfinite(y))
        body.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.8"/>')
        if markers:
            body += [f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="3" fill="{color}"/>'
                     for x, y in zip(sx, sy, strict=False) if y is not None and math.isfinite(y)]
    body.append(_legend([name for name, _, _ in series]))
    return _svg("".join(body), title)


def scatter(xs: list[float], ys: list[float], *, title: str, x_label: str, y_label: str) -> str:
    if not xs:
        return ""
    lo, hi = min(min(xs), min(ys)), max(max(xs), max(ys))
    f = _Frame((lo, hi), (lo, hi))
    dots = "".join(f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="2" fill="{PALETTE[0]}" fill-opacity="0.5"/>'
                   for x, y in zip(xs, ys, strict=True))
    diag = (f'<line x1="{f.px(lo):.1f}" y1="{f.py(lo):.1f}" x2="{f.px(hi):.1f}" y2="{f.py(hi):.1f}" '
            'stroke="#999" stroke-dasharray="4 3"/>')
    return _svg(f.axes(x_label, y_label) + diag + dots, title)


def points_chart(points: list[tuple[str, float, float, bool]], *, title: str, x_label: str, y_label: str) -> str:
    """Labelled points (label, x, y, filled): filled dots for what was kept, rings for what was not."""
    points = [p for p in points if math.isfinite(p[1]) and math.isfinite(p[2])]
    if not points:
        return ""
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    pad_x, pad_y = (max(xs) - min(xs)) * 0.08 or abs(xs[0]) * 0.1 or 1, (max(ys) - min(ys)) * 0.08 or 1e-3
    f = _Frame((min(xs) - pad_x, max(xs) + pad_x), (min(ys) - pad_y, max(ys) + pad_y))
    body = [f.axes(x_label, y_label)]
    for i, (label, x, y, filled) in enumerate(points):
        color = PALETTE[i % len(PALETTE)]
        body.append(f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="4" stroke="{color}" stroke-width="1.5" '
                    f'fill="{color if filled else "white"}"/>'
                    f'<text x="{f.px(x) + 6:.1f}" y="{f.py(y) - 5:.1f}" font-size="10">{_esc(label)}</text>')
    return _svg("".join(body), title)


def bar_chart(items: list[tuple[str, float, float | None]], *, title: str, unit: str = "") -> str:
    """Horizontal bars (label, value, error or None); negative values extend left of zero."""
    if not items:
        return ""
    h, label_w, bar_w = 20, 170, 330
    top = max(max(abs(v) + (e or 0) for _, v, e in items), 1e-12)
    neg = any(v < 0 for _, v, _ in items)
    zero = label_w + (bar_w / 2 if neg else 0)
    scale = (bar_w / 2 if neg else bar_w) / top
    rows = []
    for i, (label, v, e) in enumerate(items):
        y = i * h + 4
        x, w = (zero, v * scale) if v >= 0 else (zero + v * scale, -v * scale)
        rows.append(f'<text x="{label_w - 6}" y="{y + 11}" font-size="11" text-anchor="end">{_esc(label)}</text>'
                    f'<rect x="{x:.1f}" y="{y}" width="{max(w, 0.5):.1f}" height="13" fill="{PALETTE[0]}"/>')
        if e:
            rows.append(f'<line x1="{zero + (v - e) * scale:.1f}" x2="{zero + (v + e) * scale:.1f}" y1="{y + 6.5}" '
                        f'y2="{y + 6.5}" stroke="#333"/>')
        rows.append(f'<text x="{label_w + bar_w + 8}" y="{y + 11}" font-size="11">{_fmt(v)}{_esc(unit)}</text>')
    rows.append(f'<line x1="{zero}" x2="{zero}" y1="0" y2="{len(items) * h + 6}" stroke="#666"/>')
    return _svg("".join(rows), title, width=label_w + bar_w + 70, height=len(items) * h + 8)


def heatmap(matrix: list[list[int]], labels: list[str], *, title: str) -> str:
    """A confusion matrix: rows are the true labels, columns the predicted ones."""
    n = len(matrix)
    if not n:
        return ""
    cell = max(18, min(60, 480 // n))
    pad = 110
    top = max(max(r) for r in matrix) or 1
    parts = [f'<text x="{pad + n * cell / 2}" y="12" font-size="11" text-anchor="middle">predicted</text>',
             f'<text x="12" y="{24 + n * cell / 2}" font-size="11" text-anchor="middle" '
             f'transform="rotate(-90 12 {24 + n * cell / 2})">true</text>']
    for i, row in enumerate(matrix):
        parts.append(f'<text x="{pad - 6}" y="{24 + i * cell + cell / 2 + 4}" font-size="10" text-anchor="end">'
                     f'{_esc(labels[i])}</text>')
        for j, v in enumerate(row):
            shade = 1 - 0.85 * v / top
            fill = f"rgb({int(74 + 181 * shade)},{int(127 + 128 * shade)},{int(181 + 74 * shade)})"
            color = "#fff" if shade < 0.5 else "#222"
            parts.append(f'<rect x="{pad + j * cell}" y="{24 + i * cell}" width="{cell}" height="{cell}" '
                         f'fill="{fill}" stroke="#fff"/><text x="{pad + j * cell + cell / 2}" '
                         f'y="{24 + i * cell + cell / 2 + 4}" font-size="{10 if cell < 40 else 12}" '
                         f'text-anchor="middle" fill="{color}">{v}</text>')
    for j in range(n):
        parts.append(f'<text x="{pad + j * cell + cell / 2}" y="{24 + n * cell + 14}" font-size="10" '
                     f'text-anchor="middle">{_esc(labels[j][:8])}</text>')
    return _svg("".join(parts), title, width=pad + n * cell + 10, height=24 + n * cell + 24)
