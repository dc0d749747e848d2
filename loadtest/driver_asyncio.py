"""The built-in driver: raw HTTP/1.1 keep-alive connections on asyncio (uvloop).

Each connection sends one request, reads the whole answer, then sends the
next (no pipelining), as a load balancer's upstream connections do. It knows
which request each answer belongs to, so its counts are exact per category.
Latency is measured from the moment a request is written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from loadtest.report import DriveResult, Progress, percentiles
from loadtest.traffic import Request, raw_request

READ_TIMEOUT = 10.0


class _Shared:
    """State every connection of one drive reads and updates (single thread)."""

    def __init__(self, requests: Sequence[Request], host: str, limit: int | None, seconds: float,
                 rate: float | None) -> None:
        self.payloads = [raw_request(r, host) for r in requests]
        self.categories = [r.category for r in requests]
        self.expects = [r.expect for r in requests]
        self.limit, self.rate = limit, rate
        self.issued = 0
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.result = DriveResult("asyncio")
        self.latencies: list[float] = []

    def next_index(self) -> int | None:
        """The next request to send, or None when the run is over."""
        if self.limit is not None and self.issued >= self.limit:
            return None
        if time.monotonic() >= self.deadline:
            return None
        self.issued += 1
        return (self.issued - 1) % len(self.payloads)

    def slot(self, n: int) -> float:
        """When the ``n``-th request is due at a fixed rate."""
        return self.started + n / self.rate if self.rate else 0.0


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) of one answer, body consumed."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.index(b"\r\n", at + 2)
        length = int(lower[at + 17:end])
        if length:
            await reader.readexactly(length)
    return status, b"\r\nconnection: close" not in lower


async def _connection(shared: _Shared, host: str, port: int) -> None:
    """One kept-alive connection, reconnecting after errors (bounded)."""
    result, failures = shared.result, 0
    stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while failures < 20:
        n = shared.next_index()
        if n is None:
            break
        if shared.rate:
            delay = shared.slot(shared.issued - 1) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        category = shared.categories[n]
        result.sent[category] += 1
        try:
            if stream is None:
                stream = await asyncio.wait_for(asyncio.open_connection(host, port), READ_TIMEOUT)
            reader, writer = stream
            started = time.perf_counter()
            writer.write(shared.payloads[n])
            status, keep = await asyncio.wait_for(_read_answer(reader), READ_TIMEOUT)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
            result.errors[type(exc).__name__] += 1
            failures += 1
            if stream is not None:
                stream[1].close()
            stream = None
            continue
        shared.latencies.append((time.perf_counter() - started) * 1000.0)
        result.statuses[status] += 1
        if status == shared.expects[n]:
            result.answered[category] += 1
        else:
            result.errors[str(status)] += 1
        if not keep:
            writer.close()
            stream = None
    if stream is not None:
        stream[1].close()


async def _progress(shared: _Shared, progress: Progress) -> None:
    while True:
        await asyncio.sleep(1.0)
        progress.show(shared.result.requests, sum(shared.result.errors.values()))


async def drive(requests: Sequence[Request], host: str, port: int, *, connections: int = 32,
                duration: float | None = 10.0, count: int | None = None, rate: float | None = None,
                max_seconds: float = 600.0, show_progress: bool = True) -> DriveResult:
    """Send ``requests`` (cycled) for ``duration`` seconds or ``count`` requests."""
    seconds = min(duration or max_seconds, max_seconds)
    shared = _Shared(requests, f"{host}:{port}", count, seconds, rate)
    progress = Progress(None if count else seconds, count)
    ticker = asyncio.create_task(_progress(shared, progress)) if show_progress else None
    started = time.monotonic()
    try:
        await asyncio.gather(*(_connection(shared, host, port) for _ in range(connections)))
    finally:
        if ticker:
            ticker.cancel()
            progress.close()
    result = shared.result
    result.seconds = time.monotonic() - started
    result.p50, result.p90, result.p99, result.max = percentiles(shared.latencies)
    return result

