"""Server-side HTML with Jinja2, autoescape on for every template.

Everything a hit carries (page titles, URLs, agents, referrers) and every
name an operator typed is escaped on output; only charts.py's SVG, which
escapes its own text, is marked safe.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from pixeltrack.dashboard import charts
from pixeltrack.dashboard.keys import PRINCIPAL, TEMPLATES


def number(value: Any) -> str:
    """1234567 -> 1,234,567; None -> an en dash (not known in this mode)."""
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    if isinstance(value, int | float):
        return f"{int(value):,}"
    return str(value)


def percent(value: float | None) -> str:
    """0.1234 -> 12.3 %."""
    return "–" if value is None else f"{value * 100:.1f} %"


def when(value: Any) -> str:
    """A time as YYYY-MM-DD HH:MM UTC (ISO strings and datetimes)."""
    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")
    return str(value)


def duration(seconds: float | None) -> str:
    """Seconds as 2 h 3 min / 4 min 5 s / 6 s."""
    if seconds is None:
        return "–"
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def size(value: int | None) -> str:
    """Bytes as kB / MB."""
    if value is None:
        return "–"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def label(key: str) -> str:
    """A dict key as a heading: machine_reason -> Machine reason."""
    return str(key).replace("_", " ").capitalize()


def query(request: web.Request, **changes: Any) -> str:
    """This page's query string with some parameters changed (None removes one)."""
    params = {k: v for k, v in request.query.items()}
    for k, v in changes.items():
        if v is None:
            params.pop(k, None)
        else:
            params[k] = str(v)
    return "?" + urlencode(params) if params else "?"


def environment() -> jinja2.Environment:
    """The template environment of the package's templates folder."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pixeltrack.dashboard", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        extensions=["jinja2.ext.do"],
    )
    env.filters.update(number=number, percent=percent, when=when, duration=duration, size=size, label=label)
    env.globals.update(bar=charts.bar, sparkline=charts.sparkline, line_chart=charts.line_chart,
                       Series=charts.Series, query=query)
    return env


def page(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    """Render ``template`` with the user, the CSRF token and ``context``."""
    who = request.get(PRINCIPAL)
    html = request.app[TEMPLATES].get_template(template).render(
        request=request, user=who, csrf=who.csrf_token if who else "", **context
    )
    return web.Response(text=html, content_type="text/html", status=status)
