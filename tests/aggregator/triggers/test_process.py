"""A real aggregator process killed between roll-up and dispatch: a second one delivers every event, once."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
from pathlib import Path

import asyncpg
import pytest

from tests.aggregator.triggers.flow import SECRET, A, Receiver, make_trigger
from tests.support.hits import add_hits, add_job, add_recipients, hit
from tests.support.process import ROOT, start, wait_exit

CLICKS = 5


def aggregator_env(db_url: str) -> dict[str, str]:
    """Short hold-back, interval and retries, so the test runs in seconds."""
    return {
        "DATABASE_URL": db_url, "PIXELTRACK_ROLLUP_INTERVAL": "1", "PIXELTRACK_ROLLUP_HOLD": "0",
        "PIXELTRACK_TRIGGER_HOLD": "0",
        "PIXELTRACK_TRIGGER_SCAN_INTERVAL": "0.2", "PIXELTRACK_TRIGGER_ALLOW_PRIVATE": "1",
        "PIXELTRACK_TRIGGER_RETRY_BASE": "0.2", "PIXELTRACK_TRIGGER_RETRY_MAX": "0.4",
        "PIXELTRACK_TRIGGER_TIMEOUT": "1", "PIXELTRACK_TRIGGER_LEASE": "2", "PIXELTRACK_TRIGGER_POLL": "0.05",
    }  # fmt: skip


async def wait_for(conn: asyncpg.Connection, sql: str, want: int, limit: float = 60.0) -> None:
    """Until ``sql`` (a count) gives ``want``."""
    deadline = asyncio.get_running_loop().time() + limit
    while await conn.fetchval(sql) != want:
        assert asyncio.get_running_loop().time() < deadline, f"{sql} never reached {want}"
        await asyncio.sleep(0.1)


@pytest.mark.slow
class TestKilledAggregator:
    """SIGKILL after the events are in the outbox, the receiver away: nothing lost, nothing doubled."""

    async def test_kill_and_restart(self, conn: asyncpg.Connection, db_url: str, tmp_path: Path) -> None:
        receiver = Receiver()
        job = await add_job(conn, "personal")
        await add_recipients(conn, job, CLICKS)
        await make_trigger(conn, job, "click", receiver.url)
        now = dt.datetime.now(dt.UTC)
        await add_hits(conn, [hit("click", job, r, link=A, received_at=now - dt.timedelta(seconds=60 - 5 * r))
                              for r in range(1, CLICKS + 1)])  # fmt: skip
        env = aggregator_env(db_url)
        first = start(["-m", "aggregator"], env, ROOT, tmp_path / "first.log")
        try:
            await wait_for(conn, "SELECT count(*) FROM trigger_events", CLICKS)
        finally:
            first.send_signal(signal.SIGKILL)
            await wait_exit(first)
        assert await conn.fetchval("SELECT count(*) FROM trigger_events WHERE status = 'delivered'") == 0
        await receiver.start()
        second = start(["-m", "aggregator"], env, ROOT, tmp_path / "second.log")
        try:
            await wait_for(conn, "SELECT count(*) FROM trigger_events WHERE status = 'delivered'", CLICKS)
            await asyncio.sleep(1.0)  # long enough for a second send of anything, were there one
        finally:
            second.send_signal(signal.SIGTERM)
            assert await wait_exit(second) == 0
            await receiver.stop()
        assert len(receiver.posts) == CLICKS
        assert len({p.event["id"] for p in receiver.posts}) == CLICKS
        assert all(p.verified(SECRET) for p in receiver.posts)
        assert sorted(p.event["data"]["recipient"] for p in receiver.posts) == [
            f"r{r}@example.org" for r in range(1, CLICKS + 1)]  # fmt: skip
        assert await conn.fetchval("SELECT count(*) FROM trigger_events") == CLICKS
        assert await conn.fetchval("SELECT total FROM report_job_totals WHERE job_id = $1 AND kind = 'click'", job) \
            == CLICKS  # fmt: skip
