"""Personal and permission_personal jobs: per-recipient facts, consent enforced."""

from __future__ import annotations

import asyncpg

from aggregator.config import AggregatorConfig
from aggregator.mail.report import build_report
from aggregator.mail.rollup import rollup
from loadtest.support import FlagEnricher
from tests.support.hits import T0, UA, add_hits, add_job, add_recipients, at, hit, personal_hits

A = "https://example.org/a"
B = "https://example.org/b"
CFG = AggregatorConfig(batch_size=1000)


async def roll(conn: asyncpg.Connection) -> None:
    """One complete roll-up with the flag-only enricher (deterministic)."""
    await rollup(conn, CFG, FlagEnricher())


async def personal_job(conn: asyncpg.Connection) -> int:
    """r1 opens twice and clicks A, A, B; r2 opens once (plus a HEAD) and a
    prefetch of B; r3 clicks A with images blocked; r4 does nothing."""
    job = await add_job(conn, "personal")
    await add_recipients(conn, job, 4)
    await add_hits(conn, [*personal_hits(job, A, B, r3_click=60), hit("open", 0, None, 7, reject_reason="bad_signature")])
    return job


class TestPersonalReport:
    """A personal job reports exact totals, uniques, links, recipients and hours."""

    async def test_headline_numbers(self, conn: asyncpg.Connection) -> None:
        """Opens 4 (1 machine), 3 unique of which 1 inferred; clicks 5 (1 machine), 2 unique."""
        job = await personal_job(conn)
        await roll(conn)
        report = await build_report(conn, job)
        assert report["job"] == job and report["mode"] == "personal"
        assert report["opens"] == {"total": 4, "human": 0, "unknown": 3, "machine": 1, "headline": 3, "unique": 3, "inferred": 1}
        assert report["clicks"] == {"total": 5, "human": 0, "unknown": 4, "machine": 1, "headline": 4, "unique": 2}

    async def test_links(self, conn: asyncpg.Connection) -> None:
        """A: 3 human clicks by 2 people; B: 1 human click, 1 machine."""
        job = await personal_job(conn)
        await roll(conn)
        links = {entry["url"]: entry for entry in (await build_report(conn, job))["links"]}
        assert {u: (e["clicks"], e["unique_clicks"], e["machine"]) for u, e in links.items()} == {
            A: (3, 2, 0), B: (1, 1, 1),
        }  # fmt: skip

    async def test_recipients(self, conn: asyncpg.Connection) -> None:
        """Each active recipient with opens, clicks, first and last open; r3's open inferred."""
        job = await personal_job(conn)
        await roll(conn)
        rows = {r["recipient_id"]: r for r in (await build_report(conn, job))["recipients"]}
        assert sorted(rows) == [1, 2, 3]
        assert (rows[1]["opens"], rows[1]["clicks"]) == (2, 3)
        assert (rows[1]["first_open"], rows[1]["last_open"]) == (at(0).isoformat(), at(30).isoformat())
        assert (rows[2]["opens"], rows[2]["machine_opens"], rows[2]["clicks"], rows[2]["machine_clicks"]) == (
            1,
            1,
            0,
            1,
        )
        assert (rows[3]["opens"], rows[3]["clicks"], rows[3]["open_inferred"]) == (0, 1, True)
        assert rows[1]["recipient"] == "r1@example.org"

    async def test_timeline(self, conn: asyncpg.Connection) -> None:
        """10:00 holds 3 opens and 3 clicks (all unknown: the flag-only enricher); 11:00 the blocked-images click."""
        job = await personal_job(conn)
        await roll(conn)
        timeline = (await build_report(conn, job))["timeline"]
        assert timeline == [
            {"hour": T0.isoformat(), "opens": 3, "clicks": 3, "human_opens": 0, "unknown_opens": 3,
             "machine_opens": 1, "human_clicks": 0, "unknown_clicks": 3, "machine_clicks": 1},
            {"hour": at(60).isoformat(), "opens": 0, "clicks": 1, "human_opens": 0, "unknown_opens": 0,
             "machine_opens": 0, "human_clicks": 0, "unknown_clicks": 1, "machine_clicks": 0},
        ]

    async def test_rejected_counted_apart(self, conn: asyncpg.Connection) -> None:
        """The refused token is one rejected hit, in no job's numbers."""
        await personal_job(conn)
        await roll(conn)
        rows = await conn.fetch("SELECT job_id, kind, reason, hits FROM report_rejected")
        assert [tuple(r) for r in rows] == [(0, "open", "bad_signature", 1)]
        assert await conn.fetchval("SELECT count(*) FROM report_job_totals WHERE job_id = 0") == 0


class TestPersonalTables:
    """After a personal roll-up, raw hits keep the recipient and only a masked address."""

    async def test_raw_hits_masked(self, conn: asyncpg.Connection) -> None:
        """Every hit is rolled; client_ip is the /24 network; the rejected hit is scrubbed."""
        job = await personal_job(conn)
        await roll(conn)
        assert await conn.fetchval("SELECT count(*) FROM raw_hits WHERE rolled_at IS NULL") == 0
        ips = await conn.fetch("SELECT DISTINCT host(client_ip) AS ip FROM raw_hits WHERE job_id = $1", job)
        assert [r["ip"] for r in ips] == ["203.0.113.0"]
        assert await conn.fetchval("SELECT count(recipient_id) FROM raw_hits WHERE job_id = $1", job) == 9
        assert await conn.fetchval(
            "SELECT count(client_ip) + count(user_agent) + count(referer) + count(accept_language) FROM raw_hits"
            " WHERE job_id = 0") == 0
        # The personal rows keep the headers the collector wrote (the marking takes them from the raw row).
        kept = await conn.fetch("SELECT DISTINCT user_agent, referer, accept_language FROM raw_hits WHERE job_id = $1", job)
        assert [tuple(r) for r in kept] == [(UA, None, "de-DE,de;q=0.9")]

    async def test_report_tables(self, conn: asyncpg.Connection) -> None:
        """report_recipient_links holds r1: A 2, B 1; r2: B machine 1; r3: A 1."""
        job = await personal_job(conn)
        await roll(conn)
        rows = await conn.fetch(
            "SELECT recipient_id, url, clicks, rl.machine FROM report_recipient_links rl JOIN report_links"
            " USING (job_id, link_id) WHERE job_id = $1 ORDER BY 1, 2",
            job,
        )
        assert [tuple(r) for r in rows] == [(1, A, 2, 0), (1, B, 1, 0), (2, B, 0, 1), (3, A, 1, 0)]


async def permission_job(conn: asyncpg.Connection) -> int:
    """r1-r2 consent; r3-r4 do not; r5 consented but revoked at 10:20."""
    job = await add_job(conn, "permission_personal")
    await add_recipients(conn, job, 2, consent=True)
    await add_recipients(conn, job, 2, first=3)
    await add_recipients(conn, job, 1, first=5, changed_at=at(20))
    await add_hits(conn, [
        hit("open", job, 1, 0), hit("open", job, 1, 1), hit("click", job, 2, 2, A),
        hit("open", job, 3, 0), hit("open", job, 3, 3), hit("click", job, 4, 4, A),
        hit("open", job, 5, 30),
    ])  # fmt: skip
    return job


class TestPermissionPersonal:
    """Consenting recipients are tracked personally; the others exactly as unique."""

    async def test_report(self, conn: asyncpg.Connection) -> None:
        """Totals include everyone; only consenting r1 and r2 are listed."""
        job = await permission_job(conn)
        await roll(conn)
        report = await build_report(conn, job)
        assert report["opens"] == {"total": 5, "human": 0, "unknown": 5, "machine": 0, "headline": 5, "unique": 5, "inferred": 2}
        assert report["clicks"] == {"total": 2, "human": 0, "unknown": 2, "machine": 0, "headline": 2, "unique": 2}
        rows = {r["recipient_id"]: (r["opens"], r["clicks"]) for r in report["recipients"]}
        assert rows == {1: (2, 0), 2: (0, 1)}

    async def test_revocation_stops_new_events(self, conn: asyncpg.Connection) -> None:
        """r5 opened while consenting (rolled up then); after revoking, a new open is not personal."""
        job = await permission_job(conn)
        await conn.execute(
            "UPDATE recipients SET consent = true, consent_changed_at = $2 WHERE job_id = $1 AND recipient_id = 5",
            job,
            at(-60),
        )
        await roll(conn)
        await conn.execute(
            "UPDATE recipients SET consent = false, consent_changed_at = $2 WHERE job_id = $1 AND recipient_id = 5",
            job,
            at(40),
        )
        await add_hits(conn, [hit("open", job, 5, 50)])
        await roll(conn)
        row = await conn.fetchrow(
            "SELECT opens, last_open FROM report_recipients WHERE job_id = $1 AND recipient_id = 5", job
        )
        assert (row["opens"], row["last_open"]) == (1, at(30))
        assert await conn.fetchval("SELECT count(recipient_id) FROM raw_hits WHERE job_id = $1", job) == 4

    async def test_tables(self, conn: asyncpg.Connection) -> None:
        """Consenting hits keep their raw rows and recipient; the 4 non-consenting ones (r3-r5) leave no raw row."""
        job = await permission_job(conn)
        await roll(conn)
        rows = await conn.fetch(
            "SELECT recipient_id, count(*) AS n, count(client_ip) AS ip, count(user_agent) AS ua"
            " FROM raw_hits WHERE job_id = $1 GROUP BY 1 ORDER BY 1",
            job,
        )
        assert [tuple(r) for r in rows] == [(1, 2, 2, 2), (2, 1, 1, 1)]
        assert await conn.fetchval("SELECT sum(total) FROM report_job_totals WHERE job_id = $1", job) == 7
        assert await conn.fetchval("SELECT count(*) FROM report_recipients WHERE job_id = $1", job) == 2


class TestViews:
    """The operator views answer the common questions directly."""

    async def test_job_rates(self, conn: asyncpg.Connection) -> None:
        """4 recipients, 3 unique openers, 2 unique clickers: rates 0.75, 0.5 and CTOR 0.6667."""
        job = await personal_job(conn)
        await roll(conn)
        row = await conn.fetchrow(
            "SELECT recipients, opens, unique_opens, clicks, unique_clicks, open_rate::float8,"
            " click_rate::float8, click_to_open_rate::float8 FROM job_rates WHERE job_id = $1",
            job,
        )
        assert tuple(row) == (4, 3, 3, 4, 2, 0.75, 0.5, 0.6667)

    async def test_top_links_and_hourly(self, conn: asyncpg.Connection) -> None:
        """A ranks first with 3 clicks; hourly_activity has 10:00 (3 opens, 3 clicks) and 11:00."""
        job = await personal_job(conn)
        await roll(conn)
        links = await conn.fetch("SELECT rank, url, clicks, unique_clicks FROM top_links WHERE job_id = $1"
                                 " ORDER BY rank", job)  # fmt: skip
        assert [tuple(r) for r in links] == [(1, A, 3, 2), (2, B, 1, 1)]
        hours = await conn.fetch("SELECT hour, opens, clicks, machine FROM hourly_activity WHERE job_id = $1"
                                 " ORDER BY hour", job)  # fmt: skip
        assert [tuple(r) for r in hours] == [(T0, 3, 3, 2), (at(60), None, 1, 0)]
