"""Anonymous, unique and blind jobs: exact reports, and nothing stored that the mode forbids."""

from __future__ import annotations

import datetime as dt

import asyncpg

from aggregator.config import AggregatorConfig
from aggregator.mail.report import build_report
from aggregator.mail.rollup import rollup
from loadtest.support import FlagEnricher
from tests.support.hits import SCOPES_ARGS, SEEN_BY_SCOPE, T0, add_hits, add_job, add_recipients, at, hit

A = "https://example.org/a"
B = "https://example.org/b"
CFG = AggregatorConfig(batch_size=1000)
# Columns that could identify or single out the person behind a hit.
IDENTIFYING = "count(recipient_id) + count(client_ip) + count(user_agent) + count(referer) + count(accept_language)"


async def roll(conn: asyncpg.Connection) -> None:
    """One complete roll-up with the flag-only enricher (deterministic)."""
    await rollup(conn, CFG, FlagEnricher())


async def anonymous_job(conn: asyncpg.Connection) -> int:
    """Cell (25-34, f, 10115): r1-r6 open, r1 twice more, r2 clicks; r10 idle.
    Cell (35-44, m, 20095): r7 opens (plus a HEAD), r8 clicks with images blocked.
    r9 has no profile and opens once."""
    job = await add_job(conn, "anonymous")
    await add_recipients(conn, job, 6, profile=(1990, "F", "10115"))
    await add_recipients(conn, job, 2, first=7, profile=(1980, "m", "20095"))
    await add_recipients(conn, job, 1, first=9)
    await add_recipients(conn, job, 1, first=10, profile=(1990, "f", "10115"))
    rows = [hit("open", job, r, r) for r in range(1, 7)]
    rows += [hit("open", job, 1, 20), hit("open", job, 1, 21), hit("click", job, 2, 22, A)]
    rows += [hit("open", job, 7, 8), hit("open", job, 7, 8, method="HEAD", prefetch=True)]
    rows += [hit("click", job, 8, 70, A), hit("open", job, 9, 9)]
    await add_hits(conn, rows)
    return job


class TestAnonymous:
    """Anonymous jobs count per demographic cell; cells under k merge into "other"."""

    async def test_totals(self, conn: asyncpg.Connection) -> None:
        """Opens 11 (1 machine), 9 unique of which 1 inferred; clicks 2 by 2 people."""
        job = await anonymous_job(conn)
        await roll(conn)
        report = await build_report(conn, job, k=5)
        assert report["opens"] == {"total": 11, "human": 0, "unknown": 10, "machine": 1, "headline": 10, "unique": 9, "inferred": 1}
        assert report["clicks"] == {"total": 2, "human": 0, "unknown": 2, "machine": 0, "headline": 2, "unique": 2}
        assert "recipients" not in report

    async def test_demographics_k5(self, conn: asyncpg.Connection) -> None:
        """Only the 6-recipient cell is shown; the 2- and 1-recipient cells are "other"."""
        job = await anonymous_job(conn)
        await roll(conn)
        cells = (await build_report(conn, job, k=5))["demographics"]
        assert cells == [
            {"age_band": "25-34", "gender": "f", "zip": "10115", "recipients": 6, "opens": 8,
             "unique_opens": 6, "clicks": 1, "unique_clicks": 1, "human_opens": 0, "unknown_opens": 8,
             "human_clicks": 0, "unknown_clicks": 1, "machine": 0},
            {"age_band": "other", "gender": "other", "zip": "other", "recipients": 3, "opens": 2,
             "unique_opens": 3, "clicks": 1, "unique_clicks": 1, "human_opens": 0, "unknown_opens": 2,
             "human_clicks": 0, "unknown_clicks": 1, "machine": 1},
        ]  # fmt: skip

    async def test_demographics_k2(self, conn: asyncpg.Connection) -> None:
        """With k=2 the 2-recipient cell shows too; only the single unknown profile is "other"."""
        job = await anonymous_job(conn)
        await roll(conn)
        cells = (await build_report(conn, job, k=2))["demographics"]
        assert [(c["age_band"], c["recipients"], c["unique_opens"]) for c in cells] == [
            ("25-34", 6, 6), ("35-44", 2, 2), ("other", 1, 1),
        ]  # fmt: skip

    async def test_unique_in_the_cell_of_the_first_hit(self, conn: asyncpg.Connection) -> None:
        """r1 (born 2000) opens at 23:59:50 on New Year's Eve 2024 (24) and at 00:00:10 (25), clicks at 00:00:20:
        each hit counts in the cell of its own age; r1 as a recipient and an opener in the cell of their first
        hit (18-24), as a clicker in that of their click (25-34). One batch, the same as three."""
        job = await add_job(conn, "anonymous")
        await add_recipients(conn, job, 1, profile=(2000, "f", "10115"))
        midnight = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        await add_hits(conn, [
            hit("open", job, 1, received_at=midnight - dt.timedelta(seconds=10)),
            hit("open", job, 1, received_at=midnight + dt.timedelta(seconds=10)),
            hit("click", job, 1, link=A, received_at=midnight + dt.timedelta(seconds=20)),
        ])  # fmt: skip
        await roll(conn)
        cells = await conn.fetch("SELECT age_band, recipients, opens, unique_opens, clicks, unique_clicks"
                                 " FROM report_demographics WHERE job_id = $1 ORDER BY age_band", job)  # fmt: skip
        assert [tuple(r) for r in cells] == [("18-24", 1, 1, 1, 0, 0), ("25-34", 0, 1, 0, 1, 1)]

    async def test_no_identity_stored(self, conn: asyncpg.Connection) -> None:
        """Raw hits are deleted once counted (11 opens, 2 clicks); no per-recipient roll-up rows exist."""
        job = await anonymous_job(conn)
        assert await conn.fetchval("SELECT count(*) FROM raw_hits WHERE job_id = $1", job) == 11 + 2
        await roll(conn)
        assert await conn.fetchval("SELECT count(*) FROM raw_hits WHERE job_id = $1", job) == 0
        assert await conn.fetchval("SELECT sum(total) FROM report_job_totals WHERE job_id = $1", job) == 11 + 2
        assert await conn.fetchval("SELECT count(*) FROM report_recipients WHERE job_id = $1", job) == 0
        assert await conn.fetchval("SELECT count(*) FROM report_recipient_links WHERE job_id = $1", job) == 0
        assert await conn.fetchval("SELECT count(*) FROM report_demographics WHERE job_id = $1", job) == 3


async def unique_job(conn: asyncpg.Connection) -> int:
    """r1 opens 3 times, clicks A twice and B once; r2 opens once (and a prefetch);
    r3 clicks B with images blocked."""
    job = await add_job(conn, "unique")
    await add_recipients(conn, job, 3)
    await add_hits(conn, [
        hit("open", job, 1, 0), hit("open", job, 1, 10), hit("open", job, 1, 70),
        hit("click", job, 1, 11, A), hit("click", job, 1, 12, A), hit("click", job, 1, 13, B),
        hit("open", job, 2, 3), hit("open", job, 2, 2, prefetch=True), hit("click", job, 3, 65, B),
    ])  # fmt: skip
    return job


class TestUnique:
    """Unique jobs: totals and unique counts from keyed hashes, no identity."""

    async def test_report(self, conn: asyncpg.Connection) -> None:
        """Opens 5 (1 machine), 3 unique with 1 inferred; clicks 4, 2 unique; per link exact."""
        job = await unique_job(conn)
        await roll(conn)
        report = await build_report(conn, job)
        assert report["opens"] == {"total": 5, "human": 0, "unknown": 4, "machine": 1, "headline": 4, "unique": 3, "inferred": 1}
        assert report["clicks"] == {"total": 4, "human": 0, "unknown": 4, "machine": 0, "headline": 4, "unique": 2}
        assert [(e["url"], e["clicks"], e["unique_clicks"]) for e in report["links"]] == [(A, 2, 1), (B, 2, 2)]
        assert "recipients" not in report and "demographics" not in report

    async def test_tables(self, conn: asyncpg.Connection) -> None:
        """Only 16-byte keyed hashes remain: open 3 (1 inferred), click 2, link 3, and a job key."""
        job = await unique_job(conn)
        await roll(conn)
        assert await conn.fetchval(f"SELECT {IDENTIFYING} FROM raw_hits WHERE job_id = $1", job) == 0
        rows = await conn.fetch(
            "SELECT kind, count(*), count(*) FILTER (WHERE inferred), min(length(hash)), max(length(hash))"
            f" FROM ({SEEN_BY_SCOPE}) s WHERE job_id = $3 GROUP BY kind ORDER BY kind",
            *SCOPES_ARGS, job,
        )  # fmt: skip
        assert [tuple(r) for r in rows] == [("click", 2, 0, 16, 16), ("link", 3, 0, 16, 16), ("open", 3, 1, 16, 16)]
        assert await conn.fetchval("SELECT length(key) FROM job_keys WHERE job_id = $1", job) == 32
        assert await conn.fetchval("SELECT count(*) FROM report_recipients WHERE job_id = $1", job) == 0

    async def test_real_open_after_click_is_not_inferred(self, conn: asyncpg.Connection) -> None:
        """r3's later real open keeps 3 unique openers and drops the inferred count to 0."""
        job = await unique_job(conn)
        await roll(conn)
        await add_hits(conn, [hit("open", job, 3, 80)])
        await roll(conn)
        assert (await build_report(conn, job))["opens"] == {
            "total": 6, "human": 0, "unknown": 5, "machine": 1, "headline": 5, "unique": 3, "inferred": 0,
        }  # fmt: skip


async def blind_job(conn: asyncpg.Connection) -> int:
    """Tokens without recipients: 5 opens and a HEAD, 3 clicks on A (+1 prefetch), 1 on B, 2 doc views."""
    job = await add_job(conn, "blind")
    rows = [hit("open", job, None, m) for m in (0, 1, 2, 61, 62)]
    rows += [hit("open", job, None, 3, method="HEAD", prefetch=True)]
    rows += [hit("click", job, None, m, A) for m in (5, 6, 65)] + [hit("click", job, None, 7, A, prefetch=True)]
    rows += [hit("click", job, None, 66, B), hit("doc", job, None, 8, page=1), hit("doc", job, None, 9, page=2)]
    await add_hits(conn, rows)
    return job


class TestBlind:
    """Blind jobs: event counts per hour and per link only, nothing to tell people apart."""

    async def test_report(self, conn: asyncpg.Connection) -> None:
        """Opens 6 (1 machine), clicks 5 (1 machine), unique null; per hour and per link exact."""
        job = await blind_job(conn)
        await roll(conn)
        report = await build_report(conn, job)
        assert report["opens"] == {"total": 6, "human": 0, "unknown": 5, "machine": 1, "headline": 5, "unique": None, "inferred": None}
        assert report["clicks"] == {"total": 5, "human": 0, "unknown": 4, "machine": 1, "headline": 4, "unique": None}
        assert report["views"] == {"doc": {"total": 2, "human": 0, "unknown": 2, "machine": 0, "headline": 2, "unique": None}}
        assert [(e["url"], e["clicks"], e["machine"], e["unique_clicks"]) for e in report["links"]] == [
            (A, 3, 1, None), (B, 1, 0, None),
        ]  # fmt: skip
        assert [(t["hour"], t["opens"], t["clicks"]) for t in report["timeline"]] == [
            (T0.isoformat(), 3, 2), (at(60).isoformat(), 2, 2),
        ]  # fmt: skip
        assert set(report["breakdowns"]) == {"traffic", "machine_reason"}
        assert report["breakdowns"]["machine_reason"]["prefetch"]["machine"] == 2

    async def test_tables(self, conn: asyncpg.Connection) -> None:
        """After roll-up no address, agent or enrichment is kept, no hash and no key exist."""
        job = await blind_job(conn)
        await roll(conn)
        kept = await conn.fetchval(
            f"SELECT {IDENTIFYING} + count(device_class) + count(browser) + count(os) + count(country)"
            " + count(city) + count(language) FROM raw_hits WHERE job_id = $1",
            job,
        )
        assert kept == 0
        assert await conn.fetchval("SELECT count(*) FROM unique_seen WHERE job_id = $1", job) == 0
        assert await conn.fetchval("SELECT count(*) FROM job_keys WHERE job_id = $1", job) == 0
        assert await conn.fetchval("SELECT sum(unique_count) FROM report_job_totals WHERE job_id = $1", job) == 0
