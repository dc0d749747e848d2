"""Document and website events: doc.page, doc.read and site.contact, with exact times."""

from __future__ import annotations

import json
import uuid

import asyncpg

from pixeltrack.core.websites import create_site
from tests.aggregator.triggers.flow import at, make_trigger, raw, roll, scan_at
from tests.support.hits import add_hits, add_job, add_recipients, with_runs

HOOK = "http://127.0.0.1:9/hook"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
PAGE = with_runs("""
INSERT INTO raw_hits (hit_id, received_at, kind, job_id, client_ip, user_agent, accept_language, method, url, title,
                      visitor_id, contact)
VALUES ($1, $2, 'page', $3, '203.0.113.5', $4, 'de-CH', 'POST', $5, $6, $7, $8)
""")


async def events(conn: asyncpg.Connection, trigger: int) -> list[tuple]:
    """(occurred_at, data) of a trigger's events in time order."""
    rows = await conn.fetch("SELECT occurred_at, body FROM trigger_events WHERE trigger_id = $1 ORDER BY 1, 2",
                            trigger)  # fmt: skip
    return [(r["occurred_at"], json.loads(r["body"])["data"]) for r in rows]


async def reading(conn: asyncpg.Connection) -> int:
    """r1 reads pages 1-4 at 0, 40, 100, 130 s; r2's viewer pre-loads pages 1-4 at 600 s, then r2 reads
    page 2 at 700 s and page 3 at 1100 s."""
    job = await add_job(conn, "personal")
    await add_recipients(conn, job, 2)
    await add_hits(conn, [
        raw("doc", job, 1, 0, page=1), raw("doc", job, 1, 40, page=2), raw("doc", job, 1, 100, page=3),
        raw("doc", job, 1, 130, page=4),
        *[raw("doc", job, 2, 600 + 0.2 * i, page=i + 1) for i in range(4)],
        raw("doc", job, 2, 700, page=2), raw("doc", job, 2, 1100, page=3),
    ])  # fmt: skip
    return job


class TestDocumentEvents:
    """doc.page per reader and page (pre-loads are not views); doc.read when the time in all is reached."""

    async def test_page_two(self, conn: asyncpg.Connection) -> None:
        """--page 2: r1 at 40 s, r2 at 700 s (its pre-loaded page 2 at 600.2 s is not a view)."""
        job = await reading(conn)
        trigger = await make_trigger(conn, job, "doc.page", HOOK, page=2)
        await roll(conn)
        await scan_at(conn, 1500)
        assert [(t, d["recipient"], d["page"]) for t, d in await events(conn, trigger)] == [
            (at(40), "r1@example.org", 2), (at(700), "r2@example.org", 2)]  # fmt: skip

    async def test_every_page(self, conn: asyncpg.Connection) -> None:
        """Without --page: r1's four pages, r2's pages 2 and 3; nothing of the pre-load."""
        job = await reading(conn)
        trigger = await make_trigger(conn, job, "doc.page", HOOK)
        await roll(conn)
        assert await scan_at(conn, 1500) == 6
        assert [(d["recipient"][:2], d["page"]) for _, d in await events(conn, trigger)] == [
            ("r1", 1), ("r1", 2), ("r1", 3), ("r1", 4), ("r2", 2), ("r2", 3)]  # fmt: skip

    async def test_read_ninety_seconds(self, conn: asyncpg.Connection) -> None:
        """r1 passes 90 s at 90 s (40 on page 1, 50 into page 2); r2 at 790 s (page 2, capped at 300 s)."""
        job = await reading(conn)
        trigger = await make_trigger(conn, job, "doc.read", HOOK, seconds=90)
        await roll(conn)
        await scan_at(conn, 1500)
        assert [(t, d["recipient"], d["seconds"], d["pages_read"]) for t, d in await events(conn, trigger)] == [
            (at(90), "r1@example.org", 90, [1, 2]), (at(790), "r2@example.org", 90, [2])]  # fmt: skip

    async def test_read_not_reached(self, conn: asyncpg.Connection) -> None:
        """200 s: r1 read 130 s in all (no event); r2 passes it at 900 s, once the view at 1100 s times page 2."""
        job = await reading(conn)
        trigger = await make_trigger(conn, job, "doc.read", HOOK, seconds=200)
        await roll(conn)
        assert await scan_at(conn, 1000) == 0
        await scan_at(conn, 1500)
        assert [(t, d["recipient"]) for t, d in await events(conn, trigger)] == [(at(900), "r2@example.org")]


async def page_view(conn: asyncpg.Connection, site: int, seconds: float, path: str, ua: str = CHROME,
                    contact: str | None = None) -> None:
    """A page view of visitor va as the collector writes it."""
    await conn.execute(PAGE, uuid.uuid4(), at(seconds), site, ua, "https://shop.example" + path, path, "va", contact)


class TestSiteContact:
    """site.contact: an identified contact's human page views, optionally on paths matching a glob."""

    async def contact_site(self, conn: asyncpg.Connection, pattern: str | None = None) -> int:
        """Visitor va views /home, lands on /landing from r1's mail click, views /pricing/plans; a crawler
        with the same visitor id fetches /pricing."""
        site = (await create_site(conn, "shop.example", "personal"))["job_id"]
        mail = await add_job(conn, "personal")
        await add_recipients(conn, mail, 1)
        trigger = await make_trigger(conn, site, "site.contact", HOOK, site=True, url_pattern=pattern)
        await page_view(conn, site, 0, "/home")
        await page_view(conn, site, 60, "/landing", contact=f"{mail}:1")
        await page_view(conn, site, 120, "/pricing/plans")
        await page_view(conn, site, 130, "/pricing", ua=BOT)
        await roll(conn)
        await scan_at(conn, 600)
        return trigger

    async def test_every_page(self, conn: asyncpg.Connection) -> None:
        """Three human views of the contact (the earlier anonymous one included); the crawler's none."""
        trigger = await self.contact_site(conn)
        assert [(t, d["recipient"], d["url"]) for t, d in await events(conn, trigger)] == [
            (at(0), "r1@example.org", "https://shop.example/home"),
            (at(60), "r1@example.org", "https://shop.example/landing"),
            (at(120), "r1@example.org", "https://shop.example/pricing/plans"),
        ]  # fmt: skip

    async def test_url_pattern(self, conn: asyncpg.Connection) -> None:
        """--url-pattern /pricing*: the pricing page only."""
        trigger = await self.contact_site(conn, "/pricing*")
        assert [d["url"] for _, d in await events(conn, trigger)] == ["https://shop.example/pricing/plans"]
