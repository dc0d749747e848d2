"""A loopback TCP relay in front of PostgreSQL that can be cut: a database outage on demand.

The benchmark points a collector at the relay instead of the server and
"stops the database" by closing the listener and aborting every relayed
connection, so the shared PostgreSQL itself is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


class Relay:
    """Relays 127.0.0.1:``port`` to 127.0.0.1:``target``; ``cut`` and ``restore`` it."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.server: asyncio.Server | None = None
        self.open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen (again)."""
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.open.update((writer, up_writer))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self.open.discard(writer)
            self.open.discard(up_writer)

    async def cut(self) -> None:
        """Refuse new connections and abort the ones open: PostgreSQL is 'down'."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.open):
            w.transport.abort()
        self.open.clear()

    async def restore(self) -> None:
        """PostgreSQL is 'back'."""
        if self.server is None:
            await self.start()

    async def close(self) -> None:
        """Stop relaying for good."""
        await self.cut()
