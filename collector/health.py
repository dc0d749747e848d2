"""Health and metrics endpoints: liveness, readiness and Prometheus text."""

from __future__ import annotations

from aiohttp import web

from collector.state import BUFFER, METRICS, STATE


async def healthz(request: web.Request) -> web.Response:
    """The process is alive."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """503 while draining, or when neither PostgreSQL nor the spool can keep hits."""
    if request.app[STATE].draining:
        return web.Response(status=503, text="draining\n")
    if not request.app[BUFFER].can_keep_hits():
        return web.Response(status=503, text="cannot keep hits: database down and spool full\n")
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    m = request.app[METRICS]
    m.buffered.set(len(request.app[BUFFER].buffer))
    return web.Response(body=m.render(), content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})
