"""The aggregator service: roll-up every N seconds, purge daily (APScheduler).

A scheduled roll-up takes only hits older than the hold-back
(PIXELTRACK_ROLLUP_HOLD, 15 s): what a click's verdict looks ahead to has
arrived by then (aggregator/mail/context.py).

Triggers: a scan every few seconds puts settled events into the outbox
(aggregator/triggers/outbox.py) and a dispatcher task delivers them
(aggregator/triggers/dispatch.py); on stop, sends in flight finish first.

Each job runs at most one instance at a time and missed runs are coalesced;
on stop the scheduler is paused, the run in progress finishes its batch (a
batch is one transaction, so stopping between batches loses nothing), then
the pool is closed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from aggregator.config import AggregatorConfig
from aggregator.enrich.enricher import Enriching, make_enricher
from aggregator.privacy.retention import purge
from aggregator.rollup import rollup_all
from aggregator.triggers.config import TriggerConfig
from aggregator.triggers.dispatch import Dispatcher
from aggregator.triggers.metrics import TriggerMetrics
from aggregator.triggers.outbox import refresh_gauges, scan
from pixeltrack.core import db

log = logging.getLogger(__name__)


class Service:
    """The scheduled work, sharing one pool and one enricher."""

    def __init__(self, pool: asyncpg.Pool, config: AggregatorConfig, stop: asyncio.Event,
                 triggers: TriggerConfig | None = None) -> None:  # fmt: skip
        self.pool = pool
        self.config = config
        self.stop = stop
        self.enricher: Enriching = make_enricher(config.enrich)
        self.busy = asyncio.Lock()  # held while a job runs; stop waits for it
        self.triggers = triggers or TriggerConfig()
        self.trigger_metrics = TriggerMetrics()

    async def rollup_job(self) -> None:
        """One roll-up of everything pending; errors are logged, the next run retries."""
        if self.stop.is_set():  # a run that was due as the service stopped: the pool is closing
            return
        async with self.busy, self.pool.acquire() as conn:
            try:
                await rollup_all(conn, self.config, self.enricher, stop=self.stop, hold=self.config.rollup_hold)
            except (asyncpg.PostgresError, OSError):
                log.exception("roll-up failed; nothing of the failed batch was applied")

    async def purge_job(self) -> None:
        """The daily retention purge."""
        if self.stop.is_set():
            return
        async with self.busy, self.pool.acquire() as conn:
            try:
                await purge(conn, self.config)
            except (asyncpg.PostgresError, OSError):
                log.exception("purge failed; it runs again tomorrow")

    async def trigger_scan_job(self) -> None:
        """Settled events of every trigger into the outbox (a transaction per trigger)."""
        if self.stop.is_set():
            return
        async with self.busy, self.pool.acquire() as conn:
            try:
                now = dt.datetime.now(dt.UTC)
                await scan(conn, self.triggers, now=now, idle=self.config.reading_idle, metrics=self.trigger_metrics)
                await refresh_gauges(conn, self.trigger_metrics, now)
            except (asyncpg.PostgresError, OSError):
                log.exception("trigger scan failed; its watermark did not move, the next scan retries")

    def schedule(self, scheduler: AsyncIOScheduler) -> None:
        """Add the jobs: roll-up now and every interval, trigger scan, purge daily at purge_hour UTC."""
        common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        scheduler.add_job(self.rollup_job, "interval", seconds=self.config.interval, id="rollup",
                          next_run_time=dt.datetime.now(dt.UTC), **common)  # fmt: skip
        scheduler.add_job(self.purge_job, "cron", hour=self.config.purge_hour, minute=7, id="purge", **common)
        scheduler.add_job(self.trigger_scan_job, "interval", seconds=self.triggers.scan_interval, id="triggers",
                          **common)  # fmt: skip


async def run_scheduler(database_url: str, config: AggregatorConfig, stop: asyncio.Event,
                        triggers: TriggerConfig | None = None) -> None:  # fmt: skip
    """Run the aggregator in the current event loop until ``stop`` is set."""
    triggers = triggers or TriggerConfig.from_env()
    pool = await db.create_pool(database_url, min_size=1, max_size=4)  # roll-up, trigger scan, dispatcher
    try:
        async with pool.acquire() as conn:
            await db.ensure_partitions(conn)
        service = Service(pool, config, stop, triggers)
        if triggers.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(triggers.metrics_port, registry=service.trigger_metrics.registry)
        scheduler = AsyncIOScheduler(timezone=dt.UTC)
        service.schedule(scheduler)
        scheduler.start()
        log.info(
            "aggregator: roll-up every %d s of hits older than %g s, purge daily at %02d:07 UTC",
            config.interval,
            config.rollup_hold,
            config.purge_hour,
        )
        async with Dispatcher(pool, triggers, service.trigger_metrics) as dispatcher:
            await dispatcher.run(stop)  # returns on stop, once the sends in flight are recorded
        scheduler.pause()
        async with service.busy:  # let the batch in progress commit
            scheduler.shutdown(wait=False)
    finally:
        await pool.close()
    log.info("aggregator stopped")
