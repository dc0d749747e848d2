"""Website roll-up: claimed page views in, site_* tables merged, raw hits marked.

``merge_page_hits`` runs inside the caller's transaction for page views it
claimed (and enriched) under their jobs' locks (aggregator.claims);
``rollup_sites`` is the standalone run that claims only page views, batch
after batch, each batch in one transaction, so a run killed half-way leaves
nothing applied.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from aggregator import claims
from aggregator.enrich import EnrichConfig
from aggregator.enrich.enricher import Enriching, make_enricher
from aggregator.figures import figure
from aggregator.web import queries
from aggregator.web.sessions import Session, View, sessionize
from aggregator.web.tracks import (
    PERSONAL,
    REJECTED,
    UNIQUE,
    allowed_contacts,
    keep_salts,
    page_of,
    parse_contact,
    reject_reason,
    salts_for,
    stored_row,
    today_utc,
    track_of,
    visitor_key,
)
from pixeltrack.core import db

log = logging.getLogger(__name__)

DEFAULT_BATCH = 20_000
MAX_BATCHES = 100_000
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _hour(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _day(at: dt.datetime) -> dt.date:
    return at.astimezone(dt.UTC).date()


def _source(view: View) -> tuple[str, ...]:
    return tuple(str(view.enriched.get(n) or "") for n in queries.SOURCE_KEYS)


def _tally(fields: tuple[str, ...]) -> defaultdict[Any, dict[str, int]]:
    return defaultdict(lambda: dict.fromkeys(fields, 0))


class WebCounts:
    """One batch's page views, sessions, visitors, pages, sources, machines and rejects, one statement per table."""

    def __init__(self) -> None:
        # keyed by (job, hour), (job, day), (job,), (job, page), (job, *DEVICE_KEYS)
        self.hourly = _tally(queries.HOURLY)
        self.daily = _tally(queries.DAILY)
        self.totals = _tally(queries.DAILY)
        self.pages = _tally(queries.PAGES)
        self.breakdowns = _tally(queries.BREAKDOWN)
        self.sources: Counter[tuple] = Counter()
        self.machine: Counter[tuple] = Counter()
        self.rejected: Counter[tuple] = Counter()

    def view(self, job: int, at: dt.datetime, extra: Mapping[str, Any]) -> bool:
        """A page view of an attributed site in its figure; whether it is a machine's (then named)."""
        machine, unknown = figure(extra)
        for cell in (self.hourly[(job, _hour(at))], self.daily[(job, _day(at))], self.totals[(job,)]):
            cell["machine" if machine else "pageviews"] += 1
            cell["unknown"] += unknown
        if machine:
            reason, family = extra.get("machine_reason") or "unknown", extra.get("machine_family") or ""
            self.machine[(job, "page", reason, family)] += 1
        return machine

    def entry(self, view: View) -> None:
        """A session (or, without visitor keys, a visit from elsewhere) starting at ``view``."""
        self.daily[(view.job_id, _day(view.at))]["sessions"] += 1
        self.totals[(view.job_id,)]["sessions"] += 1
        self.pages[(view.job_id, view.page)]["entries"] += 1
        self.sources[(view.job_id, *_source(view))] += 1

    async def merge(self, conn: asyncpg.Connection) -> None:
        """Write every table's tallies."""
        for sql, rows in (
            (queries.MERGE_HOURLY, _rows(self.hourly, queries.HOURLY)),
            (queries.MERGE_DAILY, _rows(self.daily, queries.DAILY)),
            (queries.MERGE_TOTALS, _rows(self.totals, queries.DAILY)),
            (queries.MERGE_PAGES, _rows(self.pages, queries.PAGES)),
            (queries.MERGE_SOURCES, [(*k, v) for k, v in self.sources.items()]),
            (queries.MERGE_BREAKDOWNS, _rows(self.breakdowns, queries.BREAKDOWN)),
            (queries.MERGE_MACHINE, [(*k, v) for k, v in self.machine.items()]),
            (queries.MERGE_REJECTED, [(*k, v) for k, v in self.rejected.items()]),
        ):
            if rows:
                await conn.execute(sql, *[list(col) for col in zip(*sorted(rows), strict=True)])


def _rows(tally: Mapping[tuple, Mapping[str, int]], fields: tuple[str, ...]) -> list[tuple]:
    return [(*k, *(v[f] for f in fields)) for k, v in tally.items()]


# Visitors are counted per scope; 'r:' scopes count those seen with a recognised browser.
SCOPES = {"hour": "visitors", "day": "visitors", "all": "visitors",
          "r:hour": "visitors_recognised", "r:day": "visitors_recognised", "r:all": "visitors_recognised"}  # fmt: skip


async def count_visitors(conn: asyncpg.Connection, views: list[View], counts: WebCounts) -> None:
    """Add the visitors not seen before in each hour, day and overall (and so for recognised browsers)."""
    seen = {
        (v.job_id, prefix + scope, bucket, v.vkey, v.salt_day)
        for v in views if v.vkey is not None
        for scope, bucket in (("hour", _hour(v.at)), ("day", dt.datetime.combine(_day(v.at), dt.time(), dt.UTC)),
                              ("all", EPOCH))
        for prefix in (("", "r:") if v.recognised else ("",))
    }
    if not seen:
        return
    rows = sorted(seen, key=lambda r: r[:4])
    new = await conn.fetch(queries.SEEN, *[list(col) for col in zip(*rows, strict=True)])
    for r in new:
        job, scope, bucket = r["job_id"], r["scope"], r["bucket"]
        field = SCOPES[scope]
        if scope.endswith("hour"):
            counts.hourly[(job, bucket)][field] += 1
        elif scope.endswith("day"):
            counts.daily[(job, _day(bucket))][field] += 1
        else:
            counts.totals[(job,)][field] += 1


async def merge_page_hits(
    conn: asyncpg.Connection, hits: Sequence[Mapping[str, Any]], enriched: Sequence[Mapping[str, Any]],
    today: dt.date | None = None,
) -> None:
    """Merge claimed page views (rows of queries.CLAIM_PAGES, with_settings) in the caller's transaction.

    The caller holds the jobs' locks (claims.claim) and made the salts (keep_salts).
    """
    if not hits:
        return
    today = today or today_utc()
    salts = await salts_for(conn, {_day(h["received_at"]) for h in hits}, today)
    tracks = [track_of(h) for h in hits]
    asked = {c for h, t in zip(hits, tracks, strict=True) if t == PERSONAL and (c := parse_contact(h["contact"]))}
    allowed = await allowed_contacts(conn, asked)
    counts, views, rows = WebCounts(), [], []
    for hit, track, extra in zip(hits, tracks, enriched, strict=True):
        contact = parse_contact(hit["contact"]) if track == PERSONAL else None
        rows.append(stored_row(hit, track, extra, hit["contact"] if contact in allowed else None))
        if track == REJECTED:
            counts.rejected[(hit["job_id"], _hour(hit["received_at"]), reject_reason(hit))] += 1
            continue
        if not counts.view(hit["job_id"], hit["received_at"], extra):
            views.append(_count(hit, track, dict(extra), salts, counts))
    await count_visitors(conn, views, counts)
    _entries(views, await sessionize(conn, views), counts)
    await counts.merge(conn)
    await _mark(conn, hits, rows)
    await _contacts(conn, hits, tracks, allowed)


def _count(hit: Mapping[str, Any], track: str, extra: dict[str, Any], salts: Mapping[dt.date, bytes],
           counts: WebCounts) -> View:
    """The counted view of a page view not a machine's; its page and breakdown tallied."""
    key = visitor_key(hit, track, salts)
    unknown = figure(extra)[1]
    view = View(hit["job_id"], hit["received_at"], page_of(hit["url"], hit["spa_hash"]),
                key[0] if key else None, key[1] if key else None, extra, recognised=not unknown)
    if track in (PERSONAL, UNIQUE):
        cube = tuple(str(extra.get(n) or "") for n in queries.DEVICE_KEYS)
    else:
        cube = ("", "", "", "")
    for cell in (counts.pages[(view.job_id, view.page)], counts.breakdowns[(view.job_id, *cube)]):
        cell["pageviews"] += 1
        cell["unknown"] += unknown
    return view


def _entries(views: list[View], started: list[Session], counts: WebCounts) -> None:
    """Entries: first views of new sessions; without a visitor key, views not referred by the site."""
    for session in started:
        if session.entry is not None:
            counts.entry(session.entry)
    for view in views:
        if view.vkey is None and view.enriched.get("source_class") != "internal":
            counts.entry(view)


async def _mark(conn: asyncpg.Connection, hits: Sequence[Mapping[str, Any]], rows: list[tuple]) -> None:
    await conn.execute(queries.CREATE_BATCH)
    await conn.copy_records_to_table("site_batch", records=rows, columns=queries.BATCH_COLUMNS)
    await conn.execute(queries.ANALYZE_BATCH)
    await claims.mark(conn, queries.MARK_ROLLED, claims.spans(hits))


async def _contacts(conn: asyncpg.Connection, hits: Sequence[Mapping[str, Any]], tracks: list[str],
                    allowed: set[tuple[int, int]]) -> None:
    """Identify visitors by their contact, then file the views of known contacts."""
    named: dict[tuple[int, str], tuple[tuple[int, int], Mapping[str, Any]]] = {}
    direct: list[tuple[Any, ...]] = []
    visitors: set[tuple[int, str]] = set()
    for hit, track in zip(hits, tracks, strict=True):
        if track != PERSONAL:
            continue
        contact = parse_contact(hit["contact"])
        if hit["visitor_id"]:
            visitors.add((hit["job_id"], hit["visitor_id"]))
            if contact in allowed:
                named.setdefault((hit["job_id"], hit["visitor_id"]), (contact, hit))
        elif contact in allowed and contact is not None:
            direct.append((hit["job_id"], hit["received_at"], hit["hit_id"], *contact, hit["url"], hit["title"]))
    if named:
        rows = [(job, vid, *contact, hit["received_at"], hit["url"]) for (job, vid), (contact, hit) in named.items()]
        await conn.execute(queries.IDENTIFY, *[list(col) for col in zip(*sorted(rows), strict=True)])
    if visitors:
        ordered = sorted(visitors)
        await conn.execute(queries.CONTACT_VIEWS, [v[0] for v in ordered], [v[1] for v in ordered])
    if direct:
        await conn.execute(queries.CONTACT_VIEWS_DIRECT, *[list(col) for col in zip(*direct, strict=True)])


async def rollup_sites(conn_or_url: asyncpg.Connection | str, batch_size: int = DEFAULT_BATCH,
                       enricher: Any = None, today: dt.date | None = None) -> int:
    """Roll up every unrolled page view, one transaction per batch; return how many."""
    if isinstance(conn_or_url, str):
        conn = await db.connect(conn_or_url)
        try:
            return await rollup_sites(conn, batch_size, enricher, today)
        finally:
            await conn.close()
    conn = conn_or_url
    enricher = enricher or _default_enricher()
    jobs = await claims.pending(conn, queries.PENDING)
    salted = today or today_utc()
    await keep_salts(conn, salted, jobs.first, jobs.last)  # salts die on time even when no page view comes
    total = 0
    for _ in range(MAX_BATCHES):
        if not jobs:
            break
        day = today or today_utc()
        if day != salted:  # a run across midnight: the new day's salt
            await keep_salts(conn, salted := day, jobs.first, jobs.last)
        async with conn.transaction():
            hits = await with_settings(conn, await claims.claim(conn, jobs, queries.CLAIM_PAGES, batch_size))
            if hits:
                await merge_page_hits(conn, hits, enricher.enrich(hits, sent_at={}), day)
        total += len(hits)
    if total:
        log.info("rolled up %d page views", total)
    return total


async def with_settings(conn: asyncpg.Connection, claimed: Sequence[asyncpg.Record]) -> list[dict[str, Any]]:
    """Claimed page views as dicts, each with its site's mode and settings (queries.SITE_SETTINGS)."""
    if not claimed:
        return []
    sites = sorted({h["job_id"] for h in claimed})
    found = {r["job_id"]: dict(tuple(r.items())[1:]) for r in await conn.fetch(queries.SITE_SETTINGS, sites)}
    return [{**h, **found.get(h["job_id"], queries.UNKNOWN_SITE)} for h in claimed]


def _default_enricher() -> Enriching:
    return make_enricher(EnrichConfig.from_env())
