"""Database connection helpers and idempotent schema set-up."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from importlib import resources

import asyncpg

from pixeltrack.core import timestamps

log = logging.getLogger(__name__)

# Partitions are made this many days ahead, so a collector never needs to
# make one while hits arrive.
PARTITION_DAYS_AHEAD = 7

ENSURE_PARTITIONS = "SELECT pixeltrack_ensure_partitions($1::date, $2::integer)"
# Serialises concurrent `initdb`s (two hosts starting at once).
SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(7079436)"


def schema_sql() -> str:
    """The text of schema.sql, shipped inside this package (the project root's schema.sql links to it)."""
    return resources.files("pixeltrack.core").joinpath("schema.sql").read_text(encoding="utf-8")


def distribute_sql() -> str:
    """The text of distribute.sql: the schema's tables as Citus reference and distributed tables."""
    return resources.files("pixeltrack.core").joinpath("distribute.sql").read_text(encoding="utf-8")


async def connect(url: str) -> asyncpg.Connection:
    """One connection, with the session in UTC so day buckets are UTC days, and timestamps.install's codec."""
    conn = await asyncpg.connect(url, server_settings={"timezone": "UTC"})
    await timestamps.install(conn)
    return conn


async def create_pool(url: str, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    """A pool whose sessions run in UTC, with timestamps.install's codec."""
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, server_settings={"timezone": "UTC"}, init=timestamps.install
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


# How each table of the schema (day partitions aside) is laid out on a Citus cluster.
CITUS_TABLES = """
SELECT p.logicalrelid::text AS name, CASE WHEN p.partmethod = 'h' THEN 'distributed' ELSE 'reference' END AS kind,
       p.colocationid
FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid WHERE NOT c.relispartition ORDER BY 2, 1
"""


async def distribute(url: str) -> list[asyncpg.Record]:
    """Apply schema.sql, then distribute.sql on a Citus coordinator (both idempotent).

    Returns (name, kind, colocationid) of every table in Citus' metadata;
    ValueError when the database has no citus extension.
    """
    await apply_schema(url)
    conn = await connect(url)
    try:
        async with conn.transaction():
            await conn.execute(SCHEMA_LOCK)
            try:
                await conn.execute(distribute_sql())
            except asyncpg.RaiseError as exc:
                raise ValueError(f"{exc.args[0]} ({exc.hint})" if exc.hint else exc.args[0]) from exc
        return list(await conn.fetch(CITUS_TABLES))
    finally:
        await conn.close()


def run_with_connection(
    url: str, work: Callable[[asyncpg.Connection], Awaitable[int]], with_schema: bool = False
) -> int:
    """Apply schema.sql first when ``with_schema``, open a connection, run ``work(conn)``, close; its exit code."""

    async def go() -> int:
        if with_schema:
            await apply_schema(url)
        conn = await connect(url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(go())
