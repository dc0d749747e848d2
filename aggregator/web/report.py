"""A site's report from the site_* roll-ups, as a dict (rendered by aggregator.web.render).

Page views come as the mail reports' three figures (aggregator.figures):
``human``, ``unknown`` and ``machine`` add up to ``total``. ``pageviews`` and
``visitors`` (in the totals, top pages, devices and the timeline) are headline
figures: human + unknown, or recognised browsers only with
``headline="recognised"`` (PIXELTRACK_HEADLINE); ``report["headline"]`` says
which. Visits, sessions, entries and sources count every view not a
machine's. ``machine_traffic`` names the machine page views by reason and
family, for every mode.

``contacts`` appears only for personal sites; blind sites report no visitors
and no sessions (they keep nothing that tells visitors apart), only visits:
page views not referred by the site itself.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from aggregator.figures import MACHINE, headline_of, machine_section
from aggregator.web.render import render_site

__all__ = ["render_site", "site_report"]  # render_site: for callers that import it from here

SITE = """
SELECT s.job_id, j.mode, s.domain, s.dnt_policy, s.cookieless, s.spa_hash
FROM sites s JOIN jobs j USING (job_id) WHERE s.job_id = $1
"""
TOTALS = """
SELECT pageviews, machine, unknown, visitors, visitors_recognised, sessions FROM site_totals WHERE job_id = $1
"""
SESSIONS = """
SELECT count(*) AS count, round(avg(pages), 2)::float8 AS pages_per_session,
       round(avg(extract(epoch FROM last_at - started_at)), 1)::float8 AS avg_duration_seconds
FROM site_sessions WHERE job_id = $1
"""
# In these, $2 (or $3) is true for PIXELTRACK_HEADLINE=recognised: headline
# pageviews (and visitors) of recognised browsers only. Each row's last column
# stays the one the CSV's value column always gave (aggregator.web.render).
TOP_PAGES = """
SELECT page, pageviews - CASE WHEN $3 THEN unknown ELSE 0 END AS pageviews, pageviews - unknown AS human, unknown,
       entries
FROM site_pages WHERE job_id = $1 AND pageviews > 0
ORDER BY pageviews - CASE WHEN $3 THEN unknown ELSE 0 END DESC, page LIMIT $2
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
SELECT device_class, os, browser, country, pageviews - unknown AS human, unknown,
       pageviews - CASE WHEN $2 THEN unknown ELSE 0 END AS pageviews
FROM site_breakdowns WHERE job_id = $1
ORDER BY pageviews - CASE WHEN $2 THEN unknown ELSE 0 END DESC, device_class, os, browser, country
"""
DAILY = """
SELECT day, pageviews - CASE WHEN $2 THEN unknown ELSE 0 END AS pageviews, pageviews - unknown AS human, unknown,
       machine, CASE WHEN $2 THEN visitors_recognised ELSE visitors END AS visitors, sessions
FROM site_daily WHERE job_id = $1 ORDER BY day
"""
HOURLY = """
SELECT hour, pageviews - CASE WHEN $2 THEN unknown ELSE 0 END AS pageviews, pageviews - unknown AS human, unknown,
       machine, CASE WHEN $2 THEN visitors_recognised ELSE visitors END AS visitors
FROM site_hourly WHERE job_id = $1 ORDER BY hour
"""
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


def page_figures(row: asyncpg.Record | None, blind: bool, recognised: bool) -> dict[str, Any]:
    """The headline pageviews and visitors of the totals, and the three figures of every view."""
    pageviews, machine, unknown, visitors, visitors_r = (
        (row["pageviews"], row["machine"], row["unknown"], row["visitors"], row["visitors_recognised"])
        if row else (0, 0, 0, 0, 0)
    )
    human = pageviews - unknown
    return {
        "pageviews": human if recognised else pageviews,
        "human": human, "unknown": unknown, "machine": machine, "total": pageviews + machine,
        "visitors": None if blind else (visitors_r if recognised else visitors),
    }  # fmt: skip


async def site_report(conn: asyncpg.Connection, site_id: int, limit: int = LIMIT,
                      headline: str = "all") -> dict[str, Any]:
    """Everything the site's mode allows to be shown (``headline``: all | recognised); LookupError: no such site."""
    said_headline = headline_of(headline)
    site = await conn.fetchrow(SITE, site_id)
    if site is None:
        raise LookupError(f"no site {site_id}")
    totals = await conn.fetchrow(TOTALS, site_id)
    blind, recognised = site["mode"] == "blind", headline == "recognised"
    report: dict[str, Any] = {
        "site": site_id, "domain": site["domain"], "mode": site["mode"],
        "settings": {"dnt": site["dnt_policy"], "cookieless": site["cookieless"], "spa_hash": site["spa_hash"]},
        "headline": said_headline, **page_figures(totals, blind, recognised),
        "visits": totals["sessions"] if totals else 0,
        "sessions": None if blind else dict(await conn.fetchrow(SESSIONS, site_id)),
        "top_pages": [dict(r) for r in await conn.fetch(TOP_PAGES, site_id, limit, recognised)],
        "entry_pages": [dict(r) for r in await conn.fetch(ENTRY_PAGES, site_id, limit)],
        "sources": [dict(r) for r in await conn.fetch(SOURCES, site_id, limit)],
        "devices": [] if blind else [dict(r) for r in await conn.fetch(BREAKDOWNS, site_id, recognised)],
        "timeline": {"daily": [dict(r) for r in await conn.fetch(DAILY, site_id, recognised)],
                     "hourly": [dict(r) for r in await conn.fetch(HOURLY, site_id, recognised)]},
        "machine_traffic": machine_section(await conn.fetch(MACHINE, site_id)),
    }  # fmt: skip
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
