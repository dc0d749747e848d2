"""The collector's aiohttp application factory and its resource lifecycle."""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.log import server_logger as server_log

from collector import answers, health, page_views
from collector.buffer import HitBuffer
from collector.cleaning import use_cached_inet
from collector.config import CollectorConfig
from collector.connections import GuardedRunner, Limits, connection_cap
from collector.mail_hits import MailHits
from collector.metrics import Metrics
from collector.record import RECORDER, HitRecorder
from collector.state import BUFFER, CONFIG, METRICS, POOL, SIGNER, STATE, RunState
from pixeltrack.core.tokens import Signer

log = logging.getLogger(__name__)


class BadHttpCounter(logging.Filter):
    """Counts requests aiohttp's parser refused (not HTTP, NUL bytes, huge headers).

    aiohttp answers them 400 itself and logs a traceback each; from the open
    internet that is noise an attacker can use to flood the logs, so they are
    counted as rejected{reason="bad_http"} instead and not logged.
    """

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and str(record.msg).startswith("Error handling request"):
            self.metrics.rejected.labels("bad_http").inc()
            return False
        return True


async def bad_http_ctx(app: web.Application) -> AsyncIterator[None]:
    """Install the bad-request counter for this app's lifetime."""
    counter = BadHttpCounter(app[METRICS])
    server_log.addFilter(counter)
    yield
    server_log.removeFilter(counter)


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """A lazy pool: no connection at start, so a collector starts with PostgreSQL down."""
    config = app[CONFIG]
    app[POOL] = asyncpg.create_pool(
        config.database_url, min_size=0, max_size=2, timeout=5, init=use_cached_inet,
        server_settings={"timezone": "UTC", "application_name": "pixeltrack-collector"},
    )
    await app[POOL]
    yield
    try:
        # Graceful close waits for the server's goodbye; a blackholed
        # database never sends it, so give it a few seconds, then cut.
        await asyncio.wait_for(app[POOL].close(), 5)
    except TimeoutError:
        log.warning("PostgreSQL did not answer the close; terminating connections")
        app[POOL].terminate()


async def buffer_ctx(app: web.Application) -> AsyncIterator[None]:
    """The write buffer and its flusher; the final flush runs after the listener closed."""
    writer = HitBuffer(app[CONFIG], app[POOL], app[METRICS])
    app[BUFFER] = writer
    app[RECORDER].append = writer.append
    writer.start()
    yield
    # Not a cancel: a COPY cut short would leave its batch nowhere.
    await writer.stop()
    try:
        await writer.flush()
    except Exception:  # what the flush could not store is still in the journal, which close() keeps
        log.exception("the final flush failed")
    writer.close()
    log.info("final flush done (%d hits spooled for replay)", len(writer.spool.pending()))


def create_app(config: CollectorConfig) -> web.Application:
    """The collector app; pool cleanup is registered first so it closes last."""
    answers.use_canned(config.canned_answers)
    app = web.Application(handler_args={"max_field_size": 16384, "max_line_size": 16384})
    app[CONFIG] = config
    app[SIGNER] = Signer(config.secrets.current, config.secrets.previous)
    app[METRICS] = Metrics()
    app[STATE] = RunState()
    app.cleanup_ctx.append(bad_http_ctx)
    app.cleanup_ctx.append(pool_ctx)
    app.cleanup_ctx.append(buffer_ctx)
    recorder = app[RECORDER] = HitRecorder()
    mail = MailHits(app[SIGNER], recorder)
    # Any segment is a token, even an empty one or one with braces (aiohttp's
    # default pattern, [^{}/]+, would answer those 404): the handler decides.
    app.router.add_get("/o/{token:[^/]*}", mail.open_pixel)
    app.router.add_get("/c/{token:[^/]*}", mail.click)
    app.router.add_get("/d/{token:[^/]*}/{page:[^/]*}", mail.doc_page)
    app.router.add_get("/healthz", health.healthz)  # the load balancer's checks stay on the public port
    app.router.add_get("/readyz", health.readyz)
    page_views.add_routes(app)  # website tracking: /t.js, /r.gif, POST /r
    return app


def make_runner(app: web.Application) -> web.AppRunner:
    """The public listener's runner: short keep-alive, request deadline, a cap under the open-file limit.

    Handlers are cancelled when their client goes: the only awaits are reading
    a beacon's body and a slow reader's drain, and a hit is recorded before
    the answer is written.
    """
    config = app[CONFIG]
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limits = Limits(config.header_timeout, connection_cap(config.max_connections, fd_limit))
    return GuardedRunner(app, limits, app[METRICS].connections_cut, handle_signals=False, access_log=None,
                         shutdown_timeout=5, keepalive_timeout=config.keepalive_timeout, handler_cancellation=True)


def create_operator_app(collector: web.Application) -> web.Application:
    """The operator listener's app: /metrics and the health checks of ``collector``, once it has started."""
    app = web.Application()
    app[CONFIG], app[METRICS], app[STATE], app[BUFFER] = (
        collector[CONFIG], collector[METRICS], collector[STATE], collector[BUFFER])
    app.router.add_get("/metrics", health.metrics)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    return app
