"""The dashboard's own SQL (overview, pipeline health, recipient pages, live panel) and what runs it.

Everything else on the pages comes from the aggregator's report layer.
Recent hits are counted from the collectors' tombstones (copied_hits: a row
per run of hits a transaction stored, and how many), since the roll-up
deletes the raw rows of the tracks that keep nothing per hit.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import asyncpg

from aggregator.mail.report import counts
from aggregator.rollup import oldest_waiting

JOBS = "SELECT job_id, name, kind, mode, sent_at, created_at FROM jobs ORDER BY job_id DESC"
MAIL_TOTALS = """
SELECT t.job_id, t.kind, t.total, t.machine, t.unknown, t.unique_count, t.inferred, t.unique_recognised,
       t.inferred_recognised
FROM report_job_totals t JOIN jobs j USING (job_id) WHERE j.kind = 'mail' AND t.kind IN ('open', 'click')
"""
# The highest recipient id of each job, one index probe each: it changes
# whenever the count can (imports number new recipients from it; no recipient
# row is ever deleted but with its job), so it keys the count cache.
TOP_RECIPIENTS = """
SELECT j.job_id, (SELECT max(recipient_id) FROM recipients r WHERE r.job_id = j.job_id) AS top
FROM jobs j WHERE j.job_id = ANY($1::bigint[])
"""
COUNT_RECIPIENTS = "SELECT count(*) FROM recipients WHERE job_id = $1"
# Human opens and clicks per day of each mail job's last 60 days of activity.
MAIL_TRENDS = """
WITH last AS (SELECT job_id, max(hour) AS hour FROM report_hourly GROUP BY job_id)
SELECT h.job_id, date_trunc('day', h.hour) AS day,
       coalesce(sum(h.total - h.machine) FILTER (WHERE h.kind = 'open'), 0)::bigint AS opens,
       coalesce(sum(h.total - h.machine) FILTER (WHERE h.kind = 'click'), 0)::bigint AS clicks
FROM report_hourly h JOIN last ON last.job_id = h.job_id AND h.hour >= last.hour - interval '60 days'
GROUP BY 1, 2 ORDER BY 1, 2
"""
# Headline page views and visitors of every site: $1 true for recognised browsers only (PIXELTRACK_HEADLINE).
SITE_TOTALS = """
SELECT s.job_id, s.domain, j.mode, coalesce(t.pageviews - CASE WHEN $1 THEN t.unknown ELSE 0 END, 0) AS pageviews,
       coalesce(t.machine, 0) AS machine, coalesce(t.unknown, 0) AS unknown,
       coalesce(CASE WHEN $1 THEN t.visitors_recognised ELSE t.visitors END, 0) AS visitors,
       coalesce(t.sessions, 0) AS sessions
FROM sites s JOIN jobs j USING (job_id) LEFT JOIN site_totals t USING (job_id) ORDER BY s.job_id DESC
"""
SITE_TRENDS = """
SELECT job_id, day, pageviews - CASE WHEN $1 THEN unknown ELSE 0 END AS pageviews,
       CASE WHEN $1 THEN visitors_recognised ELSE visitors END AS visitors
FROM site_daily WHERE day > (now() AT TIME ZONE 'UTC')::date - 30
ORDER BY job_id, day
"""
# Pipeline health: hits stored in the last $1 minutes (the time each was stored, replays included).
RECENT_HITS = "SELECT coalesce(sum(hits), 0) FROM copied_hits WHERE copied_at > now() - make_interval(mins => $1)"

# Recipients of a personal job, a page at a time; the ORDER BY is one of the
# fixed clauses below, never text from the request. Without a search, the
# roll-up table is sorted and cut alone (its primary key serves id order and
# deep pages) and only the page's addresses are looked up.
RECIPIENT_COLUMNS_SQL = """a.recipient_id, r.recipient, a.opens, a.machine_opens, a.clicks, a.machine_clicks,
       a.first_open, a.last_open, a.first_click, a.last_click"""
RECIPIENT_PAGE = """
SELECT {columns}
FROM (SELECT * FROM report_recipients a WHERE a.job_id = $1 ORDER BY {order} LIMIT $2 OFFSET $3) a
LEFT JOIN recipients r ON r.job_id = a.job_id AND r.recipient_id = a.recipient_id
ORDER BY {order}
"""
# Searching (or sorting by address): the addresses lead.
RECIPIENT_SEARCH = """
SELECT {columns}
FROM report_recipients a
LEFT JOIN recipients r ON r.job_id = a.job_id AND r.recipient_id = a.recipient_id
WHERE a.job_id = $1 AND ($4::text = '' OR r.recipient ILIKE '%' || $4::text || '%' ESCAPE '\\')
ORDER BY {order} LIMIT $2 OFFSET $3
"""
SORTS = {
    "id": "a.recipient_id", "recipient": "r.recipient", "opens": "a.opens", "clicks": "a.clicks",
    "first_open": "a.first_open NULLS LAST", "last_open": "a.last_open NULLS LAST",
    "last_click": "a.last_click NULLS LAST",
}  # fmt: skip


def _order(column: str, way: str) -> str:
    name, _, nulls = column.partition(" ")
    return f"{name} {way}{' ' + nulls if nulls else ''}, a.recipient_id {way}"


RECIPIENT_PAGES = {
    (key, way, search): (RECIPIENT_SEARCH if search or key == "recipient" else RECIPIENT_PAGE).format(
        columns=RECIPIENT_COLUMNS_SQL, order=_order(column, way))
    for key, column in SORTS.items() for way in ("ASC", "DESC") for search in (False, True)
}  # fmt: skip
RECIPIENT_COLUMNS = ("recipient_id", "recipient", "opens", "machine_opens", "clicks", "machine_clicks",
                     "first_open", "last_open", "first_click", "last_click")

# Live panel: raw page views of the last 30 minutes through the primary key
# (job_id, received_at), per minute and per page in one pass (GROUPING SETS).
LIVE = """
SELECT date_trunc('minute', received_at) AS minute, url, count(*) AS views
FROM raw_hits WHERE job_id = $1 AND received_at > now() - interval '30 minutes'
  AND kind = 'page' AND reject_reason IS NULL
GROUP BY GROUPING SETS ((1), (2))
"""
SET_SENT_AT = "UPDATE jobs SET sent_at = $2 WHERE job_id = $1"
MAIL_JOBS = "SELECT job_id, name, mode FROM jobs WHERE kind = 'mail' ORDER BY job_id DESC"


def like_escape(text: str) -> str:
    """``text`` as a literal inside ILIKE (%, _ and \\ lose their meaning)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class RecipientCounts:
    """Recipient counts per job, counted again only when the job's highest recipient id moved.

    Counting a million recipients takes a few hundred milliseconds; the
    overview and every job page need the count of each job they show.
    """

    def __init__(self) -> None:
        self._known: dict[int, tuple[int | None, int]] = {}

    async def get(self, conn: asyncpg.Connection, job_ids: list[int]) -> dict[int, int]:
        """job id -> number of recipients."""
        out = {}
        for row in await conn.fetch(TOP_RECIPIENTS, job_ids):
            job, top = row["job_id"], row["top"]
            cached = self._known.get(job)
            if cached is None or cached[0] != top:
                cached = (top, 0 if top is None else int(await conn.fetchval(COUNT_RECIPIENTS, job)))
                self._known[job] = cached
            out[job] = cached[1]
        return out


async def overview(conn: asyncpg.Connection, counts_cache: RecipientCounts, headline: str = "all") -> dict[str, Any]:
    """Headline figures (``headline``: all | recognised) and daily trends of every mail job and site."""
    recognised = headline == "recognised"
    totals: dict[int, dict[str, asyncpg.Record]] = {}
    for row in await conn.fetch(MAIL_TOTALS):
        totals.setdefault(row["job_id"], {})[row["kind"]] = row
    all_jobs = await conn.fetch(JOBS)
    recipients = await counts_cache.get(conn, [j["job_id"] for j in all_jobs if j["kind"] == "mail"])
    trends: dict[int, list[dict[str, Any]]] = {}
    for row in await conn.fetch(MAIL_TRENDS):
        trends.setdefault(row["job_id"], []).append(dict(row))
    jobs = []
    for job in all_jobs:
        if job["kind"] != "mail":
            continue
        blind, mine = job["mode"] == "blind", totals.get(job["job_id"], {})
        jobs.append({**dict(job), "recipients_count": recipients.get(job["job_id"], 0),
                     "opens": counts(mine.get("open"), blind, recognised, with_inferred=True),
                     "clicks": counts(mine.get("click"), blind, recognised), "trend": trends.get(job["job_id"], [])})
    site_trends: dict[int, list[dict[str, Any]]] = {}
    for row in await conn.fetch(SITE_TRENDS, recognised):
        site_trends.setdefault(row["job_id"], []).append(dict(row))
    sites = [{**dict(s), "trend": site_trends.get(s["job_id"], [])} for s in await conn.fetch(SITE_TOTALS, recognised)]
    return {"jobs": jobs, "sites": sites}


def spool_bytes(directory: Path | None) -> int | None:
    """Bytes waiting in the collector's spool on this host; None when there is no spool here."""
    if directory is None or not directory.is_dir():
        return None
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file() and ".batch" in p.name)


async def health(conn: asyncpg.Connection, spool_dir: Path | None, minutes: int = 5) -> dict[str, Any]:
    """Hits per minute over the last minutes, roll-up lag, spool size."""
    recent = await conn.fetchval(RECENT_HITS, minutes)
    oldest = await oldest_waiting(conn)
    lag = None if oldest is None else max(0.0, (dt.datetime.now(dt.UTC) - oldest).total_seconds())
    return {"hits_per_minute": round(recent / minutes, 1), "rollup_lag_seconds": lag,
            "spool_bytes": spool_bytes(spool_dir)}


async def recipient_page(conn: asyncpg.Connection, job_id: int, *, q: str, sort: str, way: str, page: int,
                         size: int) -> tuple[list[dict[str, Any]], bool]:
    """One page of recipients and whether another follows (one row more is read, no count)."""
    key = (sort if sort in SORTS else "id", "DESC" if way == "desc" else "ASC", bool(q))
    args = (job_id, size + 1, (page - 1) * size) + ((like_escape(q),) if key[2] or key[0] == "recipient" else ())
    rows = await conn.fetch(RECIPIENT_PAGES[key], *args)
    return [dict(r) for r in rows[:size]], len(rows) > size


async def live(conn: asyncpg.Connection, site_id: int) -> dict[str, Any]:
    """Page views of the last 30 minutes: per minute (zeros included) and the five top pages."""
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    per_minute: dict[dt.datetime, int] = {}
    pages: list[tuple[int, str]] = []
    for row in await conn.fetch(LIVE, site_id):
        if row["minute"] is not None:
            per_minute[row["minute"]] = row["views"]
        else:
            pages.append((row["views"], row["url"] or ""))
    minutes = [now - dt.timedelta(minutes=29 - i) for i in range(30)]
    top = sorted(pages, key=lambda p: (-p[0], p[1]))[:5]
    return {"site": site_id, "minutes": [m.strftime("%H:%M") for m in minutes],
            "views": [per_minute.get(m, 0) for m in minutes], "total": sum(per_minute.values()),
            "pages": [{"url": url, "views": views} for views, url in top]}
