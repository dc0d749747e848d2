"""Command-line entry points: `aggregator`, `report` and `forget`.

`register(subparsers)` adds them to the `pixeltrack` CLI; each handler is a
plain function ``handler(args, settings) -> exit code``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from aggregator import claims
from aggregator.config import AggregatorConfig
from aggregator.mail.report import UnknownJob, build_report
from aggregator.privacy.forget import forget
from aggregator.privacy.retention import purge
from aggregator.render import FORMATS, render
from aggregator.rollup import rollup_all
from aggregator.scheduler import run_scheduler
from pixeltrack.core import db
from pixeltrack.core.config import CommonConfig, ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def load_config(settings: CommonConfig, interval: int | None = None) -> tuple[str, AggregatorConfig]:
    """Database URL (resolved by the CLI) and the aggregator settings."""
    if not settings.database_url:
        raise ConfigError("DATABASE_URL is not set: the aggregator needs the PostgreSQL the collector writes to")
    return settings.database_url, AggregatorConfig.from_env(os.environ).with_interval(interval)


async def _once(url: str, config: AggregatorConfig, do_purge: bool) -> str:
    conn = await db.connect(url)
    try:
        if do_purge:
            return str(await purge(conn, config))
        stats, pages = await rollup_all(conn, config)
        seconds = sum(stats.seconds.values())
        return f"rolled up {stats.hits} hits in {stats.batches} batches ({seconds:.3f} s), {pages} page views"
    finally:
        await conn.close()


async def _rebuild_runs(url: str) -> str:
    conn = await db.connect(url)
    try:
        added = await conn.fetchval(claims.REBUILD_RUNS)
        return f"runs recorded for the hits waiting: {added} (one per job and kind, spanning them)"
    finally:
        await conn.close()


async def _serve(url: str, config: AggregatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_scheduler(url, config, stop)


def aggregator_command(args: argparse.Namespace, settings: CommonConfig) -> int:
    """`pixeltrack aggregator [--once | --purge | --rebuild-runs] [--interval N]`."""
    url, config = load_config(settings, args.interval)
    if args.rebuild_runs:
        print(run(_rebuild_runs(url)))
    elif args.once or args.purge:
        print(run(_once(url, config, args.purge)))
    else:
        run(_serve(url, config))
    return 0


async def _report(url: str, job: int, k: int, headline: str) -> dict[str, Any]:
    conn = await db.connect(url)
    try:
        return await build_report(conn, job, k, headline)
    finally:
        await conn.close()


async def _site_report(url: str, site: int, fmt: str, headline: str) -> str:
    from aggregator.web.render import render_site
    from aggregator.web.report import site_report

    conn = await db.connect(url)
    try:
        return render_site(await site_report(conn, site, headline=headline), fmt)
    finally:
        await conn.close()


def report_command(args: argparse.Namespace, settings: CommonConfig) -> int:
    """`pixeltrack report --job J | --site S [--format table|json|csv]`."""
    url, config = load_config(settings)
    if args.site is not None:
        # LookupError: exit 1 via the CLI
        sys.stdout.write(run(_site_report(url, args.site, args.format, config.headline)))
        return 0
    try:
        report = run(_report(url, args.job, config.k_anonymity, config.headline))
    except UnknownJob as exc:
        print(f"pixeltrack report: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(render(report, args.format))
    if args.format == "json":
        sys.stdout.write("\n")
    return 0


async def _forget(url: str, recipient: str, job: int | None) -> list[str]:
    conn = await db.connect(url)
    try:
        return [item.describe() for item in await forget(conn, recipient, job)]
    finally:
        await conn.close()


def forget_command(args: argparse.Namespace, settings: CommonConfig) -> int:
    """`pixeltrack forget --recipient R [--job J]`; exit 1 when R is unknown."""
    url, _ = load_config(settings)
    lines = run(_forget(url, args.recipient, args.job))
    if not lines:
        where = f" in job {args.job}" if args.job is not None else ""
        print(f"pixeltrack forget: no recipient {args.recipient!r}{where}", file=sys.stderr)
        return 1
    print("\n".join(["forgot:", *lines]))
    return 0


def add_aggregator_flags(parser: argparse.ArgumentParser) -> None:
    """--once, --purge, --interval (shared by `pixeltrack aggregator` and `python -m aggregator`)."""
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--once", action="store_true", help="one roll-up of everything pending, then exit")
    what.add_argument("--purge", action="store_true", help="run the retention purge once, then exit")
    what.add_argument("--rebuild-runs", action="store_true",
                      help="record a run (hit_runs) per job and kind spanning every hit waiting, for hits a collector "
                           "older than hit_runs wrote; reads every hit waiting; then exit")  # fmt: skip
    parser.add_argument("--interval", type=int, metavar="N",
                        help="seconds between roll-ups (default $PIXELTRACK_ROLLUP_INTERVAL or 60)")  # fmt: skip


def register(subparsers: Any) -> None:
    """Add `aggregator`, `report` and `forget` to the pixeltrack CLI."""
    agg = subparsers.add_parser("aggregator", help="roll raw hits up into reports (scheduler, or --once)")
    add_aggregator_flags(agg)
    agg.set_defaults(func=aggregator_command)
    rep = subparsers.add_parser("report", help="print a mail job's or a website's report")
    which = rep.add_mutually_exclusive_group(required=True)
    which.add_argument("--job", type=int, metavar="J")
    which.add_argument("--site", type=int, metavar="S", help="a website (its id from `pixeltrack site list`)")
    rep.add_argument("--format", choices=FORMATS, default="table")
    rep.set_defaults(func=report_command)
    fgt = subparsers.add_parser("forget", help="erase a recipient's personal data (right to erasure)")
    fgt.add_argument("--recipient", required=True, metavar="R", help="the recipient as imported (id or address)")
    fgt.add_argument("--job", type=int, metavar="J", help="only this job (default: every job)")
    fgt.set_defaults(func=forget_command)
