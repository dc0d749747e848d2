"""Website roll-ups against a real PostgreSQL: sessions, entries, sources, contacts, privacy per mode, salts."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import pytest

from aggregator.web.report import render_site, site_report
from aggregator.web.rollup import rollup_sites
from pixeltrack.core.websites import create_site
from tests.support.hits import with_runs

DAY = dt.datetime.now(dt.UTC).date()
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.4 Mobile/15E148 Safari/604.1")
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
SITE = "https://shop.example"
INSERT = with_runs("""
INSERT INTO raw_hits (hit_id, received_at, kind, job_id, client_ip, user_agent, referer, accept_language, method,
                      reject_reason, url, title, visitor_id, screen, contact)
VALUES ($1, $2, 'page', $3, $4, $5, $6, 'de-CH', 'POST', $7, $8, $9, $10, '1280x720', $11)
""")


def at(hour: int, minute: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), dt.UTC)


async def hit(conn: asyncpg.Connection, job: int, when: dt.datetime, path: str, visitor: str | None = "va",
              ua: str = CHROME, ip: str | None = "203.0.113.5", referer: str | None = None,
              contact: str | None = None, reason: str | None = None) -> None:
    """One page view as the collector writes it."""
    await conn.execute(INSERT, uuid.uuid4(), when, job, ip, ua, referer, reason, SITE + path,
                       path.split("?")[0].strip("/") or "home", visitor, contact)


async def visits(conn: asyncpg.Connection, job: int) -> None:
    """Visitor va: a tagged visit of three pages, then a search visit; vb: one referral; one crawler."""
    await hit(conn, job, at(10, 0), "/home?utm_source=news&utm_medium=email&utm_campaign=spring")
    await hit(conn, job, at(10, 5), "/pricing", referer=SITE + "/home")
    await hit(conn, job, at(10, 10), "/pricing", visitor="vb", ua=IPHONE, ip="198.51.100.7",
              referer="https://news.ycombinator.com/item?id=1")
    await hit(conn, job, at(10, 20), "/signup", referer=SITE + "/pricing")
    await hit(conn, job, at(10, 30), "/home", visitor=None, ua=BOT, ip="66.249.66.1")
    await hit(conn, job, at(11, 0), "/home", referer="https://www.bing.com/search?q=cheap+shoes")


async def site(conn: asyncpg.Connection, mode: str = "personal", **settings: Any) -> int:
    return int((await create_site(conn, "shop.example", mode, **settings))["job_id"])


async def mail_job(conn: asyncpg.Connection) -> int:
    """A personal mail job 'spring' with recipient 0, ann@x.org, whose clicks identify a visitor."""
    mail = await conn.fetchval("INSERT INTO jobs (name, mode) VALUES ('spring', 'personal') RETURNING job_id")
    await conn.execute("INSERT INTO recipients (job_id, recipient_id, recipient) VALUES ($1, 0, 'ann@x.org')", mail)
    return int(mail)


class TestPersonalSite:
    @pytest.mark.parametrize("batch", [1000, 2])
    async def test_exact_report(self, conn: asyncpg.Connection, batch: int) -> None:
        """Page views, visitors, sessions, entries, sources and devices, in one batch or in batches of two."""
        job = await site(conn)
        await visits(conn, job)
        assert await rollup_sites(conn, batch_size=batch, today=DAY) == 6
        r = await site_report(conn, job)
        assert (r["site"], r["mode"], r["pageviews"], r["machine"], r["visitors"], r["visits"]) == (job, "personal", 5, 1, 2, 3)
        assert r["sessions"] == {"count": 3, "pages_per_session": 1.67, "avg_duration_seconds": 400.0}
        assert r["top_pages"] == [{"page": "/home", "pageviews": 2, "human": 2, "unknown": 0, "entries": 2},
                                  {"page": "/pricing", "pageviews": 2, "human": 2, "unknown": 0, "entries": 1},
                                  {"page": "/signup", "pageviews": 1, "human": 1, "unknown": 0, "entries": 0}]
        assert r["entry_pages"] == [{"page": "/home", "entries": 2}, {"page": "/pricing", "entries": 1}]
        assert [tuple(s.values()) for s in r["sources"]] == [
            ("email", "news", "", "news", "email", "spring", 1), ("search", "Bing", "cheap shoes", "", "", "", 1),
            ("social", "Hacker News", "", "", "", "", 1)]
        assert [(d["device_class"], d["os"], d["browser"], d["pageviews"]) for d in r["devices"]] == [
            ("desktop", "Windows", "Chrome", 4), ("mobile", "iOS", "Mobile Safari", 1)]
        assert r["timeline"]["hourly"] == [
            {"hour": at(10), "pageviews": 4, "human": 4, "unknown": 0, "machine": 1, "visitors": 2},
            {"hour": at(11), "pageviews": 1, "human": 1, "unknown": 0, "machine": 0, "visitors": 1}]
        assert r["timeline"]["daily"] == [
            {"day": DAY, "pageviews": 5, "human": 5, "unknown": 0, "machine": 1, "visitors": 2, "sessions": 3}]
        assert r["contacts"] == []

    async def test_rerun_adds_nothing(self, conn: asyncpg.Connection) -> None:
        """A second run finds nothing to claim and leaves the numbers as they were."""
        job = await site(conn)
        await visits(conn, job)
        await rollup_sites(conn, today=DAY)
        assert await rollup_sites(conn, today=DAY) == 0
        assert (await site_report(conn, job))["pageviews"] == 5

    async def test_session_continues_across_runs(self, conn: asyncpg.Connection) -> None:
        """A view 20 minutes after the last one, rolled up later, extends the stored session."""
        job = await site(conn)
        await hit(conn, job, at(9, 0), "/a")
        await rollup_sites(conn, today=DAY)
        await hit(conn, job, at(9, 20), "/b", referer=SITE + "/a")
        await hit(conn, job, at(9, 55), "/c", referer=SITE + "/b")
        await rollup_sites(conn, today=DAY)
        rows = await conn.fetch("SELECT started_at, last_at, pages, entry_page FROM site_sessions WHERE job_id = $1 ORDER BY started_at", job)
        assert [tuple(r) for r in rows] == [(at(9, 0), at(9, 20), 2, "/a"), (at(9, 55), at(9, 55), 1, "/c")]

    async def test_raw_hits_keep_history(self, conn: asyncpg.Connection) -> None:
        """Personal sites keep visitor id, URL and agent on the raw hit; the address is masked."""
        job = await site(conn)
        await hit(conn, job, at(9), "/a?x=1")
        await rollup_sites(conn, today=DAY)
        row = await conn.fetchrow("SELECT visitor_id, url, user_agent, client_ip::text, browser FROM raw_hits")
        assert tuple(row) == ("va", SITE + "/a?x=1", CHROME, "203.0.113.0/32", "Chrome")


class TestContacts:
    async def test_click_joins_earlier_and_later_views(self, conn: asyncpg.Connection) -> None:
        """A contact identifies the visitor: earlier anonymous views and later ones join the contact."""
        job = await site(conn)
        mail = await mail_job(conn)
        await hit(conn, job, at(9, 0), "/a")
        await hit(conn, job, at(9, 1), "/other", visitor="vz")
        await rollup_sites(conn, today=DAY)
        await hit(conn, job, at(9, 10), "/landing", contact=f"{mail}:0")
        await hit(conn, job, at(9, 12), "/b")
        await rollup_sites(conn, today=DAY)
        await hit(conn, job, at(9, 30), "/c")
        await rollup_sites(conn, today=DAY)
        [contact] = (await site_report(conn, job))["contacts"]
        assert (contact["mail_job_id"], contact["recipient_id"], contact["recipient"], contact["mail_job"]) == (mail, 0, "ann@x.org", "spring")
        assert (contact["identified_at"], contact["landing_url"]) == (at(9, 10), SITE + "/landing")
        assert [(p["at"], p["url"]) for p in contact["pages"]] == [
            (at(9, 0), SITE + "/a"), (at(9, 10), SITE + "/landing"), (at(9, 12), SITE + "/b"), (at(9, 30), SITE + "/c")]

    @pytest.mark.parametrize(("mode", "consent", "forgotten", "joined"), [
        ("permission_personal", True, False, 1), ("permission_personal", False, False, 0),
        ("personal", True, True, 0), ("unique", True, False, 0), ("blind", True, False, 0),
    ])
    async def test_identity_only_where_allowed(self, conn: asyncpg.Connection, mode: str, consent: bool,
                                               forgotten: bool, joined: int) -> None:
        """Only personal jobs, or consenting permission_personal recipients not erased, name a visitor."""
        job = await site(conn)
        mail = await conn.fetchval("INSERT INTO jobs (name, mode) VALUES ('m', $1) RETURNING job_id", mode)
        await conn.execute("INSERT INTO recipients (job_id, recipient_id, recipient, consent) VALUES ($1, 4, 'x', $2)", mail, consent)
        if forgotten:
            await conn.execute("INSERT INTO forgotten_recipients (job_id, recipient_id) VALUES ($1, 4)", mail)
        await hit(conn, job, at(9), "/landing", contact=f"{mail}:4")
        await rollup_sites(conn, today=DAY)
        assert await conn.fetchval("SELECT count(*) FROM site_contacts") == joined
        assert await conn.fetchval("SELECT count(*) FROM site_contact_views") == joined
        assert await conn.fetchval("SELECT contact FROM raw_hits") == (f"{mail}:4" if joined else None)

    async def test_cookieless_contact_names_one_view(self, conn: asyncpg.Connection) -> None:
        """Without a visitor id the landing view alone belongs to the contact."""
        job = await site(conn, cookieless=True)
        mail = await conn.fetchval("INSERT INTO jobs (name, mode) VALUES ('m', 'personal') RETURNING job_id")
        await conn.execute("INSERT INTO recipients (job_id, recipient_id, recipient) VALUES ($1, 1, 'bo')", mail)
        await hit(conn, job, at(9), "/landing", visitor=None, contact=f"{mail}:1")
        await hit(conn, job, at(9, 1), "/next", visitor=None)
        await rollup_sites(conn, today=DAY)
        [contact] = (await site_report(conn, job))["contacts"]
        assert [p["url"] for p in contact["pages"]] == [SITE + "/landing"]


class TestUniqueAndBlind:
    async def test_unique_keeps_only_daily_hash(self, conn: asyncpg.Connection) -> None:
        """Unique sites keep no visitor id, address, agent, referrer or query; visitors come from salted hashes."""
        job = await site(conn, "unique")
        await visits(conn, job)
        await rollup_sites(conn, today=DAY)
        r = await site_report(conn, job)
        assert (r["pageviews"], r["visitors"], r["sessions"]["count"], "contacts" in r) == (5, 2, 3, False)
        rows = await conn.fetch("SELECT visitor_id, client_ip, user_agent, referer, screen, contact, url FROM raw_hits "
                                "WHERE user_agent IS NOT NULL OR visitor_id IS NOT NULL OR client_ip IS NOT NULL "
                                "OR referer IS NOT NULL OR url LIKE '%?%'")
        assert rows == []
        # hour, day and overall keys of va (two hours) and vb, each also under 'r:' (recognised browsers)
        assert await conn.fetchval("SELECT count(*) FROM site_seen WHERE salt_day = $1", DAY) == 2 * 7

    async def test_blind_counts_only(self, conn: asyncpg.Connection) -> None:
        """Blind sites report page views, pages, visits and sources; no visitors, sessions or devices."""
        job = await site(conn, "blind")
        await visits(conn, job)
        await rollup_sites(conn, today=DAY)
        r = await site_report(conn, job)
        assert (r["pageviews"], r["machine"], r["visitors"], r["visits"], r["sessions"], r["devices"]) == (5, 1, None, 3, None, [])
        assert r["entry_pages"] == [{"page": "/home", "entries": 2}, {"page": "/pricing", "entries": 1}]
        assert await conn.fetchval("SELECT count(*) FROM site_sessions") == 0
        assert await conn.fetchval("SELECT count(*) FROM raw_hits WHERE visitor_id IS NOT NULL OR client_ip IS NOT NULL "
                                   "OR user_agent IS NOT NULL OR browser IS NOT NULL") == 0


class TestCookielessSalts:
    async def test_daily_hash_and_destruction(self, conn: asyncpg.Connection) -> None:
        """Same address and agent: one visitor a day; a day whose salt is gone counts views only; salts die after two days."""
        job = await site(conn, "unique", cookieless=True)
        yesterday, old = DAY - dt.timedelta(days=1), DAY - dt.timedelta(days=2)
        for when in (at(8, day=old), at(8, day=yesterday), at(9, day=yesterday), at(8), at(12)):
            await hit(conn, job, when, "/a", visitor=None)
        await hit(conn, job, at(8, 5), "/a", visitor=None, ip="192.0.2.9")
        await rollup_sites(conn, today=DAY)
        days = {d["day"]: (d["pageviews"], d["visitors"], d["sessions"]) for d in (await site_report(conn, job))["timeline"]["daily"]}
        assert days == {old: (1, 0, 1), yesterday: (2, 1, 2), DAY: (3, 2, 3)}
        assert await conn.fetchval("SELECT count(*) FROM site_salts") == 2
        await rollup_sites(conn, today=DAY + dt.timedelta(days=2))
        assert await conn.fetchval("SELECT count(*) FROM site_salts") == 0
        assert await conn.fetchval("SELECT count(*) FROM site_seen") == 0
        assert await conn.fetchval("SELECT count(*) FROM site_sessions WHERE vkey IS NOT NULL") == 0
        assert (await site_report(conn, job))["visitors"] == 3


class TestRejected:
    async def test_forged_and_unknown_sites(self, conn: asyncpg.Connection) -> None:
        """Forged keys and unknown sites are counted by reason, never in a site, and keep no page data."""
        job = await site(conn)
        await hit(conn, 0, at(9), "/a", reason="bad_signature")
        await hit(conn, 0, at(9, 1), "/a", reason="bad_signature")
        await hit(conn, 4242, at(9, 2), "/a")
        await rollup_sites(conn, today=DAY)
        rows = await conn.fetch("SELECT job_id, hour, kind, reason, hits FROM report_rejected ORDER BY job_id")
        assert [tuple(r) for r in rows] == [(0, at(9), "page", "bad_signature", 2), (4242, at(9), "page", "unknown_site", 1)]
        assert (await site_report(conn, job))["pageviews"] == 0
        assert [tuple(r) for r in await conn.fetch("SELECT job_id, url, visitor_id, rolled_at IS NULL FROM raw_hits WHERE url IS NOT NULL OR visitor_id IS NOT NULL")] == []


class TestRendering:
    async def test_formats(self, conn: asyncpg.Connection) -> None:
        """JSON carries the required keys; CSV and table carry the headline numbers."""
        import orjson

        job = await site(conn)
        await visits(conn, job)
        await rollup_sites(conn, today=DAY)
        report = await site_report(conn, job)
        data = orjson.loads(render_site(report, "json"))
        assert {"site", "mode", "pageviews", "visitors", "top_pages", "sources", "timeline", "contacts"} <= set(data)
        assert "summary,pageviews,5," in render_site(report, "csv")
        table = render_site(report, "table")
        assert "pageviews              5\n" in table
        # times in tables: minutes, UTC (JSON keeps ISO 8601)
        assert f"{DAY:%Y-%m-%d} 10:00 UTC" in table and "10:00:00+00:00" not in table
        assert f"{DAY:%Y-%m-%d}T10:00:00+00:00" in render_site(report, "json")
        with pytest.raises(LookupError):
            await site_report(conn, job + 100)


class TestForgetContact:
    async def test_forget_erases_website_history(self, conn: asyncpg.Connection) -> None:
        """`forget` removes a recipient's website contact, page history and the contact on raw page views."""
        from aggregator.privacy.forget import forget

        job = await site(conn)
        mail = await mail_job(conn)
        await hit(conn, job, at(9, 0), "/a")
        await hit(conn, job, at(9, 10), "/landing", contact=f"{mail}:0")
        await hit(conn, job, at(9, 12), "/b")
        await rollup_sites(conn, today=DAY)
        assert await conn.fetchval("SELECT count(*) FROM site_contact_views") == 3
        [done] = await forget(conn, "ann@x.org")
        assert (done.raw_hits, done.site_rows) == (1, 4)  # the landing view's contact; 3 views + 1 contact
        assert await conn.fetchval("SELECT count(*) FROM site_contact_views") == 0
        assert await conn.fetchval("SELECT count(*) FROM site_contacts") == 0
        assert await conn.fetchval("SELECT count(*) FROM raw_hits WHERE contact IS NOT NULL") == 0
        assert (await site_report(conn, job))["contacts"] == []
