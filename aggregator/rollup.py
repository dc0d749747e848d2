"""One roll-up run of everything pending: mail hits, then website page views.

Both share one enricher so each distinct agent is parsed once per run.
"""

from __future__ import annotations

import asyncio

import asyncpg

from aggregator.config import AggregatorConfig
from aggregator.enrich.enricher import Enriching, make_enricher
from aggregator.mail.rollup import RunStats, rollup
from aggregator.web.rollup import rollup_sites


async def rollup_all(
    conn: asyncpg.Connection,
    config: AggregatorConfig,
    enricher: Enriching | None = None,
    stop: asyncio.Event | None = None,
    hold: float = 0.0,
) -> tuple[RunStats, int]:
    """Mail hits (older than ``hold`` seconds), then website page views; returns the mail stats and the page views."""
    enricher = enricher or make_enricher(config.enrich)
    stats = await rollup(conn, config, enricher, stop=stop, hold=hold)
    if stop is not None and stop.is_set():
        return stats, 0
    return stats, await rollup_sites(conn, config.batch_size, enricher)
