"""Roll-up with the real enrichment: breakdowns, and what each mode keeps of it."""

from __future__ import annotations

import asyncpg

from aggregator.config import AggregatorConfig
from aggregator.enrich import EnrichConfig
from aggregator.enrich.enricher import make_enricher
from aggregator.mail.report import build_report
from aggregator.mail.rollup import rollup
from tests.support.hits import add_hits, add_job, add_recipients, hit

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
CFG = AggregatorConfig(batch_size=1000, enrich=EnrichConfig())


async def enriched_job(conn: asyncpg.Connection, mode: str) -> int:
    """Two desktop Chrome opens, one iPhone Mail open, one HEAD prefetch."""
    job = await add_job(conn, mode)
    rid = None if mode == "blind" else 1
    if rid:
        await add_recipients(conn, job, 3)
    await add_hits(conn, [
        hit("open", job, rid, 0), hit("open", job, rid and 2, 1), hit("open", job, rid and 3, 2, ua=IPHONE),
        hit("open", job, rid, 3, method="HEAD", prefetch=True),
    ])  # fmt: skip
    await rollup(conn, CFG, make_enricher(CFG.enrich))
    return job


class TestBreakdowns:
    """Breakdowns come from enrichment; machine hits never inflate headline numbers."""

    async def test_unique_job(self, conn: asyncpg.Connection) -> None:
        """Device classes desktop 2 / mobile 1 human opens; the HEAD is 1 prefetch machine hit."""
        job = await enriched_job(conn, "unique")
        report = await build_report(conn, job)
        assert report["opens"]["human"] == 3 and report["opens"]["machine"] == 1
        devices = report["breakdowns"]["device_class"]
        assert (devices["desktop"]["opens"], devices["mobile"]["opens"]) == (2, 1)
        assert report["breakdowns"]["machine_reason"]["prefetch"]["machine"] == 1
        assert set(report["breakdowns"]) == {"traffic", "machine_reason", "device_class", "os", "browser",
                                             "mail_client", "country"}  # fmt: skip

    async def test_unique_raw_hits_deleted(self, conn: asyncpg.Connection) -> None:
        """A unique job's 4 raw hits are deleted once rolled up: no address, agent, recipient or city is left."""
        job = await enriched_job(conn, "unique")
        assert await conn.fetchval("SELECT count(*) FROM raw_hits WHERE job_id = $1", job) == 0
        assert await conn.fetchval("SELECT total FROM report_job_totals WHERE job_id = $1 AND kind = 'open'", job) == 4

    async def test_personal_keeps_masked_address(self, conn: asyncpg.Connection) -> None:
        """Personal raw hits hold the /24 network, not the address."""
        job = await enriched_job(conn, "personal")
        ips = await conn.fetch("SELECT DISTINCT host(client_ip) FROM raw_hits WHERE job_id = $1", job)
        assert [r[0] for r in ips] == ["203.0.113.0"]

    async def test_blind_only_traffic(self, conn: asyncpg.Connection) -> None:
        """Blind breakdowns hold only the human/machine split."""
        job = await enriched_job(conn, "blind")
        report = await build_report(conn, job)
        assert set(report["breakdowns"]) == {"traffic", "machine_reason"}
        rows = await conn.fetch("SELECT DISTINCT device_class, os, browser, country FROM report_breakdowns"
                                " WHERE job_id = $1", job)  # fmt: skip
        assert [tuple(r) for r in rows] == [("", "", "", "")]
