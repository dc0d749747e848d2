"""Support shared by the load tests and the test suite.

Free ports, throwaway databases, a relay that makes a database outage on
demand, and a stand-in enricher: each exists once, here, and both the tests
(``tests/``) and the load scripts (``loadtest/``) import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
import socket
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from aggregator.enrich import OUTPUT_KEYS
from aggregator.enrich.geo import mask_ip
from pixeltrack.core import db


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Throwaway databases. Only names starting with this are ever dropped.
THROWAWAY = "pt_"


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (keeps ?host= of socket URLs)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def _admin(server: str, sql: str) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def with_application_name(url: str, name: str) -> str:
    """``url`` whose sessions show as ``name`` in pg_stat_activity (asyncpg passes the setting on)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "application_name"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("application_name", name)])))


def database_name(url: str) -> str:
    """The database a URL points at."""
    return urlsplit(url).path.lstrip("/")


async def create_database(server: str, prefix: str = "pt_load", template: str | None = None) -> str:
    """Make a database on ``server``, return its URL: a copy of the ``template`` URL's, or with the schema applied."""
    if not prefix.startswith(THROWAWAY):
        raise ValueError(f"{prefix!r}: throwaway database names start with {THROWAWAY!r}")
    name = f"{prefix}_{secrets.token_hex(6)}"
    copy = f' TEMPLATE "{database_name(template)}"' if template else ""
    await _admin(server, f'CREATE DATABASE "{name}"{copy}')
    url = with_database(server, name)
    if template is None:
        await db.apply_schema(url)
    return url


async def drop_database(server: str, url: str) -> None:
    """Drop a database made by ``create_database`` (its connections are ended)."""
    name = database_name(url)
    if not name.startswith(THROWAWAY):
        raise ValueError(f"refusing to drop {name!r}: not a throwaway database")
    await _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Relay:
    """Relays 127.0.0.1:``port`` to the PostgreSQL server of a URL; ``cut`` and ``restore`` it.

    Cut, the listener is closed (new connections are refused) and every
    relayed connection is aborted: what a client sees when its database host
    disappears, while the server itself is never touched. The server is
    reached over TCP, or over its unix socket when the URL names a socket
    folder (``?host=/dir``, as the embedded pgserver's does).
    """

    def __init__(self, server_url: str, port: int = 0) -> None:
        parts = urlsplit(server_url)
        query = dict(parse_qsl(parts.query))
        socket_dir = query.get("host", "") if not parts.hostname else ""
        self.socket_path = f"{socket_dir}/.s.PGSQL.{query.get('port', parts.port or 5432)}" if socket_dir else ""
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.port = port
        self.server: asyncio.Server | None = None
        self.open: set[asyncio.StreamWriter] = set()

    def route(self, url: str) -> str:
        """``url`` (a database on the same server) reached through this relay."""
        parts = urlsplit(url)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{self.port}" if user else f"127.0.0.1:{self.port}"
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")])
        return urlunsplit(parts._replace(netloc=netloc, query=query))

    async def start(self) -> None:
        """Listen, on the same port as before once there is one."""
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and abort the ones open: PostgreSQL is 'down'."""
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for w in list(self.open):
            w.transport.abort()
        self.open.clear()
        if server is not None:
            await server.wait_closed()

    async def restore(self) -> None:
        """PostgreSQL is 'back'."""
        if self.server is None:
            await self.start()

    async def close(self) -> None:
        """Stop relaying for good."""
        await self.cut()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.socket_path:
            return await asyncio.open_unix_connection(self.socket_path)
        return await asyncio.open_connection(*self.target)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._connect()
        except OSError:
            writer.transport.abort()
            return
        self.open.update((writer, up_writer))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self.open.discard(writer)
            self.open.discard(up_writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


class FlagEnricher:
    """Stand-in enricher: machine traffic from the collector's prefetch flag only, everything else unknown.

    Lets roll-up tests and the aggregator benchmark fix each hit's verdict by
    hand, independent of the user-agent rules.
    """

    def enrich(
        self, hits: Sequence[Mapping[str, Any]], sent_at: Mapping[int, dt.datetime | None], context: object = None
    ) -> list[dict[str, Any]]:
        """One dict of the enrichment columns per hit, in order (no behavioural rules: ``context`` unused)."""
        out = []
        for hit in hits:
            row: dict[str, Any] = dict.fromkeys(OUTPUT_KEYS)
            machine = bool(hit["prefetch"])
            row["traffic"] = "machine" if machine else "unknown"
            row["machine_reason"] = "prefetch" if machine else None
            row["machine_family"] = "prefetch or HEAD" if machine else None
            row["client_ip_masked"] = mask_ip(hit["client_ip"])
            out.append(row)
        return out
