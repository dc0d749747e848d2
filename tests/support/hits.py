"""Hand-built jobs, recipients and raw hits for aggregator tests."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg

from aggregator.mail.queries import SCOPES
from collector.postgres import RUNS, waiting

T0 = dt.datetime(2024, 5, 6, 10, 0, tzinfo=dt.UTC)
HIT_COLUMNS = (
    "hit_id", "received_at", "kind", "job_id", "recipient_id", "link", "page", "client_ip",
    "user_agent", "referer", "accept_language", "method", "prefetch", "reject_reason",
)  # fmt: skip
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"
# unique_seen spelt out a row per scope (kind) a row counts in, as it was kept before its
# scopes became bits; $1, $2: SCOPES_ARGS.
SEEN_BY_SCOPE = """
SELECT s.job_id, b.kind, s.link_id, s.hash, s.inferred & b.bit <> 0 AS inferred
FROM unique_seen s JOIN unnest($1::text[], $2::integer[]) AS b(kind, bit) ON s.scopes & b.bit <> 0
"""
SCOPES_ARGS = (list(SCOPES), list(SCOPES.values()))


def with_runs(insert: str) -> str:
    """An ``INSERT INTO raw_hits ... VALUES/SELECT`` that also records each row it writes as a run of its own
    (hit_runs), in the same statement: what the collector's transaction records with its COPY."""
    return (f"WITH written AS ({insert.strip()} RETURNING job_id, kind, hit_id, received_at) "
            "INSERT INTO hit_runs (job_id, pages, first_id, first_at, last_at, hits) "
            "SELECT job_id, kind = 'page', hit_id, received_at, received_at, 1 FROM written")


def at(minutes: float, base: dt.datetime = T0) -> dt.datetime:
    """``minutes`` after 2024-05-06 10:00 UTC."""
    return base + dt.timedelta(minutes=minutes)


def hit(
    kind: str,
    job_id: int,
    recipient_id: int | None = None,
    minute: float = 0,
    link: str | None = None,
    *,
    method: str = "GET",
    prefetch: bool = False,
    reject_reason: str | None = None,
    ip: str = "203.0.113.7",
    ua: str = UA,
    page: int | None = None,
    received_at: dt.datetime | None = None,
) -> tuple[Any, ...]:
    """One raw_hits row as the collector would COPY it."""
    return (
        uuid.uuid4(), received_at or at(minute), kind, job_id, recipient_id, link, page, ip,
        ua, None, "de-DE,de;q=0.9", method, prefetch, reject_reason,
    )  # fmt: skip


async def add_hits(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert raw hits with binary COPY, and their runs (hit_runs), as the collector does."""
    async with conn.transaction():
        await conn.copy_records_to_table("raw_hits", records=rows, columns=HIT_COLUMNS)
        if rows:
            await conn.execute(RUNS, *waiting(rows))


async def add_job(
    conn: asyncpg.Connection,
    mode: str,
    name: str | None = None,
    retention_days: int = 90,
    sent_at: dt.datetime | None = None,
) -> int:
    """Create a mail job; return its id."""
    return await conn.fetchval(
        "INSERT INTO jobs (name, mode, sent_at, retention_days) VALUES ($1, $2, $3, $4) RETURNING job_id",
        name or f"{mode} job",
        mode,
        sent_at,
        retention_days,
    )


async def add_recipients(
    conn: asyncpg.Connection,
    job_id: int,
    count: int,
    *,
    consent: bool = False,
    profile: tuple[int | None, str | None, str | None] = (None, None, None),
    first: int = 1,
    changed_at: dt.datetime = T0 - dt.timedelta(days=1),
) -> list[int]:
    """Recipients first..first+count-1 (addresses r<id>@example.org); return their ids."""
    ids = list(range(first, first + count))
    await conn.executemany(
        "INSERT INTO recipients (job_id, recipient_id, recipient, consent, consent_changed_at,"
        " birth_year, gender, zip) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [(job_id, i, f"r{i}@example.org", consent, changed_at, *profile) for i in ids],
    )
    return ids


def personal_hits(job_id: int, a: str, b: str, r3_click: float) -> list[tuple[Any, ...]]:
    """r1 opens twice and clicks ``a``, ``a``, ``b``; r2 opens (plus a prefetch HEAD) and a scanner
    prefetches ``b``; r3 clicks ``a`` at minute ``r3_click`` with images blocked; r4 does nothing."""
    return [
        hit("open", job_id, 1, 0), hit("open", job_id, 1, 30),
        hit("click", job_id, 1, 31, a), hit("click", job_id, 1, 32, a), hit("click", job_id, 1, 40, b),
        hit("open", job_id, 2, 5), hit("open", job_id, 2, 5, method="HEAD", prefetch=True),
        hit("click", job_id, 2, 10, b, prefetch=True),
        hit("click", job_id, 3, r3_click, a),
    ]  # fmt: skip
