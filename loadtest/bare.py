"""The framework's floor: aiohttp on uvloop answering the pixel and doing nothing else.

Same routes as the collector (so routing costs the same), same GIF, same
headers; no token check, no buffer, no database. `python -m loadtest.bare
--port P` serves until SIGTERM. With ``--canned`` it answers from the
collector's prebuilt wire bytes (collector.answers.CannedResponse) instead of
aiohttp's Response: the same answer path as the collector, so the difference
to the collector is exactly the collector's own work per hit.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

from collector.answers import GIF, PIXEL, PIXEL_HEADERS, CannedResponse


async def pixel(request: web.Request) -> web.Response:
    """The GIF, whatever was asked."""
    return web.Response(body=GIF, headers=PIXEL_HEADERS)


async def canned_pixel(request: web.Request) -> web.StreamResponse:
    """The GIF from the collector's prebuilt bytes."""
    return CannedResponse(PIXEL)


async def healthz(request: web.Request) -> web.Response:
    """Alive (the drivers' idle request)."""
    return web.Response(text="ok\n")


def create_app(canned: bool = False) -> web.Application:
    """The collector's routes, each answering the pixel."""
    app = web.Application(handler_args={"max_field_size": 16384, "max_line_size": 16384})
    handler = canned_pixel if canned else pixel
    app.router.add_get("/o/{token}", handler)
    app.router.add_get("/c/{token}", handler)
    app.router.add_get("/d/{token}/{page}", handler)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(port: int, canned: bool = False) -> None:
    """Serve on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    runner = web.AppRunner(create_app(canned), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    """Parse --port (and --canned) and serve."""
    p = argparse.ArgumentParser(prog="python -m loadtest.bare")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--canned", action="store_true", help="answer from the collector's prebuilt bytes")
    args = p.parse_args()
    import uvloop

    uvloop.install()
    asyncio.run(serve(args.port, args.canned))


if __name__ == "__main__":
    main()
