"""The loss check: the database must hold exactly the hits that were answered.

Rows are counted per category (kind, accepted or refused) for the run: the
jobs it made, plus refused hits (job 0) received since it started. In a
throwaway database that is exactly the run's traffic.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter

from loadtest.traffic import CATEGORIES
from pixeltrack.core import db

COUNT_HITS = """
SELECT kind || CASE WHEN reject_reason IS NULL THEN '' ELSE '/rejected' END AS category, count(*) AS n
FROM raw_hits
WHERE received_at >= $1 AND (job_id = ANY($2::bigint[]) OR job_id = 0)
GROUP BY 1"""


async def count_hits(url: str, since: dt.datetime, job_ids: list[int]) -> Counter[str]:
    """Rows in raw_hits per category for the run."""
    conn = await db.connect(url)
    try:
        rows = await conn.fetch(COUNT_HITS, since, job_ids)
    finally:
        await conn.close()
    return Counter({r["category"]: int(r["n"]) for r in rows})


async def settle(url: str, since: dt.datetime, job_ids: list[int], expected: int,
                 quiet: float = 3.0, limit: float = 60.0) -> Counter[str]:
    """Counts once they reach ``expected`` or stop changing for ``quiet`` seconds.

    For a collector someone else runs: it flushes every PIXELTRACK_FLUSH_INTERVAL,
    so its rows arrive a little after the answers.
    """
    deadline = time.monotonic() + limit
    last, changed = Counter[str](), time.monotonic()
    while True:
        found = await count_hits(url, since, job_ids)
        if sum(found.values()) >= expected:
            return found
        if found != last:
            last, changed = found, time.monotonic()
        if time.monotonic() - changed >= quiet or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(0.25)


def loss_line(expected: Counter[str], found: Counter[str]) -> tuple[str, bool]:
    """``loss: 0 of N``, or the difference per category; and whether it held exactly."""
    total = sum(expected.values())
    diffs = {c: found[c] - expected[c] for c in CATEGORIES if found[c] != expected[c]}
    if not diffs:
        return f"loss: 0 of {total} (database holds exactly the {total} answered hits)", True
    lost = sum(-d for d in diffs.values() if d < 0)
    detail = ", ".join(f"{c} {d:+d}" for c, d in diffs.items())
    extra = sum(d for d in diffs.values() if d > 0)
    note = f"; {extra} more rows than answers (requests that reached the collector unanswered?)" if extra else ""
    return f"loss: {lost} of {total} (database minus answered: {detail}{note})", False
