"""Hostile input and a database outage: the pixel answers, nothing is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from collector.answers import GIF
from collector.state import BUFFER
from loadtest.support import Relay
from tests.support.collector import flush, make_config, minter, path, rows, running, scrape, wait_for


async def raw_request(port: int, request: bytes) -> bytes:
    """Send exact bytes, return the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    return data


class TestHostileInput:
    async def test_binary_nul_and_long_headers(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
        """Undecodable bytes, NUL bytes and oversized values are repaired and counted; the batch lands."""
        async with running(make_config(db_url, tmp_path)) as client:
            port = client.server.port
            token = path(minter().open_url(3, 4))
            ok = path(minter().open_url(3, 5))
            answer = await raw_request(port, (
                f"GET {token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
                + b"User-Agent: caf\xe9 \xff\xfe bot\r\n"
                + b"Referer: https://r.example/" + b"a" * 5000 + b"\r\n"
                + b"Accept-Language: " + b"de" * 200 + b"\r\n\r\n"))
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(GIF)
            await client.get(ok, headers={"User-Agent": "x%00y"})
            await flush(client)
            metrics = await scrape(client)
        got = await rows(conn)
        assert [(r["job_id"], r["recipient_id"]) for r in got] == [(3, 4), (3, 5)]
        assert got[0]["user_agent"] == "caf\ufffd \ufffd\ufffd bot"
        assert len(got[0]["referer"]) == 2048 and len(got[0]["accept_language"]) == 256
        assert 'pixeltrack_input_repaired_total{reason="too_long"} 2.0' in metrics
        assert 'pixeltrack_input_repaired_total{reason="bad_encoding"} 1.0' in metrics

    async def test_nul_in_path_and_broken_percent(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
        """NUL bytes and broken percent-encoding in the token give the GIF and a rejected row."""
        async with running(make_config(db_url, tmp_path)) as client:
            for bad in ("/o/%00%00abc.gif", "/o/%zz%f.gif", "/o/%C3%28.gif", "/c/%E2%82", "/d/%ff/1.gif"):
                answer = await raw_request(client.server.port, f"GET {bad} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert answer.split(b"\r\n", 1)[0] in (b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found"), bad
            await flush(client)
        got = await rows(conn)
        assert len(got) == 5
        assert {r["job_id"] for r in got} == {0}
        assert all(r["reject_reason"] for r in got)

    @pytest.mark.parametrize("bad", [
        b"GET /o/a.gif HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"z" * 70000 + b"\r\n\r\n",
        b"GET /o/a.gif HTTP/1.1\r\nHost: x\r\nUser-Agent: a\x00b\r\n\r\n",
        b"GET /o/\x00.gif HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
    ])
    async def test_invalid_http_refused_process_lives(self, db_url: str, tmp_path: Path,
                                                      conn: asyncpg.Connection, bad: bytes) -> None:
        """What is not HTTP at all (raw NUL, 70 kB header, TLS to a plain port) gets a 400; the next hit is stored."""
        async with running(make_config(db_url, tmp_path)) as client:
            answer = await raw_request(client.server.port, bad)
            assert answer.split(b" ", 2)[1] == b"400"
            metrics = await scrape(client)
            if not bad.startswith(b"\x16"):  # aiohttp logs TLS-on-a-plain-port at debug only; not counted
                assert 'pixeltrack_hits_rejected_total{reason="bad_http"} 1.0' in metrics
            resp = await client.get(path(minter().open_url(1, 1)))
            assert await resp.read() == GIF
            await flush(client)
        assert [(r["job_id"], r["recipient_id"]) for r in await rows(conn)] == [(1, 1)]


class TestMetricsAndHealth:
    async def test_counts_by_kind_and_reason(self, db_url: str, tmp_path: Path) -> None:
        """Accepted hits are counted by kind, rejected by reason, writes in total."""
        m = minter()
        async with running(make_config(db_url, tmp_path)) as client:
            for url in (m.open_url(1, 1), m.open_url(1, 2), m.click_url(1, 1, "https://a.example/")):
                await client.get(path(url), allow_redirects=False)
            await client.get("/o/forged.gif")
            await client.get("/c/forged", allow_redirects=False)
            await flush(client)
            text = await scrape(client)
            assert (await client.get("/healthz")).status == 200
            assert (await client.get("/readyz")).status == 200
        for line in ('pixeltrack_hits_accepted_total{kind="open"} 2.0', 'pixeltrack_hits_accepted_total{kind="click"} 1.0',
                     'pixeltrack_hits_rejected_total{reason="malformed"} 2.0', "pixeltrack_hits_written_total 5.0",
                     "pixeltrack_database_up 1.0", "pixeltrack_hits_buffered 0.0"):
            assert line in text, line


@pytest.fixture
async def relay(server_url: str) -> AsyncIterator[Relay]:
    """A relay to the test server (TCP, or the embedded server's unix socket) that the test can cut."""
    r = Relay(server_url)
    await r.start()
    yield r
    await r.close()


class TestDatabaseOutage:
    async def test_spool_and_replay_exactly(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection,
                                            relay: Relay) -> None:
        """PostgreSQL vanishes mid-traffic: pixels keep answering, hits spool, and all land once it is back."""
        config = make_config(relay.route(db_url), tmp_path / "spool", batch_size=7)
        m = minter()
        async with running(config) as client:
            writer = client.app[BUFFER]
            for i in range(20):
                assert await (await client.get(path(m.open_url(1, i)))).read() == GIF
            await flush(client)
            await relay.cut()
            for i in range(20, 70):
                assert await (await client.get(path(m.open_url(1, i)))).read() == GIF
            await flush(client)
            assert not writer.database_ok and len(writer.spool.pending()) >= 1
            assert (await client.get("/readyz")).status == 200  # the spool still keeps hits safely
            await relay.restore()
            for i in range(70, 80):
                await client.get(path(m.open_url(1, i)))

            async def drained() -> bool:
                await flush(client)
                return not writer.spool.pending() and writer.database_ok

            await wait_for(drained)
            text = await scrape(client)
        got = sorted(r["recipient_id"] for r in await rows(conn))
        assert got == list(range(80))
        assert "pixeltrack_hits_written_total 80.0" in text

    async def test_next_start_replays_leftover_spool(self, db_url: str, tmp_path: Path, conn: asyncpg.Connection,
                                                     relay: Relay) -> None:
        """Hits spooled by a collector that stopped while PostgreSQL was down are replayed by the next one, once."""
        spool = tmp_path / "spool"
        await relay.cut()
        async with running(make_config(relay.route(db_url), spool)) as client:
            for i in range(12):
                await client.get(path(minter().open_url(2, i)))
        assert len(list(spool.glob("*.batch"))) == 1
        await relay.restore()
        async with running(make_config(relay.route(db_url), spool)) as client:
            await wait_for(lambda: _spool_empty(client))
        assert sorted(r["recipient_id"] for r in await rows(conn)) == list(range(12))

    async def test_readyz_503_when_spool_full(self, db_url: str, tmp_path: Path, relay: Relay) -> None:
        """Database down and spool over its limit: /readyz says 503, the pixel still answers."""
        await relay.cut()
        config = make_config(relay.route(db_url), tmp_path / "s", spool_max_bytes=10)
        async with running(config) as client:
            for i in range(3):
                await client.get(path(minter().open_url(1, i)))
                await flush(client)
            assert (await client.get("/readyz")).status == 503
            assert await (await client.get(path(minter().open_url(1, 9)))).read() == GIF
            assert len(client.app[BUFFER]._held) + sum(1 for _ in (tmp_path / "s").glob("*.batch")) >= 1


async def _spool_empty(client: object) -> bool:
    writer = client.app[BUFFER]  # type: ignore[attr-defined]
    await writer.flush()
    return not writer.spool.pending()
