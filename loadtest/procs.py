"""Processes the load test starts: a collector (or a baseline server), watched and stopped.

Also what the benchmark reads from the operating system about them: CPU time
(utime + stime of the process and its children, from /proc via psutil) and
peak resident memory (VmHWM).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import psutil

LOOPBACK_NAMES = {"localhost"}


class NotLoopback(ValueError):
    """The target is not a loopback address: the load test never leaves the machine."""


def loopback_target(url: str) -> tuple[str, int]:
    """(host, port) of ``url``; NotLoopback unless the host is 127.0.0.0/8 or ::1."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "http" or not parts.port:
        raise NotLoopback(f"target must be http://127.0.0.1:PORT, got {url!r}")
    if host in LOOPBACK_NAMES:
        return "127.0.0.1", parts.port
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise NotLoopback(f"refusing {host!r}: the load test only targets loopback addresses")
    return host, parts.port


def pin_cpus(cpus: set[int] | None) -> list[str]:
    """A ``taskset`` prefix for ``cpus``, empty when pinning is not possible."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return []
    if not cpus <= os.sched_getaffinity(0):
        return []
    return ["taskset", "-c", ",".join(map(str, sorted(cpus)))]


class Server:
    """A server process on a loopback port; stopped with SIGTERM, bounded waits."""

    def __init__(self, cmd: Sequence[str], port: int, env: dict[str, str] | None = None,
                 cpus: set[int] | None = None, log: Path | None = None, ready_path: str = "/healthz") -> None:
        self.port = port
        self.ready_path = ready_path
        self._log = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([*pin_cpus(cpus), *cmd], env={**os.environ, **(env or {})},
                                     stdout=self._log, stderr=self._log)
        self.ps = psutil.Process(self.proc.pid)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll the ready path until it answers 200; RuntimeError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before it was ready")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{self.ready_path}", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server on port {self.port} not ready after {timeout:.0f}s")

    def processes(self) -> list[psutil.Process]:
        """The process and its children (workers), as they are now."""
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """utime + stime of the process and its live children, in seconds."""
        total = 0.0
        for p in self.processes():
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    def peak_rss(self) -> int:
        """Largest VmHWM (peak resident set) of the process and its children, in bytes."""
        peak = 0
        for p in self.processes():
            try:
                text = Path(f"/proc/{p.pid}/status").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        return peak

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait (bounded), SIGKILL if need be; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if not isinstance(self._log, int):  # a file, not subprocess.DEVNULL
            self._log.close()
        return int(self.proc.returncode)


def collector_cmd(port: int, workers: int = 1) -> list[str]:
    """The command line of a collector on 127.0.0.1:``port``."""
    return [sys.executable, "-m", "collector", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]


def aggregator_cmd(*flags: str) -> list[str]:
    """The command line of an aggregator (``--once``, or the scheduled service with no flags)."""
    return [sys.executable, "-m", "aggregator", *flags]


def collector_env(database_url: str, secret: str, spool_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of a collector the load test owns (no drain wait: nothing balances it).

    No operator listener unless ``extra`` gives it a port: several collectors
    run side by side (loadtest.ab), and a fixed port would be taken twice.
    """
    return {"DATABASE_URL": database_url, "PIXELTRACK_SECRET": secret, "PIXELTRACK_SPOOL_DIR": str(spool_dir),
            "PIXELTRACK_DRAIN_GRACE": "0", "PIXELTRACK_OPERATOR_PORT": "0", **extra}


@contextlib.contextmanager
def postgres_on(cpus: set[int] | None) -> Iterator[int]:
    """Keep this machine's PostgreSQL processes on ``cpus`` (the driver's) for the block.

    The benchmark pins the collector to one core; without this, PostgreSQL's
    COPY backend is scheduled on that core too and its time shows up as the
    collector's latency. Yields how many processes were moved; restores them.
    """
    moved: list[tuple[int, set[int]]] = []
    if cpus and hasattr(os, "sched_setaffinity"):
        for proc in psutil.process_iter(["name"]):
            if (proc.info["name"] or "").startswith("postgres"):
                try:
                    moved.append((proc.pid, os.sched_getaffinity(proc.pid)))
                    os.sched_setaffinity(proc.pid, cpus)
                except OSError:  # not ours to move, or gone
                    continue
    try:
        yield len(moved)
    finally:
        for pid, before in moved:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, before)
