"""Request handlers: answer at once, append the hit, never await anything.

A hit handler (``Hits``, one per app) verifies the token (microseconds, no
database), appends one tuple to the write buffer and returns a prebuilt answer. Everything else (client
address resolution, cleaning, ids, timestamps as datetimes) happens in the
flusher, once per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import hdrs, web
from multidict import istr

from collector import site
from collector.pixel import NOT_FOUND, PIXEL, REDIRECT, CannedResponse
from collector.rows import Hit
from collector.state import METRICS, STATE, WRITER
from pixeltrack.mint import has_control_chars
from pixeltrack.tokens import KIND_CLICK, KIND_DOC, KIND_OPEN, Signer, TokenError

# Header names as istr: a lookup with a plain str folds its case every time.
SEC_PURPOSE, PURPOSE, X_PURPOSE, X_MOZ = map(istr, ("Sec-Purpose", "Purpose", "X-Purpose", "X-Moz"))
MAX_PAGE = 100_000


def _not_started(hit: Hit) -> None:
    raise RuntimeError("the write buffer is made at start-up; no hit can arrive before it")


class Hits:
    """The hit handlers of one app, holding its signer and its write buffer's ``append``.

    Held here rather than looked up through ``request.app[...]`` on every hit:
    each look-up is three Python calls, and dropping them saved about 2% of the
    collector's CPU per hit (loadtest.ab: 0.95-0.99 over three runs of 6 rounds).
    """

    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self.append: Callable[[Hit], None] = _not_started  # the writer's, set when it starts

    def record(self, request: web.Request, kind: str, job: int, rcpt: int | None, link: str | None,
               page: int | None, reason: str | None, extra: dict[str, str | None] | None = None,
               referer: str | None = None, language: str | None = None, anonymous: bool = False) -> None:
        """Append one hit as a plain tuple (see collector.rows.HIT_FIELDS).

        Page views pass the document's ``referer`` ("" for none: the Referer header
        of a beacon is the page itself) and ``language`` as the snippet reported
        them; ``anonymous`` keeps neither address nor user agent (a
        visitor asking not to be tracked, on a site that tracks them blind).
        """
        h = request.headers
        method = request.method
        peer, xff, agent = (None, None, None) if anonymous else (
            request.remote, h.get(hdrs.X_FORWARDED_FOR), h.get(hdrs.USER_AGENT))
        self.append((
            time.time(), kind, job, rcpt, link, page, peer, xff, agent,
            h.get(hdrs.REFERER) if referer is None else referer or None, language or h.get(hdrs.ACCEPT_LANGUAGE),
            method, method == "HEAD" or SEC_PURPOSE in h or PURPOSE in h or X_PURPOSE in h or X_MOZ in h,
            reason, extra,
        ))

    def _verify(self, token: str, want: int) -> tuple[int, int | None, str | None, str | None]:
        """(job, recipient, url, reject reason); job 0 when the token is refused."""
        try:
            t = self.signer.verify(token)
        except TokenError as exc:
            return 0, None, None, exc.reason
        if t.kind != want:
            return 0, None, None, "wrong_kind"
        return t.job_id, t.recipient_id, t.url, None

    async def open_pixel(self, request: web.Request) -> web.StreamResponse:
        """GET /o/{token}.gif: an email open. Always the GIF, whatever the token."""
        job, rcpt, _, reason = self._verify(request.match_info["token"].removesuffix(".gif"), KIND_OPEN)
        self.record(request, "open", job, rcpt, None, None, reason)
        return gif()

    async def doc_page(self, request: web.Request) -> web.StreamResponse:
        """GET /d/{token}/{page}.gif: one page of a tracked document was shown."""
        job, rcpt, _, reason = self._verify(request.match_info["token"], KIND_DOC)
        raw = request.match_info["page"].removesuffix(".gif")
        page = int(raw) if raw.isdecimal() and len(raw) <= 6 else 0
        if not 1 <= page <= MAX_PAGE and reason is None:
            job, rcpt, reason = 0, None, "bad_page"
        self.record(request, "doc", job, rcpt, None, page if reason is None else None, reason)
        return gif()

    async def click(self, request: web.Request) -> web.StreamResponse:
        """GET /c/{token}: redirect to the signed destination, or 404. Never an open redirect."""
        token = request.match_info["token"]
        job, rcpt, url, reason = self._verify(token, KIND_CLICK)
        if url is not None and has_control_chars(url):  # only a minting bug could sign such a URL
            job, rcpt, url, reason = 0, None, None, "bad_destination"
        self.record(request, "click", job, rcpt, url, None, reason)
        if reason is not None or url is None:
            return CannedResponse(NOT_FOUND)
        if rcpt is not None and self.signer.identifies(token):  # personal: the site learns the contact
            url = site.with_contact(self.signer, url, job, rcpt)
        return CannedResponse(REDIRECT, url.encode("utf-8"))


HITS = web.AppKey("hits", Hits)


def gif() -> web.StreamResponse:
    """The cached pixel with headers no cache may reuse."""
    return CannedResponse(PIXEL)


async def healthz(request: web.Request) -> web.Response:
    """The process is alive."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """503 while draining, or when neither PostgreSQL nor the spool can keep hits."""
    if request.app[STATE].draining:
        return web.Response(status=503, text="draining\n")
    if not request.app[WRITER].can_keep_hits():
        return web.Response(status=503, text="cannot keep hits: database down and spool full\n")
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    m = request.app[METRICS]
    m.buffered.set(len(request.app[WRITER].buffer))
    return web.Response(body=m.render(), content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})
