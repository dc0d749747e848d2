"""The dashboard in a real browser: headless Debian Chromium driven by Playwright.

Logs in through the form, opens the overview, a job and a site, compares the
figures a person sees with build_report's, checks that charts are drawn, that
the live panel's script runs under the CSP, and that hostile names stay text.
Screenshots of each page go to tests/artifacts/ (not committed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from aggregator.mail.report import build_report
from pixeltrack.dashboard.render import number, percent
from pixeltrack.dashboard.reports import rates
from tests.dashboard.conftest import ADMIN, PASSWORD, VIEWER, XSS, mail_job, page_view, roll, website
from tests.support.browser import CHROMIUM, chromium
from tests.support.hits import with_runs

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the Debian chromium package at /usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.async_api", reason="needs the playwright package (test extra)")
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    """One headless Chromium for the module (the system binary, never a downloaded one)."""
    async with chromium(FLAGS) as launched:
        yield launched


@pytest.fixture
async def tab(browser: Any, client: TestClient) -> AsyncIterator[Any]:
    """A fresh context and page; dialogs (an alert() that ran) and CSP reports are recorded."""
    context = await browser.new_context(base_url=f"http://127.0.0.1:{client.port}",
                                        viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.dialogs, page.problems = [], []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: page.problems.append(m.text) if m.type == "error" else None)
    yield page
    await context.close()


async def log_in(page: Any, email: str = ADMIN, password: str = PASSWORD) -> None:
    """Type into the log-in form like a person and submit it."""
    await page.goto("/")
    assert "/login?next=" in page.url
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_load_state()


async def shot(page: Any, name: str) -> None:
    """A full-page screenshot in tests/artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def metric(page: Any, name: str, within: str = "body") -> str:
    return str(await page.locator(within).locator(f'[data-metric="{name}"]').first.inner_text()).strip()


class TestInTheBrowser:
    """What a person sees after logging in."""

    async def test_overview_job_and_site(self, tab: Any, conn: asyncpg.Connection) -> None:
        """The figures equal build_report's, the charts have points, the live panel fills in."""
        job = await mail_job(conn)
        site = await website(conn)
        await roll(conn)
        await conn.execute("SELECT pixeltrack_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 1, 3)")
        await conn.execute(with_runs("""INSERT INTO raw_hits (hit_id, received_at, kind, job_id, method, url)
            SELECT gen_random_uuid(), now() - make_interval(mins => m), 'page', $1, 'POST', 'https://shop.example/live'
            FROM generate_series(1, 7) m"""), site)
        report = await build_report(conn, job)
        await log_in(tab)
        assert await tab.get_by_role("heading", name="Overview").is_visible()
        row = f'tr[data-job="{job}"]'
        assert await metric(tab, "opens.headline", row) == number(report["opens"]["headline"]) == "3"
        assert await metric(tab, "click_to_open", row) == percent(rates(report)["click_to_open"]) == "66.7 %"
        await shot(tab, "overview")

        await tab.get_by_role("link", name="Spring sale").click()
        await tab.wait_for_load_state()
        for kind in ("opens", "clicks"):
            for key, value in report[kind].items():
                assert await metric(tab, f"{kind}.{key}") == number(value), (kind, key)
        assert await metric(tab, "open_rate") == percent(rates(report)["open_rate"]) == "75.0 %"
        d = await tab.locator('svg.chart path[data-series="Opens"]').get_attribute("d")
        assert d.startswith("M") and d.count(" L") == 26
        assert await tab.locator("#recipients tbody tr").count() == 3
        await shot(tab, "job")

        await tab.goto(f"/sites/{site}")
        assert await metric(tab, "pageviews") == "3" and await metric(tab, "visitors") == "2"
        await tab.locator("#live-total").filter(has_text="7").wait_for(timeout=10_000)
        assert await tab.locator("#live-chart rect").count() == 30
        assert await tab.locator("svg.chart path.line").count() == 2
        await shot(tab, "site")
        await tab.goto("/manage")
        await shot(tab, "manage")
        assert tab.problems == [] and tab.dialogs == []

    async def test_wrong_password(self, tab: Any) -> None:
        """The form says so and no page opens."""
        await log_in(tab, ADMIN, "not the password")
        assert await tab.get_by_role("alert").inner_text() == "Wrong e-mail or password."
        assert "/login" in tab.url
        await tab.goto("/")
        assert "/login" in tab.url

    async def test_viewer_has_no_manage(self, tab: Any) -> None:
        """No Manage link for a viewer, and 403 when typed in."""
        await log_in(tab, VIEWER)
        assert await tab.get_by_role("link", name="Manage").count() == 0
        answer = await tab.goto("/manage")
        assert answer.status == 403

    async def test_hostile_names_are_text(self, tab: Any, conn: asyncpg.Connection) -> None:
        """A job named <script>alert(1)</script> and a page of that address show as text; no script runs."""
        job = await mail_job(conn, name=XSS)
        site = await website(conn)
        await page_view(conn, site, 80, "/" + XSS, "vc", title=XSS)
        await roll(conn)
        await log_in(tab)
        assert XSS in await tab.locator(f'tr[data-job="{job}"] th').inner_text()
        await tab.goto(f"/jobs/{job}")
        assert await tab.locator('h1 [data-field="name"]').inner_text() == XSS
        assert await tab.title() == f"{XSS} · pixeltrack"
        await tab.goto(f"/sites/{site}")
        assert XSS in await tab.locator("#top_pages").inner_text()
        await shot(tab, "hostile")
        assert tab.dialogs == []
        assert await tab.evaluate("document.querySelectorAll('script').length") == 1  # live.js only
