"""Who a page view belongs to, as far as the site's mode allows.

Tracks: ``personal`` (visitor id kept, contacts joined), ``unique`` (only a
daily salted hash), ``blind`` (counts only), ``rejected`` (unknown or forged
site key). The visitor key (``vkey``) counts unique visitors and links
sessions: a hash of the visitor cookie on personal sites, otherwise a hash
keyed with the day's salt over site and cookie, or site, address and user
agent when there is no cookie (as Plausible does). Salts live two days.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from aggregator import claims
from aggregator.web import queries
from pixeltrack.core import columns

PERSONAL, UNIQUE, BLIND, REJECTED = "personal", "unique", "blind", "rejected"
SALT_DAYS = 2  # today and yesterday (UTC); older salts and their hashes are destroyed
Key = tuple[bytes, dt.date | None]


def track_of(hit: Mapping[str, Any]) -> str:
    """The track of one claimed page view."""
    if hit["reject_reason"] is not None or hit["job_id"] == 0 or hit["mode"] not in (PERSONAL, UNIQUE, BLIND):
        return REJECTED
    return str(hit["mode"])


def reject_reason(hit: Mapping[str, Any]) -> str:
    """Why a page view is not counted."""
    return str(hit["reject_reason"]) if hit["reject_reason"] is not None else "unknown_site"


def page_of(url: str | None, with_fragment: bool) -> str:
    """The page a view is counted under: the path (and fragment on hash-routed sites)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    page = parts.path or "/"
    return f"{page}#{parts.fragment}" if with_fragment and parts.fragment else page


def bare_url(url: str | None) -> str | None:
    """Scheme, host and path only: what unique and blind sites keep of an address."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme and parts.netloc else None


def today_utc() -> dt.date:
    """The current UTC day."""
    return dt.datetime.now(dt.UTC).date()


def _live(day: dt.date, today: dt.date) -> bool:
    """Whether ``day`` may have a salt: yesterday, today or tomorrow (a client clock ahead)."""
    return -SALT_DAYS < (day - today).days <= 1


async def keep_salts(conn: asyncpg.Connection, today: dt.date, first: dt.datetime | None = None,
                     last: dt.datetime | None = None) -> None:
    """Destroy salts older than yesterday with every hash made from them; make the missing live
    salts of the days from ``first`` to ``last`` (or today), the days of the views pending.

    Each in a short transaction of its own, before a batch: the destruction
    waits for the batches in flight (the exclusive gate), so none merges a
    hash of a salt just destroyed; a batch only reads salts (salts_for).
    """
    cutoff = today - dt.timedelta(days=SALT_DAYS - 1)
    if await conn.fetchval(queries.OLD_SALTS, cutoff):
        async with conn.transaction():
            await conn.execute(claims.GATE_EXCLUSIVE)
            await conn.execute(queries.DESTROY_SALTS, cutoff)
            await conn.execute(queries.DESTROY_SEEN, cutoff)
            await conn.execute(queries.DESTROY_SESSION_KEYS, cutoff)
    if first is None:
        return
    end = max(_day(last), today) if last is not None else today
    days = [d for n in range((end - _day(first)).days + 1) if _live(d := _day(first) + dt.timedelta(days=n), today)]
    if days and len(await conn.fetch(queries.SALTS, days)) < len(days):
        await conn.execute(queries.NEW_SALTS, days, [secrets.token_bytes(32) for _ in days])


def _day(at: dt.datetime) -> dt.date:
    return at.astimezone(dt.UTC).date()


async def salts_for(conn: asyncpg.Connection, days: Iterable[dt.date], today: dt.date) -> dict[dt.date, bytes]:
    """Salts of the live ``days`` (made by keep_salts); destroyed ones stay gone."""
    live = sorted({d for d in days if _live(d, today)})
    if not live:
        return {}
    return {r["day"]: r["salt"] for r in await conn.fetch(queries.SALTS, live)}


def _salted(salt: bytes, *parts: object) -> bytes:
    data = "\x1f".join(str(p) for p in parts).encode("utf-8", "replace")
    return hashlib.blake2b(data, key=salt, digest_size=16).digest()


def visitor_key(hit: Mapping[str, Any], track: str, salts: Mapping[dt.date, bytes]) -> Key | None:
    """(vkey, salt day) of a view, or None when nothing may tell visitors apart."""
    if track not in (PERSONAL, UNIQUE):
        return None
    job, visitor = hit["job_id"], hit["visitor_id"]
    if track == PERSONAL and visitor:
        return hashlib.blake2b(f"{job}\x1f{visitor}".encode(), digest_size=16).digest(), None
    day = hit["received_at"].astimezone(dt.UTC).date()
    salt = salts.get(day)
    if salt is None:
        return None  # its day's salt is destroyed: the view counts, the visitor cannot
    if visitor:
        return _salted(salt, job, "v", visitor), day
    if hit["client_ip"] and hit["user_agent"]:
        return _salted(salt, job, hit["client_ip"], hit["user_agent"]), day
    return None


def parse_contact(value: str | None) -> tuple[int, int] | None:
    """(mail job, recipient) from the collector's verified 'job:recipient'."""
    if not value:
        return None
    job, _, rcpt = value.partition(":")
    if not (job.isdigit() and rcpt.isdigit()):
        return None
    return int(job), int(rcpt)


async def allowed_contacts(conn: asyncpg.Connection, pairs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """The contacts whose mail job still allows identity (consent, not forgotten), one query per mail job."""
    by_job: dict[int, list[int]] = {}
    for job, recipient in sorted(pairs):
        by_job.setdefault(job, []).append(recipient)
    allowed: set[tuple[int, int]] = set()
    for job, recipients in by_job.items():
        allowed |= {(job, r["recipient_id"]) for r in await conn.fetch(queries.ALLOWED_CONTACTS, job, recipients)}
    return allowed


# Enrichment kept on the raw page view, per track (as for mail hits: personal
# sites keep all of it, unique ones nothing that narrows a view down to a
# household, blind ones the human/machine split and the entry source).
KEPT = {
    PERSONAL: frozenset(columns.ENRICHED),
    UNIQUE: frozenset(columns.ENRICHED) - frozenset(columns.NARROWING),
    BLIND: frozenset(columns.MACHINE) | (frozenset(columns.SOURCE) - frozenset(columns.NARROWING)),
    REJECTED: frozenset(columns.MACHINE),
}
_headers = itemgetter(*columns.HEADERS)


def stored_row(hit: Mapping[str, Any], track: str, enriched: Mapping[str, Any], contact: str | None) -> tuple:
    """The site_batch row (queries.BATCH_COLUMNS): what survives on the raw page view, per track."""
    kept = KEPT[track]
    values = [enriched.get(name) if name in kept else None for name in columns.ENRICHED]
    if track == PERSONAL:
        head = [enriched.get("client_ip_masked"), *_headers(hit),
                hit["url"], hit["title"], hit["visitor_id"], hit["screen"], contact]
    elif track == REJECTED:
        head = [None] * (1 + len(columns.HEADERS) + len(columns.PAGE_VIEW))
    else:
        head = [None] * (1 + len(columns.HEADERS)) + [bare_url(hit["url"]), hit["title"], None, None, None]
    return (hit["hit_id"], hit["received_at"], hit["job_id"], *head, *values)
