"""Connections of the public listener: idle ones close, slow requests are cut, their number is capped.

aiohttp alone keeps an idle keep-alive connection for an hour and has no
header-read timeout, so with a limit of 1,024 file descriptors a thousand
idle sockets from one client made the pixel unreachable. Here:

- ``keepalive_timeout`` (aiohttp's own handler setting): a connection waiting
  for its next request, or for the rest of one, closes this long after it was
  opened or last answered.
- ``header_timeout``: a request must arrive whole, head and body, within this
  long of its first byte; a client trickling it in is cut off. (Bytes of a
  next request that trail a whole one in the same read are left to the
  keep-alive timeout.)
- ``max_connections``: when one more is opened, the connection that has gone
  longest without sending a new request is closed: idle keep-alives and
  tricklers go first, a client that keeps asking stays. Kept below the file
  descriptor limit, which ``raise_fd_limit`` lifts to the hard limit at start.

Closed connections are counted as pixeltrack_connections_cut{reason}.
aiohttp has no public way to choose its protocol class: ``GuardedServer``
takes over the server aiohttp built and makes ``GuardedHandler``s instead.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler
from prometheus_client import Counter

log = logging.getLogger(__name__)

FD_RESERVE = 64          # descriptors kept for the pool, the spool, the listeners and logs
MAX_AUTO_CONNECTIONS = 65_536  # an idle connection costs the process ~6 kB (5,000: 44 -> 71 MiB RSS)


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit the kernel refuses
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


def connection_cap(configured: int, fd_limit: int) -> int:
    """The connection cap: ``configured`` when set (>0), else the descriptor limit less a reserve."""
    if configured > 0:
        return configured
    return max(16, min(fd_limit - FD_RESERVE, MAX_AUTO_CONNECTIONS))


@dataclass(frozen=True)
class Limits:
    """What one listener allows its connections."""

    header_timeout: float
    max_connections: int


class GuardedServer(web.Server):
    """aiohttp's server, making GuardedHandlers and closing the stalest connection past the cap."""

    def __init__(self, server: web.Server, limits: Limits, cut: Counter) -> None:
        kwargs: dict[str, Any] = server._kwargs  # the handler settings aiohttp collected (keepalive_timeout, ...)
        super().__init__(server.request_handler, request_factory=server.request_factory,
                         handler_cancellation=server.handler_cancellation, loop=server._loop, **kwargs)
        self.limits = limits
        self.cut = cut
        # Open connections, the one longest without a new request first.
        self.by_progress: OrderedDict[GuardedHandler, None] = OrderedDict()

    def __call__(self) -> GuardedHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        assert isinstance(handler, GuardedHandler)
        self.by_progress[handler] = None
        if len(self.by_progress) > self.limits.max_connections:
            stalest, _ = self.by_progress.popitem(last=False)
            self.cut.labels("over_cap").inc()
            stalest.force_close()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self.by_progress.pop(handler, None)  # type: ignore[call-overload]
        super().connection_lost(handler, exc)


class GuardedHandler(RequestHandler):
    """One connection: a deadline from a request's first byte until it is whole."""

    __slots__ = ("_guard", "_by_progress", "_deadline", "_body")

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager
        self._by_progress = manager.by_progress
        self._deadline: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the body still arriving, if any

    def data_received(self, data: bytes) -> None:
        # Runs once per read: the common case (one whole bodiless request) costs
        # a count comparison, a move_to_end and an identity check.
        before = self._request_count
        _receive(self, data)
        if self._request_count != before and self.transport is not None:  # a whole request head
            self._by_progress.move_to_end(self)
            if self._deadline is not None or self._messages[-1][1] is not EMPTY_PAYLOAD:
                self._whole_head()
        elif data and self.transport is not None:  # part of a head, or body bytes
            self._part()

    def _whole_head(self) -> None:
        """A request head is in: the deadline ends, or runs on for its body."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        payload = self._messages[-1][1] if self._messages else EMPTY_PAYLOAD
        self._body = None if payload.is_eof() else payload
        if self._body is not None:
            self._arm()

    def _part(self) -> None:
        """Bytes that completed no head: the first start the deadline; a body's last ends it."""
        if self._deadline is None:
            self._arm()
        elif self._body is not None and self._body.is_eof():
            self._deadline.cancel()
            self._deadline = None
            self._body = None

    def _arm(self) -> None:
        self._deadline = self._loop.call_later(self._guard.limits.header_timeout, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        if getattr(self, "_buffer_paused", False):  # we stopped reading (answers not read): not the client's delay
            self._arm()
        elif self.transport is not None:
            self._guard.cut.labels("slow_request").inc()
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._body = None
        super().connection_lost(exc)


_receive = RequestHandler.data_received  # looked up once, not through super() per read


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server is a GuardedServer."""

    def __init__(self, app: web.Application, limits: Limits, cut: Counter, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits
        self.cut = cut

    async def _make_server(self) -> web.Server:
        return GuardedServer(await super()._make_server(), self.limits, self.cut)
