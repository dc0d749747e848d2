"""/metrics lives on the operator listener (loopback by default), never on the public pixel port."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
from collections import Counter
from pathlib import Path

import aiohttp
import psutil
import pytest

from collector.answers import GIF
from collector.config import CollectorConfig
from loadtest.support import free_port
from pixeltrack.core.mint import Minter
from tests.conftest import TEST_SECRET
from tests.support.collector import flush, make_config, minter, path, running, scrape
from tests.support.process import start, wait_exit, wait_ready


def listening(pid: int) -> Counter[tuple[str, int]]:
    """How many of process ``pid`` and its children listen on each (address, port)."""
    parent = psutil.Process(pid)
    return Counter((c.laddr.ip, c.laddr.port) for p in (parent, *parent.children(recursive=True))
                   for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN)


async def scraped(session: aiohttp.ClientSession, operator: int, want: str) -> str:
    """/metrics from the operator port once it shows ``want`` (flushes are asynchronous); the text."""
    text = ""
    for _ in range(100):
        async with session.get(f"http://127.0.0.1:{operator}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        if want in text:
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{want!r} never appeared in:\n{text}")


class TestSettings:
    def test_defaults_to_loopback(self) -> None:
        """Unset, the operator listener is 127.0.0.1:9464; PIXELTRACK_OPERATOR_PORT=0 turns it off."""
        env = {"DATABASE_URL": "postgresql://x/y", "PIXELTRACK_SECRET": TEST_SECRET}
        config = CollectorConfig.from_env(env)
        assert (config.operator_host, config.operator_port) == ("127.0.0.1", 9464)
        off = CollectorConfig.from_env({**env, "PIXELTRACK_OPERATOR_PORT": "0", "PIXELTRACK_OPERATOR_HOST": "::1"})
        assert (off.operator_host, off.operator_port) == ("::1", 0)


class TestPublicApp:
    async def test_no_metrics_on_the_public_app(self, db_url: str, tmp_path: Path) -> None:
        """The public app answers /metrics 404; the operator app of the same collector has the hit counters."""
        async with running(make_config(db_url, tmp_path)) as client:
            assert (await client.get(path(minter().open_url(4, 1)))).status == 200
            await flush(client)
            public = await client.get("/metrics")
            health = [(await client.get(p)).status for p in ("/healthz", "/readyz")]
            text = await scrape(client)
        assert (public.status, health) == (404, [200, 200])
        assert 'pixeltrack_hits_accepted_total{kind="open"} 1.0' in text


@pytest.mark.slow
class TestProcess:
    async def test_metrics_on_operator_port_only(self, db_url: str, tmp_path: Path) -> None:
        """A collector process: public /metrics 404, health checks 200 on both; the operator port, bound to
        127.0.0.1 alone, counts the hit."""
        port, operator = free_port(), free_port()
        proc = start(["-m", "collector", "--host", "0.0.0.0", "--port", str(port)], {
            "DATABASE_URL": db_url, "PIXELTRACK_SECRET": TEST_SECRET, "PIXELTRACK_DRAIN_GRACE": "0",
            "PIXELTRACK_FLUSH_INTERVAL": "0.1", "PIXELTRACK_SPOOL_DIR": str(tmp_path / "spool"),
            "PIXELTRACK_OPERATOR_PORT": str(operator)}, tmp_path)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, base, proc)
            async with session.get(Minter(TEST_SECRET, base).open_url(5, 6)) as resp:
                assert (resp.status, await resp.read()) == (200, GIF)
            text = await scraped(session, operator, "pixeltrack_hits_written_total 1.0")
            statuses = []
            for url in (f"{base}/metrics", f"{base}/healthz", f"{base}/readyz",
                        f"http://127.0.0.1:{operator}/healthz", f"http://127.0.0.1:{operator}/readyz"):
                async with session.get(url) as resp:
                    statuses.append(resp.status)
            sockets = listening(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc) == 0
        assert statuses == [404, 200, 200, 200, 200]
        assert 'pixeltrack_hits_accepted_total{kind="open"} 1.0' in text
        assert sockets == {("0.0.0.0", port): 1, ("127.0.0.1", operator): 1}

    async def test_port_zero_means_no_operator_listener(self, db_url: str, tmp_path: Path) -> None:
        """PIXELTRACK_OPERATOR_PORT=0: the process listens on the public port alone."""
        port = free_port()
        proc = start(["-m", "collector", "--port", str(port)], {
            "DATABASE_URL": db_url, "PIXELTRACK_SECRET": TEST_SECRET, "PIXELTRACK_DRAIN_GRACE": "0",
            "PIXELTRACK_SPOOL_DIR": str(tmp_path / "spool"), "PIXELTRACK_OPERATOR_PORT": "0"}, tmp_path)
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, f"http://127.0.0.1:{port}", proc)
            sockets = listening(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc) == 0
        assert sockets == {("127.0.0.1", port): 1}

    async def test_workers_one_operator_listener(self, db_url: str, tmp_path: Path) -> None:
        """--workers 3: one process alone listens on the operator port, and its /metrics adds up every
        worker's hits (60 pixels over fresh connections, spread by SO_REUSEPORT)."""
        port, operator = free_port(), free_port()
        log = tmp_path / "workers.log"
        proc = start(["-m", "collector", "--port", str(port), "--workers", "3"], {
            "DATABASE_URL": db_url, "PIXELTRACK_SECRET": TEST_SECRET, "PIXELTRACK_DRAIN_GRACE": "0",
            "PIXELTRACK_FLUSH_INTERVAL": "0.1", "PIXELTRACK_SPOOL_DIR": str(tmp_path / "spool"),
            "PIXELTRACK_OPERATOR_PORT": str(operator)}, tmp_path, log=log)
        base = f"http://127.0.0.1:{port}"
        m = Minter(TEST_SECRET, base)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            await wait_ready(session, base, proc)
            for _ in range(300):
                if len(set(re.findall(r"listening on .* \(pid (\d+)\)", log.read_text()))) == 3:
                    break
                await asyncio.sleep(0.1)
            for i in range(60):
                async with session.get(m.open_url(7, i)) as resp:
                    assert await resp.read() == GIF
            await scraped(session, operator, 'pixeltrack_hits_accepted_total{kind="open"} 60.0')
            sockets = listening(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc) == 0
        assert sockets == {("127.0.0.1", port): 3, ("127.0.0.1", operator): 1}
        assert log.read_text().count("operator endpoints on") == 1

    async def test_taken_operator_port_stops_the_start(self, db_url: str, tmp_path: Path) -> None:
        """An operator port already in use: exit 1 with the address named in one log line, no traceback."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            operator = taken.getsockname()[1]
            proc = start(["-m", "collector", "--port", str(free_port())], {
                "DATABASE_URL": db_url, "PIXELTRACK_SECRET": TEST_SECRET, "PIXELTRACK_DRAIN_GRACE": "0",
                "PIXELTRACK_SPOOL_DIR": str(tmp_path / "spool"), "PIXELTRACK_OPERATOR_PORT": str(operator)}, tmp_path)
            code = await wait_exit(proc)
        assert proc.stdout is not None
        output = proc.stdout.read().decode()
        assert code == 1
        assert f"collector cannot listen: [Errno 98] operator listener on 127.0.0.1:{operator}" in output
        assert "Traceback" not in output
