"""Helpers for collector tests: an in-process collector on a real socket."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from collector.answers import GIF
from collector.app import create_app, create_operator_app
from collector.config import CollectorConfig
from collector.state import BUFFER
from pixeltrack.core.config import Secrets
from pixeltrack.core.mint import Minter
from tests.conftest import TEST_SECRET

BASE = "http://127.0.0.1"


def make_config(db_url: str, spool: Path, **overrides: Any) -> CollectorConfig:
    """A collector config for tests: fast flushes, private spool, short drain."""
    config = CollectorConfig(
        database_url=db_url, secrets=Secrets(TEST_SECRET), flush_interval=0.05,
        spool_dir=spool, drain_grace=0.1, copy_timeout=2.0,
    )
    return dataclasses.replace(config, **overrides)


@asynccontextmanager
async def running(config: CollectorConfig) -> AsyncIterator[TestClient]:
    """A collector app on a real loopback socket, and a client for it."""
    app = create_app(config)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def scrape(client: TestClient) -> str:
    """/metrics of the collector behind ``client``, read from its operator listener (not the public port)."""
    operator = TestClient(TestServer(create_operator_app(client.app), host="127.0.0.1"))
    await operator.start_server()
    try:
        resp = await operator.get("/metrics")
        assert resp.status == 200
        return await resp.text()
    finally:
        await operator.close()


async def flush(client: TestClient) -> None:
    """Write whatever the collector has buffered."""
    await client.app[BUFFER].flush()


async def rows(conn: asyncpg.Connection, where: str = "true") -> list[asyncpg.Record]:
    """raw_hits rows in arrival order (``where`` is test-written SQL, never user input)."""
    return list(await conn.fetch(f"SELECT * FROM raw_hits WHERE {where} ORDER BY received_at, hit_id"))


def minter() -> Minter:
    """Mints URLs whose path the test client can request."""
    return Minter(TEST_SECRET, BASE)


def path(url: str) -> str:
    """The path part of a minted URL."""
    return url.removeprefix(BASE)


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    """Poll an async predicate until it is true (or fail after ``timeout``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def read_pipelined_pixels(port: int, request: bytes, count: int, pause: float) -> int:
    """Send ``request`` ``count`` times pipelined through a small receive window, read nothing for
    ``pause`` seconds (the server stops reading while we do not), then read every answer; how many
    came back, each a 200 with the 42-byte GIF."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
    writer.write(request * count)
    sending = asyncio.ensure_future(writer.drain())
    await asyncio.sleep(pause)
    answers = 0
    while answers < count:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and await reader.readexactly(42) == GIF
        answers += 1
    await sending
    writer.close()
    return answers
