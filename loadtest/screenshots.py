"""Regenerates the README's dashboard screenshots: `python -m loadtest.screenshots [--out docs/screenshots]`.

Makes a throwaway database on the server of DATABASE_URL, fills it with a
made-up campaign and website as raw hits (generate_series), rolls them up
with the real aggregator, serves the dashboard in process and photographs
the overview, the job page and the website page in the system Chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
from pathlib import Path

from aiohttp.test_utils import TestServer

from aggregator import claims
from aggregator.config import AggregatorConfig
from aggregator.rollup import rollup_all
from loadtest import support
from pixeltrack.core import db
from pixeltrack.core.config import Secrets
from pixeltrack.core.websites import create_site
from pixeltrack.dashboard import accounts
from pixeltrack.dashboard.app import create_app
from pixeltrack.dashboard.config import DashboardConfig

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "screenshots only 1"
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.10.1",
]
# $1 job, $2 agents. 400 recipients; opens fade over two days after the send
# at now() - 3 days; one open in six from Apple's relay (machine); a fifth click.
MAIL = (
    """INSERT INTO recipients (job_id, recipient_id, recipient, consent)
       SELECT $1, r, (ARRAY['ann', 'bob', 'eve', 'kim', 'lee', 'max'])[1 + r % 6] || r || '@customers.example', true
       FROM generate_series(1, 400) r""",
    """INSERT INTO raw_hits (hit_id, received_at, kind, job_id, recipient_id, link, client_ip, user_agent,
                            accept_language, method, prefetch)
       SELECT gen_random_uuid(),
              now() - interval '3 days' + (power(i % 97, 2) / 97.0 * 40 + i % 11) * interval '1 minute'
              * CASE WHEN i % 6 = 0 THEN 0.02 ELSE 1 END,
              CASE WHEN i % 5 = 0 AND i % 6 <> 0 THEN 'click' ELSE 'open' END, $1, 1 + (i * 37) % 260,
              CASE WHEN i % 5 = 0 AND i % 6 <> 0
                   THEN (ARRAY['https://shop.example/sale', 'https://shop.example/new', 'https://shop.example/sale',
                               'https://shop.example/help'])[1 + i % 4] END,
              CASE WHEN i % 6 = 0 THEN '17.58.' || i % 200 || '.9' ELSE '203.0.' || i % 250 || '.7' END::inet,
              CASE WHEN i % 6 = 0 THEN 'Mozilla/5.0' ELSE ($2::text[])[1 + i % 6] END,
              'de-DE', 'GET', false
       FROM generate_series(1, 900) i""",
)
# $1 site, $2 agents: two weeks of page views, fewer at weekends, from search, social and links.
SITE = """
INSERT INTO raw_hits (hit_id, received_at, kind, job_id, client_ip, user_agent, referer, accept_language, method,
                      url, title, visitor_id, screen)
SELECT gen_random_uuid(), now() - (i % 14) * interval '1 day' - (i * 7 % 600) * interval '1 minute', 'page', $1,
       ('198.51.' || i % 200 || '.' || i % 7)::inet, ($2::text[])[1 + i % 2 + 3 * (i % 3 / 2)],
       (ARRAY[NULL, 'https://www.google.com/', 'https://news.ycombinator.com/item?id=1', 'https://shop.example/',
              'https://www.bing.com/search?q=running+shoes'])[1 + i % 5],
       'de-DE', 'POST', 'https://shop.example' || (ARRAY['/', '/sale', '/product/42', '/cart', '/blog/spring'])[1 + i * 3 % 5],
       'Shop', 'v' || (i * 13) % 700, '1280x720'
FROM generate_series(1, 2600) i WHERE i % 14 NOT IN (5, 6, 12, 13) OR i % 3 = 0
"""  # noqa: E501


async def fill(url: str) -> tuple[int, int]:
    """The campaign and the website, rolled up; returns (job id, site id)."""
    conn = await db.connect(url)
    try:
        job = await conn.fetchval("INSERT INTO jobs (name, mode, sent_at) VALUES ('Spring sale', 'personal', "
                                  "now() - interval '3 days') RETURNING job_id")
        for sql in MAIL:
            await conn.execute(sql, job, AGENTS) if "$2" in sql else await conn.execute(sql, job)
        await conn.execute("INSERT INTO jobs (name, mode) VALUES ('Product news', 'anonymous'), ('Invoices', 'blind')")
        site = int((await create_site(conn, "shop.example", "personal"))["job_id"])
        await conn.execute(SITE, site, AGENTS)
        await conn.execute(claims.REBUILD_RUNS)  # written by hand: their runs
        await rollup_all(conn, AggregatorConfig(batch_size=5000))
        await accounts.add_user(conn, "admin@example.org", PASSWORD, "admin")
        return int(job), site
    finally:
        await conn.close()


async def photograph(url: str, out: Path, job: int, site: int) -> None:
    """Log in and take full-page screenshots."""
    from playwright.async_api import async_playwright

    config = DashboardConfig(database_url=url, secrets=Secrets(secrets.token_urlsafe(16)), spool_dir=None)
    server = TestServer(create_app(config), host="127.0.0.1")
    await server.start_server()
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = await browser.new_page(base_url=f"http://127.0.0.1:{server.port}",
                                          viewport={"width": 1280, "height": 900})
            await page.goto("/login")
            await page.get_by_label("E-mail").fill("admin@example.org")
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Log in").click()
            await page.wait_for_load_state()
            for name, path in (("overview", "/"), ("job", f"/jobs/{job}"), ("site", f"/sites/{site}")):
                await page.goto(path)
                await page.wait_for_timeout(500)  # the live panel's first poll
                await page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                print(f"wrote {out / f'{name}.png'}")
            await browser.close()
    finally:
        await server.close()


async def main(out: Path) -> None:
    server = os.environ.get("DATABASE_URL")
    if not server:
        raise SystemExit("DATABASE_URL is not set: point it at a PostgreSQL server")
    url = await support.create_database(server, "pt_shots")  # with the schema applied
    try:
        job, site = await fill(url)
        await photograph(url, out, job, site)
    finally:
        await support.drop_database(server, url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "screenshots")
    folder = parser.parse_args().out
    folder.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(folder))
