"""`pixeltrack up`: the whole product in one foreground process, for newcomers.

Glue between the two services (which never import each other): the embedded
or configured PostgreSQL, the schema, the collector and the aggregator's
scheduler in one event loop, and a demo job whose URLs are printed to try.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os

from aggregator.config import AggregatorConfig
from aggregator.scheduler import run_scheduler
from collector.commands import collector_config
from collector.config import CollectorConfig
from collector.serve import install_uvloop, serve
from pixeltrack.core import db, jobs
from pixeltrack.core.config import CommonConfig
from pixeltrack.core.mint import Minter
from pixeltrack.dashboard.commands import dashboard_config
from pixeltrack.dashboard.serve import first_admin, serve_dashboard, welcome

log = logging.getLogger(__name__)


def cmd_up(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Database (embedded unless DATABASE_URL), schema, collector and aggregator together."""
    config = collector_config(args, settings)
    asyncio.run(db.apply_schema(config.database_url))
    install_uvloop()
    asyncio.run(_up(config, settings))
    return 0


async def _up(config: CollectorConfig, settings: CommonConfig) -> None:
    base = f"http://{config.host}:{config.port}"
    demo = await _demo_urls(config, dataclasses.replace(settings, base_url=base))
    aggregator_config = AggregatorConfig.from_env(os.environ)

    dashboard = dashboard_config(dataclasses.replace(settings, base_url=base))
    password = None if os.environ.get("DATABASE_URL") else await first_admin(config.database_url)

    async def aggregate(stop: asyncio.Event) -> None:
        await asyncio.gather(run_scheduler(config.database_url, aggregator_config, stop),
                             serve_dashboard(dashboard, stop))

    await serve(config, extra=aggregate, started=lambda: _print_welcome(base, demo, welcome(dashboard, password)))


async def _demo_urls(config: CollectorConfig, settings: CommonConfig) -> list[str]:
    """Make (once) a demo job with one recipient, and mint its URLs to try."""
    conn = await db.connect(config.database_url)
    try:
        rows = [r for r in await jobs.list_jobs(conn) if r["name"] == "demo"]
        job_id = rows[0]["job_id"] if rows else await jobs.create_job(conn, "demo", "personal")
        await jobs.import_recipients(conn, job_id, jobs.parse_csv("recipient,consent\ndemo@example.com,yes\n"))
        rid = await jobs.recipient_id(conn, job_id, "demo@example.com")
    finally:
        await conn.close()
    m = Minter(config.secrets.current, settings.base_url)
    return [m.open_url(job_id, rid), m.click_url(job_id, rid, "https://example.com/"),
            m.doc_url(job_id, rid, 1), f"pixeltrack report --job {job_id}"]


def _print_welcome(base: str, demo: list[str], dashboard: str) -> None:
    print(f"""
pixeltrack is up.
  open pixel    {demo[0]}
  tracked link  {demo[1]}
  document page {demo[2]}
  health        {base}/healthz   ready {base}/readyz   metrics {base}/metrics
  report        {demo[3]}   (the aggregator rolls up every minute)
{dashboard}
Ctrl-C stops everything.
""", flush=True)
