"""A collector of the benchmark's own, driven with a request mix for a duration or a count, then stopped.

wrk when installed (one thread), else the asyncio driver; the collector
flushes on SIGTERM, so when ``collect`` returns every answered hit is in
raw_hits (or the loss check says otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest import driver_asyncio, driver_wrk, procs, support
from loadtest.report import DriveResult
from loadtest.traffic import Request


@dataclass(frozen=True)
class Collected:
    """What the drive measured, the collector's CPU seconds during it, and its exit code."""

    result: DriveResult
    cpu: float
    exit_code: int


async def drive(requests: Sequence[Request], port: int, *, duration: float | None, count: int | None,
                connections: int, rate: float | None = None) -> DriveResult:  # fmt: skip
    """Drive 127.0.0.1:``port`` with wrk, or the asyncio driver without it."""
    seconds = None if count else duration
    bound = max(600.0, duration or 0.0)
    if driver_wrk.available():
        return await driver_wrk.drive(requests, "127.0.0.1", port, connections=connections, duration=seconds,
                                      count=count, rate=rate, max_seconds=bound, show_progress=False)  # fmt: skip
    return await driver_asyncio.drive(requests, "127.0.0.1", port, connections=connections, duration=seconds,
                                      count=count, rate=rate, max_seconds=bound, show_progress=False)  # fmt: skip


async def collect(url: str, requests: Sequence[Request], secret: str, folder: Path, *, duration: float | None = None,
                  count: int | None = None, connections: int = 32, rate: float | None = None,
                  balanced: bool = False) -> Collected:  # fmt: skip
    """Start a collector on ``url``'s database, drive it (``rate`` requests/s, default as fast as it goes), stop it.

    The collector flushes as it stops; its log goes to ``folder``. ``balanced``: the collector
    trusts 127.0.0.1 as its load balancer, so a request's X-Forwarded-For names its client
    (traffic.vary_addresses).
    """
    port = support.free_port()
    extra = {"PIXELTRACK_TRUSTED_PROXIES": "127.0.0.1"} if balanced else {}
    env = procs.collector_env(url, secret, folder / "spool", **extra)
    collector = procs.Server(procs.collector_cmd(port), port, env, log=folder / "collector.log")
    try:
        collector.wait_ready()
        before = collector.cpu_seconds()
        result = await drive(requests, port, duration=duration, count=count, connections=connections, rate=rate)
        cpu = collector.cpu_seconds() - before
    finally:
        code = collector.stop()
    return Collected(result, cpu, code)
