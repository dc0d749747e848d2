"""The snippet in a real browser: headless Chromium (Debian `chromium`) driven by Playwright.

A small test site is served on loopback by aiohttp; the collector runs in
process on another port. Each test uses a fresh browser context (its own
cookies); Playwright gives the browser a fresh profile directory. The context
presents a desktop Chrome user agent: the headless one would be classed as
machine traffic by the enrichment.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from aggregator.web.rollup import rollup_sites
from collector.config import CollectorConfig
from pixeltrack.core.mint import Minter
from pixeltrack.core.tokens import Signer
from pixeltrack.core.websites import create_site, site_key, snippet_html
from tests.conftest import TEST_SECRET
from tests.support.browser import CHROMIUM, chromium
from tests.support.collector import flush, make_config, running

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the Debian chromium package at /usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.async_api", reason="needs the playwright package (test extra)")

# Two made-up hosts resolve to loopback, to see which cookie domain the snippet picks
HOSTS = ("www.shop.test", "www.shop.co.uk")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-features=HttpsUpgrades",
         "--host-resolver-rules=" + ", ".join(f"MAP {h} 127.0.0.1" for h in HOSTS)]
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
GPC = "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true});"
DNT = "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'});"
NO_BEACON = "Object.defineProperty(Navigator.prototype, 'sendBeacon', {value: () => false});"
# every document.cookie assignment, in order, in window.__writes
COOKIE_LOG = """(() => {
  const c = Object.getOwnPropertyDescriptor(Document.prototype, 'cookie');
  window.__writes = [];
  Object.defineProperty(Document.prototype, 'cookie', {configurable: true, get() { return c.get.call(this); },
    set(v) { window.__writes.push(v); c.set.call(this, v); }});
})();"""
# a page loaded as a prerender: document.prerendering until the test activates it
PRERENDER = """window.__pre = true;
Object.defineProperty(Document.prototype, 'prerendering', {configurable: true, get: () => window.__pre});"""
SPA = """<script>
window.addEventListener('load', () => setTimeout(() => {
  history.pushState({}, '', '/spa/next'); document.title = 'Next';
}, 50));
</script>"""


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    """One headless Chromium for the module (system binary, never a downloaded one)."""
    async with chromium(FLAGS) as launched:
        yield launched


@pytest.fixture
async def collector(db_url: str, tmp_path: Path) -> AsyncIterator[TestClient]:
    """The collector on a loopback port."""
    config: CollectorConfig = make_config(db_url, tmp_path / "spool")
    async with running(config) as client:
        yield client


def base_of(client: TestClient) -> str:
    return f"http://127.0.0.1:{client.port}"


class Site:
    """A test website on loopback whose pages carry the snippet of ``keys[path]``."""

    def __init__(self, collector: str, keys: dict[str, str]) -> None:
        self.collector, self.keys = collector, keys
        self.app = web.Application()
        self.app.router.add_get("/{name:.*}", self.page)

    async def page(self, request: web.Request) -> web.Response:
        name = request.match_info["name"] or "home"
        key = self.keys.get(name.split("/")[0], self.keys["default"])
        body = f"<!doctype html><title>{html.escape(name)}</title><h1>{html.escape(name)}</h1>"
        body += '<a id="next" href="/pricing">pricing</a>'

        body += snippet_html(self.collector, key) + (SPA if name == "spa" else "")
        return web.Response(text=body, content_type="text/html")


@pytest.fixture
async def make_site(collector: TestClient) -> AsyncIterator[Any]:
    """Start a test site with the given keys; returns its base URL."""
    servers: list[TestServer] = []

    async def start(keys: dict[str, str]) -> str:
        server = TestServer(Site(base_of(collector), keys).app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        await server.close()


async def new_site(conn: asyncpg.Connection, mode: str = "personal", dnt: str = "off", **settings: bool) -> tuple[int, str]:
    site = await create_site(conn, "127.0.0.1", mode, dnt, **settings)
    return site["job_id"], site_key(Signer(TEST_SECRET), site)


async def landed(conn: asyncpg.Connection, collector: TestClient, count: int, job: int) -> list[asyncpg.Record]:
    """Page views of ``job`` once ``count`` have been written (flushing as it waits, 10 s at most)."""
    for _ in range(100):
        await flush(collector)
        found = await conn.fetch("SELECT * FROM raw_hits WHERE kind = 'page' AND job_id = $1 ORDER BY received_at", job)
        if len(found) >= count:
            return list(found)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{count} page views of site {job} did not land")


async def context(browser: Any, gpc: bool = False, *scripts: str) -> Any:
    ctx = await browser.new_context(user_agent=UA, extra_http_headers={"Sec-GPC": "1"} if gpc else None)
    for script in (GPC,) * gpc + scripts:
        await ctx.add_init_script(script)
    return ctx


async def open_site(browser: Any, conn: asyncpg.Connection, make_site: Any, *scripts: str, mode: str = "personal",
                    dnt: str = "off", **settings: bool) -> tuple[int, str, Any, Any]:
    """A new site with one key, served, and a page in a fresh browser context: (job, site URL, context, page)."""
    job, key = await new_site(conn, mode, dnt, **settings)
    site = await make_site({"default": key})
    ctx = await context(browser, False, *scripts)
    return job, site, ctx, await ctx.new_page()


async def mail_recipient(conn: asyncpg.Connection) -> int:
    """A personal mail job with recipient 0, whose identifying clicks carry pt_c."""
    mail = await conn.fetchval("INSERT INTO jobs (name, mode) VALUES ('news', 'personal') RETURNING job_id")
    await conn.execute("INSERT INTO recipients (job_id, recipient_id, recipient) VALUES ($1, 0, 'ann@x.org')", mail)
    return mail


async def quiet(conn: asyncpg.Connection, collector: TestClient, job: int) -> int:
    """Page views of ``job`` after half a second more (for asserting that nothing else came)."""
    await asyncio.sleep(0.5)
    await flush(collector)
    return await conn.fetchval("SELECT count(*) FROM raw_hits WHERE kind = 'page' AND job_id = $1", job)


class TestBrowser:
    async def test_page_view_and_second_visit(self, browser: Any, conn: asyncpg.Connection,
                                              collector: TestClient, make_site: Any) -> None:
        """A page view lands with URL, title, referrer and screen; the next visit carries the same visitor id."""
        job, site, ctx, page = await open_site(browser, conn, make_site)
        await page.goto(f"{site}/home?utm_source=news&utm_medium=email", referer="https://www.google.com/")
        [first] = await landed(conn, collector, 1, job)
        await page.click("#next")
        second = (await landed(conn, collector, 2, job))[1]
        cookies = {c["name"]: c for c in await ctx.cookies()}
        await ctx.close()
        assert (first["url"], first["title"], first["referer"]) == (f"{site}/home?utm_source=news&utm_medium=email", "home", "https://www.google.com/")
        assert (first["screen"], first["accept_language"], first["method"], first["reject_reason"]) == ("1280x720", "en-US", "POST", None)
        assert (second["url"], second["title"], second["referer"]) == (f"{site}/pricing", "pricing", f"{site}/home?utm_source=news&utm_medium=email")
        assert len(first["visitor_id"]) == 24 and second["visitor_id"] == first["visitor_id"] == cookies["pt_v"]["value"]
        assert 364 * 86400 < cookies["pt_v"]["expires"] - time.time() <= 365 * 86400

    async def test_single_page_navigation(self, browser: Any, conn: asyncpg.Connection,
                                          collector: TestClient, make_site: Any) -> None:
        """history.pushState in a single-page app is a second page view with the new URL and title."""
        job, site, ctx, page = await open_site(browser, conn, make_site)
        await page.goto(f"{site}/spa")
        views = await landed(conn, collector, 2, job)
        await ctx.close()
        assert [(v["url"], v["title"]) for v in views] == [(f"{site}/spa", "spa"), (f"{site}/spa/next", "Next")]
        assert views[1]["referer"] == f"{site}/spa" and views[0]["visitor_id"] == views[1]["visitor_id"]

    async def test_tracked_email_click_identifies(self, browser: Any, conn: asyncpg.Connection,
                                                  collector: TestClient, make_site: Any) -> None:
        """Arriving by a tracked personal link stores the contact, strips pt_c and joins earlier views."""
        job, site, ctx, page = await open_site(browser, conn, make_site)
        mail = await mail_recipient(conn)
        await page.goto(f"{site}/before")  # an anonymous view first
        await landed(conn, collector, 1, job)
        click = Minter(TEST_SECRET, base_of(collector)).click_url(mail, 0, f"{site}/landing?x=1#top", identify=True)
        await page.goto(click)
        await page.wait_for_function("!location.search.includes('pt_c')", timeout=5000)
        address = page.url
        await page.goto(f"{site}/after")
        views = await landed(conn, collector, 3, job)
        cookies = {c["name"]: c["value"] for c in await ctx.cookies()}
        await ctx.close()
        assert address == f"{site}/landing?x=1#top"
        assert [(v["url"], v["contact"]) for v in views] == [
            (f"{site}/before", None), (f"{site}/landing?x=1", f"{mail}:0"), (f"{site}/after", f"{mail}:0")]
        assert len({v["visitor_id"] for v in views}) == 1 and "pt_c" in cookies
        await rollup_sites(conn)
        history = await conn.fetch("SELECT url, mail_job_id, recipient_id FROM site_contact_views WHERE job_id = $1 "
                                   "ORDER BY viewed_at", job)
        assert [tuple(h) for h in history] == [(f"{site}/before", mail, 0), (f"{site}/landing?x=1", mail, 0),
                                               (f"{site}/after", mail, 0)]

    async def test_gpc_as_configured(self, browser: Any, conn: asyncpg.Connection,
                                     collector: TestClient, make_site: Any) -> None:
        """With GPC a default site records nothing and a --dnt blind site a view without any identity."""
        off_job, off_key = await new_site(conn)
        blind_job, blind_key = await new_site(conn, dnt="blind")
        site = await make_site({"default": off_key, "blind": blind_key})
        ctx = await context(browser, gpc=True)
        page = await ctx.new_page()
        await page.goto(f"{site}/off")
        await page.wait_for_load_state("networkidle")
        await page.goto(f"{site}/blind")
        [view] = await landed(conn, collector, 1, blind_job)
        cookies = await ctx.cookies()
        await ctx.close()
        assert (view["url"], view["visitor_id"], view["contact"], view["client_ip"], view["user_agent"]) == (
            f"{site}/blind", None, None, None, None)
        assert await conn.fetchval("SELECT count(*) FROM raw_hits WHERE job_id = $1", off_job) == 0
        assert cookies == []

    @pytest.mark.parametrize("spa_hash", [False, True])
    async def test_history_changes(self, browser: Any, conn: asyncpg.Connection, collector: TestClient,
                                   make_site: Any, spa_hash: bool) -> None:
        """replaceState, pushState and back (popstate) are page views; a hash change only with --spa-hash."""
        job, site, ctx, page = await open_site(browser, conn, make_site, spa_hash=spa_hash)
        await page.goto(f"{site}/h")
        await landed(conn, collector, 1, job)
        steps = ["history.replaceState({}, '', '/h/two')", "history.pushState({}, '', '/h/three')", "history.back()",
                 "location.hash = 'x'", "history.pushState({}, '', '/h/end')"]
        for n, step in enumerate(steps, 2):
            await page.evaluate(step)
            if "hash" not in step or spa_hash:
                await landed(conn, collector, n if spa_hash or n < 5 else n - 1, job)
        views = await landed(conn, collector, len(steps) + spa_hash, job)
        extra = await quiet(conn, collector, job)
        await ctx.close()
        urls = ["/h", "/h/two", "/h/three", "/h/two", *(["/h/two#x"] if spa_hash else []), "/h/end"]
        assert [v["url"] for v in views] == [site + u for u in urls] and extra == len(urls)
        assert [v["referer"] for v in views[1:]] == [site + u for u in urls[:-1]]

    async def test_image_fallback(self, browser: Any, conn: asyncpg.Connection,
                                  collector: TestClient, make_site: Any) -> None:
        """When sendBeacon refuses, the view goes as an image (GET /r.gif) with the same fields."""
        job, site, ctx, page = await open_site(browser, conn, make_site, NO_BEACON)
        await page.goto(f"{site}/img?utm_campaign=spring", referer="https://news.example/")
        [view] = await landed(conn, collector, 1, job)
        cookies = {c["name"]: c["value"] for c in await ctx.cookies()}
        await ctx.close()
        assert (view["method"], view["url"], view["title"], view["referer"]) == (
            "GET", f"{site}/img?utm_campaign=spring", "img", "https://news.example/")
        assert (view["screen"], view["accept_language"], view["visitor_id"]) == ("1280x720", "en-US", cookies["pt_v"])

    async def test_cookieless(self, browser: Any, conn: asyncpg.Connection,
                              collector: TestClient, make_site: Any) -> None:
        """A cookie-less site sets no cookie; a tracked click's contact counts for the landing view only."""
        job, site, ctx, page = await open_site(browser, conn, make_site, COOKIE_LOG, cookieless=True)
        mail = await mail_recipient(conn)
        await page.goto(Minter(TEST_SECRET, base_of(collector)).click_url(mail, 0, f"{site}/land?pt=1", identify=True))
        await page.wait_for_function("!location.search.includes('pt_c')", timeout=5000)
        address, writes = page.url, await page.evaluate("window.__writes")
        await page.click("#next")
        views = await landed(conn, collector, 2, job)
        cookies = await ctx.cookies()
        await ctx.close()
        assert address == f"{site}/land?pt=1" and writes == [] and cookies == []
        assert [(v["url"], v["contact"], v["visitor_id"]) for v in views] == [
            (f"{site}/land?pt=1", f"{mail}:0", None), (f"{site}/pricing", None, None)]

    @pytest.mark.parametrize(("mode", "dnt", "script", "names", "stripped", "contact"), [
        ("unique", "off", "", {"pt_v"}, True, False),
        ("blind", "off", "", set(), True, False),
        ("personal", "ignore", DNT, {"pt_v", "pt_c"}, True, True),
        ("personal", "blind", DNT, set(), True, False),
        ("personal", "off", DNT, None, False, False),
    ])
    async def test_mode_and_do_not_track(self, browser: Any, conn: asyncpg.Connection, collector: TestClient,
                                         make_site: Any, mode: str, dnt: str, script: str, names: set[str] | None,
                                         stripped: bool, contact: bool) -> None:
        """The key's mode and DNT policy decide the cookies and whether pt_c is taken (None: no view at all)."""
        scripts = [script] if script else []
        job, site, ctx, page = await open_site(browser, conn, make_site, *scripts, mode=mode, dnt=dnt)
        mail = await mail_recipient(conn)
        await page.goto(Minter(TEST_SECRET, base_of(collector)).click_url(mail, 0, f"{site}/land", identify=True))
        await page.wait_for_load_state("networkidle")
        address = page.url
        views = await landed(conn, collector, 1, job) if names is not None else []
        count = await quiet(conn, collector, job)
        cookies = {c["name"] for c in await ctx.cookies()}
        await ctx.close()
        assert ("pt_c" not in address) == stripped and count == len(views) == (names is not None)
        assert cookies == (names or set())
        if views:
            assert views[0]["url"] == f"{site}/land" and (views[0]["visitor_id"] is not None) == ("pt_v" in names)
            assert views[0]["contact"] == (f"{mail}:0" if contact else None)

    async def test_prerender(self, browser: Any, conn: asyncpg.Connection,
                             collector: TestClient, make_site: Any) -> None:
        """A prerendered page reports its view when it is shown, not before (and once)."""
        job, site, ctx, page = await open_site(browser, conn, make_site, PRERENDER)
        await page.goto(f"{site}/pre")
        await page.wait_for_load_state("networkidle")
        before = await quiet(conn, collector, job)
        show = "window.__pre = false; document.dispatchEvent(new Event('prerenderingchange'))"
        await page.evaluate(show)
        [view] = await landed(conn, collector, 1, job)
        await page.evaluate("history.replaceState({}, '', '/pre/b'); history.replaceState({}, '', '/pre')")
        await page.evaluate(show)
        after = await quiet(conn, collector, job)
        await ctx.close()
        assert (before, view["url"], after) == (0, f"{site}/pre", 1)

    async def test_widest_cookie_domain(self, browser: Any, conn: asyncpg.Connection,
                                        collector: TestClient, make_site: Any) -> None:
        """pt_v (12 months) and pt_c (10 years) go to the widest domain that takes them; pt_v is refreshed."""
        job, site, ctx, page = await open_site(browser, conn, make_site, COOKIE_LOG)
        mail = await mail_recipient(conn)
        port = site.rsplit(":", 1)[1]
        uk, test = f"http://www.shop.co.uk:{port}", f"http://www.shop.test:{port}"
        click = Minter(TEST_SECRET, base_of(collector)).click_url(mail, 0, f"{uk}/land", identify=True)
        await page.goto(click)
        await page.wait_for_function("!location.search.includes('pt_c')", timeout=5000)
        writes = [w for w in await page.evaluate("window.__writes") if not w.startswith("pt_t=")]
        await ctx.add_cookies([{"name": "pt_v", "value": "0123456789abcdef", "domain": ".shop.test", "path": "/",
                                "expires": time.time() + 3600}])
        await page.goto(f"{test}/again")
        refreshed = [w for w in await page.evaluate("window.__writes") if not w.startswith("pt_t=")]
        views = await landed(conn, collector, 2, job)
        cookies = {(c["name"], c["domain"]): c for c in await ctx.cookies()}
        await ctx.close()
        vid = views[0]["visitor_id"]
        tail = "; path=/; max-age={}; samesite=lax"
        contact = [w.split(";")[0].split("=", 1)[1] for w in writes if w.startswith("pt_c=")][0]
        # the widest domain is found with a throwaway pt_t cookie first, so co.uk is never written
        assert writes == [f"pt_v={vid}; domain=shop.co.uk" + tail.format(31536000),
                          f"pt_c={contact}; domain=shop.co.uk" + tail.format(315360000)]
        assert refreshed == ["pt_v=0123456789abcdef; domain=shop.test" + tail.format(31536000)]
        assert [(v["url"], v["visitor_id"], v["contact"]) for v in views] == [
            (f"{uk}/land", vid, f"{mail}:0"), (f"{test}/again", "0123456789abcdef", None)]
        assert set(cookies) == {("pt_v", ".shop.co.uk"), ("pt_c", ".shop.co.uk"), ("pt_v", ".shop.test")}
        assert 364 * 86400 < cookies["pt_v", ".shop.test"]["expires"] - time.time() <= 365 * 86400

    async def test_visitor_cookie_renewed_below_a_public_suffix(self, browser: Any, conn: asyncpg.Connection,
                                                                 collector: TestClient, make_site: Any) -> None:
        """On www.shop.co.uk (co.uk refused) an expiring pt_v is renewed to 12 months, keeping its value."""
        job, key = await new_site(conn)
        site = await make_site({"default": key})
        port = site.rsplit(":", 1)[1]
        ctx = await context(browser, False, COOKIE_LOG)
        await ctx.add_cookies([{"name": "pt_v", "value": "feedfacefeedfacefeedface", "domain": ".shop.co.uk",
                                "path": "/", "expires": time.time() + 3600}])
        page = await ctx.new_page()
        await page.goto(f"http://www.shop.co.uk:{port}/again")
        [view] = await landed(conn, collector, 1, job)
        cookies = {(c["name"], c["domain"]): c for c in await ctx.cookies()}
        await ctx.close()
        assert view["visitor_id"] == "feedfacefeedfacefeedface"
        assert set(cookies) == {("pt_v", ".shop.co.uk")}
        assert 364 * 86400 < cookies["pt_v", ".shop.co.uk"]["expires"] - time.time() <= 365 * 86400
