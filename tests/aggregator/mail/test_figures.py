"""Honest numbers: human, unknown and machine add up to the total in every report format and view."""

from __future__ import annotations

import csv
import io
import json

import asyncpg
import pytest

from aggregator.config import AggregatorConfig
from aggregator.enrich import EnrichConfig
from aggregator.enrich.enricher import make_enricher
from aggregator.mail.report import build_report
from aggregator.mail.rollup import rollup
from aggregator.render import as_csv, as_json, as_table
from pixeltrack.core.config import ConfigError
from tests.support.hits import add_hits, add_job, add_recipients, hit

A = "https://example.org/a"
B = "https://example.org/b"
CFG = AggregatorConfig(batch_size=1000, enrich=EnrichConfig())
UNKNOWN = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"  # no browser, no machine
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
MINIFLUX = "Mozilla/5.0 (compatible; Miniflux/2.0.12; +https://miniflux.app)"
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
FIGURES = ("human", "unknown", "machine")


async def mixed_job(conn: asyncpg.Connection, mode: str = "unique") -> int:
    """Five recipients, real agents through the real enricher.

    Opens: r1 Chrome twice (human) and a HEAD (prefetch); r2 an unrecognised
    agent twice (unknown); r3 through Gmail's proxy, r4 Apple MPP's bare
    agent, r5 Googlebot and Miniflux (machine). Clicks: r1 Chrome on A
    (human), r2 the unknown agent on A, r3 Chrome on B (human, an inferred
    opener), r5 Googlebot on A (machine).
    """
    job = await add_job(conn, mode)
    rid = (lambda r: None) if mode == "blind" else (lambda r: r)
    if mode != "blind":
        await add_recipients(conn, job, 5)
    await add_hits(conn, [
        hit("open", job, rid(1), 0), hit("open", job, rid(1), 1), hit("open", job, rid(2), 2, ua=UNKNOWN),
        hit("open", job, rid(3), 3, ua=GMAIL), hit("open", job, rid(4), 4, ua="Mozilla/5.0"),
        hit("open", job, rid(5), 5, ua=GOOGLEBOT), hit("open", job, rid(5), 6, ua=MINIFLUX),
        hit("open", job, rid(2), 7, ua=UNKNOWN), hit("open", job, rid(1), 20, method="HEAD", prefetch=True),
        hit("click", job, rid(1), 10, A), hit("click", job, rid(2), 11, A, ua=UNKNOWN),
        hit("click", job, rid(3), 12, B), hit("click", job, rid(5), 13, A, ua=GOOGLEBOT),
    ])  # fmt: skip
    await rollup(conn, CFG, make_enricher(CFG.enrich))
    return job


OPENS = {"total": 9, "human": 2, "unknown": 2, "machine": 5, "headline": 4, "unique": 3, "inferred": 1}
CLICKS = {"total": 4, "human": 2, "unknown": 1, "machine": 1, "headline": 3, "unique": 3}
MACHINE = {
    "hits": 6,
    "by_reason": {"crawler": 3, "apple_mpp": 1, "gmail_proxy": 1, "prefetch": 1},
    "by_family": {"Googlebot": 2, "Apple MPP": 1, "Gmail image proxy": 1, "Miniflux": 1, "prefetch or HEAD": 1},
}


class TestJson:
    """The JSON report: three figures per count, headline = human + unknown by default."""

    async def test_totals(self, conn: asyncpg.Connection) -> None:
        report = json.loads(as_json(await build_report(conn, await mixed_job(conn))))
        assert (report["opens"], report["clicks"]) == (OPENS, CLICKS)
        assert report["headline"] == {"setting": "all", "counts": "human + unknown"}

    async def test_recognised_setting(self, conn: asyncpg.Connection) -> None:
        """PIXELTRACK_HEADLINE=recognised: headline and unique count recognised browsers and mail clients only."""
        report = await build_report(conn, await mixed_job(conn), headline="recognised")
        assert report["opens"] == OPENS | {"headline": 2, "unique": 2, "inferred": 1}
        assert report["clicks"] == CLICKS | {"headline": 2, "unique": 2}
        assert [(e["url"], e["clicks"], e["unique_clicks"]) for e in report["links"]] == [(A, 1, 1), (B, 1, 1)]
        assert report["headline"] == {"setting": "recognised", "counts": "human"}

    async def test_links_and_timeline(self, conn: asyncpg.Connection) -> None:
        report = await build_report(conn, await mixed_job(conn))
        assert [{k: e[k] for k in ("url", "clicks", "unique_clicks", *FIGURES, "total")} for e in report["links"]] == [
            {"url": A, "clicks": 2, "unique_clicks": 2, "human": 1, "unknown": 1, "machine": 1, "total": 3},
            {"url": B, "clicks": 1, "unique_clicks": 1, "human": 1, "unknown": 0, "machine": 0, "total": 1},
        ]  # fmt: skip
        [hour] = report["timeline"]
        assert hour == {"hour": "2024-05-06T10:00:00+00:00", "opens": 4, "clicks": 3,
                        "human_opens": 2, "unknown_opens": 2, "machine_opens": 5,
                        "human_clicks": 2, "unknown_clicks": 1, "machine_clicks": 1}  # fmt: skip

    async def test_machine_section(self, conn: asyncpg.Connection) -> None:
        """Machine hits by reason and by family (crawler list entry, proxy, rule)."""
        section = (await build_report(conn, await mixed_job(conn)))["machine"]
        assert {k: section[k] for k in MACHINE} == MACHINE
        assert list(section["by_family"]) == list(MACHINE["by_family"])  # most hits first, then by name
        assert {(d["kind"], d["family"]): d["hits"] for d in section["detail"]} == {
            ("open", "Googlebot"): 1, ("click", "Googlebot"): 1, ("open", "Apple MPP"): 1,
            ("open", "Gmail image proxy"): 1, ("open", "Miniflux"): 1, ("open", "prefetch or HEAD"): 1,
        }  # fmt: skip

    async def test_blind_job_has_machine_section(self, conn: asyncpg.Connection) -> None:
        """Blind jobs keep no agent, yet their machine hits are named: job_machine is filled at roll-up."""
        report = await build_report(conn, await mixed_job(conn, "blind"))
        assert {k: report["machine"][k] for k in MACHINE} == MACHINE
        assert report["opens"] == OPENS | {"unique": None, "inferred": None}
        stored = await conn.fetchval("SELECT count(user_agent) FROM raw_hits WHERE job_id = $1", report["job"])
        assert stored == 0

    async def test_breakdowns(self, conn: asyncpg.Connection) -> None:
        """machine_reason lists machine hits only; each cell splits its hits into the three figures."""
        breakdowns = (await build_report(conn, await mixed_job(conn)))["breakdowns"]
        assert sorted(breakdowns["machine_reason"]) == ["apple_mpp", "crawler", "gmail_proxy", "prefetch"]
        assert {v: {k: c[k] for k in FIGURES} for v, c in breakdowns["traffic"].items()} == {
            "human": {"human": 4, "unknown": 0, "machine": 0},
            "unknown": {"human": 0, "unknown": 3, "machine": 0},
            "machine": {"human": 0, "unknown": 0, "machine": 6},
        }  # fmt: skip
        assert (breakdowns["traffic"]["unknown"]["opens"], breakdowns["traffic"]["unknown"]["clicks"]) == (2, 1)
        for values in breakdowns.values():
            assert sum(c["human"] + c["unknown"] + c["machine"] for c in values.values()) in (13, 6)

    async def test_personal_recipients(self, conn: asyncpg.Connection) -> None:
        report = await build_report(conn, await mixed_job(conn, "personal"))
        rows = {r["recipient_id"]: r for r in report["recipients"]}
        split = {rid: tuple(r[f"{f}_{k}"] for k in ("opens", "clicks") for f in FIGURES) for rid, r in rows.items()}
        assert split == {1: (2, 0, 1, 1, 0, 0), 2: (0, 2, 0, 0, 1, 0), 3: (0, 0, 1, 1, 0, 0),
                         4: (0, 0, 1, 0, 0, 0), 5: (0, 0, 2, 0, 0, 1)}  # fmt: skip
        assert {rid: (r["opens"], r["clicks"]) for rid, r in rows.items()} == {
            1: (2, 1), 2: (2, 1), 3: (0, 1), 4: (0, 0), 5: (0, 0),
        }  # fmt: skip


class TestTable:
    """The table says what the headline counts and shows all three figures."""

    async def test_headline_rows(self, conn: asyncpg.Connection) -> None:
        lines = as_table(await build_report(conn, await mixed_job(conn))).splitlines()
        assert lines[1] == "Headline figures count human + unknown (PIXELTRACK_HEADLINE=all)."
        grid = lines[lines.index(next(x for x in lines if x.strip().startswith("total"))) :][:3]
        assert [line.split() for line in grid] == [
            ["total", "human", "unknown", "machine", "headline", "unique"],
            ["9", "2", "2", "5", "4", "3", "opens"],
            ["4", "2", "1", "1", "3", "3", "clicks"],
        ]

    async def test_machine_section_and_times(self, conn: asyncpg.Connection) -> None:
        table = as_table(await build_report(conn, await mixed_job(conn)))
        assert "Machine traffic: 6 hits\n  by reason: crawler 3, apple_mpp 1, gmail_proxy 1, prefetch 1\n" in table
        assert "  by family: Googlebot 2, Apple MPP 1, Gmail image proxy 1, Miniflux 1, prefetch or HEAD 1\n" in table
        assert "2024-05-06 10:00 UTC" in table and "T10:00:00" not in table
        assert "machine_reason: apple_mpp 1, crawler 3, gmail_proxy 1, prefetch 1\n" in table

    async def test_recognised_says_so(self, conn: asyncpg.Connection) -> None:
        table = as_table(await build_report(conn, await mixed_job(conn), headline="recognised"))
        assert table.splitlines()[1] == "Headline figures count human (PIXELTRACK_HEADLINE=recognised)."


class TestCsv:
    """Every count's figures are rows of the CSV and add up."""

    async def test_figures_add_up(self, conn: asyncpg.Connection) -> None:
        rows = list(csv.reader(io.StringIO(as_csv(await build_report(conn, await mixed_job(conn))))))
        values = {(s, i, m): v for s, i, m, v in rows[1:]}
        for kind, expected in (("opens", OPENS), ("clicks", CLICKS)):
            assert {m: int(values["totals", kind, m]) for m in expected} == expected
        for url in (A, B):
            figures = [int(values["links", url, f]) for f in FIGURES]
            assert sum(figures) == int(values["links", url, "total"])
        assert values["job", "", "headline_counts"] == "human + unknown"
        assert (values["machine:family", "Googlebot", "hits"], values["machine", "", "hits"]) == ("2", "6")


class TestViews:
    """job_rates, top_links and hourly_activity carry the three figures and recognised-only rates."""

    async def test_job_rates(self, conn: asyncpg.Connection) -> None:
        job = await mixed_job(conn)
        row = await conn.fetchrow(
            "SELECT opens, opens_human, opens_unknown, opens_machine, clicks, clicks_human, clicks_unknown,"
            " clicks_machine, open_rate, click_rate, open_rate_recognised, click_rate_recognised,"
            " click_to_open_rate, click_to_open_rate_recognised FROM job_rates WHERE job_id = $1",
            job,
        )
        assert tuple(float(v) for v in row) == (4, 2, 2, 5, 3, 2, 1, 1, 0.6, 0.6, 0.4, 0.4, 1.0, 1.0)

    async def test_links_and_hours(self, conn: asyncpg.Connection) -> None:
        job = await mixed_job(conn)
        links = await conn.fetch(
            "SELECT url, clicks, human, unknown, machine, unique_clicks, unique_clicks_recognised FROM top_links"
            " WHERE job_id = $1 ORDER BY url",
            job,
        )
        assert [tuple(r) for r in links] == [(A, 2, 1, 1, 1, 2, 1), (B, 1, 1, 0, 0, 1, 1)]
        hours = await conn.fetch(
            "SELECT opens, clicks, human, unknown, machine FROM hourly_activity WHERE job_id = $1", job
        )
        assert [tuple(r) for r in hours] == [(4, 3, 4, 3, 6)]


class TestSetting:
    """PIXELTRACK_HEADLINE is read, checked and named in errors."""

    def test_from_env(self) -> None:
        assert AggregatorConfig.from_env({}).headline == "all"
        assert AggregatorConfig.from_env({"PIXELTRACK_HEADLINE": "Recognised"}).headline == "recognised"
        with pytest.raises(ConfigError, match="PIXELTRACK_HEADLINE"):
            AggregatorConfig.from_env({"PIXELTRACK_HEADLINE": "humans"})
