"""A site's report (aggregator.web.report) as a terminal table, JSON or CSV.

The table says what the headline figures count, as the mail report's does
(aggregator.render), and ends with the machine traffic. Tables print times
as ``2026-12-03 09:19 UTC``; JSON and CSV keep ISO 8601.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from typing import Any

import orjson

from aggregator.render import LEGEND, machine_lines, machine_rows, said
from pixeltrack.core import csvsafe
from pixeltrack.core.times import human_time

# What the headline setting leaves alone on a site.
NOT_HEADLINE = "Page views and visitors follow it; visits, sessions, entries and sources count human + unknown."


def render_site(report: dict[str, Any], fmt: str = "table") -> str:
    """The report as text: ``table``, ``json`` or ``csv``."""
    if fmt == "json":
        return orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n"
    if fmt == "csv":
        return _csv(report)
    if fmt == "table":
        return _table(report)
    raise ValueError(f"format must be table, json or csv, got {fmt!r}")


def _rows(report: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    return [
        ("top pages", report["top_pages"]), ("entry pages", report["entry_pages"]),
        ("sources", report["sources"]), ("devices", report["devices"]),
        ("daily", report["timeline"]["daily"]), ("hourly", report["timeline"]["hourly"]),
    ]  # fmt: skip


def _site(report: dict[str, Any]) -> list[tuple[str, Any]]:
    return [("site", report["site"]), ("domain", report["domain"]), ("mode", report["mode"])]


def _figures(report: dict[str, Any]) -> list[tuple[str, Any]]:
    sessions = report["sessions"] or {}
    return [(name, report[name]) for name in ("pageviews", "human", "unknown", "machine", "total", "visitors",
                                              "visits")] + [
        ("sessions", sessions.get("count")), ("pages_per_session", sessions.get("pages_per_session")),
        ("avg_duration_seconds", sessions.get("avg_duration_seconds")),
    ]  # fmt: skip


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _shown(value: Any) -> str:
    """A table cell: times in minutes, UTC; None is '-'."""
    return human_time(value) if isinstance(value, dt.datetime) else _text(value)


def _table(report: dict[str, Any]) -> str:
    out = [f"{name:<22} {_text(value)}" for name, value in _site(report)]
    out += [f"{said(report)} {NOT_HEADLINE}", LEGEND]
    out += [f"{name:<22} {_text(value)}" for name, value in _figures(report)]
    for title, rows in _rows(report):
        out += ["", f"== {title}"]
        if rows:
            out.append("  ".join(f"{k:<20}" if k == "hour" else f"{k:<14}" for k in rows[0]))
            out += ["  ".join(f"{_shown(v):<20}" if k == "hour" else f"{_shown(v):<14}" for k, v in row.items())
                    for row in rows]  # fmt: skip
    out += machine_lines(report["machine_traffic"])
    for contact in report.get("contacts", []):
        out += [
            "",
            f"== contact {contact['recipient']} (mail job {contact['mail_job_id']}, "
            f"recipient {contact['recipient_id']}), by a click on {contact['landing_url']}",
        ]
        out += [f"  {human_time(p['at'])}  {p['url']}  {_text(p['title'])}" for p in contact["pages"]]
    return "\n".join(out) + "\n"


def _cell(value: Any) -> Any:
    """A CSV cell: numbers stay numbers, None is '-'."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else _text(value)


def _summary(report: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    yield from _site(report)
    yield "headline", report["headline"]["setting"]
    yield "headline_counts", report["headline"]["counts"]
    yield from _figures(report)


def _csv(report: dict[str, Any]) -> str:
    """section,key,value,extra rows (formulas neutralised)."""
    buf = io.StringIO()
    out = csvsafe.writer(buf)
    out.writerow(["section", "key", "value", "extra"])
    for name, value in _summary(report):
        out.writerow(["summary", name, _cell(value) if value is not None else "", ""])
    for title, rows in _rows(report):
        for row in rows:
            values = list(row.values())
            out.writerow([title, _cell(values[0]), _cell(values[-1]), "|".join(_text(v) for v in values[1:-1])])
    for section, item, metric, value in machine_rows(report["machine_traffic"]):
        out.writerow([section, item or metric, value, ""])
    for contact in report.get("contacts", []):
        for page in contact["pages"]:
            out.writerow(
                [
                    "contact",
                    f"{contact['mail_job_id']}:{contact['recipient_id']}",
                    page["at"].isoformat(),
                    page["url"] or "",
                ]
            )
    return buf.getvalue()
