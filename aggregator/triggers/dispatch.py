"""The dispatcher: claims due outbox rows and delivers them, with retries, in the aggregator process.

Several aggregators share the outbox: a claim takes due rows with
FOR UPDATE SKIP LOCKED and leases them (``leased_until``, ``lease_owner``)
in a short transaction; the lease is renewed just before sending, so a row
whose lease lapsed while it waited for its target's turn is sent by whoever
holds it now, never by both. A receiver's 2xx ends a delivery; anything
else is retried with exponential backoff and jitter until ``retry_until``
(a day), then dead-lettered. At most ``per_target`` deliveries to one
target are in flight per aggregator. Webhooks go through ``GuardedResolver``
(no private addresses, no second lookup) and never follow redirects.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import secrets
import socket
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import aiosmtplib
import asyncpg

from aggregator.triggers.config import TriggerConfig
from aggregator.triggers.email import send_alert
from aggregator.triggers.metrics import TriggerMetrics
from aggregator.triggers.signing import EVENT_ID_HEADER, HEADER, sign
from aggregator.triggers.targets import ForbiddenAddress, GuardedResolver, check_literal
from pixeltrack.core.config import ConfigError

log = logging.getLogger(__name__)

CLAIM = """
WITH due AS (
    SELECT e.delivery_id, row_number() OVER (PARTITION BY t.target ORDER BY e.next_at, e.delivery_id) AS turn
    FROM trigger_events e JOIN triggers t ON t.trigger_id = e.trigger_id
    WHERE e.status = 'pending' AND e.next_at <= $1 AND (e.leased_until IS NULL OR e.leased_until < $1)
), pick AS (
    SELECT e.delivery_id FROM trigger_events e JOIN due d ON d.delivery_id = e.delivery_id
    WHERE d.turn <= $3 AND e.status = 'pending' AND e.next_at <= $1
      AND (e.leased_until IS NULL OR e.leased_until < $1)
    ORDER BY e.next_at, e.delivery_id LIMIT $2
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE trigger_events e SET leased_until = $1::timestamptz + $4::float8 * interval '1 second', lease_owner = $5
FROM pick, triggers t
WHERE e.delivery_id = pick.delivery_id AND t.trigger_id = e.trigger_id
RETURNING e.delivery_id, e.event_id, e.body, t.target_kind, t.target, t.secret
"""
RENEW = """
UPDATE trigger_events SET leased_until = $3::timestamptz + $4::float8 * interval '1 second'
WHERE delivery_id = $1 AND lease_owner = $2 AND status = 'pending' RETURNING delivery_id
"""
DONE = """
UPDATE trigger_events SET status = 'delivered', delivered_at = $2, attempts = attempts + 1,
    leased_until = NULL, lease_owner = NULL, last_error = NULL
WHERE delivery_id = $1 AND status = 'pending' RETURNING attempts
"""
FAILED = """
UPDATE trigger_events SET attempts = attempts + 1, last_error = $3, leased_until = NULL, lease_owner = NULL,
    status = CASE WHEN $4 > retry_until THEN 'dead' ELSE 'pending' END, next_at = $4
WHERE delivery_id = $1 AND lease_owner = $2 AND status = 'pending' RETURNING attempts, status
"""
ATTEMPT = """
INSERT INTO trigger_attempts (delivery_id, attempt, started_at, seconds, ok, http_status, error)
VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: acknowledged or not, the HTTP status if any, why it failed."""

    ok: bool
    status: int | None = None
    error: str | None = None
    reason: str = "ok"


def backoff(attempt: int, base: float, cap: float, draw: float | None = None) -> float:
    """Seconds before the next attempt after ``attempt`` failures: doubling from ``base``, at most ``cap``,
    jittered to between half and all of it (so retries to one receiver spread out)."""
    delay = min(cap, base * 2 ** min(attempt - 1, 40))
    return delay * (0.5 + (random.random() if draw is None else draw) / 2)


def now_utc() -> dt.datetime:
    """The dispatcher's clock."""
    return dt.datetime.now(dt.UTC)


class Dispatcher:
    """Claims and delivers outbox rows; use ``async with`` (it owns an HTTP client)."""

    def __init__(self, pool: asyncpg.Pool, config: TriggerConfig, metrics: TriggerMetrics | None = None) -> None:
        self.pool = pool
        self.config = config
        self.metrics = metrics or TriggerMetrics()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots: dict[str, asyncio.Semaphore] = {}
        self.wake = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Dispatcher:
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.config.allow_private),
                                         limit=self.config.in_flight)  # fmt: skip
        self.session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.drain()
        if self.session is not None:
            await self.session.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop``; then let the sends in flight finish (their results are recorded)."""
        while not stop.is_set():
            try:
                await self.dispatch_ready()
            except (asyncpg.PostgresError, OSError):
                log.exception("trigger dispatch: claim failed; trying again")
            self.wake.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())]
            await asyncio.wait(waiters, timeout=self.config.poll, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        await self.drain()

    async def run_once(self) -> int:
        """Claim what is due now, deliver it all, wait; return how many were claimed (tests, benchmarks)."""
        claimed = await self.dispatch_ready()
        await self.drain()
        return claimed

    async def drain(self) -> None:
        """Wait for every delivery in flight."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def dispatch_ready(self) -> int:
        """Claim due rows (as many as free slots allow) and start delivering them."""
        free = self.config.in_flight - len(self.tasks)
        if free <= 0:
            return 0
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(CLAIM, now_utc(), free, self.config.per_target, self.config.lease, self.owner)
        for row in rows:
            task = asyncio.create_task(self.deliver(dict(row)))
            self.tasks.add(task)
            task.add_done_callback(self._finished)
        return len(rows)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("trigger delivery failed unexpectedly", exc_info=task.exception())

    async def deliver(self, row: dict[str, Any]) -> None:
        """One attempt at one delivery, under its target's concurrency limit; the result recorded."""
        slot = self.slots.setdefault(row["target"], asyncio.Semaphore(self.config.per_target))
        async with slot:
            async with self.pool.acquire() as conn:
                held = await conn.fetchval(RENEW, row["delivery_id"], self.owner, now_utc(), self.config.lease)
            if held is None:  # the lease lapsed while waiting and someone else has it now
                return
            started, clock = now_utc(), time.perf_counter()
            outcome = await self.attempt(row)
            seconds = time.perf_counter() - clock
            self.metrics.seconds.observe(seconds)
            await self.record(row, outcome, started, seconds)

    async def attempt(self, row: dict[str, Any]) -> Outcome:
        """Send once; every failure becomes an Outcome, never an exception."""
        try:
            if row["target_kind"] == "email":
                await send_alert(self.config.smtp_url, self.config.smtp_from, row["target"], row["body"],
                                 str(row["event_id"]), self.config.timeout)  # fmt: skip
                return Outcome(True)
            return await self.post(row)
        except ForbiddenAddress as exc:
            return Outcome(False, error=str(exc), reason="forbidden")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ForbiddenAddress):  # refused by GuardedResolver, nothing connected
                return Outcome(False, error=str(exc.os_error), reason="forbidden")
            return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500], reason="connect")
        except TimeoutError:
            return Outcome(False, error=f"no answer within {self.config.timeout:g} s", reason="timeout")
        except (aiohttp.ClientError, aiosmtplib.SMTPException, OSError, ConfigError, ValueError) as exc:
            return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500], reason=type(exc).__name__)

    async def post(self, row: dict[str, Any]) -> Outcome:
        """POST the body, signed; a 2xx acknowledges it, redirects are not followed."""
        assert self.session is not None, "use the Dispatcher with `async with`"
        check_literal(row["target"], self.config.allow_private)
        data = row["body"].encode()
        headers = {"Content-Type": "application/json", "User-Agent": "pixeltrack-webhook/1",
                   EVENT_ID_HEADER: str(row["event_id"]), HEADER: sign(row["secret"] or "", data)}  # fmt: skip
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        async with self.session.post(row["target"], data=data, headers=headers, allow_redirects=False,
                                     timeout=timeout) as resp:  # fmt: skip
            if 200 <= resp.status < 300:
                return Outcome(True, resp.status)
            return Outcome(False, resp.status, f"HTTP {resp.status}", f"http_{resp.status // 100}xx")

    async def record(self, row: dict[str, Any], outcome: Outcome, started: dt.datetime, seconds: float) -> None:
        """Delivered, or failed: the next attempt scheduled, or dead-lettered after the retry period."""
        delivery = row["delivery_id"]
        async with self.pool.acquire() as conn, conn.transaction():
            if outcome.ok:
                attempt = await conn.fetchval(DONE, delivery, now_utc())
                self.metrics.sent.inc()
            else:
                self.metrics.failed.labels(outcome.reason).inc()
                done = await conn.fetchval("SELECT attempts FROM trigger_events WHERE delivery_id = $1", delivery)
                wait = backoff((done or 0) + 1, self.config.retry_base, self.config.retry_max)
                found = await conn.fetchrow(FAILED, delivery, self.owner, outcome.error,
                                            now_utc() + dt.timedelta(seconds=wait))  # fmt: skip
                attempt = found["attempts"] if found else None
                if found is not None and found["status"] == "dead":
                    self.metrics.dead.inc()
                    log.warning("trigger delivery %d dead-lettered after %d attempts: %s", delivery, attempt,
                                outcome.error)  # fmt: skip
                elif found is not None:
                    self.metrics.retried.inc()
            if attempt is not None:
                await conn.execute(ATTEMPT, delivery, attempt, started, seconds, outcome.ok, outcome.status,
                                   outcome.error)  # fmt: skip
