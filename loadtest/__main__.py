"""`python -m loadtest run`: campaign, traffic, report, loss check, in one command.

By default it makes a throwaway database (on DATABASE_URL's server, or the
embedded PostgreSQL), starts its own collector on a free loopback port,
drives the mix at it, stops the collector (which flushes), and checks that
the database holds exactly the answered hits. With ``--target`` it drives a
collector someone already runs, and checks against ``--database-url``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loadtest import campaign as campaigns
from loadtest import driver_asyncio, driver_wrk, procs, support, verify
from loadtest.report import DriveResult, format_report
from loadtest.traffic import build_mix


@dataclass
class Outcome:
    """What one run measured and whether the database matched."""

    result: DriveResult
    loss: str
    exact: bool


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="drive traffic at a collector and check nothing was lost")
    limit = r.add_mutually_exclusive_group()
    limit.add_argument("--duration", type=float, default=10.0, help="seconds of traffic (default 10)")
    limit.add_argument("--requests", type=int, help="stop after this many requests instead")
    r.add_argument("--rate", type=float, help="requests per second in all (default: as fast as possible)")
    r.add_argument("--connections", type=int, default=32, help="kept-alive connections (default 32)")
    r.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    r.add_argument("--driver", choices=("auto", "wrk", "asyncio"), default="auto",
                   help="wrk when installed (auto), or the built-in asyncio driver")
    r.add_argument("--workers", type=int, default=1, help="collector processes to start (default 1)")
    r.add_argument("--recipients", type=int, default=20_000, help="recipients over all jobs (default 20000)")
    r.add_argument("--mix-size", type=int, default=50_000, help="distinct requests cycled through (default 50000)")
    r.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                   help="server for the throwaway database; with --target, the collector's own database")
    r.add_argument("--target", help="http://127.0.0.1:PORT of a running collector (default: start one)")
    r.add_argument("--secret", default=os.environ.get("PIXELTRACK_SECRET"),
                   help="with --target: the collector's PIXELTRACK_SECRET")
    r.add_argument("--keep-db", action="store_true", help="keep the throwaway database")
    r.add_argument("--max-seconds", type=float, default=600.0, help="hard bound on the traffic phase")
    return p


async def drive(args: argparse.Namespace, requests: list, host: str, port: int,
                cpus: set[int] | None = None) -> DriveResult:
    """Run the chosen driver with the run's limits."""
    use_wrk = args.driver == "wrk" or (args.driver == "auto" and driver_wrk.available())
    if args.driver == "wrk" and not driver_wrk.available():
        raise SystemExit("loadtest: --driver wrk but wrk is not installed (apt-get install wrk)")
    limits = {"connections": args.connections, "duration": None if args.requests else args.duration,
              "count": args.requests, "rate": args.rate, "max_seconds": args.max_seconds}
    if use_wrk:
        return await driver_wrk.drive(requests, host, port, threads=args.threads, cpus=cpus, **limits)
    return await driver_asyncio.drive(requests, host, port, **limits)


def describe(args: argparse.Namespace) -> str:
    """How the traffic was driven, for the report."""
    pace = f"{args.rate:.0f} req/s" if args.rate else "as fast as possible"
    span = f"{args.requests} requests" if args.requests else f"{args.duration:g} s"
    return f"{args.connections} connections, {pace}, {span}"


async def run_owned(args: argparse.Namespace) -> Outcome:
    """Throwaway database, own collector, drive, stop (flush), check."""
    server = campaigns.server_url(args.database_url)
    url = await support.create_database(server)
    secret = secrets.token_urlsafe(32)
    try:
        camp = await campaigns.setup(url, args.recipients)
        requests = build_mix(camp, secret, args.mix_size)
        print(f"campaign   {len(camp.jobs)} jobs ({', '.join(j.mode for j in camp.jobs)}), "
              f"{camp.recipients} recipients, {len(requests)} distinct requests", flush=True)
        with tempfile.TemporaryDirectory(prefix="pixeltrack-load-") as tmp:
            port = support.free_port()
            collector = procs.Server(procs.collector_cmd(port, args.workers), port,
                                     procs.collector_env(url, secret, Path(tmp) / "spool"),
                                     log=Path(tmp) / "collector.log")
            since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            try:
                collector.wait_ready()
                print(f"collector  http://127.0.0.1:{port}/ ({args.workers} worker(s)), database {url}", flush=True)
                result = await drive(args, requests, "127.0.0.1", port)
            finally:
                code = collector.stop()
            if code != 0:
                print(f"collector exited with {code}; its log:\n" + (Path(tmp) / "collector.log").read_text()[-4000:])
        found = await verify.count_hits(url, since, camp.job_ids)
    finally:
        if not args.keep_db:
            await support.drop_database(server, url)
    loss, exact = verify.loss_line(result.answered, found)
    return Outcome(result, loss, exact and result.exact and code == 0)


async def run_target(args: argparse.Namespace) -> Outcome:
    """Drive a collector someone runs; set up the campaign in its database and wait for its flush."""
    host, port = procs.loopback_target(args.target)
    if not args.database_url or not args.secret:
        raise SystemExit("loadtest: --target needs --database-url and --secret (or PIXELTRACK_SECRET)")
    camp = await campaigns.setup(args.database_url, args.recipients)
    requests = build_mix(camp, args.secret, args.mix_size)
    print(f"campaign   {len(camp.jobs)} jobs, {camp.recipients} recipients in {args.database_url}", flush=True)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    result = await drive(args, requests, host, port)
    found = await verify.settle(args.database_url, since, camp.job_ids, result.requests)
    loss, exact = verify.loss_line(result.answered, found)
    return Outcome(result, loss, exact and result.exact)


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 only when nothing was lost."""
    args = build_parser().parse_args(argv)
    if args.target:
        try:
            procs.loopback_target(args.target)
        except procs.NotLoopback as exc:
            print(f"loadtest: {exc}", file=sys.stderr)
            return 2
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    outcome = asyncio.run(run_target(args) if args.target else run_owned(args))
    print(format_report(outcome.result, describe(args)))
    print(outcome.loss, flush=True)
    return 0 if outcome.exact and outcome.result.requests > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
