"""Database connection helpers and idempotent schema set-up."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

# schema.sql sits at the project root (editable installs, checkouts) or is
# installed as a data file under <prefix>/share/pixeltrack.
_SCHEMA_CANDIDATES = (
    Path(__file__).resolve().parent.parent / "schema.sql",
    Path(sys.prefix) / "share" / "pixeltrack" / "schema.sql",
)
# Partitions are made this many days ahead, so a collector never needs to
# make one while hits arrive.
PARTITION_DAYS_AHEAD = 7

ENSURE_PARTITIONS = "SELECT pixeltrack_ensure_partitions($1::date, $2::integer)"
# Serialises concurrent `initdb`s (two hosts starting at once).
SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(7079436)"


def schema_sql() -> str:
    """The text of schema.sql (shipped beside the packages)."""
    for path in _SCHEMA_CANDIDATES:
        if path.exists():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError("schema.sql not found beside the package or in share/pixeltrack")


async def connect(url: str) -> asyncpg.Connection:
    """One connection, with the session in UTC so day buckets are UTC days."""
    return await asyncpg.connect(url, server_settings={"timezone": "UTC"})


async def create_pool(url: str, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    """A pool whose sessions run in UTC."""
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, server_settings={"timezone": "UTC"}
    )
    assert pool is not None
    return pool


async def ensure_partitions(conn: asyncpg.Connection, today: dt.date | None = None) -> None:
    """Make raw_hits partitions from yesterday to a week ahead (idempotent)."""
    first = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=1)
    await conn.execute(ENSURE_PARTITIONS, first, PARTITION_DAYS_AHEAD + 2)


async def apply_schema(url: str) -> None:
    """Apply schema.sql and make the coming days' partitions; safe to repeat."""
    conn = await connect(url)
    try:
        async with conn.transaction():
            await conn.execute(SCHEMA_LOCK)
            await conn.execute(schema_sql())
        await ensure_partitions(conn)
    finally:
        await conn.close()
    log.info("schema applied")
