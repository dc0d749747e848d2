"""`python -m loadtest.bench_idle`: a normal client's pixel latency alone, then among idle and slow clients.

The collector runs under a small open-file limit (1,024 by default, as on
many hosts). A child process then holds ``--idle`` connections that never
send a byte (reconnecting a second after the server closes one, as a
persistent client would) and ``--slow`` clients that trickle a request head
in a byte at a time. Meanwhile a normal client opens a fresh connection per
pixel, sequentially; its p50/p99 are printed next to the same client's
figures with nothing else connected, as ratios. A request not answered
within ``--timeout`` counts as failed. A phase lasts about ``--samples`` x
``--gap`` (15 s by default), longer than the header timeout, so the slow
clients are cut and come back during it.

    python -m loadtest.bench_idle                          # this tree's collector
    python -m loadtest.bench_idle --against 93739f2        # and a revision's, for comparison

Loopback only; every phase ends by count or by ``--phase-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import resource
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from urllib.parse import urlsplit

from loadtest import campaign as campaigns
from loadtest import procs, support
from loadtest.ab import drop_worktree, worktree
from loadtest.support import free_port
from pixeltrack.core.mint import Minter

# `python -m collector` under an open-file limit (soft, hard) set before it starts.
UNDER_LIMIT = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({0}, {0})); "
               "sys.argv = ['collector', *sys.argv[1:]]; runpy.run_module('collector', run_name='__main__')")


@dataclass
class Latency:
    """One phase of the normal client: latencies of the answered pixels, and the failures."""

    ms: list[float]
    failed: int

    def pct(self, q: float) -> float:
        """The ``q`` quantile in ms (nan when nothing was answered)."""
        if not self.ms:
            return float("nan")
        return statistics.quantiles(self.ms, n=100, method="inclusive")[int(q * 100) - 1] if q < 1 else max(self.ms)

    def line(self) -> str:
        return (f"p50 {self.pct(0.5):7.2f} ms  p99 {self.pct(0.99):7.2f} ms  "
                f"({len(self.ms)} of {len(self.ms) + self.failed} answered)")


async def one_pixel(port: int, path: str, limit: float) -> float | None:
    """Connect, GET, read the whole answer: milliseconds, or None when it failed or took over ``limit`` s."""
    began = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
                answer = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    return (time.perf_counter() - began) * 1000 if answer.startswith(b"HTTP/1.1 200") else None


async def normal_client(port: int, paths: list[str], limit: float, seconds: float, gap: float) -> Latency:
    """The pixels one after another, ``gap`` seconds apart, until done or ``seconds`` have passed."""
    ms: list[float] = []
    failed = 0
    deadline = time.monotonic() + seconds
    for path in paths:
        if time.monotonic() > deadline:
            break
        got = await one_pixel(port, path, limit)
        if got is None:
            failed += 1
        else:
            ms.append(got)
        await asyncio.sleep(gap)
    return Latency(ms, failed)


# --- the crowd: idle and slow clients, in a child process -------------------------------------------------

async def hold_idle(port: int, stop: asyncio.Event, tally: dict[str, int], reconnect: float) -> None:
    """One idle connection, reopened ``reconnect`` seconds after the server closes it (0: never)."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            tally["refused"] += 1
            await asyncio.sleep(max(reconnect, 1.0))
            continue
        tally["opened"] += 1
        closed = asyncio.ensure_future(reader.read(1))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([closed, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        writer.close()
        if not closed.done():
            closed.cancel()
            return
        tally["idle_closed"] += 1
        if reconnect <= 0:
            return
        await asyncio.sleep(reconnect)


async def trickle(port: int, head: bytes, stop: asyncio.Event, tally: dict[str, int], every: float) -> None:
    """A request head sent a byte every ``every`` seconds; started again when the server cuts it."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            tally["refused"] += 1
            await asyncio.sleep(1.0)
            continue
        try:
            for byte in head:
                if stop.is_set() or reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(every)
            if not stop.is_set():
                tally["slow_cut"] += 1  # cut by the server (or answered, with a slow enough limit)
        except OSError:
            tally["slow_cut"] += 1
        finally:
            writer.close()
        await asyncio.sleep(1.0)


async def crowd(port: int, idle: int, slow: int, head: bytes, reconnect: float, trickle_every: float,
                pipe: Connection) -> None:
    stop = asyncio.Event()
    tally = {"opened": 0, "refused": 0, "idle_closed": 0, "slow_cut": 0}
    tasks = [asyncio.create_task(hold_idle(port, stop, tally, reconnect)) for _ in range(idle)]
    tasks += [asyncio.create_task(trickle(port, head, stop, tally, trickle_every)) for _ in range(slow)]
    await asyncio.sleep(min(3.0, 1.0 + idle / 1000))  # let them connect
    pipe.send("ready")
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send(tally)


def run_crowd(port: int, idle: int, slow: int, head: bytes, reconnect: float, trickle_every: float,
              pipe: Connection) -> None:
    """The child process: as many descriptors as allowed, then the crowd until told to stop."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(crowd(port, idle, slow, head, reconnect, trickle_every, pipe))


# --- one collector: alone, then in the crowd ---------------------------------------------------------------

async def bench_one(label: str, cmd: list[str], url: str, args: argparse.Namespace, tmp: Path) -> None:
    port = free_port()
    secret = secrets.token_urlsafe(32)
    spool = Path(tempfile.mkdtemp(prefix="spool-", dir=tmp))
    log = tmp / f"{label}.log"
    env = procs.collector_env(url, secret, spool, PIXELTRACK_FLUSH_INTERVAL="0.2")
    server = procs.Server([*cmd, "--host", "127.0.0.1", "--port", str(port)], port, env, log=log)
    minter = Minter(secret, f"http://127.0.0.1:{port}")
    paths = [urlsplit(minter.open_url(1, i)).path for i in range(args.samples)]
    head = f"GET {paths[0]} HTTP/1.1\r\nHost: bench\r\nUser-Agent: {'s' * 200}\r\n\r\n".encode()
    try:
        server.wait_ready()
        await normal_client(port, paths[:50], args.timeout, args.phase_seconds, 0.01)  # warm-up
        alone = await normal_client(port, paths, args.timeout, args.phase_seconds, args.gap)
        spawn = multiprocessing.get_context("spawn")
        ours, theirs = spawn.Pipe()
        child = spawn.Process(target=run_crowd, args=(port, args.idle, args.slow, head, args.reconnect,
                                                                 args.trickle, theirs))
        child.start()
        try:
            if not ours.poll(60):
                raise RuntimeError("the crowd did not start")
            ours.recv()
            loaded = await normal_client(port, paths, args.timeout, args.phase_seconds, args.gap)
            ours.send("stop")
            tally = ours.recv() if ours.poll(60) else {}
        finally:
            child.join(30)
            if child.is_alive():
                child.kill()
        alive = server.proc.poll() is None
    finally:
        server.stop()
    text = log.read_text(errors="replace")
    cap = re.search(r"open-file limit \d+, at most (\d+) connections", text)
    emfile = text.count("Too many open files")
    print(f"\n{label}: open-file limit {args.fd_limit}, "
          f"{'cap ' + cap.group(1) + ' connections' if cap else 'no connection cap'}"
          f"{'' if alive else ', EXITED during the run'}")
    print(f"  alone           {alone.line()}")
    print(f"  {args.idle} idle + {args.slow} slow  {loaded.line()}")
    p50, p99 = loaded.pct(0.5) / alone.pct(0.5), loaded.pct(0.99) / alone.pct(0.99)
    print(f"  ratio           p50 x{p50:.2f}  p99 x{p99:.2f}")
    print(f"  crowd           {tally.get('opened', 0)} connections opened, {tally.get('idle_closed', 0)} idle closed "
          f"by the server, {tally.get('slow_cut', 0)} slow cut, {tally.get('refused', 0)} refused; "
          f"'Too many open files' in the log: {emfile}")


def collector_cmd(fd_limit: int, tree: Path | None) -> list[str]:
    """The collector under ``fd_limit``, from this tree or a checked-out revision ``tree``."""
    cmd = [sys.executable, "-c", UNDER_LIMIT.format(fd_limit)]
    if tree is None:
        return cmd
    return ["env", f"PYTHONPATH={tree}", "sh", "-c", f'cd "{tree}" && exec "$@"', "sh", *cmd]


async def run(args: argparse.Namespace) -> None:
    server_url = campaigns.server_url(args.database_url)
    url = await support.create_database(server_url, "pt_idle")
    tmp = Path(tempfile.mkdtemp(prefix="pixeltrack-idle-"))
    against = worktree(args.against, tmp) if args.against else None
    try:
        await bench_one("this tree", collector_cmd(args.fd_limit, None), url, args, tmp)
        if against is not None:
            await bench_one(f"against {args.against}", collector_cmd(args.fd_limit, against), url, args, tmp)
    finally:
        if against is not None:
            drop_worktree(against)
        await support.drop_database(server_url, url)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_idle", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--idle", type=int, default=1500, help="connections that never send a byte")
    p.add_argument("--slow", type=int, default=50, help="clients trickling a request head in")
    p.add_argument("--trickle", type=float, default=0.5, help="seconds between a slow client's bytes")
    p.add_argument("--reconnect", type=float, default=1.0,
                   help="seconds before a closed idle client reconnects (0: it does not)")
    p.add_argument("--fd-limit", type=int, default=1024, help="the collector's open-file limit (soft and hard)")
    p.add_argument("--samples", type=int, default=300, help="pixels the normal client fetches per phase")
    p.add_argument("--gap", type=float, default=0.05, help="seconds between the normal client's pixels")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds before a normal request counts as failed")
    p.add_argument("--phase-seconds", type=float, default=30.0, help="bound on each phase of the normal client")
    p.add_argument("--against", help="git revision whose collector to run the same way afterwards")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = p.parse_args(argv)
    if not 0 < args.idle + args.slow <= 20_000 or args.samples < 10:
        raise SystemExit("bench_idle: --idle + --slow between 1 and 20000, --samples at least 10")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
