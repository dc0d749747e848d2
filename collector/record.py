"""The one place a hit is recorded: a constant-time append of a plain tuple.

Every handler (mail pixels and links in ``mail_hits``, page views in
``page_views``) ends in ``HitRecorder.record``. It reads what the request
carries and appends a tuple to the write buffer; nothing awaits, nothing is
logged. Whether a fetch was a prefetch (HEAD, or a browser's ``Purpose`` /
``Sec-Purpose`` / ``X-Moz`` header) is decided here, once: the aggregator reads
the stored ``prefetch`` flag and never looks at the method again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import hdrs, web
from multidict import istr

from collector.rows import Hit

# Header names as istr: a lookup with a plain str folds its case every time.
SEC_PURPOSE, PURPOSE, X_PURPOSE, X_MOZ = map(istr, ("Sec-Purpose", "Purpose", "X-Purpose", "X-Moz"))


def _not_started(hit: Hit) -> None:
    raise RuntimeError("the write buffer is made at start-up; no hit can arrive before it")


class HitRecorder:
    """Appends hits to one app's write buffer (its ``append`` is set when the buffer starts).

    Held by the handlers rather than looked up through ``request.app[...]`` on
    every hit: each look-up is three Python calls, and dropping them saved about
    2% of the collector's CPU per hit (loadtest.ab: 0.95-0.99 over three runs).
    """

    def __init__(self) -> None:
        self.append: Callable[[Hit], None] = _not_started

    def record(self, request: web.Request, kind: str, job: int, *, rcpt: int | None = None,
               link: str | None = None, page: int | None = None, reason: str | None = None,
               extra: dict[str, str | None] | None = None, referer: str | None = None,
               language: str | None = None, anonymous: bool = False) -> None:
        """Append one hit as a plain tuple (see collector.rows.HIT_FIELDS).

        Page views pass the document's ``referer`` ("" for none: the Referer header
        of a beacon is the page itself) and ``language`` as the snippet reported
        them; ``anonymous`` keeps neither address nor user agent (a visitor asking
        not to be tracked, on a site that tracks them blind).
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


RECORDER = web.AppKey("recorder", HitRecorder)
