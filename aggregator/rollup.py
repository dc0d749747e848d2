"""One roll-up run of everything pending: mail hits, then website page views.

Both share one enricher so each distinct agent is parsed once per run.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg

from aggregator import claims
from aggregator.config import AggregatorConfig
from aggregator.enrich.enricher import Enriching, make_enricher
from aggregator.mail import queries as mail
from aggregator.mail.rollup import RunStats, rollup
from aggregator.web import queries as web
from aggregator.web.rollup import rollup_sites


async def oldest_waiting(conn: asyncpg.Connection) -> dt.datetime | None:
    """The oldest hit not rolled up yet, mail or page view (None: none waits).

    The least of both roll-ups' listings (``claims.pending``: the runs waiting, hit_runs), so that the
    roll-up's lag costs what the runs do, not a read of every hit waiting (the dashboard's health, and
    every scan of the triggers). A run's first hit may be rolled up already (a run is done with its last).
    """
    firsts = [(await claims.pending(conn, backlog)).first for backlog in (mail.PENDING, web.PENDING)]
    return min((first for first in firsts if first is not None), default=None)


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
