"""Random mail hits over jobs of every mode, and the stored rows a roll-up leaves (batch invariance tests).

Bursts: one recipient's hits within 3 s, starting at multiples of 5 s after
T0 (or a minute before New Year 2025, when recipient 2's age band changes),
so that bursts, opens seconds before or after their clicks, pre-load bursts
and hits of one instant all come up. Five mail jobs, one per mode:
personal (job 1, recipient 3 erased, sent at T0), permission_personal (2:
recipient 1 consenting, 2 from T0 + 60 s, 3 never), anonymous (3, profiles),
unique (4), blind (5, tokens without recipient); job index len(MODES) draws
a rejected hit.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
from hypothesis import strategies as st

from tests.support.hits import T0, add_hits

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
IPHONE_MAIL = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
)
AGENTS = [  # (user agent, Accept-Language)
    (CHROME, "de-DE,de;q=0.9"), (CHROME, "de-DE,de;q=0.9"), (CHROME, None), (IPHONE_MAIL, "en-GB"), (None, None),
    ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)", None),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", None), ("curl/8.5.0", None),
    ("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17126; Pro)", "en-US"), ("Mozilla/5.0", None),
]  # fmt: skip
ADDRESSES = ["203.0.113.7", "203.0.113.7", "198.51.100.20", "64.235.150.1", "17.1.2.3"]  # a gateway's, Apple's
LINKS = ["https://shop.example/a", "https://shop.example/b", "https://shop.example/c"]
MODES = ["personal", "permission_personal", "anonymous", "unique", "blind"]
# Recipient 2 turns 25 on New Year 2025: from age band 18-24 to 25-34.
PROFILES = [(1961, "f", "80331"), (2000, "m", "10115"), (None, None, None)]
NEW_YEAR = dt.datetime(2025, 1, 1, tzinfo=dt.UTC) - dt.timedelta(seconds=60)  # bursts straddle midnight
# Every table of the schema is compared but this one, a cache of the last seconds of
# clicks that each batch prunes (what a later batch needs of it is the same).
SKIPPED_TABLES = {"recent_clicks"}
SKIPPED_COLUMNS = {"rolled_at", "updated_at", "created_at", "forgotten_at"}
REFERRING = {"doc_reader_pages", "doc_reading_state"}  # rows referring to other tables' rows: emptied first
TABLES = """
SELECT c.relname, array_agg(a.attname ORDER BY a.attnum) AS columns FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
GROUP BY c.relname ORDER BY c.relname
"""

event = st.tuples(
    st.sampled_from(["open", "open", "click", "click", "doc"]),
    st.integers(0, len(LINKS) - 1),
    st.integers(1, 3),  # page
    st.integers(0, len(AGENTS) - 1),
    st.sampled_from(ADDRESSES),
    st.sampled_from(["GET"] * 7 + ["HEAD"]),
    st.integers(0, 30),  # tenths of a second after the start of its burst
)
# A burst: one recipient's hits within 3 s, starting at a multiple of 5 s (job len(MODES): rejected hits).
bursts = st.lists(
    st.tuples(st.integers(0, 24), st.integers(0, len(MODES)), st.integers(1, 3), st.lists(event, min_size=1, max_size=6)),
    min_size=1, max_size=8,
)  # fmt: skip
Drawn = list[tuple[int, int, int, list[tuple[Any, ...]]]]


def raw_hits(drawn: Drawn, first: int = 1, base: dt.datetime = T0) -> list[tuple[Any, ...]]:
    """raw_hits rows of the drawn bursts, from ``base`` on (hit ids from ``first`` on)."""
    rows: list[tuple[Any, ...]] = []
    for start, job, rid, events in drawn:
        for kind, link, page, agent, ip, method, tenths in events:
            at = base + dt.timedelta(seconds=start * 5, milliseconds=tenths * 100)
            rejected, blind = job == len(MODES), job == MODES.index("blind")
            ua, language = AGENTS[agent]
            rows.append((
                uuid.UUID(int=first + len(rows)), at, kind, 0 if rejected else job + 1,
                None if rejected or blind else rid, LINKS[link] if kind == "click" else None,
                page if kind == "doc" else None, ip, ua, None, language, method, method == "HEAD",
                "bad_signature" if rejected else None,
            ))  # fmt: skip
    return rows


async def empty(conn: asyncpg.Connection) -> None:
    """Delete every row of every table (a few rows each: faster than TRUNCATE)."""
    names = [r["relname"] for r in await conn.fetch(TABLES)]
    for name in sorted(names, key=lambda n: (n not in REFERRING, n == "jobs")):
        await conn.execute(f'DELETE FROM "{name}"')


async def setup(conn: asyncpg.Connection, hits: list[tuple[Any, ...]]) -> None:
    """Empty every table, then the five jobs (keys fixed, so hashes compare), their recipients and ``hits``."""
    await empty(conn)
    for job, mode in enumerate(MODES, start=1):
        await conn.execute("INSERT INTO jobs (job_id, name, mode, sent_at) VALUES ($1, $2, $2, $3)",
                           job, mode, T0 if mode == "personal" else None)  # fmt: skip
        await conn.execute("INSERT INTO job_keys (job_id, key) VALUES ($1, $2)", job, bytes([job]) * 32)
        for rid, profile in enumerate(PROFILES, start=1):
            consent = {1: T0 - dt.timedelta(days=1), 2: T0 + dt.timedelta(seconds=60)}.get(rid)
            if mode != "blind" and not (mode == "personal" and rid == 3):
                await conn.execute(
                    "INSERT INTO recipients (job_id, recipient_id, recipient, consent, consent_changed_at, birth_year,"
                    " gender, zip) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    job, rid, f"r{rid}@example.org", consent is not None, consent or T0, *profile)  # fmt: skip
    await conn.execute("INSERT INTO forgotten_recipients (job_id, recipient_id) VALUES (1, 3)")  # erased
    await add_hits(conn, hits)


async def tables(conn: asyncpg.Connection, skipped: frozenset[str] = frozenset()) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows in order, without the times a roll-up stamps (and SKIPPED_TABLES, ``skipped`` columns)."""
    out = {}
    for r in await conn.fetch(TABLES):
        if r["relname"] in SKIPPED_TABLES:
            continue
        cols = ", ".join(f'"{c}"' for c in r["columns"] if c not in SKIPPED_COLUMNS | skipped)
        rows = await conn.fetch(f'SELECT {cols} FROM "{r["relname"]}"')
        out[r["relname"]] = sorted((tuple(row) for row in rows), key=repr)
    return out


def burst(job: str, *hits: tuple[str, int, int, int, int], rid: int = 1, start: int = 10) -> tuple[Any, ...]:
    """A hand-made burst: (kind, link, page, agent, tenths) of one recipient of the job in ``job`` mode."""
    return (
        start,
        MODES.index(job),
        rid,
        [(kind, link, page, agent, ADDRESSES[0], "GET", t) for kind, link, page, agent, t in hits],
    )
