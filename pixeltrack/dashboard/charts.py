"""Charts as inline SVG, drawn on the server.

No chart library and no CDN: the pages work offline, need no JavaScript and
no inline script or style (the Content-Security-Policy forbids both), and
the numbers a chart shows are the numbers of the table beside it. Colours
come from classes in dashboard.css. Text is escaped here; coordinates are
numbers formatted by this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup


@dataclass(frozen=True)
class Series:
    """One line of a chart: a name for the legend, values, and a colour class."""

    name: str
    values: Sequence[float]
    css: str = "s0"


def _n(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _points(values: Sequence[float], width: float, height: float, top: float, pad: float = 0) -> list[str]:
    count = len(values)
    step = (width - 2 * pad) / (count - 1) if count > 1 else 0
    return [f"{_n(pad + i * step)},{_n(height - (v / top) * height if top else height)}" for i, v in
            enumerate(values)]


def nice_top(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 2, 5 times a power of ten)."""
    if value <= 0:
        return 1
    scale = 1.0
    while scale * 10 <= value:
        scale *= 10
    for step in (1, 2, 5, 10):
        if step * scale >= value:
            return step * scale
    return 10 * scale


def line_chart(labels: Sequence[str], series: Sequence[Series], title: str, width: int = 720,
               height: int = 240) -> Markup:
    """A line chart with a y axis, first/middle/last x labels and a legend under them."""
    left, bottom, top_pad, right = 48, 46, 10, 12
    plot_w, plot_h = width - left - right, height - bottom - top_pad
    peak = max((v for s in series for v in s.values), default=0)
    top = nice_top(peak)
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    out.append(f'<g transform="translate({left},{top_pad})">')
    for frac in (0, 0.5, 1):
        y = _n(plot_h - frac * plot_h)
        out.append(f'<line class="grid" x1="0" x2="{plot_w}" y1="{y}" y2="{y}"/>'
                   f'<text class="axis" x="-6" y="{y}" text-anchor="end" dominant-baseline="middle">'
                   f'{_n(top * frac)}</text>')
    if labels:
        idx = sorted({0, len(labels) // 2, len(labels) - 1})
        step = plot_w / (len(labels) - 1) if len(labels) > 1 else 0
        for i in idx:
            anchor = "start" if i == 0 else "end" if i == len(labels) - 1 else "middle"
            out.append(f'<text class="axis" x="{_n(i * step)}" y="{plot_h + 18}" text-anchor="{anchor}">'
                       f'{escape(labels[i])}</text>')
    for s in series:
        if s.values:
            pts = _points(s.values, plot_w, plot_h, top)
            out.append(f'<path class="line {escape(s.css)}" data-series="{escape(s.name)}" '
                       f'd="M{" L".join(pts)}"/>')
    out.append("</g>")
    x = left
    for s in series:
        out.append(f'<rect class="key {escape(s.css)}" x="{x}" y="{height - 10}" width="10" height="4"/>'
                   f'<text class="legend" x="{x + 14}" y="{height - 6}" dominant-baseline="middle">'
                   f'{escape(s.name)}</text>')
        x += 24 + 7 * len(s.name)
    out.append("</svg>")
    return Markup("".join(out))


def sparkline(values: Sequence[float], label: str, width: int = 120, height: int = 28) -> Markup:
    """A small trend line without axes (the figure beside it carries the number)."""
    top = max(values, default=0) or 1
    pts = _points(values, width, height - 2, top, pad=1) if len(values) > 1 else [f"0,{height - 2}",
                                                                                    f"{width},{height - 2}"]
    return Markup(f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
                  f'role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
                  f'<title>{escape(label)}</title><path class="line s0" d="M{" L".join(pts)}"/></svg>')


def bar(value: float, maximum: float, css: str = "s0", width: int = 160, height: int = 12) -> Markup:
    """A horizontal bar, ``value`` of ``maximum``; decorative (the number is in the cell beside it)."""
    length = 0.0 if maximum <= 0 else max(0.0, min(1.0, value / maximum)) * width
    return Markup(f'<svg class="bar" viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
                  f'aria-hidden="true" xmlns="http://www.w3.org/2000/svg">'
                  f'<rect class="track" width="{width}" height="{height}"/>'
                  f'<rect class="fill {escape(css)}" width="{_n(length)}" height="{height}"/></svg>')
