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
from pathlib import Path

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
    asyncio.run(_up(config, settings, getattr(args, "log_file", None)))
    return 0


async def _up(config: CollectorConfig, settings: CommonConfig, log_file: Path | None) -> None:
    base = f"http://{config.host}:{config.port}"
    demo = await _demo_urls(config, dataclasses.replace(settings, base_url=base))
    aggregator_config = AggregatorConfig.from_env(os.environ)

    dashboard = dashboard_config(dataclasses.replace(settings, base_url=base))
    password = None if os.environ.get("DATABASE_URL") else await first_admin(config.database_url)

    operator = f"http://{config.operator_host}:{config.operator_port}" if config.operator_port else None

    async def aggregate(stop: asyncio.Event) -> None:
        await asyncio.gather(run_scheduler(config.database_url, aggregator_config, stop),
                             serve_dashboard(dashboard, stop))

    def started() -> None:
        _print_welcome(base, demo, aggregator_config.interval, log_file, operator, welcome(dashboard, password))

    await serve(config, extra=aggregate, started=started)


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


def _print_welcome(base: str, demo: list[str], interval: int, log_file: Path | None, operator: str | None,
                   dashboard: str) -> None:
    log_line = f"  log file      {log_file}   (-v shows it all here)\n" if log_file else ""
    metrics = f"{operator}/metrics (operator port)" if operator else "off (PIXELTRACK_OPERATOR_PORT=0)"
    print(f"""
pixeltrack is up.
  open pixel    {demo[0]}
  tracked link  {demo[1]}
  document page {demo[2]}
  health        {base}/healthz   ready {base}/readyz
  metrics       {metrics}
  report        {demo[3]}   (the aggregator rolls up every {interval} s)
{dashboard}
{log_line}Ctrl-C stops everything.
""", flush=True)
