"""The claim reads a job's hits in the primary key's order: no sort.

Both claims end in ``ORDER BY received_at LIMIT $2``, which the key
(job_id, received_at, hit_id) answers as it is read. The columns claim
selects the time as microseconds under the same name, and an ORDER BY that
names an output column sorts by the output: it sorted every claimed row of a
job by the computed number, spilling to disk past work_mem (a job of 66,868
hits: 140 ms against 108 in psql, PostgreSQL 15). The plan is checked, not
timed, with only index scans allowed (on a test's few rows PostgreSQL may
rightly prefer a scan and a sort); the rows still come in time order.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from aggregator.mail import frames, queries
from aggregator.mail.rollup import EVER
from tests.aggregator.mail.test_mark_plan import OTHER, OTHER_HITS, RAW, explained

JOB, HITS = 7, 3_000


async def test_both_claims_read_the_key_in_order_without_sorting(conn: asyncpg.Connection) -> None:
    """3,000 hits of a job over two day partitions, beside 20,000 of another: read by the key, each claim is a
    merge of index scans with no Sort node."""
    start = dt.datetime.now(dt.UTC).replace(hour=23, minute=59, second=59, microsecond=0) - dt.timedelta(days=1)
    await conn.execute(RAW, start, JOB, HITS)  # 1 ms apart: the last 2 s go into the next day
    await conn.execute(RAW, start, OTHER, OTHER_HITS)
    await conn.execute("ANALYZE raw_hits")
    for sql in (frames.CLAIM, queries.CLAIM):
        async with conn.transaction():  # on so few rows a scan and a sort may cost less: the key's plan, if any
            await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            plan = await explained(conn, sql, JOB, HITS, start, EVER)
        assert [n["Node Type"] for n in plan if "Sort" in n["Node Type"] and n["Node Type"] != "Merge Append"] == []
        scans = [n for n in plan if n["Node Type"] == "Index Scan"]
        assert all(n["Index Name"].endswith("_pkey") for n in scans)
        assert sum(n["Actual Rows"] for n in scans) == HITS
    got = await frames.fetch(conn, frames.CLAIM, JOB, HITS, start, EVER)
    times = got.get_column("received_at").to_list()
    assert times == sorted(times) and len(set(times)) == HITS
    assert times[0] == frames.micros(start + dt.timedelta(milliseconds=1))
