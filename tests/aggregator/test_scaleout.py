"""Scale-out: aggregators share the work by job (per-job locks), and the statements rewritten for Citus
give the same rows as the ones they replace."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from aggregator import claims
from aggregator.config import AggregatorConfig
from aggregator.mail.report import build_report
from aggregator.mail.rollup import EVER, rollup
from aggregator.web.report import contacts
from aggregator.web.rollup import rollup_sites
from aggregator.web.tracks import allowed_contacts
from loadtest.support import FlagEnricher
from pixeltrack.core import db
from pixeltrack.core.websites import create_site
from tests.support.hits import T0, add_hits, add_job, add_recipients, hit

PAGE_VIEW = """
INSERT INTO raw_hits (hit_id, received_at, kind, job_id, client_ip, user_agent, method, url, visitor_id, contact)
VALUES ($1, $2, 'page', $3, '203.0.113.5', 'Mozilla/5.0', 'POST', $4, $5, $6)
"""
UNROLLED = "SELECT count(*) FROM raw_hits WHERE job_id = $1 AND rolled_at IS NULL"


async def opens(conn: asyncpg.Connection, mode: str, count: int) -> int:
    """A job whose ``count`` recipients open once each; return its id."""
    job = await add_job(conn, mode)
    await add_recipients(conn, job, count)
    await add_hits(conn, [hit("open", job, r, r % 50) for r in range(1, count + 1)])
    return job


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 20.0) -> None:
    """Poll ``check`` until true; fail after ``seconds``."""
    for _ in range(int(seconds * 20)):
        if await check():
            return
        await asyncio.sleep(0.05)
    pytest.fail("timed out")


@pytest.fixture
async def other(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A second connection, for a second aggregator or a lock holder."""
    conn = await db.connect(db_url)
    yield conn
    await conn.close()


@pytest.fixture
async def watcher(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A third connection that only reads."""
    conn = await db.connect(db_url)
    yield conn
    await conn.close()


class TestTwoAggregatorsTwoJobs:
    """Two aggregators on one database roll up two jobs side by side, each hit exactly once."""

    async def test_parallel_and_exact(self, conn: asyncpg.Connection, other: asyncpg.Connection,
                                      watcher: asyncpg.Connection) -> None:
        """While the first holds a batch of job A (30 opens), the second rolls up all of job B (20 opens);
        then both finish: 30 and 20 opens, 50 hits taken in all, none left."""
        a, b = await opens(conn, "unique", 30), await opens(conn, "unique", 20)
        cfg = AggregatorConfig(batch_size=10)
        paused, release = asyncio.Event(), asyncio.Event()

        async def pause_once() -> None:
            if not paused.is_set():
                paused.set()
                await release.wait()

        first = asyncio.create_task(rollup(conn, cfg, FlagEnricher(), fault=pause_once))
        await paused.wait()  # the first aggregator holds 10 hits of A, and A's lock
        second = asyncio.create_task(rollup(other, cfg, FlagEnricher()))
        await until(lambda: _none_left(watcher, b))
        assert await watcher.fetchval(UNROLLED, a) == 30  # A's batch is not merged yet: nothing waited on it
        release.set()
        s1, s2 = await asyncio.gather(first, second)
        assert s1.hits + s2.hits == 50 and s2.hits >= 20
        assert (await build_report(watcher, a))["opens"]["unique"] == 30
        assert (await build_report(watcher, b))["opens"] == {"total": 20, "human": 0, "unknown": 20, "machine": 0,
                                                             "headline": 20, "unique": 20, "inferred": 0}
        assert await watcher.fetchval("SELECT count(*) FROM raw_hits WHERE rolled_at IS NULL") == 0


async def _none_left(conn: asyncpg.Connection, job: int) -> bool:
    return await conn.fetchval(UNROLLED, job) == 0


class TestHeldJobLock:
    """A job whose lock another session holds waits; the other jobs are rolled up meanwhile."""

    async def test_mail_job_b_while_a_is_held(self, conn: asyncpg.Connection, other: asyncpg.Connection,
                                              watcher: asyncpg.Connection) -> None:
        """With A's lock held elsewhere, B's 12 opens are rolled up and A's 8 wait; A follows once released."""
        a, b = await opens(conn, "blind", 8), await opens(conn, "blind", 12)
        holder = other.transaction()
        await holder.start()
        await other.execute(claims.JOB_LOCK, a)
        run = asyncio.create_task(rollup(conn, AggregatorConfig(batch_size=5), FlagEnricher()))
        await until(lambda: _none_left(watcher, b))
        assert (await build_report(watcher, b))["opens"]["total"] == 12
        assert await watcher.fetchval(UNROLLED, a) == 8 and not run.done()
        await holder.commit()
        stats = await run
        assert stats.hits == 20
        assert (await build_report(watcher, a))["opens"]["total"] == 8

    async def test_site_b_while_a_is_held(self, conn: asyncpg.Connection, other: asyncpg.Connection,
                                          watcher: asyncpg.Connection) -> None:
        """The same for websites: site B's 3 page views are rolled up while site A's 2 wait for its lock."""
        a = int((await create_site(conn, "a.example", "blind"))["job_id"])
        b = int((await create_site(conn, "b.example", "blind"))["job_id"])
        for job, count in ((a, 2), (b, 3)):
            for n in range(count):
                await conn.execute(PAGE_VIEW, uuid.uuid4(), T0 + dt.timedelta(minutes=n), job, f"https://x/{n}",
                                   None, None)
        await conn.execute(claims.REBUILD_RUNS)  # written by hand: their runs
        holder = other.transaction()
        await holder.start()
        await other.execute(claims.JOB_LOCK, a)
        run = asyncio.create_task(rollup_sites(conn, batch_size=2, enricher=FlagEnricher(), today=T0.date()))
        await until(lambda: _none_left(watcher, b))
        assert await watcher.fetchval("SELECT pageviews FROM site_totals WHERE job_id = $1", b) == 3
        assert await watcher.fetchval(UNROLLED, a) == 2 and not run.done()
        await holder.commit()
        assert await run == 5
        assert await watcher.fetchval("SELECT pageviews FROM site_totals WHERE job_id = $1", a) == 2


class TestNoDeadlock:
    """A batch that locked a job drained meanwhile never waits for another job: two such batches would deadlock."""

    async def test_drained_job_then_held_job(self, conn: asyncpg.Connection, other: asyncpg.Connection) -> None:
        """Job A listed but drained by the other aggregator, B held by it: the batch comes back empty at once."""
        from aggregator.mail import queries

        a, b = await opens(conn, "blind", 2), await opens(conn, "blind", 3)
        jobs = await claims.pending(conn, queries.PENDING)
        await conn.execute("UPDATE raw_hits SET rolled_at = now() WHERE job_id = $1", a)
        holder = other.transaction()
        await holder.start()
        await other.execute(claims.JOB_LOCK, b)
        async with conn.transaction():
            hits = await asyncio.wait_for(claims.claim(conn, jobs, queries.CLAIM, 5, EVER), 10)
        assert (hits, jobs.todo, jobs.held) == ([], [], [b])
        await holder.commit()
        async with conn.transaction():  # holding no lock now, it waits for B (free by now) and takes its hits
            assert len(await claims.claim(conn, jobs, queries.CLAIM, 5, EVER)) == 3


class TestPending:
    """A run lists the jobs with runs of its kind waiting (hit_runs), in job_id order, with the oldest and newest."""

    async def test_pending_jobs(self, conn: asyncpg.Connection) -> None:
        """Jobs 0 (rejected) and B with opens, not page-only A, not C (its runs done); first 10:05, last 10:40."""
        from aggregator.mail import queries

        a, b, c = await add_job(conn, "blind"), await add_job(conn, "blind"), await add_job(conn, "blind")
        await add_hits(conn, [hit("page", a, None, 1), hit("open", b, None, 5), hit("click", b, None, 40),
                              hit("open", 0, None, 20, reject_reason="bad_signature"), hit("open", c, None, 3)])
        await conn.execute("DELETE FROM hit_runs WHERE job_id = $1", c)
        jobs = await claims.pending(conn, queries.PENDING)
        assert (jobs.todo, jobs.first, jobs.last) == ([0, b], T0 + dt.timedelta(minutes=5),
                                                     T0 + dt.timedelta(minutes=40))

    async def test_mail_and_pages_apart(self, conn: asyncpg.Connection) -> None:
        """Each roll-up's jobs, first and last, from its own runs: job 0 has both kinds, A pages only, B mail only,
        C both, D nothing waiting."""
        from aggregator.mail import queries as mail
        from aggregator.web import queries as web

        a, b, c, d = [await add_job(conn, "blind") for _ in range(4)]
        await add_hits(conn, [
            hit("open", 0, None, 20, reject_reason="bad_signature"), hit("page", 0, None, 2), hit("page", a, None, 1),
            hit("page", a, None, 50), hit("open", b, None, 5), hit("doc", b, None, 30), hit("click", c, None, 40),
            hit("page", c, None, 9), hit("page", c, None, 7), hit("open", d, None, 3), hit("page", d, None, 4),
        ])  # fmt: skip
        await conn.execute("DELETE FROM hit_runs WHERE job_id = $1", d)
        minute = dt.timedelta(minutes=1)
        for backlog, todo, first, last in ((mail.PENDING, [0, b, c], 5, 40), (web.PENDING, [0, a, c], 1, 50)):
            jobs = await claims.pending(conn, backlog)
            assert (jobs.todo, jobs.first, jobs.last) == (todo, T0 + first * minute, T0 + last * minute)

    async def test_oldest_waiting(self, conn: asyncpg.Connection) -> None:
        """The oldest hit waiting of either kind: a page view at 10:02 before mail at 10:05; the mail once the
        pages are rolled up; none at the end."""
        from aggregator.rollup import oldest_waiting

        a, b = await add_job(conn, "blind"), await add_job(conn, "blind")
        await add_hits(conn, [hit("open", a, None, 5), hit("click", b, None, 8), hit("page", b, None, 2),
                              hit("page", 0, None, 30)])  # fmt: skip
        answers = []
        for rolled in ("false", "pages", "true"):
            await conn.execute(f"DELETE FROM hit_runs WHERE {rolled}")
            answers.append(await oldest_waiting(conn))
        assert answers == [T0 + dt.timedelta(minutes=2), T0 + dt.timedelta(minutes=5), None]

    async def test_older_indexes_replaced(self, conn: asyncpg.Connection, db_url: str) -> None:
        """A database of before hit_runs (the partial indexes of unrolled hits, hits waiting and no run for them):
        schema.sql, run twice, records one run per job and kind spanning the hits waiting, drops the indexes and
        leaves room on every partition's pages; the roll-up then takes every hit."""
        from aggregator.mail import queries

        job = await add_job(conn, "blind")
        await add_hits(conn, [hit("open", job, None, 5), hit("click", job, None, 9), hit("page", job, None, 7),
                              hit("open", job, None, 1)])  # fmt: skip
        await conn.execute("UPDATE raw_hits SET rolled_at = now() WHERE received_at = $1", T0 + dt.timedelta(minutes=1))
        await conn.execute("TRUNCATE hit_runs")
        await conn.execute("""CREATE INDEX raw_hits_unrolled_mail ON raw_hits (job_id, received_at)
                              WHERE rolled_at IS NULL AND kind <> 'page'""")
        await conn.execute("""CREATE INDEX raw_hits_unrolled_page ON raw_hits (job_id, received_at)
                              WHERE rolled_at IS NULL AND kind = 'page'""")
        await conn.execute("ALTER TABLE raw_hits_default RESET (fillfactor)")
        for _ in range(2):
            await db.apply_schema(db_url)
        runs = await conn.fetch("SELECT job_id, pages, first_at, last_at, hits FROM hit_runs ORDER BY pages")
        minute = dt.timedelta(minutes=1)
        assert [tuple(r) for r in runs] == [(job, False, T0 + 5 * minute, T0 + 9 * minute, 2),
                                            (job, True, T0 + 7 * minute, T0 + 7 * minute, 1)]
        assert await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%rolled_at IS NULL%'") == 0
        assert await conn.fetchval("""
            SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'raw_hits'::regclass AND NOT coalesce(c.reloptions @> '{fillfactor=50}', false)""") == 0
        assert (await claims.pending(conn, queries.PENDING)).todo == [job]
        stats = await rollup(conn, AggregatorConfig.from_env({}), FlagEnricher())
        assert (stats.hits, await conn.fetchval("SELECT count(*) FROM hit_runs WHERE NOT pages")) == (2, 0)

    async def test_batch_spans_jobs(self, conn: asyncpg.Connection) -> None:
        """A batch of 5 takes A's 3 hits and 2 of B's 4; B stays first for the next batch."""
        from aggregator.mail import queries

        a, b = await opens(conn, "blind", 3), await opens(conn, "blind", 4)
        jobs = await claims.pending(conn, queries.PENDING)
        async with conn.transaction():
            hits = await claims.claim(conn, jobs, queries.CLAIM, 5, EVER)
        assert [h["job_id"] for h in hits] == [a, a, a, b, b]
        assert jobs.todo == [b]

    async def test_jobs_take_turns(self, conn: asyncpg.Connection) -> None:
        """5 hits in A, 3 in B, batches of 2: A's first two, then B's, then A's; B's last and A's last together.

        (A job that filled a batch goes to the back; A, filling the fourth batch, is listed once more and
        found drained by a fifth, empty batch.)
        """
        from aggregator.mail import queries

        a, b = await opens(conn, "blind", 5), await opens(conn, "blind", 3)
        jobs = await claims.pending(conn, queries.PENDING)
        batches = []
        while jobs:
            async with conn.transaction():
                hits = await claims.claim(conn, jobs, queries.CLAIM, 2, EVER)
                await conn.execute("UPDATE raw_hits SET rolled_at = now() WHERE hit_id = ANY($1)",
                                   [h["hit_id"] for h in hits])
            batches.append([h["job_id"] for h in hits])
        assert batches == [[a, a], [b, b], [a, a], [b, a], []]


# ---------------------------------------------------- rewritten statements --
# The statements as they were before the Citus rewrite, to compare with.
OLD_JOB_RATES = """
SELECT j.job_id, j.name, j.mode,
       (SELECT count(*) FROM recipients r WHERE r.job_id = j.job_id) AS recipients,
       coalesce(o.total - o.machine, 0) AS opens,
       CASE WHEN j.mode <> 'blind' THEN coalesce(o.unique_count, 0) END AS unique_opens,
       coalesce(c.total - c.machine, 0) AS clicks,
       CASE WHEN j.mode <> 'blind' THEN coalesce(c.unique_count, 0) END AS unique_clicks,
       CASE WHEN j.mode <> 'blind' THEN round(coalesce(o.unique_count, 0)::numeric
            / nullif((SELECT count(*) FROM recipients r WHERE r.job_id = j.job_id), 0), 4) END AS open_rate,
       CASE WHEN j.mode <> 'blind' THEN round(coalesce(c.unique_count, 0)::numeric
            / nullif((SELECT count(*) FROM recipients r WHERE r.job_id = j.job_id), 0), 4) END AS click_rate,
       CASE WHEN j.mode <> 'blind' THEN round(coalesce(c.unique_count, 0)::numeric
            / nullif(o.unique_count, 0), 4)
            ELSE round((c.total - c.machine)::numeric / nullif(o.total - o.machine, 0), 4) END
           AS click_to_open_rate
FROM jobs j
LEFT JOIN report_job_totals o ON o.job_id = j.job_id AND o.kind = 'open'
LEFT JOIN report_job_totals c ON c.job_id = j.job_id AND c.kind = 'click'
ORDER BY j.job_id
"""
OLD_ALLOWED_CONTACTS = """
SELECT c.mail_job_id, c.recipient_id
FROM unnest($1::bigint[], $2::bigint[]) AS c(mail_job_id, recipient_id)
JOIN jobs j ON j.job_id = c.mail_job_id AND j.kind = 'mail'
JOIN recipients r ON r.job_id = c.mail_job_id AND r.recipient_id = c.recipient_id
WHERE (j.mode = 'personal' OR (j.mode = 'permission_personal' AND r.consent))
  AND NOT EXISTS (SELECT 1 FROM forgotten_recipients f
                  WHERE f.job_id = c.mail_job_id AND f.recipient_id = c.recipient_id)
"""
OLD_CONTACTS = """
WITH v AS (
    SELECT mail_job_id, recipient_id, min(viewed_at) AS first_view,
           (array_agg(url ORDER BY viewed_at, hit_id))[1] AS first_url
    FROM site_contact_views WHERE job_id = $1 GROUP BY mail_job_id, recipient_id
), c AS (
    SELECT mail_job_id, recipient_id, min(identified_at) AS identified_at,
           (array_agg(landing_url ORDER BY identified_at))[1] AS landing_url
    FROM site_contacts WHERE job_id = $1 GROUP BY mail_job_id, recipient_id
)
SELECT v.mail_job_id, v.recipient_id, r.recipient, mj.name AS mail_job,
       coalesce(c.identified_at, v.first_view) AS identified_at, coalesce(c.landing_url, v.first_url) AS landing_url
FROM v
LEFT JOIN c USING (mail_job_id, recipient_id)
JOIN jobs mj ON mj.job_id = v.mail_job_id
LEFT JOIN recipients r ON r.job_id = v.mail_job_id AND r.recipient_id = v.recipient_id
WHERE NOT EXISTS (SELECT 1 FROM forgotten_recipients f
                  WHERE f.job_id = v.mail_job_id AND f.recipient_id = v.recipient_id)
ORDER BY 5, 1, 2
"""


class TestJobRates:
    """The view job_rates gives the rows of its correlated-subquery form."""

    async def test_same_rows(self, conn: asyncpg.Connection) -> None:
        """A unique job (4 recipients, 3 open, 1 clicks), a blind job with no recipients, a job with no hits."""
        unique = await add_job(conn, "unique")
        await add_recipients(conn, unique, 4)
        blind = await add_job(conn, "blind")
        await add_job(conn, "personal")
        await add_hits(conn, [hit("open", unique, r, r) for r in (1, 2, 3)] + [hit("click", unique, 1, 9, "https://a")]
                       + [hit("open", blind, None, 1), hit("open", blind, None, 2), hit("click", blind, None, 3, "x")])
        await rollup(conn, AggregatorConfig(), FlagEnricher())
        rows = await conn.fetch("SELECT * FROM job_rates ORDER BY job_id")
        # the columns the old view had, in its order (the three figures were added after them)
        assert [tuple(r)[:11] for r in rows] == [tuple(r) for r in await conn.fetch(OLD_JOB_RATES)]
        assert [(r["recipients"], r["unique_opens"], str(r["open_rate"]), str(r["click_to_open_rate"]))
                for r in rows] == [(4, 3, "0.7500", "0.3333"), (0, None, "None", "0.5000"), (0, 0, "None", "None")]


async def _contacts_site(conn: asyncpg.Connection) -> tuple[int, int, int]:
    """A personal site with contacts from two mail jobs: ann (job M, identified by a click), bo (job M,
    cookie-less view only), cy (job N, erased) and a contact of a job that no longer exists."""
    site = int((await create_site(conn, "shop.example", "personal"))["job_id"])
    m = await conn.fetchval("INSERT INTO jobs (name, mode) VALUES ('spring', 'personal') RETURNING job_id")
    n = await conn.fetchval("INSERT INTO jobs (name, mode) VALUES ('autumn', 'permission_personal') RETURNING job_id")
    await conn.executemany("INSERT INTO recipients (job_id, recipient_id, recipient, consent) VALUES ($1, $2, $3, $4)",
                           [(m, 1, "ann", False), (m, 2, "bo", False), (n, 1, "cy", True), (n, 2, "di", False)])
    await conn.execute("INSERT INTO forgotten_recipients (job_id, recipient_id) VALUES ($1, 1)", n)
    await conn.executemany("INSERT INTO site_contacts VALUES ($1, $2, $3, $4, $5, $6)", [
        (site, "va", m, 1, T0 + dt.timedelta(minutes=5), "https://shop.example/landing"),
        (site, "vc", n, 1, T0, "https://shop.example/c")])
    views = [(m, 1, 3, "/a"), (m, 1, 5, "/landing"), (m, 2, 1, "/bo"), (n, 1, 0, "/c"), (999, 4, 2, "/gone")]
    await conn.executemany("INSERT INTO site_contact_views VALUES ($1, $2, $3, $4, $5, $6, 't')", [
        (site, T0 + dt.timedelta(minutes=minute), uuid.uuid4(), job, rid, "https://shop.example" + path)
        for job, rid, minute, path in views])
    return site, m, n


class TestContacts:
    """A site's contacts, asked per mail job, are the rows of the one-query form."""

    async def test_same_rows(self, conn: asyncpg.Connection) -> None:
        """bo (first view 10:01) then ann (click 10:05); erased cy and the vanished job's contact left out."""
        site, m, _ = await _contacts_site(conn)
        found = [{k: v for k, v in c.items() if k != "pages"} for c in await contacts(conn, site)]
        assert found == [dict(r) for r in await conn.fetch(OLD_CONTACTS, site)]
        assert [(c["recipient"], c["mail_job"], c["identified_at"], c["landing_url"]) for c in found] == [
            ("bo", "spring", T0 + dt.timedelta(minutes=1), "https://shop.example/bo"),
            ("ann", "spring", T0 + dt.timedelta(minutes=5), "https://shop.example/landing")]
        assert found[0]["mail_job_id"] == m


class TestAllowedContacts:
    """The contacts a page view may name, asked per mail job, are those of the one-join form."""

    async def test_same_set(self, conn: asyncpg.Connection) -> None:
        """Of job M (personal) 1 and 2 but not the unknown 3; of job N (permission) di lacks consent, cy is
        erased; a site and a missing job name nobody."""
        site, m, n = await _contacts_site(conn)
        await conn.execute("INSERT INTO recipients (job_id, recipient_id, recipient, consent) VALUES ($1, 3, 'ed', true)",
                           n)
        pairs = {(m, 1), (m, 2), (m, 3), (n, 1), (n, 2), (n, 3), (site, 1), (999, 1)}
        ordered = sorted(pairs)
        old = await conn.fetch(OLD_ALLOWED_CONTACTS, [p[0] for p in ordered], [p[1] for p in ordered])
        assert await allowed_contacts(conn, pairs) == {(r[0], r[1]) for r in old} == {(m, 1), (m, 2), (n, 3)}
