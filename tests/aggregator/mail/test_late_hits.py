"""Late hits (received before hits already rolled up, arriving after them) are only ever added.

A late hit is judged with what is known when it comes; nothing merged before
changes: no count goes down, no rolled-up hit's verdict changes. One figure
moves by design: ``inferred`` (openers known only from a click) drops when
their open comes, late or not, while the unique openers stay; and a page's
``furthest`` (readers whose furthest page it is) moves when a reader gets
further, while ``reached`` (its sum from that page on) only grows.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aggregator.config import AggregatorConfig
from aggregator.enrich.enricher import Enricher, make_enricher
from aggregator.mail.rollup import rollup
from tests.support.batches import AGENTS, Drawn, burst, bursts, raw_hits, setup
from tests.support.hits import add_hits

# unique_seen: a scope once counted stays (`scopes` keeps every bit it had, _kept); an
# inferred opener may turn plain, as the inferred totals move.
MOVING = {("report_job_totals", "inferred"), ("report_job_totals", "inferred_recognised"), ("doc_pages", "furthest"),
          ("unique_seen", "inferred")}  # fmt: skip
COUNTED = """
SELECT c.relname, array_agg(a.attname ORDER BY a.attnum) FILTER (WHERE a.attnum = ANY(i.indkey)) AS key,
       array_agg(a.attname ORDER BY a.attnum) FILTER (WHERE NOT a.attnum = ANY(i.indkey)
                                                      AND a.atttypid IN ('bigint'::regtype, 'integer'::regtype,
                                                                         'smallint'::regtype,
                                                                         'double precision'::regtype)) AS counts
FROM pg_class c JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relnamespace = 'public'::regnamespace
  AND (c.relname LIKE 'report\\_%' OR c.relname IN ('job_machine', 'doc_pages', 'doc_page_seconds',
                                                    'doc_reader_pages', 'unique_seen'))
GROUP BY c.relname ORDER BY c.relname
"""
VERDICTS = "SELECT hit_id, traffic, machine_reason FROM raw_hits WHERE rolled_at IS NOT NULL"
NO_AGENT = AGENTS.index((None, None))
LATE = settings(max_examples=15, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip


def _kept(table: str, column: str, before: Any, after: Any) -> bool:
    """A count did not fall; a bit set of unique_seen lost no bit (a lost bit and a higher gained one is not kept)."""
    if (table, column) == ("unique_seen", "scopes"):
        return before & after == before
    return bool(after >= before)


async def figures(conn: asyncpg.Connection) -> dict[tuple[str, tuple[Any, ...]], dict[str, Any]]:
    """Every count of the report tables, by table and key."""
    out = {}
    for t in await conn.fetch(COUNTED):
        columns = [*t["key"], *(t["counts"] or [])]
        for row in await conn.fetch(f'SELECT {", ".join(columns)} FROM "{t["relname"]}"'):
            out[(t["relname"], tuple(row[c] for c in t["key"]))] = {c: row[c] for c in t["counts"] or []}
    return out


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    """The production enricher, default rules."""
    return make_enricher()  # type: ignore[return-value]


class TestLateHitsAreAdded:
    """Rolled up, then hits from amid the rolled ones: every count stays or grows, every verdict stays."""

    @LATE
    @given(first=bursts, late=bursts, k=st.integers(1, 6))
    @example(  # an open after its click was judged without one; a click amid a human pair on two links
        first=[burst("unique", ("click", 0, 1, NO_AGENT, 0), ("click", 1, 1, 0, 25))],
        late=[burst("unique", ("open", 0, 1, 0, 1), ("click", 2, 1, 0, 12))], k=1,
    )  # fmt: skip
    @example(  # a page view a moment after a reader's last: that last view stays a view
        first=[burst("anonymous", ("doc", 0, 1, 0, 0), ("doc", 0, 2, 0, 20))],
        late=[burst("anonymous", ("doc", 0, 3, 0, 23), ("doc", 0, 1, 0, 10))], k=1,
    )  # fmt: skip
    async def test_only_added(self, conn: asyncpg.Connection, enricher: Enricher, first: Drawn, late: Drawn,
                              k: int) -> None:  # fmt: skip
        """No figure merged before goes down (but MOVING), no verdict merged before changes."""
        before_hits = raw_hits(first)
        await setup(conn, before_hits)
        await rollup(conn, AggregatorConfig(batch_size=k), enricher)
        before, verdicts = await figures(conn), {tuple(r) for r in await conn.fetch(VERDICTS)}
        await add_hits(conn, raw_hits(late, first=len(before_hits) + 1))
        await rollup(conn, AggregatorConfig(batch_size=k), enricher)
        after = await figures(conn)
        assert verdicts <= {tuple(r) for r in await conn.fetch(VERDICTS)}
        for (table, key), counts in before.items():
            assert (table, key) in after
            lower = {c: (v, after[(table, key)][c]) for c, v in counts.items()
                     if (table, c) not in MOVING and not _kept(table, c, v, after[(table, key)][c])}  # fmt: skip
            assert not lower, (table, key, lower)
