"""Health and metrics endpoints: liveness, readiness and Prometheus text."""

from __future__ import annotations

from aiohttp import web

from collector.state import BUFFER, METRICS, STATE


async def healthz(request: web.Request) -> web.Response:
    """The process is alive."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """503 while draining, or when PostgreSQL is down and the spool cannot take more (full, disk full, read-only)."""
    if request.app[STATE].draining:
        return web.Response(status=503, text="draining\n")
    writer = request.app[BUFFER]
    if not writer.can_keep_hits():
        spool = writer.spool
        why = spool.error or (f"full ({spool.bytes} of {spool.max_bytes} bytes)" if spool.bytes >= spool.max_bytes
                              else "not writable")
        return web.Response(status=503, text=f"cannot keep hits: database down and spool {why}\n")
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    m = request.app[METRICS]
    writer = request.app[BUFFER]
    m.buffered.set(len(writer.buffer))
    memory, journal_only = writer.held()
    m.held.set(memory)
    m.parked.set(journal_only)
    return web.Response(body=m.render(), content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})
