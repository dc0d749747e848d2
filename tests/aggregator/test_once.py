"""Exactly once: reruns, concurrent runs, killed runs and late hits."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import pytest

from aggregator import claims
from aggregator.config import AggregatorConfig
from aggregator.mail.report import build_report
from aggregator.mail.rollup import rollup
from loadtest.support import FlagEnricher
from pixeltrack.core import db
from tests.support.hits import add_hits, add_job, add_recipients, at, hit

A = "https://example.org/a"
B = "https://example.org/b"


class Killed(Exception):
    """Stands for a process killed between claim and merge."""


async def kill() -> None:
    """Fault injected after the claim and enrichment, before any merge."""
    raise Killed


async def busy_job(conn: asyncpg.Connection) -> int:
    """A unique job: 40 recipients, each opening 3 times and clicking A; even ones also click B."""
    job = await add_job(conn, "unique")
    await add_recipients(conn, job, 40)
    rows = []
    for r in range(1, 41):
        rows += [hit("open", job, r, r), hit("open", job, r, r + 1), hit("open", job, r, r + 90)]
        rows += [hit("click", job, r, r + 2, A)] + ([hit("click", job, r, r + 3, B)] if r % 2 == 0 else [])
    await add_hits(conn, rows)
    return job


def headline(report: dict) -> tuple:
    """Opens, clicks, links and timeline of a report, for comparing runs."""
    links = [(e["url"], e["clicks"], e["unique_clicks"]) for e in report["links"]]
    return report["opens"], report["clicks"], links, report["timeline"]


# The flag-only enricher recognises no agent: every hit not a machine's is unknown, and counts in the headline.
EXPECTED_OPENS = {"total": 120, "human": 0, "unknown": 120, "machine": 0, "headline": 120, "unique": 40, "inferred": 0}
EXPECTED_CLICKS = {"total": 60, "human": 0, "unknown": 60, "machine": 0, "headline": 60, "unique": 40}


class TestRerun:
    """A second run over nothing new changes nothing."""

    async def test_twice_same_numbers(self, conn: asyncpg.Connection) -> None:
        """Two complete runs give opens 120/40 unique and clicks 60/40 unique, as one does."""
        job = await busy_job(conn)
        await rollup(conn, AggregatorConfig(batch_size=17), FlagEnricher())
        first = headline(await build_report(conn, job))
        stats = await rollup(conn, AggregatorConfig(batch_size=17), FlagEnricher())
        assert stats.hits == 0
        assert headline(await build_report(conn, job)) == first
        assert first[0] == EXPECTED_OPENS and first[1] == EXPECTED_CLICKS
        assert first[2] == [(A, 40, 40), (B, 20, 20)]


class TestConcurrentRuns:
    """Two aggregators on the same database never double count."""

    async def test_two_runs_at_once(self, db_url: str, conn: asyncpg.Connection) -> None:
        """Runs on two connections, in small batches, split the hits and sum to the exact totals."""
        job = await busy_job(conn)
        cfg = AggregatorConfig(batch_size=7)
        c1, c2 = await db.connect(db_url), await db.connect(db_url)
        try:
            s1, s2 = await asyncio.gather(rollup(c1, cfg, FlagEnricher()), rollup(c2, cfg, FlagEnricher()))
        finally:
            await c1.close()
            await c2.close()
        assert s1.hits + s2.hits == 180 and s1.hits > 0 and s2.hits > 0
        report = await build_report(conn, job)
        assert (report["opens"], report["clicks"]) == (EXPECTED_OPENS, EXPECTED_CLICKS)
        assert await conn.fetchval("SELECT count(*) FROM raw_hits WHERE rolled_at IS NULL") == 0


class TestKilledRun:
    """A run that dies between claim and merge leaves nothing half-applied."""

    async def test_fault_then_rerun(self, conn: asyncpg.Connection) -> None:
        """After the fault nothing is rolled or counted; the next run gives the exact numbers."""
        job = await busy_job(conn)
        cfg = AggregatorConfig(batch_size=50)
        await rollup(conn, cfg, FlagEnricher())  # some history first
        await add_hits(conn, [hit("open", job, 1, 200), hit("click", job, 41, 201, B)])
        before = await conn.fetchval("SELECT sum(total) FROM report_job_totals")
        with pytest.raises(Killed):
            await rollup(conn, cfg, FlagEnricher(), fault=kill)
        assert await conn.fetchval("SELECT count(*) FROM raw_hits WHERE rolled_at IS NULL") == 2
        assert await conn.fetchval("SELECT sum(total) FROM report_job_totals") == before == 180
        await rollup(conn, cfg, FlagEnricher())
        report = await build_report(conn, job)
        assert report["opens"] == {"total": 121, "human": 0, "unknown": 121, "machine": 0, "headline": 121, "unique": 41,
                                  "inferred": 1}
        assert report["clicks"] == {"total": 61, "human": 0, "unknown": 61, "machine": 0, "headline": 61, "unique": 41}


class TestClaimLost:
    """A claimed hit that someone else marks before the batch does: the batch is refused, nothing counts twice."""

    async def test_refused_then_rest_counted(self, db_url: str, conn: asyncpg.Connection) -> None:
        """The batch rolls back (180 unrolled, nothing counted); the next run counts the other 179 once."""
        job = await busy_job(conn)
        other = await db.connect(db_url)

        async def meddle() -> None:  # a writer outside the job lock marks the earliest claimed hit
            await other.execute(
                "UPDATE raw_hits SET rolled_at = now() WHERE (received_at, hit_id) = "
                "(SELECT received_at, hit_id FROM raw_hits WHERE job_id = $1 ORDER BY received_at LIMIT 1)",
                job,
            )

        try:
            with pytest.raises(claims.ClaimLost, match="180 hits claimed, 179 still unrolled"):
                await rollup(conn, AggregatorConfig(batch_size=500), FlagEnricher(), fault=meddle)
        finally:
            await other.close()
        assert await conn.fetchval("SELECT count(*) FROM raw_hits WHERE rolled_at IS NULL") == 179
        assert await conn.fetchval("SELECT count(*) FROM report_job_totals") == 0
        stats = await rollup(conn, AggregatorConfig(batch_size=500), FlagEnricher())
        assert stats.hits == 179
        assert await conn.fetchval("SELECT sum(total) FROM report_job_totals") == 179


class TestLateHit:
    """A hit replayed hours later lands in its own hour."""

    async def test_late_hit_in_its_hour(self, conn: asyncpg.Connection) -> None:
        """A 10:15 open rolled up after 14:00 hits adds to the 10:00 bucket, not the latest."""
        job = await add_job(conn, "blind")
        await add_hits(conn, [hit("open", job, None, 240), hit("open", job, None, 5)])
        await rollup(conn, AggregatorConfig(), FlagEnricher())
        await add_hits(conn, [hit("open", job, None, 15)])
        await rollup(conn, AggregatorConfig(), FlagEnricher())
        rows = await conn.fetch("SELECT hour, total FROM report_hourly WHERE job_id = $1 ORDER BY hour", job)
        assert [(r["hour"], r["total"]) for r in rows] == [(at(0), 2), (at(240), 1)]

    async def test_hit_in_an_old_partition(self, conn: asyncpg.Connection) -> None:
        """A hit from 3 days ago (its own day partition) is claimed and bucketed in its hour."""
        job = await add_job(conn, "blind")
        old = dt.datetime.now(dt.UTC).replace(minute=30, second=0, microsecond=0) - dt.timedelta(days=3)
        await db.ensure_partitions(conn, old.date())
        await add_hits(conn, [hit("open", job, None, received_at=old)])
        await rollup(conn, AggregatorConfig(), FlagEnricher())
        hour = await conn.fetchval("SELECT hour FROM report_hourly WHERE job_id = $1", job)
        assert hour == old.replace(minute=0)


class TestHoldBack:
    """The scheduled roll-up leaves the newest hits (PIXELTRACK_ROLLUP_HOLD); a click's look-ahead still reads them."""

    async def test_newest_left_and_seen(self, conn: asyncpg.Connection) -> None:
        """Hold 15 s: a click 20 s old without browser traits is rolled up, cleared by the 12 s old open it is not."""
        job = await add_job(conn, "unique")
        await add_recipients(conn, job, 1)
        now = dt.datetime.now(dt.UTC)
        await add_hits(conn, [hit("click", job, 1, link=A, ua=None, received_at=now - dt.timedelta(seconds=20)),
                              hit("open", job, 1, received_at=now - dt.timedelta(seconds=12))])  # fmt: skip
        cfg = AggregatorConfig()
        assert (await rollup(conn, cfg, hold=15)).hits == 1
        assert (await build_report(conn, job))["clicks"]["unknown"] == 1  # the open was not there yet
        assert (await rollup(conn, cfg, hold=15)).hits == 0
        assert (await rollup(conn, cfg)).hits == 1  # --once and tests: no hold-back
        assert (await build_report(conn, job))["clicks"]["unknown"] == 1

    def test_setting(self) -> None:
        """15 s by default; PIXELTRACK_ROLLUP_HOLD sets it; a negative one is refused, naming the variable."""
        from pixeltrack.core.config import ConfigError

        assert AggregatorConfig.from_env({}).rollup_hold == 15.0
        assert AggregatorConfig.from_env({"PIXELTRACK_ROLLUP_HOLD": "2.5"}).rollup_hold == 2.5
        with pytest.raises(ConfigError, match="PIXELTRACK_ROLLUP_HOLD"):
            AggregatorConfig.from_env({"PIXELTRACK_ROLLUP_HOLD": "-1"})


class TestPageViewsLeftToSites:
    """The mail roll-up never claims website page views (aggregator.web owns them)."""

    async def test_page_not_claimed(self, conn: asyncpg.Connection) -> None:
        """Of an open and a page view, only the open is rolled up."""
        job = await add_job(conn, "blind")
        await add_hits(conn, [hit("open", job, None, 0), hit("page", job, None, 1)])
        stats = await rollup(conn, AggregatorConfig(), FlagEnricher())
        assert stats.hits == 1
        rows = await conn.fetch("SELECT kind FROM raw_hits WHERE rolled_at IS NULL")
        assert [r["kind"] for r in rows] == ["page"]
