"""The columns engine's claim reads each hit's time as exact microseconds since 1970."""

from __future__ import annotations

import datetime as dt
import random

import asyncpg

from aggregator.mail import frames
from aggregator.mail.rollup import EVER
from tests.support.hits import add_hits, add_job, hit

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def times() -> list[dt.datetime]:
    """Edges (1970's first microsecond, the last of 2105, odd fractions) and 2,000 random microseconds of 1970-2105."""
    rng = random.Random(13)
    last = (dt.datetime(2106, 1, 1, tzinfo=dt.UTC) - EPOCH) // dt.timedelta(microseconds=1) - 1
    edges = [1, 999_999, 1_000_001, 1_714_989_600_123_457, 4_102_444_799_999_999, last]
    return [EPOCH + dt.timedelta(microseconds=m) for m in edges + [rng.randrange(1, last) for _ in range(2_000)]]


class TestClaimTimes:
    async def test_exact_microseconds(self, conn: asyncpg.Connection) -> None:
        """2,006 opens at the times above, claimed as a frame: each one's microseconds as Python counts them."""
        job = await add_job(conn, "blind")
        when = times()
        await add_hits(conn, [hit("open", job, None, received_at=t) for t in when])
        claimed = await frames.fetch(conn, frames.CLAIM, job, 10_000, EPOCH, EVER)
        assert claimed.get_column("received_at").to_list() == sorted(frames.micros(t) for t in when)
