"""Batch invariance of the website roll-up: the same page views give the same rows however they are cut into batches.

Random visits to a personal site (visitor cookies), a unique site (salted
visitor keys; the day's salt fixed so keys compare) and a blind one: three
visitors and the cookie-less, three pages, search, social and internal
referrers, Googlebot now and then; in bursts of tenths of a second (views
of one instant too) and gaps of over 30 minutes, so sessions end and start
again. Rolled up in one batch and in batches of k, every table comes out the
same (session ids aside: an identity does not restart).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aggregator.enrich.enricher import Enricher, make_enricher
from aggregator.web.rollup import rollup_sites
from pixeltrack.core.websites import create_site
from tests.support.batches import AGENTS, empty, tables
from tests.support.hits import T0, with_runs

PAGE_VIEW = with_runs("""
INSERT INTO raw_hits (hit_id, received_at, kind, job_id, client_ip, user_agent, referer, accept_language, method,
                      url, title, visitor_id)
VALUES ($1, $2, 'page', $3, '203.0.113.5', $4, $5, 'de-CH', 'POST', $6, 'page', $7)
""")
MODES = ["personal", "unique", "blind"]
PAGES = ["https://shop.example/", "https://shop.example/sale", "https://shop.example/cart"]
REFERRERS = [None, "https://www.google.com/search?q=linen", "https://t.co/x", "https://shop.example/"]
BOT = AGENTS.index(("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", None))
view = st.tuples(st.integers(0, 2), st.integers(0, 20), st.integers(0, 3), st.sampled_from([0] * 9 + [BOT]))
# A visit: one visitor of one site, at a minute of the morning (gaps over 30 minutes come up).
visits = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["va", "vb", "vc", None]), st.integers(0, 150),
                            st.lists(view, min_size=1, max_size=5)), min_size=1, max_size=8)  # fmt: skip
FUZZ = settings(max_examples=25, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
Visits = list[tuple[int, str | None, int, list[tuple[int, int, int, int]]]]


async def setup(conn: asyncpg.Connection, drawn: Visits) -> None:
    """Empty every table, then the three sites (job ids 1-3), the day's salt and the page views."""
    await empty(conn)
    await conn.execute("SELECT setval(pg_get_serial_sequence('jobs', 'job_id'), 1, false)")
    for mode in MODES:
        await create_site(conn, f"{mode}.example", mode)
    await conn.execute("INSERT INTO site_salts (day, salt) VALUES ($1, $2)", T0.date(), b"s" * 32)
    n = 0
    for site, visitor, minute, views in drawn:
        for page, tenths, referrer, agent in views:
            n += 1
            at = T0 + dt.timedelta(minutes=minute, milliseconds=tenths * 100)
            await conn.execute(PAGE_VIEW, uuid.UUID(int=10_000 - n), at, site + 1, AGENTS[agent][0], REFERRERS[referrer],
                               PAGES[page], visitor)  # fmt: skip


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    """The production enricher, default rules."""
    return make_enricher()  # type: ignore[return-value]


async def rolled(conn: asyncpg.Connection, drawn: Visits, enricher: Enricher, batch: int) -> dict[str, Sequence[Any]]:
    """Every table after rolling ``drawn`` up in batches of ``batch``."""
    await setup(conn, drawn)
    await rollup_sites(conn, batch, enricher, today=T0.date())
    return await tables(conn, frozenset({"session_id"}))


class TestSiteBatchInvariance:
    """One batch or batches of k: the same rows in every table."""

    @FUZZ
    @given(drawn=visits, k=st.integers(1, 5))
    @example(drawn=[(0, "va", 0, [(0, 0, 0, 0), (0, 0, 1, 0)])], k=1)  # one instant, two sources: which enters
    async def test_same_tables(self, conn: asyncpg.Connection, enricher: Enricher, drawn: Visits, k: int) -> None:
        """Page views, visitors, sessions, entries, sources: batches of k leave what one batch leaves."""
        assert await rolled(conn, drawn, enricher, k) == await rolled(conn, drawn, enricher, 100_000)
