"""Self-contained HTML report pieces: embedded PNGs, SVG line charts, tables."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from PIL import Image

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def img_tag(image: np.ndarray, width: int | None = None, alt: str = "") -> str:
    """uint8 HWC array -> <img> with an embedded PNG (pixelated scaling keeps small images crisp)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    w = f' width="{width}"' if width else ""
    return f'<img src="data:image/png;base64,{b64}"{w} alt="{html.escape(alt)}" style="image-rendering:pixelated">'


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, width: int = 460, height: int = 240,
               log_y: bool = False) -> str:
    """Inline SVG chart of named (x, y) series with axes labels at min/max."""
    pts = [(x, y) for s in series.values() for x, y in s if y is not None and np.isfinite(y) and (y > 0 or not log_y)]
    if not pts:
        return f"<p>{html.escape(title)}: no data</p>"
    tf = (lambda v: float(np.log10(v))) if log_y else float
    xs, ys = [p[0] for p in pts], [tf(p[1]) for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-9)
    L, R, T, B = 50, 10, 24, 28
    sx = lambda x: L + (x - x0) / (x1 - x0) * (width - L - R)  # noqa: E731
    sy = lambda y: T + (1 - (tf(y) - y0) / (y1 - y0)) * (height - T - B)  # noqa: E731
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" style="font:11px sans-serif">',
             f'<text x="{width / 2}" y="14" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>',
             f'<rect x="{L}" y="{T}" width="{width - L - R}" height="{height - T - B}" fill="none" stroke="#999"/>']
    lab = (lambda v: f"{10 ** v:.3g}") if log_y else (lambda v: f"{v:.3g}")
    parts += [f'<text x="{L - 4}" y="{T + 8}" text-anchor="end">{lab(y1)}</text>',
              f'<text x="{L - 4}" y="{height - B}" text-anchor="end">{lab(y0)}</text>',
              f'<text x="{L}" y="{height - 8}">{x0:g}</text>', f'<text x="{width - R}" y="{height - 8}" text-anchor="end">{x1:g}</text>']
    for i, (name, s) in enumerate(series.items()):
        good = [(x, y) for x, y in s if y is not None and np.isfinite(y) and (y > 0 or not log_y)]
        if not good:
            continue
        c = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{path}"/>')
        parts.append(f'<text x="{L + 6}" y="{T + 14 + 13 * i}" fill="{c}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """HTML table from a list of dicts (floats shown with 4 significant digits)."""
    if not rows:
        return "<p>(no rows)</p>"
    columns = columns or list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, sections: list[tuple[str, str]]) -> str:
    """A whole HTML document from (heading, html body) sections."""
    css = ("body{font-family:sans-serif;max-width:1100px;margin:24px auto;color:#222}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
           "h2{border-bottom:1px solid #ddd;padding-bottom:4px}.row{display:flex;flex-wrap:wrap;gap:12px}"
           "figure{margin:0}figcaption{font-size:12px;text-align:center}")
    body = "".join(f"<h2>{html.escape(h)}</h2>{b}" for h, b in sections)
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{css}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
