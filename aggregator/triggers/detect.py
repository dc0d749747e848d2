"""Finding events among settled hits: one finder per event type.

A finder reads hits received in the scan window (after the watermark, up to
the settled cut-off) that are rolled up, so their machine verdict is there,
and human (or unknown, by setting). Per-recipient finders read only hits
that kept their recipient (personal tracking) of recipients who still
consent and were not forgotten. Each event gets a natural key, so finding
it again in an overlapping window changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from aggregator.enrich.machine import burst_clicks
from aggregator.mail.reading import BURST_SECONDS, PageView, reads
from aggregator.triggers.config import TriggerConfig

FIRST_OPENS = """
SELECT DISTINCT ON (h.recipient_id) h.hit_id, h.received_at, h.recipient_id, r.recipient, h.device_class,
       h.mail_client, h.country
FROM raw_hits h
JOIN jobs j ON j.job_id = h.job_id
JOIN recipients r ON r.job_id = h.job_id AND r.recipient_id = h.recipient_id
WHERE h.job_id = $1 AND h.received_at > $2 AND h.received_at <= $3 AND h.kind = 'open'
  AND h.rolled_at IS NOT NULL AND h.traffic = ANY($4::text[])
  AND (j.mode = 'personal' OR (j.mode = 'permission_personal' AND r.consent))
  AND NOT EXISTS (SELECT 1 FROM forgotten_recipients f WHERE f.job_id = h.job_id AND f.recipient_id = h.recipient_id)
  AND NOT EXISTS (SELECT 1 FROM raw_hits p WHERE p.job_id = h.job_id AND p.recipient_id = h.recipient_id
                  AND p.kind = 'open' AND p.traffic = ANY($4::text[]) AND p.received_at < h.received_at)
ORDER BY h.recipient_id, h.received_at
"""
CLICKS = """
SELECT h.hit_id, h.received_at, h.recipient_id, r.recipient, h.link, h.device_class, h.mail_client, h.country
FROM raw_hits h
JOIN jobs j ON j.job_id = h.job_id
JOIN recipients r ON r.job_id = h.job_id AND r.recipient_id = h.recipient_id
WHERE h.job_id = $1 AND h.received_at > $2 AND h.received_at <= $3 AND h.kind = 'click'
  AND h.rolled_at IS NOT NULL AND h.traffic = ANY($4::text[])
  AND (j.mode = 'personal' OR (j.mode = 'permission_personal' AND r.consent))
  AND NOT EXISTS (SELECT 1 FROM forgotten_recipients f WHERE f.job_id = h.job_id AND f.recipient_id = h.recipient_id)
  AND ($5::text IS NULL OR h.link = $5 OR ($6 AND starts_with(h.link, $5)))
ORDER BY h.received_at, h.hit_id
"""
# Every click of the candidates' recipients around the window, whatever its
# verdict: a scanner's burst may have been split between two roll-ups.
NEIGHBOUR_CLICKS = """
SELECT hit_id, recipient_id, received_at, link FROM raw_hits
WHERE job_id = $1 AND recipient_id = ANY($2::bigint[]) AND kind = 'click' AND received_at BETWEEN $3 AND $4
"""
DOC_READERS = """
SELECT DISTINCT h.recipient_id
FROM raw_hits h
JOIN jobs j ON j.job_id = h.job_id
JOIN recipients r ON r.job_id = h.job_id AND r.recipient_id = h.recipient_id
WHERE h.job_id = $1 AND h.received_at > $2 AND h.received_at <= $3 AND h.kind = 'doc' AND h.page IS NOT NULL
  AND h.rolled_at IS NOT NULL AND h.traffic = ANY($4::text[])
  AND (j.mode = 'personal' OR (j.mode = 'permission_personal' AND r.consent))
  AND NOT EXISTS (SELECT 1 FROM forgotten_recipients f WHERE f.job_id = h.job_id AND f.recipient_id = h.recipient_id)
"""
# A reader's whole history up to the cut-off: reading time is counted "in all".
DOC_VIEWS = """
SELECT h.recipient_id, r.recipient, h.received_at, h.page, h.traffic, h.device_class, h.mail_client, h.country
FROM raw_hits h JOIN recipients r ON r.job_id = h.job_id AND r.recipient_id = h.recipient_id
WHERE h.job_id = $1 AND h.recipient_id = ANY($2::bigint[]) AND h.kind = 'doc' AND h.page IS NOT NULL
  AND h.rolled_at IS NOT NULL AND h.traffic IS DISTINCT FROM 'machine' AND h.received_at <= $3
ORDER BY h.recipient_id, h.received_at
"""
CONTACT_VIEWS = """
SELECT v.hit_id, v.viewed_at, r.recipient, v.mail_job_id, v.url, v.title, h.device_class, h.country
FROM site_contact_views v
JOIN raw_hits h ON h.job_id = v.job_id AND h.received_at = v.viewed_at AND h.hit_id = v.hit_id
JOIN jobs mj ON mj.job_id = v.mail_job_id
JOIN recipients r ON r.job_id = v.mail_job_id AND r.recipient_id = v.recipient_id
WHERE v.job_id = $1 AND v.viewed_at > $2 AND v.viewed_at <= $3 AND h.traffic = ANY($4::text[])
  AND (mj.mode = 'personal' OR (mj.mode = 'permission_personal' AND r.consent))
  AND NOT EXISTS (SELECT 1 FROM forgotten_recipients f
                  WHERE f.job_id = v.mail_job_id AND f.recipient_id = v.recipient_id)
ORDER BY v.viewed_at, v.hit_id
"""
TOTALS = """
SELECT j.mode, coalesce(t.total - t.machine, 0) AS human, coalesce(t.unique_count, 0) AS uniq
FROM jobs j LEFT JOIN report_job_totals t ON t.job_id = j.job_id AND t.kind = $2 WHERE j.job_id = $1
"""


@dataclass(frozen=True)
class Trigger:
    """One trigger as the scan reads it."""

    trigger_id: int
    job_id: int
    event: str
    filters: dict[str, Any]
    created_at: dt.datetime


@dataclass(frozen=True)
class Window:
    """Hits received in (lo, hi] are scanned; ``hi`` is settled; ``now`` is the scan's clock."""

    lo: dt.datetime
    hi: dt.datetime
    now: dt.datetime


@dataclass(frozen=True)
class Found:
    """An event: its natural key, when it happened, and what the mode lets it carry."""

    key: str
    at: dt.datetime
    data: dict[str, Any]


def iso(at: dt.datetime) -> str:
    """ISO 8601 in UTC."""
    return at.astimezone(dt.UTC).isoformat()


def person(row: asyncpg.Record, at: dt.datetime) -> dict[str, Any]:
    """Who, when and on what: the per-recipient part of a payload (personal tracking only)."""
    return {"recipient": row["recipient"], "time": iso(at), "device": row["device_class"],
            "mail_client": row["mail_client"], "country": row["country"]}  # fmt: skip


async def first_opens(conn: asyncpg.Connection, t: Trigger, w: Window, cfg: TriggerConfig, idle: float) -> list[Found]:
    """A recipient's first human open."""
    rows = await conn.fetch(FIRST_OPENS, t.job_id, w.lo, w.hi, cfg.traffic)
    return [Found(f"recipient:{r['recipient_id']}", r["received_at"], person(r, r["received_at"])) for r in rows]


async def clicks(conn: asyncpg.Connection, t: Trigger, w: Window, cfg: TriggerConfig, idle: float) -> list[Found]:
    """Human clicks (on one link, or links under a prefix ending in *), a scanner's burst left out."""
    link: str | None = t.filters.get("link")
    prefix = link is not None and link.endswith("*")
    if link is not None and prefix:
        link = link[:-1]
    rows = await conn.fetch(CLICKS, t.job_id, w.lo, w.hi, cfg.traffic, link, prefix)
    if not rows:
        return []
    burst = await burst_hits(conn, t.job_id, rows, cfg)
    return [
        Found(f"hit:{r['hit_id']}", r["received_at"], {**person(r, r["received_at"]), "link": r["link"]})
        for r in rows if r["hit_id"] not in burst
    ]  # fmt: skip


async def burst_hits(conn: asyncpg.Connection, job: int, rows: Sequence[asyncpg.Record], cfg: TriggerConfig) -> set:
    """Hit ids of candidate clicks that belong to a burst on several links (the enrichment's scanner rule)."""
    span = dt.timedelta(seconds=cfg.burst_seconds)
    times = [r["received_at"] for r in rows]
    found = await conn.fetch(NEIGHBOUR_CLICKS, job, sorted({r["recipient_id"] for r in rows}),
                             min(times) - span, max(times) + span)  # fmt: skip
    by_recipient: defaultdict[int, list[asyncpg.Record]] = defaultdict(list)
    for n in found:
        by_recipient[n["recipient_id"]].append(n)
    flagged: set = set()
    for neighbours in by_recipient.values():
        ordered = sorted(neighbours, key=lambda n: (n["received_at"], n["hit_id"]))
        runs = [(n["received_at"], i, n["link"]) for i, n in enumerate(ordered)]
        flagged.update(ordered[i]["hit_id"] for i in burst_clicks(runs, cfg.burst_seconds, cfg.burst_links))
    return flagged


async def reader_views(conn: asyncpg.Connection, t: Trigger, w: Window, cfg: TriggerConfig,
                       until: dt.datetime) -> dict[int, list[asyncpg.Record]]:
    """Human document views up to ``until`` of every reader who viewed a page in the window."""
    rows = await conn.fetch(DOC_READERS, t.job_id, w.lo, w.hi, cfg.traffic)
    if not rows:
        return {}
    views: defaultdict[int, list[asyncpg.Record]] = defaultdict(list)
    for v in await conn.fetch(DOC_VIEWS, t.job_id, [r["recipient_id"] for r in rows], until):
        views[v["recipient_id"]].append(v)
    return views


async def doc_pages(conn: asyncpg.Connection, t: Trigger, w: Window, cfg: TriggerConfig, idle: float) -> list[Found]:
    """A reader's view of a page (of one page with --page), once per reader and page; pre-loads are not views."""
    # A second past the cut-off: whether a view was part of a pre-load burst depends on the next one.
    readers = await reader_views(conn, t, w, cfg, w.hi + dt.timedelta(seconds=BURST_SECONDS))
    wanted = t.filters.get("page")
    found = []
    for rid, rows in readers.items():
        by_time = {(r["received_at"], r["page"]): r for r in rows}
        for read in reads([PageView(r["received_at"], r["page"]) for r in rows], idle):
            row = by_time[(read.at, read.page)]
            if read.preload or not w.lo < read.at <= w.hi or row["traffic"] not in cfg.traffic:
                continue
            if wanted is None or read.page == wanted:
                found.append(Found(f"page:{rid}:{read.page}", read.at, {**person(row, read.at), "page": read.page}))
    return found


async def doc_reads(conn: asyncpg.Connection, t: Trigger, w: Window, cfg: TriggerConfig, idle: float) -> list[Found]:
    """A reader's reading time in all reaches --seconds N (counted when it happened)."""
    need = float(t.filters["seconds"])
    found = []
    for rid, rows in (await reader_views(conn, t, w, cfg, w.hi)).items():
        by_time = {(r["received_at"], r["page"]): r for r in rows}
        total, pages = 0.0, set()
        for read in reads([PageView(r["received_at"], r["page"]) for r in rows], idle):
            if read.seconds is None:
                continue
            row = by_time[(read.at, read.page)]
            pages.add(read.page)
            if total + read.seconds >= need:
                at = read.at + dt.timedelta(seconds=need - total)
                if at > t.created_at:
                    data = {**person(row, at), "seconds": need, "pages_read": sorted(pages)}
                    found.append(Found(f"reader:{rid}", at, data))
                break
            total += read.seconds
    return found


async def contacts(conn: asyncpg.Connection, t: Trigger, w: Window, cfg: TriggerConfig, idle: float) -> list[Found]:
    """An identified contact views a page of a personal site (whose path matches --url-pattern)."""
    pattern = t.filters.get("url_pattern")
    found = []
    for r in await conn.fetch(CONTACT_VIEWS, t.job_id, w.lo, w.hi, cfg.traffic):
        if pattern is not None and not fnmatchcase(path_of(r["url"]), pattern):
            continue
        data = {"recipient": r["recipient"], "mail_job": r["mail_job_id"], "time": iso(r["viewed_at"]),
                "url": r["url"], "title": r["title"], "device": r["device_class"], "country": r["country"]}  # fmt: skip
        found.append(Found(f"hit:{r['hit_id']}", r["viewed_at"], data))
    return found


def path_of(url: str | None) -> str:
    """The path of a page address ("/" when it has none)."""
    try:
        return urlsplit(url or "").path or "/"
    except ValueError:
        return "/"


async def threshold(conn: asyncpg.Connection, t: Trigger, w: Window, cfg: TriggerConfig, idle: float) -> list[Found]:
    """The job reaches --count unique human opens or clicks (human ones, for blind jobs): counts only."""
    of, need = t.filters.get("of", "opens"), int(t.filters["count"])
    row = await conn.fetchrow(TOTALS, t.job_id, of[:-1])
    if row is None:
        return []
    blind = row["mode"] == "blind"
    count = row["human"] if blind else row["uniq"]
    if count < need:
        return []
    data = {"of": of, "counted": "human" if blind else "unique", "threshold": need, "count": count}
    return [Found("reached", w.now, data)]


Finder = Callable[[asyncpg.Connection, Trigger, Window, TriggerConfig, float], Awaitable[list[Found]]]
FINDERS: dict[str, Finder] = {
    "open.first": first_opens, "click": clicks, "doc.page": doc_pages, "doc.read": doc_reads,
    "site.contact": contacts, "job.threshold": threshold,
}  # fmt: skip
