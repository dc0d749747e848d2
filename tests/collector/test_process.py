"""Real collector processes: SIGTERM and SIGKILL under traffic, several workers, `pixeltrack up`."""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from collector.answers import GIF
from loadtest.support import free_port
from pixeltrack.core.mint import Minter
from tests.conftest import TEST_SECRET
from tests.support.process import start, wait_exit, wait_ready

pytestmark = pytest.mark.slow


async def hammer(session: aiohttp.ClientSession, urls: list[str], answered: Counter[int], stop: asyncio.Event) -> None:
    """Request ``urls`` in a loop until ``stop``; count only complete answers, by recipient index."""
    i = 0
    while not stop.is_set() and i < 100_000:
        idx = i % len(urls)
        i += 1
        try:
            async with session.get(urls[idx]) as resp:
                if resp.status == 200 and await resp.read() == GIF:
                    answered[idx] += 1
        except (TimeoutError, aiohttp.ClientError):
            await asyncio.sleep(0.01)


class TestSigterm:
    async def test_exactly_the_answered_hits_are_stored(self, db_url: str, tmp_path: Path,
                                                        conn: asyncpg.Connection) -> None:
        """SIGTERM under traffic: readyz turns 503, hits are still answered, and exactly those answered land."""
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start(["-m", "collector", "--port", str(port)], {
            "DATABASE_URL": db_url, "PIXELTRACK_SECRET": TEST_SECRET, "PIXELTRACK_DRAIN_GRACE": "1.0",
            "PIXELTRACK_FLUSH_INTERVAL": "0.2", "PIXELTRACK_SPOOL_DIR": str(tmp_path / "spool")}, tmp_path)
        m = Minter(TEST_SECRET, base)
        urls = [m.open_url(1, i) for i in range(50)]
        answered: Counter[int] = Counter()
        stop = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await wait_ready(session, base, proc)
            workers = [asyncio.create_task(hammer(session, urls, answered, stop)) for _ in range(8)]
            await asyncio.sleep(0.7)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with session.get(f"{base}/readyz") as resp:
                assert resp.status == 503
            code = await wait_exit(proc)
            stop.set()
            await asyncio.gather(*workers)
        assert code == 0
        stored = Counter({r["recipient_id"]: r["n"] for r in await conn.fetch(
            "SELECT recipient_id, count(*) AS n FROM raw_hits GROUP BY recipient_id")})
        assert sum(answered.values()) > 100
        assert stored == answered
        assert not list((tmp_path / "spool").glob("*.batch"))


async def one_each(session: aiohttp.ClientSession, urls: list[str], order: Iterator[int], answered: set[int],
                   in_flight: set[int], stop: asyncio.Event) -> None:
    """Request ``urls[i]`` for each i from ``order`` until ``stop``; an answer not received whole is in flight."""
    while not stop.is_set():
        i = next(order)
        try:
            async with session.get(urls[i]) as resp:
                if resp.status == 200 and await resp.read() == GIF:
                    answered.add(i)
                    continue
        except (TimeoutError, aiohttp.ClientError):
            pass
        in_flight.add(i)  # the server may or may not have recorded it
        await asyncio.sleep(0.01)


class TestSigkill:
    async def test_every_answered_hit_survives(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
        """SIGKILL under traffic, hits in memory: after a restart every answered hit is stored exactly once.

        Each request is a different recipient, so a stored hit names its request: nothing is stored twice,
        every answered request is stored, and the only others stored are requests in flight at the kill.
        The rows stored before the restart are deleted first, as a roll-up deletes them: the journal still
        holds those hits, and its recovery must not put them back (the tombstones of copied_hits).
        """
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        spool = tmp_path / "spool"
        env = {"DATABASE_URL": db_url, "PIXELTRACK_SECRET": TEST_SECRET, "PIXELTRACK_DRAIN_GRACE": "0.2",
               "PIXELTRACK_FLUSH_INTERVAL": "1.0", "PIXELTRACK_SCAN_INTERVAL": "0.2",
               "PIXELTRACK_SPOOL_DIR": str(spool)}
        proc = start(["-m", "collector", "--port", str(port)], env, tmp_path, log=tmp_path / "first.log")
        m = Minter(TEST_SECRET, base)
        urls = [m.open_url(1, i) for i in range(60_000)]
        answered: set[int] = set()
        in_flight: set[int] = set()
        stop = asyncio.Event()
        order = itertools.count()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            await wait_ready(session, base, proc)
            workers = [asyncio.create_task(one_each(session, urls, order, answered, in_flight, stop)) for _ in range(8)]
            await asyncio.sleep(1.6)  # one flush has run; the last ~0.6 s of hits are only in memory and the journal
            proc.kill()
            assert await wait_exit(proc) == -signal.SIGKILL
            stop.set()
            await asyncio.gather(*workers)
            before = {r["recipient_id"] for r in await conn.fetch("DELETE FROM raw_hits RETURNING recipient_id")}
            unstored = len(answered) - len(before)
            again = start(["-m", "collector", "--port", str(port)], env, tmp_path, log=tmp_path / "second.log")
            await wait_ready(session, base, again)

            async def recovered() -> bool:
                left = [p for p in (spool / "journal").glob("*.journal") if p.name.startswith(f"{proc.pid}-")]
                return not left and not list(spool.glob("*.batch*"))

            for _ in range(300):
                if await recovered():
                    break
                await asyncio.sleep(0.1)
            again.send_signal(signal.SIGTERM)
            assert await wait_exit(again) == 0
        stored = Counter(r["recipient_id"] for r in await conn.fetch("SELECT recipient_id FROM raw_hits"))
        assert len(answered) > 500 and unstored > 100  # the kill did catch answered hits in memory
        assert max(stored.values()) == 1 and not before & set(stored)
        assert answered <= before | set(stored)
        assert (before | set(stored)) - answered <= in_flight


class TestWorkers:
    async def test_two_workers_share_a_port(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
        """--workers 2 runs two processes on one port; all hits land; SIGTERM stops both."""
        port, operator = free_port(), free_port()
        base = f"http://127.0.0.1:{port}"
        log = tmp_path / "workers.log"
        proc = start(["-m", "collector", "--port", str(port), "--workers", "2"], {
            "DATABASE_URL": db_url, "PIXELTRACK_SECRET": TEST_SECRET, "PIXELTRACK_DRAIN_GRACE": "0.2",
            "PIXELTRACK_SPOOL_DIR": str(tmp_path / "spool"), "PIXELTRACK_OPERATOR_PORT": str(operator)},
            tmp_path, log=log)
        m = Minter(TEST_SECRET, base)

        def listening() -> set[str]:
            return set(re.findall(r"listening on .* \(pid (\d+)\)", log.read_text()))

        async with aiohttp.ClientSession() as session:
            await wait_ready(session, base, proc)
            for _ in range(300):
                if len(listening()) == 2:
                    break
                await asyncio.sleep(0.1)
            for i in range(40):
                async with session.get(m.open_url(3, i), headers={"Connection": "close"}) as resp:
                    assert await resp.read() == GIF
            async with session.get(f"http://127.0.0.1:{operator}/metrics") as resp:
                assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc) == 0
        assert len(listening()) == 2
        assert await conn.fetchval("SELECT count(DISTINCT recipient_id) FROM raw_hits WHERE job_id = 3") == 40


class TestUp:
    async def test_up_on_embedded_database_answers_a_pixel(self, tmp_path: Path) -> None:
        """`pixeltrack up` with no DATABASE_URL starts PostgreSQL itself, prints URLs, and the pixel lands."""
        port, operator = free_port(), free_port()
        proc = start(["-m", "pixeltrack.cli.main", "up", "--port", str(port)],
                     {"DATABASE_URL": "", "PIXELTRACK_SECRET": "", "PIXELTRACK_DATA_DIR": str(tmp_path / "data"),
                      "PIXELTRACK_FLUSH_INTERVAL": "0.1", "PIXELTRACK_DRAIN_GRACE": "0.1",
                      "PIXELTRACK_OPERATOR_PORT": str(operator)}, tmp_path)
        assert proc.stdout is not None
        lines: list[str] = []
        loop = asyncio.get_running_loop()
        while not any("open pixel" in line for line in lines):
            line = (await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 120)).decode()
            assert line, "".join(lines)
            lines.append(line)
        pixel = next(line for line in lines if "open pixel" in line).split()[-1]
        assert pixel.startswith(f"http://127.0.0.1:{port}/o/")
        async with aiohttp.ClientSession() as session:
            async with session.get(pixel) as resp:
                assert (resp.status, await resp.read()) == (200, GIF)
            for _ in range(100):
                async with session.get(f"http://127.0.0.1:{operator}/metrics") as resp:
                    if "pixeltrack_hits_written_total 1.0" in await resp.text():
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the hit was not written")
        proc.send_signal(signal.SIGINT)
        assert await wait_exit(proc, 60) == 0
        assert (tmp_path / "data" / "secret").exists()
