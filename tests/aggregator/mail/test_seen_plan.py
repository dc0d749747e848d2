"""Unique counting looks each of the batch's picks up by key, whatever unique_seen's statistics say.

A job whose rows came after unique_seen was last analyzed is estimated at
one row. Joined, the planner then put the job's unique_seen rows outside and
scanned all of seen_pick once for each of them (a 20,000-hit batch over
20,000 known rows: 31.6 s against 0.04 s by key). The plan is checked, not
timed: seen_pick is read once, unique_seen probed once per pick.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from aggregator.mail import queries

KNOWN = 300  # the job's rows in unique_seen, all picked again by the batch
FILL = """
INSERT INTO unique_seen (job_id, link_id, hash, scopes)
SELECT $1, 0, sha256(i::text::bytea), 1 FROM generate_series(1, $2) i
"""
PICK = "INSERT INTO seen_pick SELECT 2, 0, sha256(i::text::bytea), 3, 0 FROM generate_series(1, $1) i"


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan, depth first."""
    return [plan, *(n for child in plan.get("Plans", []) for n in nodes(child))]


async def test_a_job_newer_than_the_statistics_is_looked_up_by_key(conn: asyncpg.Connection) -> None:
    """seen_pick scanned once, one index probe of unique_seen a pick, every known row found with its new bit."""
    await conn.execute("ALTER TABLE unique_seen SET (autovacuum_enabled = false)")
    await conn.execute(FILL, 1, 2000)
    await conn.execute("ANALYZE unique_seen")  # job 2 has no rows yet: estimated at one
    await conn.execute(FILL, 2, KNOWN)
    async with conn.transaction():
        await conn.execute(queries.CREATE_BATCH)
        await conn.execute(PICK, KNOWN)
        explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {queries.SEEN_KNOWN}", 2)
        plan = nodes(orjson.loads(explained)[0]["Plan"])
        picks = [n for n in plan if n.get("Relation Name") == "seen_pick"]
        seen = [n for n in plan if n.get("Relation Name") == "unique_seen"]
        assert [(n["Node Type"], n["Actual Loops"]) for n in picks] == [("Seq Scan", 1)]
        assert [(n["Node Type"], n["Actual Loops"], n["Actual Rows"]) for n in seen] == [("Index Scan", KNOWN, 1)]
        rows = await conn.fetch("SELECT added, inferred, upgraded FROM seen_known")
        assert len(rows) == KNOWN
        assert {tuple(r) for r in rows} == {(2, 0, 0)}  # each lacked the click bit; no opener inferred or upgraded
