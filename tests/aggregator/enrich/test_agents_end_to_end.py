"""Crawler agents through the real processes: one open each via the collector, the aggregator, `pixeltrack report`.

Issue 12 measured 41 crawler agents from a community-maintained list, one
open each through the real collector and aggregator: 13 came out as people.
Here 54 agents take that path: every 8th of the crawler-user-agents sample,
every 10th of the Crawler-Detect sample (tests/support/fixtures/agents/,
PROVENANCE.md) and five the issue named (HTTPie, Infegy's collector,
Miniflux, FlipboardProxy, Cốc Cốc's crawler). Every open must be a machine's,
named by the family the detection layers give it (aggregator/enrich/RULES.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from collector.answers import GIF
from loadtest.support import free_port
from pixeltrack.core.mint import Minter
from tests.conftest import TEST_SECRET
from tests.support.hits import add_job, add_recipients
from tests.support.process import ROOT, start, wait_exit, wait_ready

pytestmark = pytest.mark.slow

SAMPLES = ROOT / "tests" / "support" / "fixtures" / "agents"
NAMED = (
    "HTTPie/3.2.2",
    "Mozilla/5.0 (compatible) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/47.0.2526.73 Safari/537.36"
    " collection@infegy.com",
    "Mozilla/5.0 (compatible; Miniflux/2.0.12; +https://miniflux.app)",
    "Mozilla/5.0 (compatible; FlipboardProxy/1.2; +http://flipboard.com/browserproxy)",
    "Mozilla/5.0 (compatible; coccocbot-web/1.0; +http://help.coccoc.com/searchengine)",
)
# Family of every agent above, as the detection layers name it: the crawler
# list's entry, uap-core's or isbot's catch-all, or a mail proxy's name.
FAMILIES = {
    "other bot (isbot)": 2, "other crawler (uap-core)": 2, "wget": 2, "AmazonAdBot": 1, "Amazonbot": 1,
    "ArchiveBox": 1, "Blackboard": 1, "BoardGamePricesBot": 1, "Bugsnag": 1, "CaliberBot": 1, "CentComBot": 1,
    "ChatGPT-User": 1, "Dataprovider.com": 1, "Ezgif": 1, "FlipboardProxy": 1, "GTmetrix": 1,
    "Google Web Preview": 1, "HTTPie": 1, "Level9SearchBot": 1, "Mail.RU_Bot": 1, "Miniflux": 1, "NaverBot": 1,
    "PhindBot": 1, "PiplBot": 1, "RavenCrawler": 1, "Reelevant": 1, "RepoLookoutBot": 1, "Taboolabot": 1,
    "TwilioProxy": 1, "WatchMouse": 1, "WordCountBot": 1, "WormlyBot": 1, "Yahoo Ad monitoring": 1,
    "Yahoo Mail proxy": 1, "Zombiebot": 1, "ZoomBot": 1, "acapbot": 1, "bidswitchbot": 1, "bingbot": 1,
    "coccoc": 1, "collection@infegy.com": 1, "dcrawl": 1, "everyfeed-spider": 1, "harsilbot": 1,
    "jpg-newsbot": 1, "l9scan": 1, "larbin": 1, "other spider": 1, "phpcrawl": 1, "spbot": 1, "zebra-v2-bot": 1,
}  # fmt: skip


def agents() -> list[str]:
    """The 54 agents, in a fixed order."""
    primary = json.loads((SAMPLES / "crawlers_primary.json").read_text(encoding="utf-8"))
    secondary = json.loads((SAMPLES / "crawlers_secondary.json").read_text(encoding="utf-8"))
    return [row["ua"] for row in primary[::8]] + [row["ua"] for row in secondary[::10]] + list(NAMED)


async def open_each(base: str, job: int, uas: list[str], proc: subprocess.Popen[bytes]) -> None:
    """One open per agent, recipient i with agent i, each answered with the pixel."""
    minter = Minter(TEST_SECRET, base)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await wait_ready(session, base, proc)
        for rid, ua in enumerate(uas, 1):
            async with session.get(minter.open_url(job, rid), headers={"User-Agent": ua}) as resp:
                assert (resp.status, await resp.read()) == (200, GIF), ua


async def cli_report(job: int, env: dict[str, str], cwd: Path) -> bytes:
    """`pixeltrack report --job J --format json`, run as a process; its standard output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pixeltrack.cli", "report", "--job", str(job), "--format", "json",
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, cwd=cwd, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0
    return out


class TestCrawlersThroughTheProcesses:
    """Every agent's open is a machine's: none human, none unknown; job_machine names each family."""

    async def test_all_machine(self, conn: asyncpg.Connection, db_url: str, tmp_path: Path) -> None:
        uas = agents()
        assert len(uas) == len(set(uas)) == 54 and sum(FAMILIES.values()) == 54
        job = await add_job(conn, "unique")
        await add_recipients(conn, job, len(uas))
        port = free_port()
        env = {"DATABASE_URL": db_url, "PIXELTRACK_SECRET": TEST_SECRET, "PIXELTRACK_FLUSH_INTERVAL": "0.1",
               "PIXELTRACK_DRAIN_GRACE": "0.5", "PIXELTRACK_SPOOL_DIR": str(tmp_path / "spool")}  # fmt: skip
        collector = start(["-m", "collector", "--port", str(port)], env, tmp_path, tmp_path / "collector.log")
        try:
            await open_each(f"http://127.0.0.1:{port}", job, uas, collector)
        finally:
            collector.send_signal(signal.SIGTERM)
            assert await wait_exit(collector) == 0
        stored = await conn.fetch("SELECT user_agent FROM raw_hits WHERE job_id = $1 AND kind = 'open'", job)
        assert sorted(r["user_agent"] for r in stored) == sorted(uas)
        aggregator = start(["-m", "aggregator", "--once"], env, tmp_path, tmp_path / "aggregator.log")
        assert await wait_exit(aggregator, 120) == 0, (tmp_path / "aggregator.log").read_text()
        report = json.loads(await cli_report(job, env, tmp_path))
        assert report["opens"] == {"total": 54, "human": 0, "unknown": 0, "machine": 54, "headline": 0, "unique": 0,
                                   "inferred": 0}  # fmt: skip
        assert report["machine"]["by_reason"] == {"crawler": 53, "yahoo_proxy": 1}
        assert report["machine"]["by_family"] == FAMILIES
        assert report["breakdowns"]["traffic"] == {
            "machine": {"opens": 0, "clicks": 0, "views": 0, "human": 0, "unknown": 0, "machine": 54}}  # fmt: skip
        assert await conn.fetchval("SELECT count(user_agent) FROM raw_hits WHERE job_id = $1", job) == 0
