"""Running the dashboard on its own listener (alone, or inside `pixeltrack up`)."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from pixeltrack.core import db
from pixeltrack.dashboard import accounts
from pixeltrack.dashboard.app import create_app
from pixeltrack.dashboard.config import DashboardConfig

log = logging.getLogger(__name__)


async def serve_dashboard(config: DashboardConfig, stop: asyncio.Event) -> None:
    """Listen on config.host:port until ``stop`` is set, then close."""
    runner = web.AppRunner(create_app(config), handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, config.host, config.port).start()
        except OSError as exc:  # e.g. the port is taken: `up` goes on without the dashboard
            log.error("dashboard cannot listen on %s: %s", config.url, exc)
            return
        log.info("dashboard listening on %s", config.url)
        await stop.wait()
    finally:
        await runner.cleanup()


async def first_admin(url: str) -> str | None:
    """An admin with a one-time password when there is no user yet (printed by `up`)."""
    conn = await db.connect(url)
    try:
        return await accounts.first_admin(conn)
    finally:
        await conn.close()


def welcome(config: DashboardConfig, password: str | None) -> str:
    """The dashboard's lines of `up`'s welcome (the first admin's password, shown this once)."""
    line = f"  dashboard     {config.url}/"
    if password:
        line += f"\n  log in as     admin@localhost  password {password}  (shown once; change it with" \
                f"\n                `pixeltrack user add admin@localhost --role admin --replace`)"
    return line


async def _main(config: DashboardConfig) -> None:
    await db.apply_schema(config.database_url)  # idempotent: the dashboard's tables may be newer than the database
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve_dashboard(config, stop)


def run(config: DashboardConfig) -> int:
    """`pixeltrack dashboard` in the foreground."""
    asyncio.run(_main(config))
    return 0
