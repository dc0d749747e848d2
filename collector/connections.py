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
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from prometheus_client import Counter

log = logging.getLogger(__name__)

FD_RESERVE = 64          # descriptors kept for the pool, the spool, the listeners and logs
MAX_AUTO_CONNECTIONS = 65_536  # each idle connection costs ~10 kB; past this, set it on purpose


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

    def progressed(self, handler: GuardedHandler) -> None:
        """``handler`` received a new request: it is now the freshest."""
        if handler in self.by_progress:
            self.by_progress.move_to_end(handler)


class GuardedHandler(RequestHandler):
    """One connection: a deadline from a request's first byte until it is whole."""

    __slots__ = ("_guard", "_deadline", "_body")

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager
        self._deadline: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the body still arriving, if any

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if not data or self.transport is None:
            return
        if self._request_count != before:  # a whole request head: the common case, one per read
            self._guard.progressed(self)
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            payload = self._messages[-1][1] if self._messages else None
            self._body = None if payload is None or payload.is_eof() else payload
            if self._body is not None:
                self._arm()
        elif self._deadline is None:  # the first bytes of a head, or body bytes: the rest must follow in time
            self._arm()
        elif self._body is not None and self._body.is_eof():  # the body is complete
            self._deadline.cancel()
            self._deadline = None
            self._body = None

    def _arm(self) -> None:
        self._deadline = self._loop.call_later(self._guard.limits.header_timeout, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        if self.transport is not None:
            self._guard.cut.labels("slow_request").inc()
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._body = None
        super().connection_lost(exc)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server is a GuardedServer."""

    def __init__(self, app: web.Application, limits: Limits, cut: Counter, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits
        self.cut = cut

    async def _make_server(self) -> web.Server:
        return GuardedServer(await super()._make_server(), self.limits, self.cut)
