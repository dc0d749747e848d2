"""The runs waiting (hit_runs): a claim reads a job's hits from its oldest run on and deletes the runs its batch
takes whole, in the batch's transaction; the marking of kept rows is then an update in place (HOT)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest

from aggregator import claims
from aggregator.config import AggregatorConfig
from aggregator.enrich.enricher import make_enricher
from aggregator.mail import queries
from aggregator.mail.rollup import EVER, rollup
from pixeltrack.core import db
from tests.support.hits import T0, add_hits, add_job, add_recipients, at, hit

MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
async def other(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A second connection, for another writer."""
    conn = await db.connect(db_url)
    yield conn
    await conn.close()


async def batch(conn: asyncpg.Connection, limit: int, until: dt.datetime = EVER) -> list[float]:
    """One batch of the mail roll-up's claim (listing, claim, the claimed hits marked rolled), committed: the
    minutes of the hits it took."""
    jobs = await claims.pending(conn, queries.PENDING)
    async with conn.transaction():
        hits = await claims.claim(conn, jobs, queries.CLAIM, limit, until)
        await conn.execute("UPDATE raw_hits SET rolled_at = now() WHERE hit_id = ANY($1::uuid[])",
                           [h["hit_id"] for h in hits])  # fmt: skip
    return [(h["received_at"] - T0) / MINUTE for h in hits]


async def runs_left(conn: asyncpg.Connection) -> list[tuple[float, float]]:
    """The runs waiting, as (first, last) minutes, by first."""
    return [((r["first_at"] - T0) / MINUTE, (r["last_at"] - T0) / MINUTE)
            for r in await conn.fetch("SELECT first_at, last_at FROM hit_runs ORDER BY first_at")]  # fmt: skip


async def two_runs(conn: asyncpg.Connection) -> int:
    """A blind job with two runs of opens that overlap in time, as two collectors write them: 10:01 and 10:03,
    then 10:02 and 10:05."""
    job = await add_job(conn, "blind")
    await add_hits(conn, [hit("open", job, None, 1), hit("open", job, None, 3)])
    await add_hits(conn, [hit("open", job, None, 2), hit("open", job, None, 5)])
    return job


class TestClaimByRuns:
    async def test_full_batches(self, conn: asyncpg.Connection) -> None:
        """Batches of 2: 10:01 and 10:02 (full at 10:02: no run ends before it, both stay); 10:03 and 10:05 (full
        at 10:05: the first run, ending at 10:03, is done); then nothing, and the second run is done too."""
        await two_runs(conn)
        assert (await batch(conn, 2), await runs_left(conn)) == ([1, 2], [(1, 3), (2, 5)])
        assert (await batch(conn, 2), await runs_left(conn)) == ([3, 5], [(2, 5)])
        assert (await batch(conn, 2), await runs_left(conn)) == ([], [])
        assert not await claims.pending(conn, queries.PENDING)

    async def test_hold_back(self, conn: asyncpg.Connection) -> None:
        """Up to 10:04: 10:01-10:03, and the run that ends at 10:03 is done, the one that ends at 10:05 waits; then
        10:05, and it is done."""
        await two_runs(conn)
        assert (await batch(conn, 10, until=at(4)), await runs_left(conn)) == ([1, 2, 3], [(2, 5)])
        assert (await batch(conn, 10), await runs_left(conn)) == ([5], [])

    async def test_old_hits_come_late(self, conn: asyncpg.Connection, other: asyncpg.Connection) -> None:
        """After the listing, another transaction commits a run of hits older than every one waiting (a spool
        replayed after an outage): the claim reads the job's runs after its lock, so it starts at 09:50 and takes
        them in the same batch."""
        job = await two_runs(conn)
        jobs = await claims.pending(conn, queries.PENDING)
        await add_hits(other, [hit("click", job, None, -10, "https://example.com/")])
        async with conn.transaction():
            hits = await claims.claim(conn, jobs, queries.CLAIM, 10, EVER)
        assert [(h["received_at"] - T0) / MINUTE for h in hits] == [-10, 1, 2, 3, 5]
        assert await runs_left(conn) == []

    async def test_rolled_back_batch_keeps_its_runs(self, conn: asyncpg.Connection) -> None:
        """A batch that fails after its claim (a killed aggregator, a lost claim) leaves every run, and the next
        takes the same hits."""
        await two_runs(conn)
        jobs = await claims.pending(conn, queries.PENDING)
        try:
            async with conn.transaction():
                await claims.claim(conn, jobs, queries.CLAIM, 10, EVER)
                raise claims.ClaimLost("test")
        except claims.ClaimLost:
            pass
        assert await runs_left(conn) == [(1, 3), (2, 5)]
        assert await batch(conn, 10) == [1, 2, 3, 5]


async def updates(conn: asyncpg.Connection, table: str) -> tuple[int, int]:
    """Rows updated in ``table`` so far, and how many of those updates were HOT (statistics flushed first)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    row = await conn.fetchrow("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = $1::regclass",
                              table)  # fmt: skip
    return int(row["n_tup_upd"]), int(row["n_tup_hot_upd"])


class TestMarkingInPlace:
    async def test_kept_rows_updated_in_place(self, conn: asyncpg.Connection) -> None:
        """A personal job's 6 opens and clicks, rolled up on columns: the 6 kept rows are marked (rolled_at, the
        address masked, the enrichment) by 6 HOT updates, on their own page with no new index entry; every
        address masked to its /24."""
        job = await add_job(conn, "personal")
        await add_recipients(conn, job, 3)
        await add_hits(conn, [hit("open", job, r, r) for r in (1, 2, 3)]
                       + [hit("click", job, r, 10 + r, "https://example.com/") for r in (1, 2, 3)])
        table = await conn.fetchval("SELECT DISTINCT tableoid::regclass::text FROM raw_hits")
        before = await updates(conn, table)
        config = AggregatorConfig.from_env({"PIXELTRACK_ROLLUP_ENGINE": "columns"})
        assert (await rollup(conn, config, make_enricher(config.enrich))).hits == 6
        after = await updates(conn, table)
        assert (after[0] - before[0], after[1] - before[1]) == (6, 6)
        assert await conn.fetchval("SELECT count(*) FROM raw_hits WHERE rolled_at IS NOT NULL") == 6
        assert str(await conn.fetchval("SELECT DISTINCT client_ip FROM raw_hits")) == "203.0.113.0"


OPENS = "SELECT total FROM report_job_totals WHERE job_id = $1 AND kind = 'open'"


@pytest.fixture(params=["columns", "hits"])
def engine(request: pytest.FixtureRequest) -> AggregatorConfig:
    """Either engine (the per-hit one copies the batch rows all the same: its merges read them)."""
    return AggregatorConfig.from_env({"PIXELTRACK_ROLLUP_ENGINE": request.param})


class TestWholeJobsDeletedBySpan:
    """A job whose claimed hits all keep nothing per hit (a blind job's) has them deleted by their span, with no
    batch row to join (claims.Whole); a hit committed into the span after the claim is never taken with them."""

    async def test_blind_and_personal(self, conn: asyncpg.Connection, engine: AggregatorConfig) -> None:
        """A blind job's opens at 10:01, 10:03 and 10:05, a personal job's at 10:02 and 10:04, one batch: the
        blind job's three rows gone, the personal job's two kept and rolled, 3 and 2 opens counted."""
        blind, personal = await add_job(conn, "blind"), await add_job(conn, "personal")
        await add_recipients(conn, personal, 2)
        await add_hits(conn, [hit("open", blind, None, m) for m in (1, 3, 5)]
                       + [hit("open", personal, r, 2 * r) for r in (1, 2)])  # fmt: skip
        stats = await rollup(conn, engine, make_enricher(engine.enrich))
        assert (stats.hits, stats.batches) == (5, 1)
        assert [tuple(r) for r in await conn.fetch(
            "SELECT job_id, count(*), count(rolled_at) FROM raw_hits GROUP BY job_id")] == [(personal, 2, 2)]
        assert (await conn.fetchval(OPENS, blind), await conn.fetchval(OPENS, personal)) == (3, 2)
        assert await runs_left(conn) == []

    async def test_hit_committed_into_the_span(self, conn: asyncpg.Connection, other: asyncpg.Connection,
                                               engine: AggregatorConfig) -> None:  # fmt: skip
        """Opens at 10:01, 10:03 and 10:05 claimed; before the marking another transaction commits one at 10:02,
        amid them. The delete by span takes 4 rows: undone, and the 3 claimed deleted by key. The 10:02 open
        waits with its run, and the next roll-up counts it: 3 hits, then 1; 4 opens, nothing left."""
        job = await add_job(conn, "blind")
        await add_hits(conn, [hit("open", job, None, m) for m in (1, 3, 5)])
        late: list[int] = []

        async def commit_one_amid() -> None:
            if not late:
                await add_hits(other, [hit("open", job, None, 2)])
                late.append(1)

        enricher = make_enricher(engine.enrich)
        assert (await rollup(conn, engine, enricher, fault=commit_one_amid)).hits == 3
        assert await conn.fetchval(OPENS, job) == 3
        assert [(r["received_at"] - T0) / MINUTE for r in await conn.fetch(
            "SELECT received_at FROM raw_hits WHERE rolled_at IS NULL")] == [2]  # fmt: skip
        assert await runs_left(conn) == [(2, 2)]
        assert (await rollup(conn, engine, enricher)).hits == 1
        assert await conn.fetchval(OPENS, job) == 4
        assert await conn.fetchval("SELECT count(*) FROM raw_hits") == 0
        assert await runs_left(conn) == []


class TestMarkingByKeptTracks:
    """Each job's kept rows are marked by the statement for their tracks (queries.marking): personal rows keep
    their headers, rejected ones lose them, whether a job has both, one or the other."""

    def test_the_statement_of_each_set_of_tracks(self) -> None:
        assert queries.marking(frozenset({"personal"})) is queries.MARK_PERSONAL
        assert queries.marking(frozenset({"rejected"})) is queries.MARK_REJECTED
        assert queries.marking(frozenset({"personal", "rejected"})) is queries.MARK_ROLLED

    async def test_headers_kept_and_cleared(self, conn: asyncpg.Connection, engine: AggregatorConfig) -> None:
        """A personal job with two opens and a refused one, a personal job with one open, a unique job with an
        open and a refused one, and a hit of no job: the four personal rows keep agent and Accept-Language,
        the three rejected rows keep neither (nor a recipient), the unique open is gone; all seven marked rolled."""
        mixed, personal, unique = [await add_job(conn, mode) for mode in ("personal", "personal", "unique")]
        for job in (mixed, personal, unique):
            await add_recipients(conn, job, 2)
        await add_hits(conn, [
            hit("open", mixed, 1, 1), hit("open", mixed, 2, 2), hit("open", mixed, 1, 3, reject_reason="bad_token"),
            hit("open", personal, 1, 4), hit("open", personal, 2, 5),
            hit("open", unique, 1, 6), hit("open", unique, 2, 7, reject_reason="bad_token"),
            hit("open", 0, None, 8),
        ])  # fmt: skip
        assert (await rollup(conn, engine, make_enricher(engine.enrich))).hits == 8
        rows = await conn.fetch("SELECT job_id, recipient_id, reject_reason IS NOT NULL OR job_id = 0 AS refused, "
                                "user_agent IS NOT NULL, accept_language, rolled_at IS NOT NULL "
                                "FROM raw_hits ORDER BY received_at")  # fmt: skip
        lang = "de-DE,de;q=0.9"
        assert [tuple(r) for r in rows] == [
            (mixed, 1, False, True, lang, True), (mixed, 2, False, True, lang, True), (mixed, None, True, False, None, True),
            (personal, 1, False, True, lang, True), (personal, 2, False, True, lang, True),
            (unique, None, True, False, None, True), (0, None, True, False, None, True),
        ]  # fmt: skip
