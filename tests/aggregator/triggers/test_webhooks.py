"""Webhooks end to end: real hits, the real enrichment, a real receiver; one signed POST per human event."""

from __future__ import annotations

import asyncpg

from tests.aggregator.triggers.flow import (
    APPLE_IP,
    APPLE_MPP,
    GMAIL_IP,
    GMAIL_PROXY,
    A,
    B,
    Receiver,
    at,
    dispatcher,
    make_trigger,
    raw,
    roll,
    scan_at,
)
from tests.support.hits import add_hits, add_job, add_recipients


async def mixed_job(conn: asyncpg.Connection) -> int:
    """r1 opens twice (Chrome); r2's first open is Gmail's proxy, a human one follows; r3 an Apple MPP
    pre-fetch; r4 a HEAD; r5 a scanner clicking A and B within half a second; r6 clicks A."""
    job = await add_job(conn, "personal")
    await add_recipients(conn, job, 6)
    await add_hits(conn, [
        raw("open", job, 1, 0), raw("open", job, 1, 30),
        raw("open", job, 2, 5, ua=GMAIL_PROXY, ip=GMAIL_IP), raw("open", job, 2, 90),
        raw("open", job, 3, 6, ua=APPLE_MPP, ip=APPLE_IP),
        raw("open", job, 4, 7, method="HEAD", prefetch=True),
        raw("open", job, 5, 8), raw("click", job, 5, 10.0, link=A), raw("click", job, 5, 10.5, link=B),
        raw("click", job, 6, 60, link=A),
    ])  # fmt: skip
    return job


class TestOnePostPerHumanEvent:
    """Exactly one signed, verifiable POST per human event; none for proxies, MPP, HEAD or a scanner."""

    async def test_first_opens(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """r1's, r5's and r2's first human opens (r2's after the Gmail proxy's): three POSTs; r3, r4 none."""
        job = await mixed_job(conn)
        await make_trigger(conn, job, "open.first", receiver.url)
        await roll(conn)
        assert await scan_at(conn, 300) == 3
        async with dispatcher(db_url) as d:
            assert await d.run_once() == 3
        assert all(p.verified() for p in receiver.posts)
        events = sorted((p.event["data"]["time"], p.event["data"]["recipient"]) for p in receiver.posts)
        assert events == [(at(0).isoformat(), "r1@example.org"), (at(8).isoformat(), "r5@example.org"),
                          (at(90).isoformat(), "r2@example.org")]  # fmt: skip
        assert receiver.types() == ["open.first"] * 3

    async def test_clicks(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """Only r6's click on A: the scanner's two clicks raise nothing."""
        job = await mixed_job(conn)
        await make_trigger(conn, job, "click", receiver.url)
        await roll(conn)
        await scan_at(conn, 300)
        async with dispatcher(db_url) as d:
            await d.run_once()
        [post] = receiver.posts
        assert post.verified()
        event = post.event
        assert (event["type"], event["job"]["id"], event["job"]["mode"]) == ("click", job, "personal")
        assert {k: event["data"][k] for k in ("recipient", "link", "device")} == {
            "recipient": "r6@example.org", "link": A, "device": "desktop"}  # fmt: skip

    async def test_payload_keys(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """id (also in the header), type, created, trigger, job and data: who, link, when, device, client, country."""
        job = await mixed_job(conn)
        trigger = await make_trigger(conn, job, "click", receiver.url)
        await roll(conn)
        await scan_at(conn, 300)
        async with dispatcher(db_url) as d:
            await d.run_once()
        event = receiver.posts[0].event
        assert set(event) == {"id", "type", "created", "trigger", "job", "data"}
        assert event["trigger"] == trigger
        assert set(event["data"]) == {"recipient", "time", "device", "mail_client", "country", "link"}

    async def test_nothing_twice(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """Scanning and dispatching again sends nothing more."""
        job = await mixed_job(conn)
        await make_trigger(conn, job, "open.first", receiver.url)
        await roll(conn)
        assert (await scan_at(conn, 300), await scan_at(conn, 400), await scan_at(conn, 500)) == (3, 0, 0)
        async with dispatcher(db_url) as d:
            assert (await d.run_once(), await d.run_once()) == (3, 0)
        assert len(receiver.posts) == 3

    async def test_link_filter(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """--link B: r6's click on A does not match; a prefix matches both links."""
        job = await mixed_job(conn)
        await make_trigger(conn, job, "click", receiver.url, link=B)
        await make_trigger(conn, job, "click", receiver.url, link="https://shop.example/*")
        await roll(conn)
        assert await scan_at(conn, 300) == 1


class TestHoldBack:
    """An event waits for its hit's verdict to settle: the hold-back, and every earlier hit rolled up."""

    async def test_not_before_the_hold(self, conn: asyncpg.Connection) -> None:
        """A click at 60 s: nothing at 170 s (110 s old), the event at 181 s."""
        job = await mixed_job(conn)
        await make_trigger(conn, job, "click", "http://127.0.0.1:9/hook")
        await roll(conn)
        assert (await scan_at(conn, 170), await scan_at(conn, 181)) == (0, 1)

    async def test_unrolled_hit_holds_the_scan(self, conn: asyncpg.Connection) -> None:
        """A late hit from before the click, not yet rolled up, holds the scan back until it is."""
        job = await mixed_job(conn)
        await make_trigger(conn, job, "click", "http://127.0.0.1:9/hook")
        await roll(conn)
        await add_hits(conn, [raw("open", job, 6, 40)])
        assert await scan_at(conn, 600) == 0
        await roll(conn)
        assert await scan_at(conn, 600) == 1

    async def test_burst_split_between_roll_ups(self, conn: asyncpg.Connection) -> None:
        """Two links clicked 0.8 s apart, rolled up separately: no event.

        The second click, rolled up later, is judged with the first (kept in
        recent_clicks): machine. The first, merged before the second arrived,
        stays human (a verdict merged is never changed); the trigger's own
        burst check over the raw hits still leaves both out."""
        job = await add_job(conn, "personal")
        await add_recipients(conn, job, 1)
        await make_trigger(conn, job, "click", "http://127.0.0.1:9/hook")
        await add_hits(conn, [raw("open", job, 1, 0), raw("click", job, 1, 100.0, link=A)])
        await roll(conn)
        await add_hits(conn, [raw("click", job, 1, 100.8, link=B)])
        await roll(conn)
        verdicts = await conn.fetch("SELECT traffic FROM raw_hits WHERE kind = 'click' ORDER BY received_at")
        assert [r["traffic"] for r in verdicts] == ["human", "machine"]
        assert await scan_at(conn, 600) == 0

    async def test_late_hit_within_lookback(self, conn: asyncpg.Connection) -> None:
        """A click that reaches the database after the scan passed its time still raises its event, once."""
        job = await mixed_job(conn)
        await make_trigger(conn, job, "click", "http://127.0.0.1:9/hook")
        await roll(conn)
        assert await scan_at(conn, 600) == 1
        await add_hits(conn, [raw("click", job, 1, 200, link=B)])
        await roll(conn)
        assert (await scan_at(conn, 660), await scan_at(conn, 720)) == (1, 0)


class TestModes:
    """Never beyond the mode: identity only where the job keeps it."""

    async def test_permission_job(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """r1 consented, r2 did not: one POST, r1's; r2 appears nowhere."""
        job = await add_job(conn, "permission_personal")
        await add_recipients(conn, job, 1, consent=True)
        await add_recipients(conn, job, 1, first=2)
        await make_trigger(conn, job, "click", receiver.url)
        await add_hits(conn, [raw("click", job, 1, 0, link=A), raw("click", job, 2, 30, link=A)])
        await roll(conn)
        await scan_at(conn, 300)
        async with dispatcher(db_url) as d:
            await d.run_once()
        [post] = receiver.posts
        assert post.event["data"]["recipient"] == "r1@example.org"
        assert b"r2@" not in post.body

    async def test_unique_threshold(self, conn: asyncpg.Connection, db_url: str, receiver: Receiver) -> None:
        """A unique job reaching 2 unique human openers (a Gmail proxy open aside): counts only, once."""
        job = await add_job(conn, "unique")
        await add_recipients(conn, job, 3)
        await make_trigger(conn, job, "job.threshold", receiver.url, count=2)
        await add_hits(conn, [raw("open", job, 1, 0), raw("open", job, 2, 1, ua=GMAIL_PROXY, ip=GMAIL_IP)])
        await roll(conn)
        assert await scan_at(conn, 300) == 0
        await add_hits(conn, [raw("open", job, 3, 310), raw("open", job, 3, 320)])
        await roll(conn)
        assert (await scan_at(conn, 600), await scan_at(conn, 900)) == (1, 0)
        async with dispatcher(db_url) as d:
            await d.run_once()
        [post] = receiver.posts
        assert post.event["data"] == {"of": "opens", "counted": "unique", "threshold": 2, "count": 2}
        assert post.event["job"] == {"id": job, "name": "unique job", "mode": "unique"}

    async def test_blind_threshold_counts_human_hits(self, conn: asyncpg.Connection) -> None:
        """A blind job has no unique count: its threshold counts human clicks."""
        job = await add_job(conn, "blind")
        await make_trigger(conn, job, "job.threshold", "http://127.0.0.1:9/hook", count=2, of="clicks")
        await add_hits(conn, [raw("open", job, None, 0), raw("click", job, None, 1, link=A),
                              raw("click", job, None, 70, link=A)])  # fmt: skip
        await roll(conn)
        assert await scan_at(conn, 300) == 1
        body = await conn.fetchval("SELECT body FROM trigger_events")
        assert '"counted":"human"' in body and "recipient" not in body
