"""The benchmark's measurements: servers under the same wrk load, CPU from the OS.

Every server under test runs pinned to its own core (the last one) and wrk
to core 0 where the machine has two or more; PostgreSQL is the system's and
is not pinned. CPU time is utime + stime of the server's processes (psutil,
from /proc) over the drive, divided by the hits answered.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from loadtest import driver_wrk, procs, support
from loadtest.traffic import Request

NGINX_CONF = """
user root;
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log {tmp}/access.log combined;
    client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
    large_client_header_buffers 4 16k;
    server {{
        listen 127.0.0.1:{port};
        location = /healthz {{ default_type text/plain; return 200 "ok\\n"; }}
        location / {{ empty_gif; add_header Cache-Control "no-store, no-cache, must-revalidate, private, max-age=0"; }}
    }}
}}
"""


@dataclass
class Plan:
    """How every drive of the benchmark is run."""

    seconds: float
    connections: int
    repeats: int
    server_cpus: set[int] | None
    driver_cpus: set[int] | None
    settle: float = 1.0  # after a drive, so a collector's last flush is counted too


def plan(quick: bool, connections: int) -> Plan:
    """Pinning where there are two cores or more; short runs with --quick."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server, driver = ({cpus[-1]}, {cpus[0]}) if len(cpus) >= 2 else (None, None)
    return Plan(5.0 if quick else 15.0, connections, 1 if quick else 3, server, driver)


@dataclass
class Measure:
    """One drive against one server."""

    hits: int
    seconds: float
    cpu: float
    p50: float
    p90: float
    p99: float
    max: float
    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def rps(self) -> float:
        """Answers per second."""
        return self.hits / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        """Server CPU microseconds per answer."""
        return self.cpu / self.hits * 1e6 if self.hits else 0.0


async def measure(server: procs.Server, requests: list[Request], p: Plan, rate: float | None = None,
                  seconds: float | None = None, pin: bool = True) -> Measure:
    """Drive ``server`` with wrk (1 thread) and read its CPU time around the drive."""
    before = server.cpu_seconds()
    r = await driver_wrk.drive(requests, "127.0.0.1", server.port, connections=p.connections,
                               duration=seconds or p.seconds, rate=rate, threads=1,
                               cpus=p.driver_cpus if pin else None, show_progress=False)
    await asyncio.sleep(p.settle)
    cpu = server.cpu_seconds() - before
    return Measure(sum(r.statuses.values()), r.seconds, cpu, r.p50, r.p90, r.p99, r.max, r.statuses)


def start_collector(url: str, secret: str, tmp: Path, cpus: set[int] | None, workers: int = 1,
                    **env: str) -> procs.Server:
    """A collector the benchmark owns, ready."""
    port = support.free_port()
    spool = Path(tempfile.mkdtemp(prefix="spool-", dir=tmp))
    server = procs.Server(procs.collector_cmd(port, workers), port, procs.collector_env(url, secret, spool, **env),
                          cpus=cpus, log=tmp / f"collector-{port}.log")
    server.wait_ready()
    return server


def start_bare(tmp: Path, cpus: set[int] | None, canned: bool = False) -> procs.Server:
    """The bare aiohttp + uvloop pixel server (answering from prebuilt bytes with ``canned``), ready."""
    port = support.free_port()
    cmd = [sys.executable, "-m", "loadtest.bare", "--port", str(port), *(["--canned"] if canned else [])]
    server = procs.Server(cmd, port, cpus=cpus, log=tmp / f"bare-{port}.log")
    server.wait_ready()
    return server


def start_nginx(tmp: Path, cpus: set[int] | None) -> procs.Server | None:
    """nginx with empty_gif and an access log (one worker), or None when not installed."""
    binary = next((b for b in ("/usr/sbin/nginx", "/usr/bin/nginx") if os.path.exists(b)), None)
    if binary is None:
        return None
    folder = Path(tempfile.mkdtemp(prefix="nginx-", dir=tmp))
    port = support.free_port()
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=folder, port=port))
    server = procs.Server([binary, "-c", str(conf), "-p", str(folder)], port, cpus=cpus, log=folder / "stdout.log")
    server.wait_ready()
    return server


async def versus(subject: procs.Server, baseline: procs.Server, requests: list[Request],
                 p: Plan) -> tuple[list[Measure], list[Measure]]:
    """Alternate drives (baseline, subject) ``p.repeats`` times after one warm-up each."""
    for s in (baseline, subject):
        await measure(s, requests, p, seconds=2.0)
    subs, bases = [], []
    for _ in range(p.repeats):
        bases.append(await measure(baseline, requests, p))
        subs.append(await measure(subject, requests, p))
    return subs, bases


def median_ratio(subs: list[Measure], bases: list[Measure], attr: str) -> float:
    """Median over the pairs of subject/baseline for ``attr``."""
    return statistics.median(getattr(s, attr) / getattr(b, attr) for s, b in zip(subs, bases, strict=True))


def best(ms: list[Measure]) -> Measure:
    """The drive with the median rate."""
    return sorted(ms, key=lambda m: m.rps)[len(ms) // 2]
