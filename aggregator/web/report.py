"""A site's report from the site_* roll-ups, as a dict and as table, JSON or CSV.

``contacts`` appears only for personal sites; blind sites report no visitors
and no sessions (they keep nothing that tells visitors apart), only visits:
page views not referred by the site itself. Tables print times as
``2026-12-03 09:19 UTC``; JSON and CSV keep ISO 8601.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import asyncpg
import orjson

from pixeltrack.core import csvsafe
from pixeltrack.core.times import human_time

SITE = """
SELECT s.job_id, j.mode, s.domain, s.dnt_policy, s.cookieless, s.spa_hash
FROM sites s JOIN jobs j USING (job_id) WHERE s.job_id = $1
"""
TOTALS = "SELECT pageviews, machine, visitors, sessions FROM site_totals WHERE job_id = $1"
SESSIONS = """
SELECT count(*) AS count, round(avg(pages), 2)::float8 AS pages_per_session,
       round(avg(extract(epoch FROM last_at - started_at)), 1)::float8 AS avg_duration_seconds
FROM site_sessions WHERE job_id = $1
"""
TOP_PAGES = """
SELECT page, pageviews, entries FROM site_pages WHERE job_id = $1 AND pageviews > 0
ORDER BY pageviews DESC, page LIMIT $2
"""
ENTRY_PAGES = """
SELECT page, entries FROM site_pages WHERE job_id = $1 AND entries > 0 ORDER BY entries DESC, page LIMIT $2
"""
SOURCES = """
SELECT source_class, source_name, search_phrase, utm_source, utm_medium, utm_campaign, sessions
FROM site_sources WHERE job_id = $1
ORDER BY sessions DESC, source_class, source_name, search_phrase, utm_source, utm_medium, utm_campaign LIMIT $2
"""
BREAKDOWNS = """
SELECT device_class, os, browser, country, pageviews FROM site_breakdowns WHERE job_id = $1
ORDER BY pageviews DESC, device_class, os, browser, country
"""
DAILY = "SELECT day, pageviews, visitors, sessions FROM site_daily WHERE job_id = $1 ORDER BY day"
HOURLY = "SELECT hour, pageviews, visitors FROM site_hourly WHERE job_id = $1 ORDER BY hour"
# Contacts with any filed view; the e-mail click that named them from
# site_contacts (cookie-less sites: the landing view itself). Grouped by
# job_id too, so Citus runs it on the site's shard.
CONTACTS = """
SELECT v.mail_job_id, v.recipient_id,
       coalesce(c.identified_at, v.first_view) AS identified_at, coalesce(c.landing_url, v.first_url) AS landing_url
FROM (SELECT job_id, mail_job_id, recipient_id, min(viewed_at) AS first_view,
             (array_agg(url ORDER BY viewed_at, hit_id))[1] AS first_url
      FROM site_contact_views WHERE job_id = $1 GROUP BY job_id, mail_job_id, recipient_id) v
LEFT JOIN (SELECT job_id, mail_job_id, recipient_id, min(identified_at) AS identified_at,
                  (array_agg(landing_url ORDER BY identified_at))[1] AS landing_url
           FROM site_contacts WHERE job_id = $1 GROUP BY job_id, mail_job_id, recipient_id) c
     ON c.job_id = v.job_id AND c.mail_job_id = v.mail_job_id AND c.recipient_id = v.recipient_id
ORDER BY 3, 1, 2
"""
# Who the contacts of one mail job ($1) are: asked per mail job, as its
# recipients live on its own shard on Citus. No row when the job is gone.
CONTACT_NAMES = """
SELECT c.recipient_id, r.recipient, j.name AS mail_job, f.recipient_id IS NOT NULL AS forgotten
FROM unnest($2::bigint[]) AS c(recipient_id)
JOIN jobs j ON j.job_id = $1
LEFT JOIN recipients r ON r.job_id = $1 AND r.recipient_id = c.recipient_id
LEFT JOIN forgotten_recipients f ON f.job_id = $1 AND f.recipient_id = c.recipient_id
"""
CONTACT_VIEWS = """
SELECT mail_job_id, recipient_id, viewed_at, url, title FROM site_contact_views WHERE job_id = $1
ORDER BY viewed_at, hit_id
"""
LIMIT = 20


async def site_report(conn: asyncpg.Connection, site_id: int, limit: int = LIMIT) -> dict[str, Any]:
    """Everything the site's mode allows to be shown; LookupError for an unknown site."""
    site = await conn.fetchrow(SITE, site_id)
    if site is None:
        raise LookupError(f"no site {site_id}")
    totals = await conn.fetchrow(TOTALS, site_id)
    pageviews, machine, visitors, visits = tuple(totals) if totals else (0, 0, 0, 0)
    blind = site["mode"] == "blind"
    report: dict[str, Any] = {
        "site": site_id, "domain": site["domain"], "mode": site["mode"],
        "settings": {"dnt": site["dnt_policy"], "cookieless": site["cookieless"], "spa_hash": site["spa_hash"]},
        "pageviews": pageviews, "machine": machine, "visitors": None if blind else visitors, "visits": visits,
        "sessions": None if blind else dict(await conn.fetchrow(SESSIONS, site_id)),
        "top_pages": [dict(r) for r in await conn.fetch(TOP_PAGES, site_id, limit)],
        "entry_pages": [dict(r) for r in await conn.fetch(ENTRY_PAGES, site_id, limit)],
        "sources": [dict(r) for r in await conn.fetch(SOURCES, site_id, limit)],
        "devices": [] if blind else [dict(r) for r in await conn.fetch(BREAKDOWNS, site_id)],
        "timeline": {"daily": [dict(r) for r in await conn.fetch(DAILY, site_id)],
                     "hourly": [dict(r) for r in await conn.fetch(HOURLY, site_id)]},
    }
    if site["mode"] == "personal":
        report["contacts"] = await contacts(conn, site_id)
    return report


async def contacts(conn: asyncpg.Connection, site_id: int) -> list[dict[str, Any]]:
    """Each identified contact, the e-mail click that named them and their page history."""
    rows = await conn.fetch(CONTACTS, site_id)
    asked: dict[int, list[int]] = {}
    for r in rows:
        asked.setdefault(r["mail_job_id"], []).append(r["recipient_id"])
    names = {(job, n["recipient_id"]): n for job, ids in asked.items()
             for n in await conn.fetch(CONTACT_NAMES, job, ids) if not n["forgotten"]}
    found = {
        key: {"mail_job_id": r["mail_job_id"], "recipient_id": r["recipient_id"], "recipient": name["recipient"],
              "mail_job": name["mail_job"], "identified_at": r["identified_at"], "landing_url": r["landing_url"],
              "pages": []}
        for r in rows if (name := names.get(key := (r["mail_job_id"], r["recipient_id"]))) is not None
    }
    for view in await conn.fetch(CONTACT_VIEWS, site_id):
        contact = found.get((view["mail_job_id"], view["recipient_id"]))
        if contact is not None:
            contact["pages"].append({"at": view["viewed_at"], "url": view["url"], "title": view["title"]})
    return list(found.values())


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
    ]


def _headline(report: dict[str, Any]) -> list[tuple[str, Any]]:
    sessions = report["sessions"] or {}
    return [("site", report["site"]), ("domain", report["domain"]), ("mode", report["mode"]),
            ("pageviews", report["pageviews"]), ("machine", report["machine"]),
            ("visitors", report["visitors"]), ("visits", report["visits"]),
            ("sessions", sessions.get("count")), ("pages_per_session", sessions.get("pages_per_session")),
            ("avg_duration_seconds", sessions.get("avg_duration_seconds"))]


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _shown(value: Any) -> str:
    """A table cell: times in minutes, UTC; None is '-'."""
    return human_time(value) if isinstance(value, dt.datetime) else _text(value)


def _table(report: dict[str, Any]) -> str:
    out = [f"{name:<22} {_text(value)}" for name, value in _headline(report)]
    for title, rows in _rows(report):
        out += ["", f"== {title}"]
        if rows:
            out.append("  ".join(f"{k:<20}" if k == "hour" else f"{k:<14}" for k in rows[0]))
            out += ["  ".join(f"{_shown(v):<20}" if k == "hour" else f"{_shown(v):<14}" for k, v in row.items())
                    for row in rows]  # fmt: skip
    for contact in report.get("contacts", []):
        out += ["", f"== contact {contact['recipient']} (mail job {contact['mail_job_id']}, "
                    f"recipient {contact['recipient_id']}), by a click on {contact['landing_url']}"]
        out += [f"  {human_time(p['at'])}  {p['url']}  {_text(p['title'])}" for p in contact["pages"]]
    return "\n".join(out) + "\n"


def _cell(value: Any) -> Any:
    """A CSV cell: numbers stay numbers, None is '-'."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else _text(value)


def _csv(report: dict[str, Any]) -> str:
    """section,key,value,extra rows (formulas neutralised)."""
    buf = io.StringIO()
    out = csvsafe.writer(buf)
    out.writerow(["section", "key", "value", "extra"])
    for name, value in _headline(report):
        out.writerow(["summary", name, _cell(value) if value is not None else "", ""])
    for title, rows in _rows(report):
        for row in rows:
            values = list(row.values())
            out.writerow([title, _cell(values[0]), _cell(values[-1]), "|".join(_text(v) for v in values[1:-1])])
    for contact in report.get("contacts", []):
        for page in contact["pages"]:
            out.writerow(["contact", f"{contact['mail_job_id']}:{contact['recipient_id']}",
                          page["at"].isoformat(), page["url"] or ""])
    return buf.getvalue()
