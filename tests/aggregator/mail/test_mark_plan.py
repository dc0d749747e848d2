"""The marking joins the batch with its raw rows by hash (or merge), never by a nested loop.

The hits of tracks that keep nothing per hit are deleted (DROP_ROLLED), the
others rewritten (MARK_ROLLED), each statement taking its tracks from the
batch. A day partition not analyzed yet looks like one row, and the track
filter like a hundredth of the batch; from those estimates the planner
scanned the batch once per raw row (630 us a hit in loadtest.bench_cost).
The plan is checked, not timed: each table read once, and the rows each
statement must touch, exactly.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import orjson

from aggregator.mail import queries
from tests.support.hits import with_runs

JOB = 7
HITS = 400  # every fourth personal, the others unique
OTHER, OTHER_HITS = 8, 20_000  # a job batched before JOB
RAW = with_runs("""
INSERT INTO raw_hits (hit_id, received_at, kind, job_id, recipient_id, method, user_agent)
SELECT gen_random_uuid(), $1::timestamptz + i * interval '1 ms', 'open', $2, i, 'GET', 'agent' FROM generate_series(1, $3) i
""")
BATCH = """
INSERT INTO rollup_batch (hit_id, received_at, job_id, kind, track, machine, unknown, recipient_id, profile)
SELECT hit_id, received_at, job_id, kind, CASE WHEN recipient_id % 4 = 0 THEN 'personal' ELSE 'unique' END,
       false, true, CASE WHEN recipient_id % 4 = 0 THEN recipient_id END, 1
FROM raw_hits WHERE job_id = $1
"""


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan, depth first."""
    return [plan, *(n for child in plan.get("Plans", []) for n in nodes(child))]


async def explained(conn: asyncpg.Connection, sql: str, *args: object) -> list[dict[str, Any]]:
    """The nodes of ``sql`` as it ran (EXPLAIN ANALYZE: it runs)."""
    return nodes(orjson.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args))[0]["Plan"])


async def marked(conn: asyncpg.Connection, jobs: tuple[int, ...]) -> list[tuple[list[dict[str, Any]], int]]:
    """``jobs``' raw hits (HITS of JOB, OTHER_HITS of OTHER), batched job after job and marked as the roll-up does:
    each of JOB's two statements' plan, with the rows it must touch."""
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    for job in jobs:
        await conn.execute(RAW, start, job, HITS if job == JOB else OTHER_HITS)
    first, last = start + dt.timedelta(milliseconds=1), start + dt.timedelta(milliseconds=HITS)
    plans = []
    async with conn.transaction():
        await conn.execute(queries.CREATE_BATCH)
        for job in jobs:
            await conn.execute(BATCH, job)
        await conn.execute("INSERT INTO rollup_profile (profile) VALUES (1)")
        await conn.execute(queries.ANALYZE_BATCH)
        await conn.execute(queries.NO_NESTED_LOOP)
        now = dt.datetime.now(dt.UTC)
        for sql, args, touched in ((queries.MARK_ROLLED, (now, JOB, first, last), HITS // 4),
                                   (queries.DROP_ROLLED, (JOB, first, last), HITS - HITS // 4)):
            plans.append((await explained(conn, sql, *args), touched))
        await conn.execute(queries.NESTED_LOOP)
        assert await conn.fetchval("SHOW enable_nestloop") == "on"
    return plans


async def test_rowless_hits_deleted_others_marked_without_a_nested_loop(conn: asyncpg.Connection) -> None:
    """300 unique hits deleted, 100 personal ones marked; no nested loop, the batch read once per statement."""
    for plan, touched in await marked(conn, (JOB,)):
        assert [n["Node Type"] for n in plan if n["Node Type"] == "Nested Loop"] == []
        batch = [n for n in plan if n.get("Relation Name") == "rollup_batch"]
        assert [(n["Actual Loops"], n["Actual Rows"]) for n in batch] == [(1, touched)]
    rows = await conn.fetch("SELECT recipient_id % 4 AS r, rolled_at IS NOT NULL AS rolled, user_agent FROM raw_hits")
    # The personal rows keep their own headers: the marking takes them from the raw row, not the batch.
    assert {tuple(r) for r in rows} == {(0, True, "agent")} and len(rows) == HITS // 4


async def test_a_job_reads_its_own_part_of_the_batch(conn: asyncpg.Connection) -> None:
    """A batch of 20,400 hits, 20,000 of another job first: each statement of job 7 looks at its own part.

    The batch's rows come job after job (the claim takes one job's hits after another), so the
    block-range index on job_id finds a job's rows in a few ranges; read whole, the batch was scanned
    once per job and statement (50 jobs: the marking 9.2-12.1 -> 6.2-6.5 us a hit of PostgreSQL's CPU).
    """
    for plan, touched in await marked(conn, (OTHER, JOB)):
        [batch] = [n for n in plan if n.get("Relation Name") == "rollup_batch"]
        looked = sum(batch.get(k, 0) for k in ("Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck"))
        assert batch["Actual Rows"] == touched
        assert (batch["Node Type"], looked < 2_000) == ("Bitmap Heap Scan", True), looked
    assert await conn.fetchval("SELECT count(*) FROM raw_hits WHERE job_id = $1", JOB) == HITS // 4
    assert await conn.fetchval("SELECT count(*) FROM raw_hits WHERE rolled_at IS NULL") == OTHER_HITS
