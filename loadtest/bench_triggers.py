"""Trigger latency: `python -m loadtest.bench_triggers [--hold 2] [--interval 1] [--seconds 20] [--rate 10]`.

Prints, does not assert: how long an event takes from its hit to its webhook,
against the bound the issue sets (hold-back + one roll-up interval + 10 s).

Makes a throwaway database (on DATABASE_URL's server, or the embedded one),
a personal job with a `click` and an `open.first` trigger posting to a
receiver on loopback, and starts a real aggregator process with the given
hold-back and roll-up interval (trigger scan interval and everything else at
their defaults, the roll-up's own hold-back PIXELTRACK_ROLLUP_HOLD off: in
service, an event waits that long more). It then writes hits as the collector would, ``rate`` a
second for ``seconds``: each a human click (one event each) and a Gmail proxy
open of the same recipient (a machine: never an event), and waits for the
events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
from aiohttp import web

from aggregator.triggers.store import TriggerSpec, create_trigger
from collector.postgres import RUNS, waiting
from loadtest.campaign import server_url
from loadtest.support import create_database, drop_database, free_port

ROOT = Path(__file__).resolve().parents[1]
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
COLUMNS = ("hit_id", "received_at", "kind", "job_id", "recipient_id", "link", "client_ip", "user_agent",
           "accept_language", "method", "prefetch")  # fmt: skip


class Receiver:
    """Webhook receiver on loopback: the arrival time of every event, by id."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: dict[str, tuple[float, dict]] = {}
        self.duplicates = 0
        self.expected: int | None = None
        self.all_in = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        if event["id"] in self.arrived:
            self.duplicates += 1
        self.arrived.setdefault(event["id"], (time.time(), event))
        if self.expected is not None and len(self.arrived) >= self.expected:
            self.all_in.set()
        return web.Response(status=204)

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner


async def setup(url: str, hook: str, recipients: int) -> int:
    """The personal job, its recipients and two triggers; return the job id."""
    conn = await asyncpg.connect(url)
    try:
        job = await conn.fetchval("INSERT INTO jobs (name, mode) VALUES ('bench', 'personal') RETURNING job_id")
        await conn.executemany("INSERT INTO recipients (job_id, recipient_id, recipient) VALUES ($1, $2, $3)",
                               [(job, r, f"r{r}@bench.example") for r in range(1, recipients + 1)])  # fmt: skip
        for event in ("click", "open.first"):
            await create_trigger(conn, TriggerSpec(event=event, job_id=job, webhook=hook), allow_private=True)
        return int(job)
    finally:
        await conn.close()


async def feed(url: str, job: int, rate: float, seconds: float) -> int:
    """Hits at ``rate`` a second, stamped when written (as the collector does); return the human clicks."""
    conn = await asyncpg.connect(url)
    sent, start = 0, time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            sent += 1
            now = dt.datetime.now(dt.UTC)
            rows = [
                (uuid.uuid4(), now, "click", job, sent, f"https://shop.example/p/{sent % 7}", "198.51.100.7", CHROME,
                 "en-GB,en;q=0.8", "GET", False),
                (uuid.uuid4(), now, "open", job, sent, None, "66.249.84.1", GMAIL, None, "GET", False),
            ]  # fmt: skip
            async with conn.transaction():  # as a collector writes them: with their runs (hit_runs)
                await conn.copy_records_to_table("raw_hits", records=rows, columns=COLUMNS)
                await conn.execute(RUNS, *waiting(rows))
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    finally:
        await conn.close()
    return sent


def aggregator(url: str, hold: float, interval: int, log: Path) -> subprocess.Popen[bytes]:
    """A real aggregator process with the hold-back and roll-up interval under test."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": url, "PIXELTRACK_TRIGGER_HOLD": str(hold),
           "PIXELTRACK_ROLLUP_INTERVAL": str(interval), "PIXELTRACK_ROLLUP_HOLD": "0",
           "PIXELTRACK_TRIGGER_ALLOW_PRIVATE": "1"}  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "aggregator"], env=env, cwd=ROOT, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)  # fmt: skip


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def bench(args: argparse.Namespace) -> None:
    server = server_url(args.database_url)
    url = await create_database(server, "pt_triggers")
    receiver = Receiver()
    runner = await receiver.start()
    log = Path(args.log)
    proc = None
    try:
        job = await setup(url, f"http://127.0.0.1:{receiver.port}/hook", int(args.rate * args.seconds) + 10)
        proc = aggregator(url, args.hold, args.interval, log)
        clicks = await feed(url, job, args.rate, args.seconds)
        bound = args.hold + args.interval + 10
        receiver.expected = clicks
        if len(receiver.arrived) >= clicks:
            receiver.all_in.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.all_in.wait(), bound + 30)
        await asyncio.sleep(2)  # anything more (a machine's event, a second send) would show now
        report(receiver, clicks, args, bound)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        await runner.cleanup()
        await drop_database(server, url)


def report(receiver: Receiver, clicks: int, args: argparse.Namespace, bound: float) -> None:
    """Latency figures, and what arrived that should not have."""
    latencies = [at - dt.datetime.fromisoformat(e["data"]["time"]).timestamp() for at, e in receiver.arrived.values()]
    types = [e["type"] for _, e in receiver.arrived.values()]
    print(f"settings   hold {args.hold:g} s, roll-up interval {args.interval} s, scan interval 5 s (default), "
          f"{args.rate:g} human clicks/s + as many Gmail proxy opens for {args.seconds:g} s")  # fmt: skip
    print(f"events     {types.count('click')} click events for {clicks} human clicks; "
          f"{types.count('open.first')} open.first (machine opens only: 0 expected); {receiver.duplicates} duplicates")
    if latencies:
        p50, p90, p99, top = statistics.median(latencies), *(percentile(latencies, p) for p in (90, 99, 100))
        print(f"latency    hit -> webhook: p50 {p50:.2f} s  p90 {p90:.2f} s  p99 {p99:.2f} s  max {top:.2f} s")
        within = sum(1 for v in latencies if v <= bound)
        print(f"bound      hold + interval + 10 s = {bound:g} s: {within} of {len(latencies)} within")


def main() -> None:
    """Parse flags and run."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_triggers", description=__doc__.split("\n")[0])
    parser.add_argument("--hold", type=float, default=2.0, help="PIXELTRACK_TRIGGER_HOLD (default 2 s)")
    parser.add_argument("--interval", type=int, default=1, help="PIXELTRACK_ROLLUP_INTERVAL (default 1 s)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long hits are written")
    parser.add_argument("--rate", type=float, default=10.0, help="human clicks per second")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--log", default="bench_triggers_aggregator.log", help="the aggregator's output")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
