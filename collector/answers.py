"""The answers the collector gives: one cached GIF, fixed header sets, and their wire bytes.

A pixel's answer never depends on the request, so it is kept as the finished
HTTP/1.x bytes (status line, headers, body) and written to the socket in one
call. aiohttp's general path builds a header object, formats the status line
and the Date, serialises and writes per response: measured in the benchmark
(loadtest/RESULTS.md) that is several microseconds per hit, as much as the
token check and the append together. The bytes are renewed once a second for
the Date header; a redirect is its cached head and tail around the Location.

That path sets private attributes of aiohttp's StreamResponse, so aiohttp is
pinned to the minor versions it is tested on, tests/collector/test_answers.py
names any attribute a new aiohttp no longer has, and ``use_canned(False)``
(``PIXELTRACK_CANNED_ANSWERS=0``) answers the same through ``web.Response``.
Handlers answer with ``answers.respond(PIXEL)``, whichever is in use.
"""

from __future__ import annotations

import base64
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

# The smallest transparent 1x1 GIF89a (42 bytes), made once at import.
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

# Nothing between the pixel and the mail client may reuse it: every open must
# reach us. No cookies are ever set.
NO_STORE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
PIXEL_HEADERS = CIMultiDictProxy(CIMultiDict({"Content-Type": "image/gif", **NO_STORE}))
NOT_FOUND_BODY = b"404: this tracked link is not valid.\n"
NOT_FOUND_HEADERS = CIMultiDictProxy(CIMultiDict({"Content-Type": "text/plain; charset=utf-8", **NO_STORE}))
REDIRECT_HEADERS = CIMultiDictProxy(CIMultiDict(NO_STORE))


class Canned:
    """The wire bytes of one fixed answer, per (HTTP version, keep-alive, HEAD), renewed each second."""

    def __init__(self, status: int, headers: CIMultiDictProxy[str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self._second = -1
        self._made: dict[tuple[int, bool, bool], tuple[bytes, bytes, bytes]] = {}

    def parts(self, minor: int, keep_alive: bool, head: bool) -> tuple[bytes, bytes, bytes]:
        """(status line and headers, blank line and body, the two joined) for this request's form."""
        now = int(time.time())
        if now != self._second:
            self._made.clear()
            self._second = now
        key = (minor, keep_alive, head)
        made = self._made.get(key)
        if made is None:
            start, tail = self._make(minor, keep_alive, head, now)
            made = self._made[key] = (start, tail, start + tail)
        return made

    def _make(self, minor: int, keep_alive: bool, head: bool, now: int) -> tuple[bytes, bytes]:
        lines = [f"HTTP/1.{minor} {self.status} {HTTPStatus(self.status).phrase}",
                 *(f"{k}: {v}" for k, v in self.headers.items()),
                 f"Date: {formatdate(now, usegmt=True)}", f"Content-Length: {len(self.body)}"]
        if minor == 0 and keep_alive:
            lines.append("Connection: keep-alive")
        elif minor == 1 and not keep_alive:
            lines.append("Connection: close")
        # The head ends after the last header line, so a Location can follow it.
        return ("\r\n".join(lines) + "\r\n").encode("ascii"), b"\r\n" + (b"" if head else self.body)


class CannedResponse(web.StreamResponse):
    """A response written from prebuilt bytes in one socket write.

    aiohttp awaits ``prepare`` and ``write_eof`` and reads ``keep_alive``,
    ``status``, ``headers`` and ``body_length`` (the access log); all are
    served here without its header machinery, by setting the private
    attributes those properties read (``_status``, ``_reason``, ``_headers``,
    ``_state``, ``_keep_alive``, ``_eof_sent``, ``_body_length``) and
    relying on StreamResponse's class-level defaults for the rest.
    ``on_response_prepare`` signals are not sent: the collector registers none.
    """

    def __init__(self, canned: Canned, location: bytes | None = None) -> None:
        # No super().__init__: it would copy the headers into a fresh
        # CIMultiDict per hit; the shared proxy is read-only.
        self._state = {}
        self._headers = canned.headers  # type: ignore[assignment]
        self._status = canned.status
        self._reason = HTTPStatus(canned.status).phrase
        self._canned = canned
        self._location = location

    async def prepare(self, request: web.BaseRequest) -> None:  # type: ignore[override]
        """Write the whole answer; the connection stays open when the client asked for it."""
        if self._eof_sent:
            return
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        keep_alive = request.keep_alive
        version = request.version
        head, body, whole = self._canned.parts(version.minor if version.major == 1 else 1, keep_alive,
                                               request.method == "HEAD")
        if self._location is None:
            transport.write(whole)
        else:
            transport.write(b"".join((head, b"Location: ", self._location, b"\r\n", body)))
        self._keep_alive = keep_alive
        self._eof_sent = True
        self._body_length = len(body) - 2
        if transport.get_write_buffer_size():  # the client reads slowly: wait as aiohttp's writer would
            await request.writer.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        """Everything went out in ``prepare``."""


PIXEL = Canned(200, PIXEL_HEADERS, GIF)
NOT_FOUND = Canned(404, NOT_FOUND_HEADERS, NOT_FOUND_BODY)
REDIRECT = Canned(302, REDIRECT_HEADERS, b"")


def plain_response(canned: Canned, location: bytes | None = None) -> web.Response:
    """The same answer through aiohttp's ordinary path (it adds a ``Server`` header)."""
    headers = CIMultiDict(canned.headers)
    if location is not None:
        headers["Location"] = location.decode("utf-8")
    return web.Response(status=canned.status, body=canned.body, headers=headers)


class Responder(Protocol):
    """How a handler turns a fixed answer (and a redirect's Location) into a response."""

    def __call__(self, canned: Canned, location: bytes | None = None) -> web.StreamResponse: ...


respond: Responder = CannedResponse


def use_canned(on: bool) -> None:
    """Answer with prebuilt bytes (the default) or, off, with ``web.Response``; for every app of the process."""
    global respond
    respond = CannedResponse if on else plain_response
