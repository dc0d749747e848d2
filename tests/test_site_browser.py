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

from aggregator.sites.rollup import rollup_sites
from collector.config import CollectorConfig
from pixeltrack.mint import Minter
from pixeltrack.sites import create_site, site_key, snippet_html
from pixeltrack.tokens import Signer
from tests.collector_support import flush, make_config, running
from tests.conftest import TEST_SECRET

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the Debian chromium package at /usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.async_api", reason="needs the playwright package (test extra)")

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
GPC = "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true});"
SPA = """<script>
window.addEventListener('load', () => setTimeout(() => {
  history.pushState({}, '', '/spa/next'); document.title = 'Next';
}, 50));
</script>"""


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    """One headless Chromium for the module (system binary, never a downloaded one)."""
    async with playwright_api.async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS, timeout=30_000)
        yield chromium
        await chromium.close()


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


async def new_site(conn: asyncpg.Connection, mode: str = "personal", dnt: str = "off") -> tuple[int, str]:
    site = await create_site(conn, "127.0.0.1", mode, dnt)
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


async def context(browser: Any, gpc: bool = False) -> Any:
    ctx = await browser.new_context(user_agent=UA, extra_http_headers={"Sec-GPC": "1"} if gpc else None)
    if gpc:
        await ctx.add_init_script(GPC)
    return ctx


class TestBrowser:
    async def test_page_view_and_second_visit(self, browser: Any, conn: asyncpg.Connection,
                                              collector: TestClient, make_site: Any) -> None:
        """A page view lands with URL, title, referrer and screen; the next visit carries the same visitor id."""
        job, key = await new_site(conn)
        site = await make_site({"default": key})
        ctx = await context(browser)
        page = await ctx.new_page()
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
        job, key = await new_site(conn)
        site = await make_site({"default": key})
        ctx = await context(browser)
        page = await ctx.new_page()
        await page.goto(f"{site}/spa")
        views = await landed(conn, collector, 2, job)
        await ctx.close()
        assert [(v["url"], v["title"]) for v in views] == [(f"{site}/spa", "spa"), (f"{site}/spa/next", "Next")]
        assert views[1]["referer"] == f"{site}/spa" and views[0]["visitor_id"] == views[1]["visitor_id"]

    async def test_tracked_email_click_identifies(self, browser: Any, conn: asyncpg.Connection,
                                                  collector: TestClient, make_site: Any) -> None:
        """Arriving by a tracked personal link stores the contact, strips pt_c and joins earlier views."""
        job, key = await new_site(conn)
        mail = await conn.fetchval("INSERT INTO jobs (name, mode) VALUES ('news', 'personal') RETURNING job_id")
        await conn.execute("INSERT INTO recipients (job_id, recipient_id, recipient) VALUES ($1, 0, 'ann@x.org')", mail)
        site = await make_site({"default": key})
        ctx = await context(browser)
        page = await ctx.new_page()
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
