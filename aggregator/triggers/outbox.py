"""The scan: each trigger's new events into the outbox, and its watermark forward, in one transaction.

Why a crash never loses or doubles an event: the events a scan finds and the
trigger's new watermark (``scanned_to``) commit together or not at all, so a
scan killed half-way leaves the watermark where it was and the next scan
finds the same hits again. Each event also has a natural key (the hit, or
the recipient of a "first" event), unique per trigger in the outbox, so the
overlap a scan re-reads on purpose (``lookback``, for hits that reach the
database late) can never add one twice. Two aggregators never scan the same
trigger at once (its row is locked with SKIP LOCKED).

Settled: a scan reads hits received up to ``now - hold`` and before the
oldest hit not yet rolled up (less a margin for the burst rules), so every
hit it reads has its machine verdict.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from aggregator.mail.reading import BURST_SECONDS
from aggregator.rollup import oldest_waiting
from aggregator.triggers.config import TriggerConfig
from aggregator.triggers.detect import FINDERS, Found, Trigger, Window
from aggregator.triggers.metrics import TriggerMetrics
from aggregator.triggers.payload import body

log = logging.getLogger(__name__)

TRIGGER_IDS = "SELECT trigger_id FROM triggers ORDER BY trigger_id"
LOCK = """
SELECT t.trigger_id, t.job_id, t.event, t.filters::text AS filters, t.created_at, t.scanned_to,
       j.kind, j.name, j.mode, s.domain
FROM triggers t JOIN jobs j ON j.job_id = t.job_id LEFT JOIN sites s ON s.job_id = t.job_id
WHERE t.trigger_id = $1 FOR UPDATE OF t SKIP LOCKED
"""
INSERT = """
INSERT INTO trigger_events (event_id, trigger_id, event_key, type, occurred_at, created_at, body, next_at, retry_until)
SELECT e.event_id, $1, e.event_key, $2, e.occurred_at, $3::timestamptz, e.body, $3::timestamptz,
       $3::timestamptz + $4::float8 * interval '1 second'
FROM unnest($5::uuid[], $6::text[], $7::timestamptz[], $8::text[]) AS e(event_id, event_key, occurred_at, body)
ORDER BY e.occurred_at
ON CONFLICT (trigger_id, event_key) DO NOTHING
RETURNING delivery_id
"""
ADVANCE = "UPDATE triggers SET scanned_to = greatest(scanned_to, $2) WHERE trigger_id = $1"
PENDING = "SELECT count(*) AS n, min(created_at) AS oldest FROM trigger_events WHERE status = 'pending'"
Fault = Callable[[], Awaitable[None]]


async def settled_until(conn: asyncpg.Connection, config: TriggerConfig, now: dt.datetime) -> dt.datetime:
    """The latest receive time whose hits all have their verdict: the hold-back, and nothing unrolled before."""
    cut = now - dt.timedelta(seconds=config.hold)
    oldest = await oldest_waiting(conn)
    if oldest is not None:
        margin = dt.timedelta(seconds=max(config.burst_seconds, BURST_SECONDS) + 1)
        cut = min(cut, oldest - margin)
    return cut


async def scan(
    conn: asyncpg.Connection, config: TriggerConfig, *, now: dt.datetime, idle: float,
    metrics: TriggerMetrics | None = None, fault: Fault | None = None,
) -> int:
    """Scan every trigger once (a transaction each); return how many new events went to the outbox."""
    hi = await settled_until(conn, config, now)
    added = 0
    for row in await conn.fetch(TRIGGER_IDS):
        async with conn.transaction():
            locked = await conn.fetchrow(LOCK, row["trigger_id"])
            if locked is None:  # deleted, or another aggregator is scanning it
                continue
            new = await scan_one(conn, config, locked, hi, now, idle)
            if fault is not None:
                await fault()  # tests: a scan killed before its commit
            await conn.execute(ADVANCE, locked["trigger_id"], hi)
        added += new
        if new and metrics is not None:
            metrics.found.labels(locked["event"]).inc(new)
    if added:
        log.info("triggers: %d new events in the outbox", added)
    return added


async def scan_one(conn: asyncpg.Connection, config: TriggerConfig, locked: asyncpg.Record, hi: dt.datetime,
                   now: dt.datetime, idle: float) -> int:
    """One trigger's events in its window, inserted; return how many were new."""
    trigger = Trigger(locked["trigger_id"], locked["job_id"], locked["event"], json.loads(locked["filters"]),
                      locked["created_at"])  # fmt: skip
    lo = max(trigger.created_at, locked["scanned_to"] - dt.timedelta(seconds=config.lookback))
    found = await FINDERS[trigger.event](conn, trigger, Window(lo, hi, now), config, idle)
    if not found:
        return 0
    return await insert_events(conn, config, trigger, dict(locked), found, now)


async def insert_events(conn: asyncpg.Connection, config: TriggerConfig, trigger: Trigger, job: dict,
                        found: list[Found], now: dt.datetime) -> int:
    """Insert events not in the outbox yet (their natural key decides); return how many."""
    ids = [uuid.uuid4() for _ in found]
    bodies = [body(i, trigger.event, now, trigger.trigger_id, job, f) for i, f in zip(ids, found, strict=True)]
    rows = await conn.fetch(INSERT, trigger.trigger_id, trigger.event, now, config.retry_for, ids,
                            [f.key for f in found], [f.at for f in found], bodies)  # fmt: skip
    return len(rows)


async def refresh_gauges(conn: asyncpg.Connection, metrics: TriggerMetrics, now: dt.datetime) -> None:
    """Pending events and the age of the oldest one."""
    row = await conn.fetchrow(PENDING)
    metrics.pending.set(row["n"])
    metrics.oldest.set((now - row["oldest"]).total_seconds() if row["oldest"] else 0)
