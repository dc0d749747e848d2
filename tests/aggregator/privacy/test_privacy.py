"""Right to erasure (forget) and retention (purge)."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from aggregator.config import AggregatorConfig
from aggregator.mail.report import build_report
from aggregator.mail.rollup import rollup
from aggregator.mail.tracks import recipient_hash
from aggregator.privacy.forget import forget
from aggregator.privacy.retention import purge
from loadtest.support import FlagEnricher
from pixeltrack.core import db
from tests.support.hits import add_hits, add_job, add_recipients, hit

A = "https://example.org/a"
CFG = AggregatorConfig(batch_size=1000)


async def roll(conn: asyncpg.Connection) -> None:
    """One complete roll-up with the flag-only enricher."""
    await rollup(conn, CFG, FlagEnricher())


async def two_jobs(conn: asyncpg.Connection) -> tuple[int, int]:
    """r2@example.org opens and clicks in a personal job and opens in a unique job."""
    personal, unique = await add_job(conn, "personal"), await add_job(conn, "unique")
    for job in (personal, unique):
        await add_recipients(conn, job, 3)
    await add_hits(conn, [
        hit("open", personal, 1, 0), hit("open", personal, 2, 1), hit("open", personal, 2, 2),
        hit("click", personal, 2, 3, A), hit("open", unique, 2, 4), hit("open", unique, 3, 5),
    ])  # fmt: skip
    await roll(conn)
    return personal, unique


class TestForget:
    """forget removes a recipient everywhere and says what it removed."""

    async def test_everywhere(self, conn: asyncpg.Connection) -> None:
        """No raw hit, roll-up row or hash of r2 is left in either job; totals are kept."""
        personal, unique = await two_jobs(conn)
        done = await forget(conn, "r2@example.org")
        assert [(f.job_id, f.raw_hits, f.recipient_rows, f.link_rows, f.hashes) for f in done] == [
            (personal, 3, 1, 1, 3), (unique, 0, 0, 0, 1),
        ]  # fmt: skip
        assert await conn.fetchval("SELECT count(*) FROM raw_hits WHERE recipient_id = 2") == 0
        assert await conn.fetchval("SELECT count(*) FROM report_recipients WHERE recipient_id = 2") == 0
        assert await conn.fetchval("SELECT count(*) FROM report_recipient_links WHERE recipient_id = 2") == 0
        for job in (personal, unique):
            key = await conn.fetchval("SELECT key FROM job_keys WHERE job_id = $1", job)
            found = await conn.fetchval(
                "SELECT count(*) FROM unique_seen WHERE job_id = $1 AND hash = $2", job, recipient_hash(key, 2)
            )
            assert found == 0
        report = await build_report(conn, personal)
        assert [r["recipient_id"] for r in report["recipients"]] == [1]
        assert report["opens"]["total"] == 3

    async def test_later_hits_not_attributed(self, conn: asyncpg.Connection) -> None:
        """A hit from r2's token after forget is counted but attributed to no one."""
        personal, _ = await two_jobs(conn)
        await forget(conn, "r2@example.org", personal)
        await add_hits(conn, [hit("open", personal, 2, 30)])
        await roll(conn)
        assert (
            await conn.fetchval("SELECT count(*) FROM raw_hits WHERE recipient_id = 2 AND job_id = $1", personal) == 0
        )
        assert await conn.fetchval("SELECT count(*) FROM report_recipients WHERE recipient_id = 2") == 0
        assert (await build_report(conn, personal))["opens"]["total"] == 4

    async def test_unknown(self, conn: asyncpg.Connection) -> None:
        """An unknown recipient removes nothing."""
        await two_jobs(conn)
        assert await forget(conn, "nobody@example.org") == []


class TestPurge:
    """The daily purge destroys expired keys and drops old partitions, never with DELETE."""

    async def test_keys_destroyed_after_retention(self, conn: asyncpg.Connection) -> None:
        """A unique job sent 40 days ago with 30 days retention loses its key and hashes."""
        now = dt.datetime.now(dt.UTC)
        job = await add_job(conn, "unique", retention_days=30, sent_at=now - dt.timedelta(days=40))
        await add_recipients(conn, job, 2)
        await add_hits(conn, [hit("open", job, 1, received_at=now), hit("open", job, 2, received_at=now)])
        await roll(conn)
        result = await purge(conn, CFG, now)
        assert (result.keys_destroyed, result.hashes_deleted) == (1, 2)
        row = await conn.fetchrow("SELECT key, destroyed_at FROM job_keys WHERE job_id = $1", job)
        assert row["key"] is None and row["destroyed_at"] == now
        await add_hits(conn, [hit("open", job, 1, received_at=now)])
        await roll(conn)
        assert (await build_report(conn, job))["opens"] == {
            "total": 3, "human": 0, "unknown": 3, "machine": 0, "headline": 3, "unique": 2, "inferred": 0,
        }  # fmt: skip
        assert await conn.fetchval("SELECT count(*) FROM unique_seen") == 0

    async def test_old_partitions_dropped(self, conn: asyncpg.Connection) -> None:
        """With 10 days' retention, day partitions ending 10+ days ago are dropped, newer kept."""
        now = dt.datetime.now(dt.UTC)
        job = await add_job(conn, "personal", retention_days=10)  # personal: its raw rows outlive the roll-up
        await add_recipients(conn, job, 1)
        await db.ensure_partitions(conn, (now - dt.timedelta(days=13)).date())
        await add_hits(conn, [hit("open", job, 1, received_at=now - dt.timedelta(days=d)) for d in (12, 9)])
        await roll(conn)
        result = await purge(conn, AggregatorConfig(retention_days=1), now)
        days = [(now - dt.timedelta(days=d)).strftime("raw_hits_%Y%m%d") for d in (14, 13, 12, 11)]
        assert list(result.partitions_dropped) == days
        assert await conn.fetchval("SELECT count(*) FROM raw_hits") == 1
        assert (await build_report(conn, job))["opens"]["total"] == 2

    async def test_tombstones_go_with_their_partitions(self, conn: asyncpg.Connection) -> None:
        """With 10 days' retention, the collectors' tombstone of 12 days ago is deleted, the one of 9 days ago kept."""
        now = dt.datetime.now(dt.UTC)
        await add_job(conn, "blind", retention_days=10)
        await conn.executemany(
            "INSERT INTO copied_hits (first_id, last_id, hits, copied_at) VALUES ($1, $2, $3, $4)",
            [(uuid.UUID(int=first), uuid.UUID(int=first + n - 1), n, now - dt.timedelta(days=d))
             for first, n, d in ((1, 5, 12), (100, 7, 9))])  # fmt: skip
        result = await purge(conn, AggregatorConfig(retention_days=1), now)
        assert result.tombstones_deleted == 1
        assert [r["hits"] for r in await conn.fetch("SELECT hits FROM copied_hits")] == [7]

    async def test_personal_hits_past_retention_scrubbed(self, conn: asyncpg.Connection) -> None:
        """A 5-day personal job's 8-day-old hit loses recipient and address while a 90-day job keeps its partition."""
        now = dt.datetime.now(dt.UTC)
        short, long_ = await add_job(conn, "personal", retention_days=5), await add_job(conn, "personal")
        await db.ensure_partitions(conn, (now - dt.timedelta(days=9)).date())
        await add_recipients(conn, short, 1)
        await add_recipients(conn, long_, 1)
        old = now - dt.timedelta(days=8)
        await add_hits(conn, [hit("open", short, 1, received_at=old), hit("open", long_, 1, received_at=old)])
        await roll(conn)
        result = await purge(conn, CFG, now)
        assert result.hits_scrubbed == 1 and result.partitions_dropped == ()
        rows = await conn.fetch("SELECT job_id, recipient_id, client_ip FROM raw_hits ORDER BY job_id")
        assert [(r["job_id"], r["recipient_id"], r["client_ip"] is None) for r in rows] == [
            (short, None, True), (long_, 1, False),
        ]  # fmt: skip
