"""CSV downloads that a spreadsheet opens as data, never as formulas.

A cell that starts with = + - @, a tab or a carriage return would be run as a
formula by Excel or LibreOffice (CSV injection: a page title or link from a
hit is untrusted); such cells get a leading apostrophe.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web

RISKY = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> str:
    """One value as safe CSV text (None is empty)."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(RISKY) else text


def to_csv(header: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> str:
    """Header (unless None: a later chunk) and rows as CSV text, every cell neutralised."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    if header is not None:
        out.writerow([cell(h) for h in header])
    out.writerows([cell(v) for v in row] for row in rows)
    return buf.getvalue()


def dicts_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as CSV; columns from the first row unless given."""
    cols = list(columns or (rows[0].keys() if rows else []))
    return to_csv(cols, ([r.get(c) for c in cols] for r in rows))


def safe_name(name: str) -> str:
    """A file name made of letters, digits, dots, dashes and underscores only."""
    return "".join(c if c.isalnum() and c.isascii() or c in "._-" else "_" for c in name)[:100] or "export"


def download(text: str, filename: str) -> web.Response:
    """A CSV attachment."""
    return web.Response(text=text, content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{safe_name(filename)}.csv"'})
