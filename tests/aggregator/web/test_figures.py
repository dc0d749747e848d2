"""Honest numbers for websites: human, unknown and machine page views add up to the total everywhere.

Hand-built page views through the real enricher: two of a recognised browser
(Chrome), one of an agent recognised as neither browser nor machine, one of
Googlebot. So human 2, unknown 1, machine 1, total 4; the headline counts 3
page views of 2 visitors (human + unknown), or 2 of 1 (recognised only).
"""

from __future__ import annotations

import csv
import io
import json

import asyncpg
import pytest

from aggregator.web.render import render_site
from aggregator.web.report import site_report
from aggregator.web.rollup import rollup_sites
from pixeltrack.core import db
from tests.aggregator.web.test_rollup import BOT, DAY, SITE, at, hit, site

UNKNOWN = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"  # no browser, no machine
FIGURES = {"human": 2, "unknown": 1, "machine": 1, "total": 4}
MACHINE = {
    "hits": 1, "by_reason": {"crawler": 1}, "by_family": {"Googlebot": 1},
    "detail": [{"kind": "page", "reason": "crawler", "family": "Googlebot", "hits": 1}],
}  # fmt: skip


async def mixed_site(conn: asyncpg.Connection, mode: str = "personal", batch: int = 1000) -> int:
    """va (Chrome) views /pricing twice; vc (unknown agent) views /home; Googlebot views /home."""
    job = await site(conn, mode)
    await hit(conn, job, at(10, 0), "/pricing")
    await hit(conn, job, at(10, 5), "/pricing", referer=SITE + "/pricing")
    await hit(conn, job, at(10, 10), "/home", visitor="vc", ua=UNKNOWN, ip="198.51.100.7")
    await hit(conn, job, at(10, 20), "/home", visitor=None, ua=BOT, ip="66.249.66.1")
    assert await rollup_sites(conn, batch_size=batch, today=DAY) == 4
    return job


class TestJson:
    """The JSON report: the three figures, headline page views and visitors as the setting says."""

    @pytest.mark.parametrize("batch", [1000, 1])
    async def test_totals(self, conn: asyncpg.Connection, batch: int) -> None:
        report = json.loads(render_site(await site_report(conn, await mixed_site(conn, batch=batch)), "json"))
        assert {k: report[k] for k in FIGURES} == FIGURES
        assert (report["pageviews"], report["visitors"], report["visits"]) == (3, 2, 2)
        assert report["headline"] == {"setting": "all", "counts": "human + unknown"}
        assert report["machine_traffic"] == MACHINE

    @pytest.mark.parametrize("batch", [1000, 1])
    async def test_recognised(self, conn: asyncpg.Connection, batch: int) -> None:
        """PIXELTRACK_HEADLINE=recognised: page views and visitors of recognised browsers only."""
        report = await site_report(conn, await mixed_site(conn, batch=batch), headline="recognised")
        assert {k: report[k] for k in FIGURES} == FIGURES
        assert (report["pageviews"], report["visitors"], report["visits"]) == (2, 1, 2)
        assert report["headline"] == {"setting": "recognised", "counts": "human"}

    async def test_pages_devices_timeline(self, conn: asyncpg.Connection) -> None:
        """Each row splits its page views; machine views are in none of them (no machine reason anywhere)."""
        job = await mixed_site(conn)
        for headline, home in (("all", 1), ("recognised", 0)):
            r = await site_report(conn, job, headline=headline)
            assert r["top_pages"] == [
                {"page": "/pricing", "pageviews": 2, "human": 2, "unknown": 0, "entries": 1},
                {"page": "/home", "pageviews": home, "human": 0, "unknown": 1, "entries": 1},
            ]  # fmt: skip
            assert [(d["os"], d["browser"], d["human"], d["unknown"], d["pageviews"]) for d in r["devices"]] == [
                ("Windows", "Chrome", 2, 0, 2), ("Linux", "", 0, 1, home),
            ]  # fmt: skip
            assert all("machine_reason" not in d for d in r["devices"])
            [hour] = r["timeline"]["hourly"]
            assert hour == {"hour": at(10), "pageviews": 2 + home, "human": 2, "unknown": 1, "machine": 1,
                            "visitors": 1 + home}  # fmt: skip
            [day] = r["timeline"]["daily"]
            assert day == {"day": DAY, "pageviews": 2 + home, "human": 2, "unknown": 1, "machine": 1,
                           "visitors": 1 + home, "sessions": 2}  # fmt: skip

    @pytest.mark.parametrize("mode", ["personal", "unique", "blind"])
    async def test_every_mode(self, conn: asyncpg.Connection, mode: str) -> None:
        """Every mode has the three figures and names its machines (blind sites keep no agent)."""
        job = await mixed_site(conn, mode)
        report = await site_report(conn, job)
        assert {k: report[k] for k in FIGURES} == FIGURES
        assert report["machine_traffic"] == MACHINE
        assert report["visitors"] == (None if mode == "blind" else 2)
        if mode == "blind":
            assert await conn.fetchval("SELECT count(user_agent) FROM raw_hits WHERE job_id = $1", job) == 0

    async def test_rerun_adds_nothing(self, conn: asyncpg.Connection) -> None:
        job = await mixed_site(conn)
        assert await rollup_sites(conn, today=DAY) == 0
        report = await site_report(conn, job)
        assert ({k: report[k] for k in FIGURES}, report["machine_traffic"]["hits"]) == (FIGURES, 1)


class TestTables:
    """What the roll-up stores: unknown and recognised visitors beside the old columns, machines by family."""

    async def test_rows(self, conn: asyncpg.Connection) -> None:
        job = await mixed_site(conn)
        sql = "SELECT pageviews, machine, unknown, visitors, visitors_recognised{} FROM {} WHERE job_id = $1"
        assert tuple(await conn.fetchrow(sql.format(", sessions", "site_totals"), job)) == (3, 1, 1, 2, 1, 2)
        assert tuple(await conn.fetchrow(sql.format(", sessions", "site_daily"), job)) == (3, 1, 1, 2, 1, 2)
        assert tuple(await conn.fetchrow(sql.format("", "site_hourly"), job)) == (3, 1, 1, 2, 1)
        pages = await conn.fetch("SELECT page, pageviews, unknown FROM site_pages WHERE job_id = $1 ORDER BY page", job)
        assert [tuple(r) for r in pages] == [("/home", 1, 1), ("/pricing", 2, 0)]
        machines = await conn.fetch("SELECT kind, reason, family, hits FROM job_machine WHERE job_id = $1", job)
        assert [tuple(r) for r in machines] == [("page", "crawler", "Googlebot", 1)]


class TestTable:
    """The table says what the headline counts and shows the three figures and the machines."""

    async def test_figures(self, conn: asyncpg.Connection) -> None:
        lines = render_site(await site_report(conn, await mixed_site(conn)), "table").splitlines()
        assert lines[3] == (
            "Headline figures count human + unknown (PIXELTRACK_HEADLINE=all). Page views and "
            "visitors follow it; visits, sessions, entries and sources count human + unknown."
        )
        figures = lines[lines.index(next(x for x in lines if x.startswith("pageviews"))) :][:6]
        assert [line.split() for line in figures] == [
            ["pageviews", "3"], ["human", "2"], ["unknown", "1"], ["machine", "1"], ["total", "4"], ["visitors", "2"],
        ]  # fmt: skip
        table = "\n".join(lines)
        assert "Machine traffic: 1 hits\n  by reason: crawler 1\n  by family: Googlebot 1" in table

    async def test_recognised_says_so(self, conn: asyncpg.Connection) -> None:
        lines = render_site(
            await site_report(conn, await mixed_site(conn), headline="recognised"), "table"
        ).splitlines()
        assert lines[3].startswith("Headline figures count human (PIXELTRACK_HEADLINE=recognised).")
        assert "pageviews              2" in lines and "visitors               1" in lines


class TestCsv:
    """The summary rows carry each figure, the headline setting and the machines."""

    @pytest.mark.parametrize(("headline", "pageviews", "visitors"), [("all", 3, 2), ("recognised", 2, 1)])
    async def test_figures_add_up(self, conn: asyncpg.Connection, headline: str, pageviews: int, visitors: int) -> None:
        report = await site_report(conn, await mixed_site(conn), headline=headline)
        rows = list(csv.reader(io.StringIO(render_site(report, "csv"))))
        summary = {key: value for section, key, value, _ in rows[1:] if section == "summary"}
        assert {k: int(summary[k]) for k in FIGURES} == FIGURES
        assert sum(int(summary[k]) for k in ("human", "unknown", "machine")) == int(summary["total"])
        assert (int(summary["pageviews"]), int(summary["visitors"]), summary["headline"]) == (
            pageviews, visitors, headline)  # fmt: skip
        machines = [(section, key, value) for section, key, value, _ in rows if section.startswith("machine")]
        assert machines == [("machine", "hits", "1"), ("machine:reason", "crawler", "1"),
                            ("machine:family", "Googlebot", "1"), ("machine:detail", "page|crawler|Googlebot", "1")]  # fmt: skip


class TestUpgrade:
    """schema.sql on a database with site history from before these columns: applied, and applied again."""

    async def test_existing_database(self, conn: asyncpg.Connection, db_url: str) -> None:
        """Old machine page views become job_machine rows without reason or family, once; counting goes on."""
        job = await site(conn)
        for table, columns in (("site_totals", ("unknown", "visitors_recognised")),
                               ("site_hourly", ("unknown", "visitors_recognised")),
                               ("site_daily", ("unknown", "visitors_recognised")),
                               ("site_pages", ("unknown",)), ("site_breakdowns", ("unknown",))):  # fmt: skip
            for column in columns:
                await conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        await conn.execute("INSERT INTO site_totals (job_id, pageviews, machine, visitors, sessions) "
                           "VALUES ($1, 5, 2, 3, 4)", job)  # fmt: skip
        await db.apply_schema(db_url)
        await db.apply_schema(db_url)
        row = await conn.fetchrow("SELECT pageviews, machine, unknown, visitors, visitors_recognised FROM site_totals")
        assert tuple(row) == (5, 2, 0, 3, 0)
        report = await site_report(conn, job)
        assert report["machine_traffic"]["by_reason"] == {"unknown": 2}
        assert report["machine_traffic"]["by_family"] == {"unrecorded": 2}
        await hit(conn, job, at(10, 20), "/home", visitor=None, ua=BOT, ip="66.249.66.1")
        await hit(conn, job, at(10, 30), "/home", visitor="vc", ua=UNKNOWN, ip="198.51.100.7")
        await rollup_sites(conn, today=DAY)
        report = await site_report(conn, job)
        assert {k: report[k] for k in FIGURES} == {"human": 5, "unknown": 1, "machine": 3, "total": 9}
        assert report["machine_traffic"]["by_family"] == {"unrecorded": 2, "Googlebot": 1}
