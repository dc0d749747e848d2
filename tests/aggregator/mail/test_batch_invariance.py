"""Batch invariance: the same hits give the same stored rows however the roll-up cuts them into batches.

Random hit sequences (tests/support/batches.py) over five mail jobs
(personal with an erased recipient, permission_personal with consent given
mid-way, anonymous with profiles, unique, blind) and rejected hits: opens,
clicks on three links, document pages; browsers with and without a
language, mail proxies, crawlers, Outlook's link check, Apple's relay, a
gateway network, HEAD requests; in bursts of tenths of a second. Each
sequence is rolled up in one batch, in batches of k hits, and by two
aggregators at once with small batches; every table must come out the same,
row for row, the raw hits' verdicts included.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aggregator.config import AggregatorConfig
from aggregator.enrich.enricher import Enricher, make_enricher
from aggregator.mail.rollup import rollup
from pixeltrack.core import db
from tests.support.batches import AGENTS, NEW_YEAR, Drawn, burst, bursts, raw_hits, setup, tables
from tests.support.hits import T0

NO_AGENT = AGENTS.index((None, None))
GMAIL = next(i for i, (ua, _) in enumerate(AGENTS) if ua and "GoogleImageProxy" in ua)
# Each fix at least once, whatever the random draws, cut into batches of one hit: the open
# that clears a click in an earlier batch, and in a later one; a burst cut in two; a pre-load
# burst cut after its first page; two pages of one instant; reading seconds of three readers
# (1.0, 1.2 and 1.1 s, in that order) summed in another (the job's hashes order the readers 3, 1, 2):
# as floats, 1.0 + 1.2 + 1.1 = 3.3000000000000003 but 1.1 + 1.0 + 1.2 = 3.3; (at New Year) an
# anonymous recipient opens (a proxy) at 18-24 and clicks at 25-34, in the cell of each scope's first hit;
# a reader of a permission_personal job views a page before their consent and again once it is in force
# (60 s later): only the second view is theirs (doc_reader_pages), its 60 s before it the page's alone;
# (at New Year) an anonymous recipient opens with no agent (unknown, not a machine) at 18-24, then in a
# browser at 25-34: their first open's cell is 18-24, their first recognised open's 25-34.
CASES = [
    [burst("permission_personal", ("open", 0, 1, 0, 0), ("click", 0, 1, NO_AGENT, 5))],
    [burst("anonymous", ("click", 0, 1, NO_AGENT, 0), ("open", 0, 1, 3, 20))],
    [burst("unique", ("click", 0, 1, 0, 0), ("click", 1, 1, 0, 8))],
    [burst("personal", ("doc", 0, 1, 0, 0), ("doc", 0, 2, 0, 15), ("doc", 0, 3, 0, 18))],
    [burst("unique", ("doc", 0, 2, 0, 0), ("doc", 0, 1, 0, 0), ("doc", 0, 3, 0, 30))],
    [burst("anonymous", ("doc", 0, 1, 0, 0), ("doc", 0, 2, 0, 10)),
     burst("anonymous", ("doc", 0, 1, 0, 1), ("doc", 0, 2, 0, 13), rid=2),
     burst("anonymous", ("doc", 0, 1, 0, 3), ("doc", 0, 2, 0, 14), rid=3)],
    [burst("anonymous", ("open", 0, 1, GMAIL, 35), ("click", 0, 1, 0, 55), rid=2, start=11)],
    [burst("permission_personal", ("doc", 0, 1, 0, 0), rid=2, start=0),
     burst("permission_personal", ("doc", 0, 1, 0, 0), rid=2, start=12)],
    [burst("anonymous", ("open", 0, 1, NO_AGENT, 35), ("open", 0, 1, 0, 55), rid=2, start=11)],
    # A click with no agent (no browser) and its recipient's open exactly scanner_open_ahead (10 s) after it, in
    # time, and 10.1 s after it, too late: the open rule's edge, in the batch and outside it.
    [burst("personal", ("click", 0, 1, NO_AGENT, 0), ("open", 0, 1, 0, 100))],
    [burst("personal", ("click", 0, 1, NO_AGENT, 0), ("open", 0, 1, 0, 101))],
]  # fmt: skip
# The batches here go on columns whatever their size (the default, "auto", takes small ones hit by hit):
# TestEngines ties the per-hit path to the columns one, batch for batch.
COLUMNS = "columns"
FUZZ = settings(max_examples=50, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip


@pytest.fixture
async def pair(db_url: str) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    """Two connections to the test's database: two aggregators."""
    first, second = await db.connect(db_url), await db.connect(db_url)
    yield first, second
    await first.close()
    await second.close()


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    """The production enricher, default rules."""
    return make_enricher()  # type: ignore[return-value]


class TestBatchInvariance:
    """One batch, batches of k, two aggregators at once: the same rows in every table."""

    @FUZZ
    @given(drawn=bursts, k=st.integers(1, 6), k2=st.integers(1, 4), new_year=st.booleans())
    @example(drawn=CASES[0], k=1, k2=1, new_year=False)
    @example(drawn=CASES[1], k=1, k2=1, new_year=False)
    @example(drawn=CASES[2], k=1, k2=1, new_year=False)
    @example(drawn=CASES[3], k=1, k2=1, new_year=False)
    @example(drawn=CASES[4], k=1, k2=1, new_year=False)
    @example(drawn=CASES[5], k=1, k2=1, new_year=False)
    @example(drawn=CASES[6], k=1, k2=1, new_year=True)
    @example(drawn=CASES[7], k=1, k2=1, new_year=False)
    @example(drawn=CASES[8], k=1, k2=1, new_year=True)
    @example(drawn=CASES[9], k=1, k2=1, new_year=False)
    @example(drawn=CASES[10], k=1, k2=1, new_year=False)
    async def test_same_tables(self, pair: tuple[asyncpg.Connection, asyncpg.Connection], enricher: Enricher,
                               drawn: Drawn, k: int, k2: int, new_year: bool) -> None:  # fmt: skip
        """Batches of k, and two aggregators with batches of k2 and k2 + 1, leave the rows one batch leaves."""
        conn, other = pair
        hits = raw_hits(drawn, base=NEW_YEAR if new_year else T0)
        await setup(conn, hits)
        stats = await rollup(conn, AggregatorConfig(batch_size=100_000, engine=COLUMNS), enricher)
        assert (stats.hits, stats.batches) == (len(hits), 1)
        whole = await tables(conn)
        await setup(conn, hits)
        await rollup(conn, AggregatorConfig(batch_size=k, engine=COLUMNS), enricher)
        assert await tables(conn) == whole
        await setup(conn, hits)
        async with asyncio.TaskGroup() as group:  # a failing one stops the other: no run outlives the example
            group.create_task(rollup(conn, AggregatorConfig(batch_size=k2, engine=COLUMNS), enricher))
            group.create_task(rollup(other, AggregatorConfig(batch_size=k2 + 1, engine=COLUMNS), enricher))
        assert await tables(conn) == whole


class TestEngines:
    """The batch on columns (aggregator.mail.frames) and hit by hit: the same rows in every table."""

    @FUZZ
    @given(drawn=bursts, k=st.integers(1, 6), new_year=st.booleans())
    @example(drawn=CASES[0], k=1, new_year=False)
    @example(drawn=CASES[2], k=2, new_year=False)
    @example(drawn=CASES[5], k=6, new_year=False)
    @example(drawn=CASES[6], k=1, new_year=True)
    @example(drawn=CASES[7], k=1, new_year=False)
    @example(drawn=CASES[8], k=1, new_year=True)
    @example(drawn=CASES[9], k=1, new_year=False)
    @example(drawn=CASES[10], k=1, new_year=False)
    async def test_same_tables(self, pair: tuple[asyncpg.Connection, asyncpg.Connection], enricher: Enricher,
                               drawn: Drawn, k: int, new_year: bool) -> None:  # fmt: skip
        """One batch and batches of k, each engine: every table as the per-hit engine leaves it, row for row."""
        conn, _ = pair
        hits = raw_hits(drawn, base=NEW_YEAR if new_year else T0)
        for size in (100_000, k):
            await setup(conn, hits)
            await rollup(conn, AggregatorConfig(batch_size=size, engine="hits"), enricher)
            by_hit = await tables(conn)
            await setup(conn, hits)
            stats = await rollup(conn, AggregatorConfig(batch_size=size, engine="columns"), enricher)
            assert stats.hits == len(hits)
            assert await tables(conn) == by_hit

    async def test_hostile_values(self, pair: tuple[asyncpg.Connection, asyncpg.Connection],
                                  enricher: Enricher) -> None:  # fmt: skip
        """Headers and links with quotes, commas, line breaks, backslashes, the CSV's NULL text and its field
        separator (the unit separator), an IPv6 address, an unknown job, an address that is no address, and a
        recipient's gender and zip of the same kind: both engines leave the same tables, and the texts come through
        as they were."""
        odd = ['"quoted", with a comma\nand a line break', "\\N", "back\\slash\ttab", "", "ünïcödé ✓ \u2028",
               "unit\x1fseparator, \x1f\"\x1f"]  # fmt: skip
        rows: list[tuple[object, ...]] = []
        for n, text in enumerate(odd):
            at = T0 + dt.timedelta(seconds=n * 3)
            link = f'https://shop.example/{n}?q="{text}",x'
            for job, rid in ((1, 1), (2, 1), (3, 2), (4, 1), (5, None), (99, 1)):
                for kind in ("open", "click", "doc"):
                    rows.append((uuid.UUID(int=len(rows) + 1), at + dt.timedelta(milliseconds=len(rows)), kind, job,
                                 rid, link if kind == "click" else None, 1 if kind == "doc" else None,
                                 "2001:db8:85a3::8a2e:370:7334" if n % 2 else "203.0.113.9", text, text, text, "GET",
                                 False, None))  # fmt: skip
        gender, zip_code = 'x\x1f"y",\nz', "\\N"  # the anonymous job's recipient 2, read as a frame on columns
        conn = pair[0]
        for engine in ("hits", "columns"):
            await setup(conn, rows)
            await conn.execute("UPDATE recipients SET gender = $1, zip = $2 WHERE job_id = 3 AND recipient_id = 2",
                               gender, zip_code)  # fmt: skip
            await rollup(conn, AggregatorConfig(engine=engine), enricher)
            if engine == "hits":
                by_hit = await tables(conn)
        assert await tables(conn) == by_hit
        cells = {(r["gender"], r["zip"]) for r in await conn.fetch("SELECT gender, zip FROM report_demographics")}
        assert (gender, zip_code) in cells
        kept = {r["user_agent"] for r in await conn.fetch("SELECT user_agent FROM raw_hits WHERE job_id = 1")}
        assert kept == set(odd)  # the personal hits keep their agents, byte for byte
        links = {r["url"] for r in await conn.fetch("SELECT url FROM report_links")}
        assert links == {f'https://shop.example/{n}?q="{text}",x' for n, text in enumerate(odd)}

    async def test_auto(self, pair: tuple[asyncpg.Connection, asyncpg.Connection], enricher: Enricher) -> None:
        """"auto" builds a batch of columns_from hits or more on columns and a smaller one hit by hit: the same
        tables as the per-hit engine either way."""
        conn, _ = pair
        hits = raw_hits(CASES[5])  # six document views: a batch of four, then one of two
        assert len(hits) == 6
        await setup(conn, hits)
        await rollup(conn, AggregatorConfig(engine="hits"), enricher)
        by_hit = await tables(conn)
        await setup(conn, hits)
        stats = await rollup(conn, AggregatorConfig(batch_size=4, engine="auto", columns_from=3), enricher)
        assert (stats.hits, stats.batches, stats.columns) == (6, 2, 1)
        assert await tables(conn) == by_hit
        await setup(conn, hits)
        stats = await rollup(conn, AggregatorConfig(batch_size=4, engine="auto"), enricher)  # 20,000: never here
        assert (stats.hits, stats.batches, stats.columns) == (6, 2, 0)
        assert await tables(conn) == by_hit
