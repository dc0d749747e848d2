"""Support for trigger tests: a real webhook receiver on loopback, and the pipeline step by step.

Times are real-clock times (an hour ago) so the dispatcher's own clock and the
scan's ``now`` agree on what is due.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web

from aggregator.config import AggregatorConfig
from aggregator.enrich import EnrichConfig
from aggregator.enrich.enricher import Enriching, make_enricher
from aggregator.rollup import rollup_all
from aggregator.triggers.config import TriggerConfig
from aggregator.triggers.dispatch import Dispatcher
from aggregator.triggers.outbox import scan
from aggregator.triggers.signing import EVENT_ID_HEADER, HEADER, verify
from aggregator.triggers.store import TriggerSpec, create_trigger
from loadtest.support import free_port
from pixeltrack.core import db
from tests.support.hits import hit

BASE = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
SECRET = "whsec_test_0123456789"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
GMAIL_IP = "66.249.84.1"
APPLE_MPP = "Mozilla/5.0"
APPLE_IP = "17.58.101.13"
A = "https://shop.example/a"
B = "https://shop.example/b"
CFG = TriggerConfig(hold=120, allow_private=True, retry_base=0.05, retry_max=0.1, timeout=2.0, lease=5.0, poll=0.05)
AGG = AggregatorConfig(batch_size=1000, enrich=EnrichConfig())
_ENRICHER: list[Enriching] = []


def at(seconds: float) -> dt.datetime:
    """``seconds`` after BASE."""
    return BASE + dt.timedelta(seconds=seconds)


def raw(kind: str, job: int, rid: int | None, seconds: float, **kw: Any) -> tuple[Any, ...]:
    """A raw hit ``seconds`` after BASE (see tests.support.hits.hit)."""
    return hit(kind, job, rid, received_at=at(seconds), **kw)


def enricher() -> Enriching:
    """The real enricher, made once (agent parsing is what costs)."""
    if not _ENRICHER:
        _ENRICHER.append(make_enricher(AGG.enrich))
    return _ENRICHER[0]


async def roll(conn: asyncpg.Connection, batch: int = 1000) -> None:
    """One roll-up of everything pending, with the real enrichment (real machine verdicts)."""
    cfg = AggregatorConfig(batch_size=batch, reading_idle=300, enrich=AGG.enrich)
    await rollup_all(conn, cfg, enricher())


async def scan_at(conn: asyncpg.Connection, seconds: float, cfg: TriggerConfig = CFG, **kw: Any) -> int:
    """One scan with its clock at ``seconds`` after BASE; new events in the outbox."""
    return await scan(conn, cfg, now=at(seconds), idle=300, **kw)


async def make_trigger(conn: asyncpg.Connection, job: int, event: str, url: str | None = None,
                       email: str | None = None, site: bool = False, **filters: Any) -> int:
    """A trigger created before any hit (an hour before BASE)."""
    spec = TriggerSpec(event=event, job_id=None if site else job, site_id=job if site else None, webhook=url,
                       secret=SECRET if url else None, email=email, **filters)
    trigger_id, _ = await create_trigger(conn, spec, allow_private=True, now=BASE - dt.timedelta(hours=1))
    return trigger_id


@dataclass
class Post:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        """The JSON body."""
        return dict(json.loads(self.body))

    def verified(self, secret: str = SECRET) -> bool:
        """The signature checks out and the event id header matches the body."""
        return verify(secret, self.headers[HEADER], self.body) and self.headers[EVENT_ID_HEADER] == self.event["id"]


@dataclass
class Receiver:
    """A real webhook receiver on loopback: records every POST, answers ``status`` (after ``delay`` s)."""

    port: int = field(default_factory=free_port)
    status: int = 200
    delay: float = 0.0
    posts: list[Post] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.posts.append(Post(dict(request.headers), await request.read()))
            if self.delay:
                await asyncio.sleep(self.delay)
            headers = {"Location": "http://127.0.0.1:1/elsewhere"} if 300 <= self.status < 400 else None
            return web.Response(status=self.status, headers=headers)
        finally:
            self.in_flight -= 1

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def types(self) -> list[str]:
        """Event types received, in order."""
        return [p.event["type"] for p in self.posts]


@asynccontextmanager
async def dispatcher(db_url: str, cfg: TriggerConfig = CFG) -> AsyncIterator[Dispatcher]:
    """A dispatcher with its own pool, as an aggregator has."""
    pool = await db.create_pool(db_url, min_size=1, max_size=4)
    try:
        async with Dispatcher(pool, cfg) as d:
            yield d
    finally:
        await pool.close()
