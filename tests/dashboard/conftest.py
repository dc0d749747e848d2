"""The dashboard on a real loopback socket against the test's own database, users and hand-built data."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from aggregator.config import AggregatorConfig
from aggregator.rollup import rollup_all
from pixeltrack.core.config import Secrets
from pixeltrack.core.websites import create_site
from pixeltrack.dashboard import accounts
from pixeltrack.dashboard.app import create_app
from pixeltrack.dashboard.config import DashboardConfig
from tests.conftest import TEST_SECRET
from tests.support.hits import add_hits, add_job, add_recipients, at, personal_hits, with_runs

ADMIN, VIEWER, PASSWORD = "admin@example.org", "viewer@example.org", "correct horse battery"
XSS = "<script>alert(1)</script>"
A, B = "https://shop.example/a", "https://shop.example/b?x=1&y=2"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
PAGE_VIEW = with_runs("""
INSERT INTO raw_hits (hit_id, received_at, kind, job_id, client_ip, user_agent, referer, accept_language, method,
                      url, title, visitor_id, screen)
VALUES ($1, $2, 'page', $3, '203.0.113.5', $4, $5, 'de-CH', 'POST', $6, $7, $8, '1280x720')
""")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def dash_config(db_url: str, tmp_path: Path, **overrides: object) -> DashboardConfig:
    """A dashboard config for tests: the test database, the test signing key, a private spool folder."""
    config = DashboardConfig(database_url=db_url, secrets=Secrets(TEST_SECRET), base_url="https://t.example",
                             spool_dir=tmp_path / "spool")
    return DashboardConfig(**{**config.__dict__, **overrides})  # type: ignore[arg-type]


@pytest.fixture
async def users(conn: asyncpg.Connection) -> None:
    """An admin and a viewer, both with PASSWORD."""
    await accounts.add_user(conn, ADMIN, PASSWORD, "admin")
    await accounts.add_user(conn, VIEWER, PASSWORD, "viewer")


@pytest.fixture
async def client(db_url: str, tmp_path: Path, users: None) -> AsyncIterator[TestClient]:
    """The dashboard app on 127.0.0.1 and a client with its own cookie jar."""
    server = TestServer(create_app(dash_config(db_url, tmp_path)), host="127.0.0.1")
    test_client = TestClient(server)
    await test_client.start_server()
    yield test_client
    await test_client.close()


def csrf_of(html: str) -> str:
    """The first CSRF token of a page's forms."""
    found = CSRF.search(html)
    assert found, "no form with a CSRF token"
    return found.group(1)


async def log_in(client: TestClient, email: str = ADMIN, password: str = PASSWORD) -> str:
    """Log in through the form; returns the session's CSRF token (from the overview page)."""
    form = await (await client.get("/login")).text()
    answer = await client.post("/login", data={"email": email, "password": password, "csrf_token": csrf_of(form),
                                               "next": "/"}, allow_redirects=False)
    assert answer.status == 302, await answer.text()
    return csrf_of(await (await client.get("/")).text())


async def mail_job(conn: asyncpg.Connection, name: str = "Spring sale") -> int:
    """A personal job of 4 recipients: r1 opens twice and clicks A, A, B; r2 opens (plus a prefetch HEAD)
    and a scanner prefetches B; r3 clicks A a day later with images blocked."""
    job = await add_job(conn, "personal", name=name)
    await add_recipients(conn, job, 4)
    await add_hits(conn, personal_hits(job, A, B, r3_click=60 * 26))
    return job


async def page_view(conn: asyncpg.Connection, site: int, minute: float, path: str, visitor: str,
                    title: str = "Home", referer: str | None = None) -> None:
    """One page view as the collector writes it."""
    await conn.execute(PAGE_VIEW, uuid.uuid4(), at(minute), site, CHROME, referer,
                       "https://shop.example" + path, title, visitor)


async def website(conn: asyncpg.Connection, title: str = "Home") -> int:
    """A personal site: va views / and /pricing, vb comes from a search and views /."""
    site = int((await create_site(conn, "shop.example", "personal"))["job_id"])
    await page_view(conn, site, 0, "/", "va", title)
    await page_view(conn, site, 5, "/pricing", "va", "Pricing", referer="https://shop.example/")
    await page_view(conn, site, 70, "/", "vb", title, referer="https://www.bing.com/search?q=cheap+shoes")
    return site


async def roll(conn: asyncpg.Connection) -> None:
    """Everything pending, rolled up as the aggregator does it."""
    await rollup_all(conn, AggregatorConfig(batch_size=1000))
