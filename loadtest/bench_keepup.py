"""Does the aggregator keep up with the collector? `python -m loadtest.bench_keepup [--duration 300] [--interval 2]`.

On one machine: the collector driven as fast as it goes (wrk, the mail mix
of loadtest.traffic: opens, clicks, document pages and forged tokens over
the five tracking modes, with hundreds of distinct agents) and a real
aggregator process (`python -m aggregator`, the scheduled service) rolling
up every ``--interval`` seconds, for ``--duration`` seconds (``--rate``
paces the load instead, to find the rate the aggregator sustains). Every
``--every`` seconds one line: hits stored so far, hits rolled up so far,
hits pending and the roll-up lag (the age of the oldest hit not rolled up).

Then the load stops, the aggregator catches up (how long it took is
printed) and nothing may be lost: the hits answered (per category) are the
rows of raw_hits, are the hits the report tables count (report_job_totals
per kind, report_rejected for refused tokens), and no raw hit is left
unrolled. Exit 0 only when all of that holds; the lag figures are printed,
never asserted. Works in a throwaway database (loadtest.support) on the
server of --database-url / DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from loadtest import campaign as campaigns
from loadtest import collecting, ledger, procs, support, verify
from loadtest.traffic import build_mix, vary_addresses, vary_agents
from pixeltrack.core import db

DEFAULT_SERVER = "postgresql://root@127.0.0.1:5432/root"
READY_LINE = "aggregator: roll-up every"
RUN_LINE = re.compile(r"rolled up (\d+) hits in (\d+) batches, ([\d.]+) s")


@dataclass
class Watch:
    """Samples the database every ``every`` seconds and prints a line each time."""

    url: str
    every: float
    started: float = field(default_factory=time.monotonic)
    samples: list[tuple[float, ledger.Snapshot]] = field(default_factory=list)
    phase: str = "load"

    async def run(self) -> None:
        """Until cancelled."""
        conn = await db.connect(self.url)
        try:
            while True:
                snap = await ledger.snapshot(conn)
                elapsed = time.monotonic() - self.started
                if self.phase == "load":
                    self.samples.append((elapsed, snap))
                print(f"{elapsed:6.0f} s  {self.phase:8} stored {snap.stored:>10,}  rolled up {snap.rolled:>10,}  "
                      f"pending {snap.pending:>9,}  lag {snap.lag:6.1f} s", flush=True)  # fmt: skip
                await asyncio.sleep(self.every - (time.monotonic() - self.started) % self.every)
        finally:
            await conn.close()


async def start_aggregator(url: str, interval: int, log: Path) -> procs.Server:
    """The scheduled aggregator, its connections named in pg_stat_activity; returns once it runs."""
    env = {"DATABASE_URL": support.with_application_name(url, "pt-keepup-aggregator"),
           "PIXELTRACK_ROLLUP_INTERVAL": str(interval)}  # fmt: skip
    agg = procs.Server(procs.aggregator_cmd(), 0, env, log=log)
    deadline = time.monotonic() + 60
    while READY_LINE not in (text := await asyncio.to_thread(log.read_text, errors="replace")):
        if agg.proc.poll() is not None or time.monotonic() > deadline:
            agg.stop()
            raise RuntimeError(f"the aggregator did not start:\n{text[-3000:]}")
        await asyncio.sleep(0.1)
    return agg


async def catch_up(url: str, limit: float) -> float | None:
    """Seconds until no hit is pending; None when ``limit`` passed first."""
    started = time.monotonic()
    conn = await db.connect(url)
    try:
        while (await ledger.snapshot(conn)).pending:
            if time.monotonic() - started > limit:
                return None
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    return time.monotonic() - started


@dataclass
class Outcome:
    """What the run measured, for the summary."""

    collected: collecting.Collected
    load_seconds: float  # from the collector's start until it stopped (every answered hit stored)
    at_load_end: ledger.Snapshot
    caught_up: float | None
    agg_cpu: tuple[float, float]  # aggregator CPU seconds during load, during catch-up
    agg_exit: int
    samples: list[tuple[float, ledger.Snapshot]]


async def run(url: str, args: argparse.Namespace, folder: Path) -> Outcome:
    """Campaign, aggregator, load with the watch, catch-up; returns the outcome."""
    camp = await campaigns.setup(url, args.recipients)
    secret = secrets.token_urlsafe(32)
    requests = vary_agents(build_mix(camp, secret, args.mix_size), args.agents)
    if args.addresses:
        requests = vary_addresses(requests, args.addresses)
    agents = {v for r in requests for n, v in r.headers if n == "User-Agent"}
    addresses = {v for r in requests for n, v in r.headers if n == "X-Forwarded-For"} if args.addresses else set()
    print(f"campaign   {len(camp.jobs)} jobs ({', '.join(j.mode for j in camp.jobs)}), {camp.recipients:,} "
          f"recipients, {len(requests):,} distinct requests, {len(agents)} distinct agents, "
          f"{len(addresses) or 1:,} client addresses", flush=True)  # fmt: skip
    agg = await start_aggregator(url, args.interval, folder / "aggregator.log")
    try:
        watch = Watch(url, args.every)
        task = asyncio.create_task(watch.run())
        collected = await collecting.collect(url, requests, secret, folder, duration=args.duration,
                                             connections=args.connections, rate=args.rate,
                                             balanced=bool(args.addresses))  # fmt: skip
        load_seconds, cpu_load = time.monotonic() - watch.started, agg.cpu_seconds()
        watch.phase = "catch-up"
        at_load_end = await _snapshot(url)
        caught_up = await catch_up(url, args.catch_up_limit)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        cpu_all = agg.cpu_seconds()
    finally:
        agg_exit = agg.stop()
    return Outcome(collected, load_seconds, at_load_end, caught_up, (cpu_load, cpu_all - cpu_load), agg_exit,
                   watch.samples)  # fmt: skip


async def _snapshot(url: str) -> ledger.Snapshot:
    conn = await db.connect(url)
    try:
        return await ledger.snapshot(conn)
    finally:
        await conn.close()


def window(samples: list[tuple[float, ledger.Snapshot]], first: bool, seconds: float) -> list[ledger.Snapshot]:
    """The samples of the first (or the last) ``seconds`` of the load."""
    if not samples:
        return []
    edge = samples[0][0] + seconds if first else samples[-1][0] - seconds
    return [s for t, s in samples if (t <= edge if first else t >= edge)]


def lag_lines(out: Outcome, interval: int) -> list[str]:
    """Lag p50/max during load, first against last window, the trend, and whether it stayed bounded."""
    lags = [s.lag for _, s in out.samples]
    if not lags:
        return ["lag        no sample taken during the load"]
    span = min(60.0, out.load_seconds / 3)
    head, tail = window(out.samples, True, span), window(out.samples, False, span)
    head_max, tail_max = max(s.lag for s in head), max(s.lag for s in tail)
    trend = 0.0
    if len(lags) > 2:
        trend = statistics.linear_regression([t for t, _ in out.samples], lags).slope * 60
    bounded = tail_max <= max(2 * head_max, head_max + 3 * interval)
    verdict = "bounded: the aggregator kept up" if bounded else "GROWING: the aggregator did not keep up"
    return [
        f"lag        during load: p50 {statistics.median(lags):.1f} s, max {max(lags):.1f} s ({len(lags)} samples)",
        f"           first {span:.0f} s: max {head_max:.1f} s, pending max {max(s.pending for s in head):,}; "
        f"last {span:.0f} s: max {tail_max:.1f} s, pending max {max(s.pending for s in tail):,}",
        f"           trend {trend:+.1f} s of lag per minute of load -> {verdict}",
    ]  # fmt: skip


def rate_lines(out: Outcome, log: str) -> list[str]:
    """Collect rate against roll-up rate, CPU per hit, the aggregator's runs."""
    result, end = out.collected.result, out.at_load_end
    stored = end.stored
    after = stored - end.rolled
    runs = [float(m[3]) for m in RUN_LINE.finditer(log)]
    catch = f"{out.caught_up:.1f} s" if out.caught_up is not None else "NOT within the limit"
    catch_rate = f" ({after / out.caught_up:,.0f} hits/s)" if out.caught_up else ""
    return [
        f"collect    {result.requests:,} hits answered at {result.rate:,.0f}/s ({result.driver}); collector CPU "
        f"{out.collected.cpu / max(result.requests, 1) * 1e6:.1f} µs/hit",
        f"roll-up    {end.rolled:,} of {stored:,} stored hits rolled up in the {out.load_seconds:.0f} s the collector "
        f"ran: {end.rolled / out.load_seconds:,.0f} hits/s vs {stored / out.load_seconds:,.0f} stored/s",
        f"catch-up   {after:,} hits pending when the load stopped, all rolled up after {catch}{catch_rate}",
        f"aggregator CPU {sum(out.agg_cpu) / max(stored, 1) * 1e6:.1f} µs/hit (PostgreSQL's not counted); "
        f"{len(runs)} runs logged, longest {max(runs, default=0):.1f} s; "
        f"{log.count(' ERROR ')} errors; exit {out.agg_exit}",
    ]  # fmt: skip


async def check(url: str, out: Outcome) -> tuple[list[str], bool]:
    """Answered = stored (the collectors' tombstones) = counted by the reports, per category; nothing left unrolled.

    The roll-up deletes the raw rows of the tracks that keep nothing per hit,
    so per category the reports are compared with the answers, and the total
    with what the collectors recorded storing.
    """
    result = out.collected.result
    conn = await db.connect(url)
    try:
        counted, left, stored = await ledger.reported(conn), await ledger.unrolled(conn), await ledger.copied(conn)
    finally:
        await conn.close()
    loss, exact = verify.loss_line(result.answered, counted)
    two_three = sum(n for status, n in result.statuses.items() if 200 <= status < 400)
    as_answered = stored == result.answered.total()
    same = as_answered and counted.total() == stored
    lines = [
        f"answered   {result.requests:,} hits: {two_three:,} answered 2xx/3xx, {result.statuses[404]:,} forged "
        f"clicks answered 404 (stored as refused hits too)",
        f"stored     {stored:,} hits by the collectors' tombstones (copied_hits), "
        f"{'as many as answered' if as_answered else 'NOT as many as answered'}",
        f"reported   report_job_totals {sum(n for c, n in counted.items() if '/' not in c):,} + report_rejected "
        f"{sum(n for c, n in counted.items() if '/' in c):,} = {counted.total():,} hits; answered minus reported, "
        f"per category: {loss}",
        f"unrolled   {left} raw hits left with rolled_at IS NULL",
    ]  # fmt: skip
    ok = exact and result.exact and same and left == 0 and out.agg_exit == 0 and out.collected.exit_code == 0
    return lines, ok


async def bench(args: argparse.Namespace) -> bool:
    """The whole benchmark in a throwaway database; True when nothing was lost."""
    server = args.database_url
    url = await support.create_database(server, "pt_keepup")
    try:
        with tempfile.TemporaryDirectory(prefix="pixeltrack-keepup-") as name:
            folder = Path(name)
            out = await run(url, args, folder)
            log = (folder / "aggregator.log").read_text(errors="replace")
        lines, ok = await check(url, out)
        print("\n".join([*rate_lines(out, log), *lag_lines(out, args.interval), *lines]))
        print("nothing lost" if ok else "CHECK FAILED", flush=True)
        return ok
    finally:
        if not args.keep_db:
            await support.drop_database(server, url)


def main(argv: list[str] | None = None) -> int:
    """Parse flags and run; exit 0 only when nothing was lost."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_keepup", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    parser.add_argument("--interval", type=int, default=2, help="PIXELTRACK_ROLLUP_INTERVAL (default 2 s)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between progress lines (default 5)")
    parser.add_argument("--rate", type=float, help="requests per second (default: as fast as the collector goes)")
    parser.add_argument("--connections", type=int, default=32, help="kept-alive connections (default 32)")
    parser.add_argument("--recipients", type=int, default=20_000, help="recipients over all jobs (default 20000)")
    parser.add_argument("--mix-size", type=int, default=50_000, help="distinct requests (default 50000)")
    parser.add_argument("--agents", type=int, default=30, help="builds of each agent of the mix (default 30)")
    parser.add_argument("--addresses", type=int, default=20_000,
                        help="client addresses behind the balancer (default 20000; 0: the mix's own)")
    parser.add_argument("--catch-up-limit", type=float, default=1800.0, help="longest wait for the catch-up")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_SERVER)
    parser.add_argument("--keep-db", action="store_true", help="keep the throwaway database")
    return 0 if asyncio.run(bench(parser.parse_args(argv))) else 1


if __name__ == "__main__":
    sys.exit(main())
