"""Reliable delivery: retries, dead letters, replays, leases, concurrency, and crashes that lose or double nothing."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import pytest

from aggregator.triggers.dispatch import CLAIM, backoff
from aggregator.triggers.outbox import scan
from aggregator.triggers.store import deliveries, replay
from tests.aggregator.triggers.flow import CFG, A, Receiver, at, dispatcher, make_trigger, raw, roll, scan_at
from tests.support.hits import add_hits, add_job, add_recipients


async def clicks_job(conn: asyncpg.Connection, url: str, clicks: int = 1) -> int:
    """A personal job whose recipients 1..clicks each click A once (a minute apart), and a click trigger."""
    job = await add_job(conn, "personal")
    await add_recipients(conn, job, clicks)
    await make_trigger(conn, job, "click", url)
    await add_hits(conn, [raw("click", job, r, 60 * r, link=A) for r in range(1, clicks + 1)])
    await roll(conn)
    await scan_at(conn, 60 * clicks + 300)
    return job


async def statuses(conn: asyncpg.Connection) -> list[tuple[str, int]]:
    """(status, attempts) of every delivery."""
    rows = await conn.fetch("SELECT status, attempts FROM trigger_events ORDER BY delivery_id")
    return [(r["status"], r["attempts"]) for r in rows]


class Killed(Exception):
    """Stands for an aggregator killed mid-scan."""


async def kill() -> None:
    raise Killed


class TestRetries:
    """A receiver that is away or failing gets the event once it answers 2xx, and never twice."""

    async def test_stopped_receiver(self, conn: asyncpg.Connection, db_url: str) -> None:
        """Connection refused: retried; delivered once the receiver is back; then nothing more."""
        receiver = Receiver()
        await clicks_job(conn, receiver.url)
        async with dispatcher(db_url) as d:
            await d.run_once()
            assert await statuses(conn) == [("pending", 1)]
            await receiver.start()
            try:
                await asyncio.sleep(0.2)  # the jittered backoff: at most 0.1 s
                await d.run_once()
                await asyncio.sleep(0.2)
                await d.run_once()
            finally:
                await receiver.stop()
        assert len(receiver.posts) == 1 and receiver.posts[0].verified()
        assert await statuses(conn) == [("delivered", 2)]

    async def test_server_error_then_ok(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """503 twice, then 200: three POSTs of the same event id, each attempt recorded."""
        await clicks_job(conn, receiver.url)
        receiver.status = 503
        async with dispatcher(db_url) as d:
            for status in (503, 503, 200):
                receiver.status = status
                await d.run_once()
                await asyncio.sleep(0.15)
        assert len({p.event["id"] for p in receiver.posts}) == 1 and len(receiver.posts) == 3
        rows, attempts = await deliveries(conn)
        assert [(r["status"], r["attempts"]) for r in rows] == [("delivered", 3)]
        assert [(a["ok"], a["http_status"], a["error"]) for a in attempts[rows[0]["delivery_id"]]] == [
            (False, 503, "HTTP 503"), (False, 503, "HTTP 503"), (True, 200, None)]  # fmt: skip

    async def test_redirect_not_followed(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """A 302 is not an acknowledgement, and its Location is never fetched."""
        await clicks_job(conn, receiver.url)
        receiver.status = 302
        async with dispatcher(db_url) as d:
            await d.run_once()
        assert len(receiver.posts) == 1
        assert await conn.fetchval("SELECT last_error FROM trigger_events") == "HTTP 302"

    async def test_timeout(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """A receiver slower than the timeout: the attempt fails and is retried."""
        await clicks_job(conn, receiver.url)
        receiver.delay = 1.0
        async with dispatcher(db_url, dataclasses.replace(CFG, timeout=0.3)) as d:
            await d.run_once()
        assert await conn.fetchval("SELECT last_error FROM trigger_events") == "no answer within 0.3 s"
        assert await statuses(conn) == [("pending", 1)]

    async def test_dead_letter_and_replay(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """Past its retry period a delivery is dead; a replay sends it again with the same event id."""
        receiver.status = 500
        job = await add_job(conn, "personal")
        await add_recipients(conn, job, 1)
        await make_trigger(conn, job, "click", receiver.url)
        await add_hits(conn, [raw("click", job, 1, 0, link=A)])
        await roll(conn)
        await scan(conn, dataclasses.replace(CFG, retry_for=0), now=at(300), idle=300)
        async with dispatcher(db_url) as d:
            await d.run_once()
            assert await statuses(conn) == [("dead", 1)]
            assert await d.run_once() == 0
            receiver.status = 200
            assert await replay(conn, await conn.fetchval("SELECT delivery_id FROM trigger_events"), 3600)
            await d.run_once()
        assert await statuses(conn) == [("delivered", 2)]
        assert receiver.posts[0].event["id"] == receiver.posts[1].event["id"]

    def test_backoff(self) -> None:
        """Doubling from the base, capped, jittered between half and all of it."""
        assert [backoff(n, 5, 3600, draw=1.0) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
        assert backoff(20, 5, 3600, draw=1.0) == 3600
        assert backoff(3, 5, 3600, draw=0.0) == 10


class TestSharedOutbox:
    """Several dispatchers share the outbox without sending anything twice."""

    async def test_two_dispatchers(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """Two dispatchers claiming at once, round after round: 20 events, 20 POSTs, 20 distinct ids."""
        await clicks_job(conn, receiver.url, clicks=20)
        claimed = []
        async with dispatcher(db_url) as one, dispatcher(db_url) as two:
            while not claimed or sum(claimed[-2:]):
                claimed += await asyncio.gather(one.run_once(), two.run_once())
        assert sum(claimed) == 20 and max(claimed) <= CFG.per_target
        assert len(receiver.posts) == 20 and len({p.event["id"] for p in receiver.posts}) == 20

    async def test_per_target_limit(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """per_target 2: a slow receiver never sees more than two requests at once."""
        await clicks_job(conn, receiver.url, clicks=8)
        receiver.delay = 0.3
        async with dispatcher(db_url, dataclasses.replace(CFG, per_target=2)) as d:
            while await d.run_once():
                pass
        assert (len(receiver.posts), receiver.most_in_flight) == (8, 2)

    async def test_lapsed_lease(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """A dispatcher that claims and dies: nobody sends until its lease lapses, then exactly once."""
        await clicks_job(conn, receiver.url)
        short = dataclasses.replace(CFG, lease=2.0)
        dead = await conn.fetch(CLAIM, await conn.fetchval("SELECT now()"), 10, 4, short.lease, "killed-owner")
        assert len(dead) == 1
        async with dispatcher(db_url, short) as d:
            assert await d.run_once() == 0
            await asyncio.sleep(2.1)
            assert await d.run_once() == 1
        assert len(receiver.posts) == 1


class TestCrash:
    """An aggregator killed between roll-up and dispatch loses and doubles nothing."""

    async def test_killed_mid_scan(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """Killed before the scan commits: no event and no watermark move; the next scan finds them once."""
        job = await add_job(conn, "personal")
        await add_recipients(conn, job, 3)
        await make_trigger(conn, job, "click", receiver.url)
        await add_hits(conn, [raw("click", job, r, r, link=A) for r in (1, 2, 3)])
        await roll(conn)
        before = await conn.fetchval("SELECT scanned_to FROM triggers")
        with pytest.raises(Killed):
            await scan_at(conn, 300, fault=kill)
        assert await conn.fetchval("SELECT count(*) FROM trigger_events") == 0
        assert await conn.fetchval("SELECT scanned_to FROM triggers") == before
        assert (await scan_at(conn, 300), await scan_at(conn, 360)) == (3, 0)
        async with dispatcher(db_url) as d:
            await d.run_once()
        assert sorted(p.event["data"]["recipient"] for p in receiver.posts) == [
            "r1@example.org", "r2@example.org", "r3@example.org"]  # fmt: skip

    async def test_killed_after_scan(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """Events committed, the dispatcher never ran: a new one delivers each once."""
        await clicks_job(conn, receiver.url, clicks=3)
        async with dispatcher(db_url) as d:
            assert (await d.run_once(), await d.run_once()) == (3, 0)
        assert len(receiver.posts) == 3 and len({p.event["id"] for p in receiver.posts}) == 3


class TestMetrics:
    """Sent, failed, retried, pending and the oldest pending age are exported."""

    async def test_counts(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        from aggregator.triggers.outbox import refresh_gauges

        await clicks_job(conn, receiver.url, clicks=2)
        receiver.status = 500
        async with dispatcher(db_url) as d:
            await d.run_once()
            await refresh_gauges(conn, d.metrics, at(600))
            text = d.metrics.render().decode()
        assert "pixeltrack_trigger_failed_total{reason=\"http_5xx\"} 2.0" in text
        assert "pixeltrack_trigger_retried_total 2.0" in text
        assert "pixeltrack_trigger_pending 2.0" in text
        assert "pixeltrack_trigger_oldest_pending_seconds 180.0" in text


class TestSendTimeCheck:
    """The address is checked again at send time, by the resolver the client connects with."""

    async def test_literal_address(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """A trigger to 127.0.0.1 made while private targets were allowed is not sent once they are not."""
        await clicks_job(conn, receiver.url)
        async with dispatcher(db_url, dataclasses.replace(CFG, allow_private=False)) as d:
            await d.run_once()
        assert receiver.posts == []
        assert "(loopback); only public addresses" in await conn.fetchval("SELECT last_error FROM trigger_events")

    async def test_resolved_name(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """localhost resolves to loopback: refused by the resolver, nothing connects."""
        await clicks_job(conn, receiver.url.replace("127.0.0.1", "localhost"))
        async with dispatcher(db_url, dataclasses.replace(CFG, allow_private=False)) as d:
            await d.run_once()
        assert receiver.posts == []
        assert "localhost resolves to" in await conn.fetchval("SELECT last_error FROM trigger_events")
