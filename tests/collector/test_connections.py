"""Idle, trickling and surplus connections cannot starve the pixel (real collector processes).

A subprocess collector with a small connection cap (or a small open-file
limit) gets more idle sockets than it may hold and clients that trickle their
requests in; a normal client still gets its pixel within a second, the
stalest connections are the ones closed, and idle or slow ones see EOF after
their timeout.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from collector.answers import GIF
from loadtest.support import free_port
from pixeltrack.core.mint import Minter
from tests.conftest import TEST_SECRET
from tests.support.collector import read_pipelined_pixels
from tests.support.process import start, wait_exit, wait_ready

pytestmark = pytest.mark.slow

# `python -m collector` under a given open-file limit (soft, hard), set before it starts.
UNDER_LIMIT = ("-c", "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({}, {})); "
               "sys.argv = ['collector', *sys.argv[1:]]; runpy.run_module('collector', run_name='__main__')")


class Collector:
    """A running collector process: its ports, its log, its pixel."""

    def __init__(self, port: int, operator: int, log: Path) -> None:
        self.port, self.operator, self.log = port, operator, log
        self.pixel = urlsplit(Minter(TEST_SECRET, f"http://127.0.0.1:{port}").open_url(1, 2)).path

    async def metric(self, name: str) -> float:
        """One sample from the operator port's /metrics (0 when absent)."""
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{self.operator}/metrics") as resp:
            text = await resp.text()
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0


@asynccontextmanager
async def collector(db_url: str, tmp_path: Path, fd_limit: tuple[int, int] | None = None,
                    **env: str) -> AsyncIterator[Collector]:
    """A collector process with ``env`` (PIXELTRACK_* names without the prefix), stopped at the end."""
    port, operator = free_port(), free_port()
    log = tmp_path / "collector.log"
    args = ["--port", str(port)]
    cmd = [UNDER_LIMIT[0], UNDER_LIMIT[1].format(*fd_limit), *args] if fd_limit else ["-m", "collector", *args]
    proc = start(cmd, {"DATABASE_URL": db_url, "PIXELTRACK_SECRET": TEST_SECRET, "PIXELTRACK_DRAIN_GRACE": "0",
                       "PIXELTRACK_SPOOL_DIR": str(tmp_path / "spool"), "PIXELTRACK_OPERATOR_PORT": str(operator),
                       **{f"PIXELTRACK_{k}": v for k, v in env.items()}}, tmp_path, log=log)
    try:
        # Connection: close, so the readiness check leaves no connection of its own behind.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            await wait_ready(session, f"http://127.0.0.1:{port}", proc)
        await asyncio.sleep(0.2)
        yield Collector(port, operator, log)
    finally:
        proc.terminate()
        assert await wait_exit(proc) == 0


async def open_idle(port: int, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``n`` connections opened one after another, sending nothing."""
    return [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]


async def closed_by_server(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], wait: float) -> list[int]:
    """Indices of the connections that saw EOF (or a reset) within ``wait`` seconds."""
    async def eof(reader: asyncio.StreamReader) -> bool:
        try:
            return await asyncio.wait_for(reader.read(1), wait) == b""
        except TimeoutError:
            return False
        except ConnectionError:
            return True

    results = await asyncio.gather(*(eof(r) for r, _ in conns))
    return [i for i, closed in enumerate(results) if closed]


async def trickle(port: int, data: bytes, every: float) -> tuple[float, bytes]:
    """Send ``data`` a byte at a time; (seconds until the server closed, what it answered)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    try:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every)
            if reader.at_eof() or writer.is_closing():
                break
        answer = await asyncio.wait_for(reader.read(), 30)
    except ConnectionError:
        answer = b""
    writer.close()
    return time.monotonic() - began, answer


async def fetch_pixel(port: int, path: str) -> tuple[float, bytes]:
    """A normal client: connect, GET, read the whole answer; (seconds, answer)."""
    began = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return time.monotonic() - began, answer


class TestConnectionCap:
    """Past the cap, each new connection closes the one longest without a new request."""

    async def test_idle_and_trickling_clients_cannot_starve_the_pixel(self, db_url: str, tmp_path: Path) -> None:
        """Cap 200, 300 idle + 10 trickling connections: the normal client's pixel comes within a second,
        and exactly the 111 oldest idle connections were closed."""
        async with collector(db_url, tmp_path, MAX_CONNECTIONS="200", KEEPALIVE_TIMEOUT="60",
                             HEADER_TIMEOUT="60") as c:
            idle = await open_idle(c.port, 300)
            slow = [asyncio.create_task(trickle(c.port, f"GET {c.pixel} HTTP/1.1\r\nHost: x\r\n".encode(), 0.1))
                    for _ in range(10)]
            await asyncio.sleep(0.5)
            seconds, answer = await fetch_pixel(c.port, c.pixel)
            closed = await closed_by_server(idle, 1.0)
            cut = await c.metric('pixeltrack_connections_cut_total{reason="over_cap"}')
            for task in slow:
                task.cancel()
            for _, writer in idle:
                writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(GIF)
        assert seconds < 1.0
        # 300 idle + 10 trickling + the normal client = 311 over a cap of 200 (the
        # scrape's own connection comes after the count was read).
        assert closed == list(range(111))
        assert cut == 111.0

    async def test_low_open_file_limit(self, db_url: str, tmp_path: Path) -> None:
        """Started with 256 files soft / 320 hard: the collector raises its limit to 320, caps itself at
        256 connections, and with 400 idle sockets open the pixel still answers within a second."""
        async with collector(db_url, tmp_path, fd_limit=(256, 320)) as c:
            idle = await open_idle(c.port, 400)
            seconds, answer = await fetch_pixel(c.port, c.pixel)
            closed = await closed_by_server(idle, 1.0)
            for _, writer in idle:
                writer.close()
        log = c.log.read_text()
        assert "open-file limit 320, at most 256 connections" in log
        assert "Too many open files" not in log and "Traceback" not in log
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(GIF)
        assert seconds < 1.0
        assert closed == list(range(400 + 1 - 256))


class TestTimeouts:
    """Idle keep-alive connections and requests that trickle in are closed by the server."""

    async def test_idle_keepalive_closes_after_the_timeout(self, db_url: str, tmp_path: Path) -> None:
        """PIXELTRACK_KEEPALIVE_TIMEOUT=1: a connection that never sent anything, and one idle after a pixel,
        both see EOF between 1 and 3 seconds."""
        async with collector(db_url, tmp_path, KEEPALIVE_TIMEOUT="1") as c:
            began = time.monotonic()
            silent = await asyncio.open_connection("127.0.0.1", c.port)
            used = await asyncio.open_connection("127.0.0.1", c.port)
            used[1].write(f"GET {c.pixel} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await used[0].readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK")
            assert await used[0].readexactly(len(GIF)) == GIF
            assert await closed_by_server([silent, used], 5.0) == [0, 1]
            elapsed = time.monotonic() - began
        assert 1.0 <= elapsed < 3.0

    async def test_trickled_head_is_cut_at_the_header_timeout(self, db_url: str, tmp_path: Path) -> None:
        """PIXELTRACK_HEADER_TIMEOUT=1 (keep-alive 30): a head sent a byte every 0.1 s is cut after ~1 s,
        unanswered; a client sending its request whole meanwhile gets the pixel."""
        async with collector(db_url, tmp_path, HEADER_TIMEOUT="1", KEEPALIVE_TIMEOUT="30") as c:
            head = f"GET {c.pixel} HTTP/1.1\r\nHost: x\r\nUser-Agent: {'a' * 100}\r\n\r\n".encode()
            slow = asyncio.create_task(trickle(c.port, head, 0.1))
            await asyncio.sleep(0.3)
            _, answer = await fetch_pixel(c.port, c.pixel)
            seconds, slow_answer = await slow
            cut = await c.metric('pixeltrack_connections_cut_total{reason="slow_request"}')
        assert answer.endswith(GIF)
        assert slow_answer == b""
        assert 1.0 <= seconds < 2.0
        assert cut == 1.0

    async def test_trickled_body_is_cut_quietly(self, db_url: str, tmp_path: Path) -> None:
        """A beacon whose body trickles in is cut at the header timeout, and nothing is logged as an error."""
        async with collector(db_url, tmp_path, HEADER_TIMEOUT="1", KEEPALIVE_TIMEOUT="30") as c:
            request = b"POST /r HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 200\r\n\r\n"
            reader, writer = await asyncio.open_connection("127.0.0.1", c.port)
            writer.write(request)
            seconds, answer = await trickle(c.port, request + b"{" + b" " * 199, 0.1)
            silent_body = await closed_by_server([(reader, writer)], 3.0)
            writer.close()
        assert (answer, silent_body) == (b"", [0])
        assert 1.0 <= seconds < 2.0
        log = c.log.read_text()
        assert " ERROR " not in log and "Traceback" not in log, log

    async def test_pipelined_flood_read_late_is_not_cut(self, db_url: str, tmp_path: Path) -> None:
        """PIXELTRACK_HEADER_TIMEOUT=0.5: 40 000 pipelined pixels, read only after 2 s, all arrive in order.

        The server stops reading while the client does not read its answers,
        with a request head cut in two in its buffer: that wait is the
        server's, and the deadline does not count it against the client.
        """
        async with collector(db_url, tmp_path, HEADER_TIMEOUT="0.5") as c:
            req = f"GET {c.pixel} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
            count = 40_000
            answers = await read_pipelined_pixels(c.port, req, count, pause=2.0)
            cut = await c.metric('pixeltrack_connections_cut_total{reason="slow_request"}')
        assert (answers, cut) == (count, 0.0)
