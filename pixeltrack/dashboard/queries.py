"""The dashboard's own SQL (overview, pipeline health, recipient pages, live panel) and what runs it.

Everything else on the pages comes from the aggregator's report layer.
Recent raw hits are counted through raw_hits' primary key (job_id,
received_at, ...): an index range per job over today's partition only.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import asyncpg

from aggregator.mail.report import counts

JOBS = "SELECT job_id, name, kind, mode, sent_at, created_at FROM jobs ORDER BY job_id DESC"
JOB_IDS = "SELECT job_id FROM jobs"
MAIL_TOTALS = """
SELECT t.job_id, t.kind, t.total, t.machine, t.unique_count, t.inferred
FROM report_job_totals t JOIN jobs j USING (job_id) WHERE j.kind = 'mail' AND t.kind IN ('open', 'click')
"""
RECIPIENT_COUNTS = """
SELECT j.job_id, (SELECT count(*) FROM recipients r WHERE r.job_id = j.job_id) AS recipients
FROM jobs j WHERE j.kind = 'mail'
"""
# Human opens and clicks per day of each mail job's last 60 days of activity.
MAIL_TRENDS = """
SELECT job_id, date_trunc('day', hour) AS day,
       coalesce(sum(total - machine) FILTER (WHERE kind = 'open'), 0)::bigint AS opens,
       coalesce(sum(total - machine) FILTER (WHERE kind = 'click'), 0)::bigint AS clicks
FROM report_hourly h
WHERE hour >= (SELECT max(hour) FROM report_hourly m WHERE m.job_id = h.job_id) - interval '60 days'
GROUP BY 1, 2 ORDER BY 1, 2
"""
SITE_TOTALS = """
SELECT s.job_id, s.domain, j.mode, coalesce(t.pageviews, 0) AS pageviews, coalesce(t.machine, 0) AS machine,
       coalesce(t.visitors, 0) AS visitors, coalesce(t.sessions, 0) AS sessions
FROM sites s JOIN jobs j USING (job_id) LEFT JOIN site_totals t USING (job_id) ORDER BY s.job_id DESC
"""
SITE_TRENDS = """
SELECT job_id, day, pageviews, visitors FROM site_daily WHERE day > (now() AT TIME ZONE 'UTC')::date - 30
ORDER BY job_id, day
"""
# Pipeline health. $1: every job id and 0 (rejected hits), so the primary key serves the count.
RECENT_HITS = """
SELECT count(*) FROM raw_hits WHERE job_id = ANY($1::bigint[]) AND received_at > now() - make_interval(mins => $2)
"""
# The oldest hit not rolled up, through the partial index raw_hits_unrolled of each partition.
OLDEST_UNROLLED = "SELECT min(received_at) FROM raw_hits WHERE rolled_at IS NULL"

# Recipients of a personal job, a page at a time, searchable; the ORDER BY is
# one of the fixed clauses below, never text from the request.
RECIPIENT_PAGE = """
SELECT a.recipient_id, r.recipient, a.opens, a.machine_opens, a.clicks, a.machine_clicks,
       a.first_open, a.last_open, a.first_click, a.last_click
FROM report_recipients a
LEFT JOIN recipients r ON r.job_id = a.job_id AND r.recipient_id = a.recipient_id
WHERE a.job_id = $1 AND ($2::text = '' OR r.recipient ILIKE '%' || $2::text || '%' ESCAPE '\\')
ORDER BY {order} LIMIT $3 OFFSET $4
"""
SORTS = {
    "id": "a.recipient_id", "recipient": "r.recipient", "opens": "a.opens", "clicks": "a.clicks",
    "first_open": "a.first_open", "last_open": "a.last_open", "last_click": "a.last_click",
}  # fmt: skip
RECIPIENT_PAGES = {
    (key, way): RECIPIENT_PAGE.format(order=f"{column} {way} NULLS LAST, a.recipient_id")
    for key, column in SORTS.items() for way in ("ASC", "DESC")
}  # fmt: skip
RECIPIENT_COLUMNS = ("recipient_id", "recipient", "opens", "machine_opens", "clicks", "machine_clicks",
                     "first_open", "last_open", "first_click", "last_click")

# Live panel: raw page views of the last 30 minutes, per minute (primary key range).
LIVE = """
SELECT date_trunc('minute', received_at) AS minute, count(*) AS views
FROM raw_hits WHERE job_id = $1 AND received_at > now() - interval '30 minutes'
  AND kind = 'page' AND reject_reason IS NULL
GROUP BY 1 ORDER BY 1
"""
LIVE_PAGES = """
SELECT url, count(*) AS views FROM raw_hits
WHERE job_id = $1 AND received_at > now() - interval '30 minutes' AND kind = 'page' AND reject_reason IS NULL
GROUP BY url ORDER BY 2 DESC, 1 LIMIT 5
"""
SET_SENT_AT = "UPDATE jobs SET sent_at = $2 WHERE job_id = $1"
MAIL_JOBS = "SELECT job_id, name, mode FROM jobs WHERE kind = 'mail' ORDER BY job_id DESC"


def like_escape(text: str) -> str:
    """``text`` as a literal inside ILIKE (%, _ and \\ lose their meaning)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def overview(conn: asyncpg.Connection) -> dict[str, Any]:
    """Headline figures and daily trends of every mail job and site."""
    totals: dict[int, dict[str, asyncpg.Record]] = {}
    for row in await conn.fetch(MAIL_TOTALS):
        totals.setdefault(row["job_id"], {})[row["kind"]] = row
    recipients = {r["job_id"]: r["recipients"] for r in await conn.fetch(RECIPIENT_COUNTS)}
    trends: dict[int, list[dict[str, Any]]] = {}
    for row in await conn.fetch(MAIL_TRENDS):
        trends.setdefault(row["job_id"], []).append(dict(row))
    jobs = []
    for job in await conn.fetch(JOBS):
        if job["kind"] != "mail":
            continue
        blind, mine = job["mode"] == "blind", totals.get(job["job_id"], {})
        jobs.append({**dict(job), "recipients_count": recipients.get(job["job_id"], 0),
                     "opens": counts(mine.get("open"), blind, with_inferred=True),
                     "clicks": counts(mine.get("click"), blind), "trend": trends.get(job["job_id"], [])})
    site_trends: dict[int, list[dict[str, Any]]] = {}
    for row in await conn.fetch(SITE_TRENDS):
        site_trends.setdefault(row["job_id"], []).append(dict(row))
    sites = [{**dict(s), "trend": site_trends.get(s["job_id"], [])} for s in await conn.fetch(SITE_TOTALS)]
    return {"jobs": jobs, "sites": sites}


def spool_bytes(directory: Path | None) -> int | None:
    """Bytes waiting in the collector's spool on this host; None when there is no spool here."""
    if directory is None or not directory.is_dir():
        return None
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file() and ".batch" in p.name)


async def health(conn: asyncpg.Connection, spool_dir: Path | None, minutes: int = 5) -> dict[str, Any]:
    """Hits per minute over the last minutes, roll-up lag, spool size."""
    ids = [0, *(r["job_id"] for r in await conn.fetch(JOB_IDS))]
    recent = await conn.fetchval(RECENT_HITS, ids, minutes)
    oldest = await conn.fetchval(OLDEST_UNROLLED)
    lag = None if oldest is None else max(0.0, (dt.datetime.now(dt.UTC) - oldest).total_seconds())
    return {"hits_per_minute": round(recent / minutes, 1), "rollup_lag_seconds": lag,
            "spool_bytes": spool_bytes(spool_dir)}


async def recipient_page(conn: asyncpg.Connection, job_id: int, *, q: str, sort: str, way: str, page: int,
                         size: int) -> tuple[list[dict[str, Any]], bool]:
    """One page of recipients and whether another follows (one row more is read, no count)."""
    query = RECIPIENT_PAGES[(sort if sort in SORTS else "id", "DESC" if way == "desc" else "ASC")]
    rows = await conn.fetch(query, job_id, like_escape(q), size + 1, (page - 1) * size)
    return [dict(r) for r in rows[:size]], len(rows) > size


async def live(conn: asyncpg.Connection, site_id: int) -> dict[str, Any]:
    """Page views of the last 30 minutes: per minute (zeros included) and the top pages."""
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    per_minute = {r["minute"]: r["views"] for r in await conn.fetch(LIVE, site_id)}
    minutes = [now - dt.timedelta(minutes=29 - i) for i in range(30)]
    return {"site": site_id, "minutes": [m.strftime("%H:%M") for m in minutes],
            "views": [per_minute.get(m, 0) for m in minutes], "total": sum(per_minute.values()),
            "pages": [{"url": r["url"], "views": r["views"]} for r in await conn.fetch(LIVE_PAGES, site_id)]}
