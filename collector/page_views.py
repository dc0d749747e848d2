"""Website tracking at the edge: the snippet, page-view hits, identified clicks.

``GET /t.js`` serves the snippet (cacheable, ETag). ``GET /r.gif`` and
``POST /r`` (sendBeacon) take page views: the site key is a signed token
carrying the site id and the flags to apply here (privacy mode, Do Not Track
policy, cookie-less), so no request needs the database. Like the pixels they
answer the same whatever they receive; an unknown key is recorded with job 0
and a reason, never attributed. The only await is reading a bounded body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from collector import answers, snippet
from collector.answers import NO_STORE, PIXEL
from collector.record import RECORDER
from collector.state import METRICS, SIGNER
from pixeltrack.core.tokens import (
    KIND_CONTACT,
    KIND_SITE,
    SITE_BLIND,
    SITE_COOKIELESS,
    SITE_DNT_BLIND,
    SITE_DNT_IGNORE,
    SITE_UNIQUE,
    Signer,
    TokenError,
)

MAX_BODY = 8192       # a beacon is a few hundred bytes; the rest is not read
MAX_VALUE = 4096      # per field before the write buffer's own column limits
_VISITOR = re.compile(r"[0-9A-Za-z_-]{8,64}")


def add_routes(app: web.Application) -> None:
    """Register the snippet and the page-view endpoints."""
    app.router.add_get("/t.js", snippet.snippet)
    app.router.add_get("/r.gif", page_pixel)
    app.router.add_post("/r", page_beacon)


async def page_pixel(request: web.Request) -> web.StreamResponse:
    """GET /r.gif?k=KEY&u=...: a page view by image. Always the GIF."""
    page_view(request, request.query, None)
    return answers.respond(PIXEL)


async def page_beacon(request: web.Request) -> web.Response:
    """POST /r: a page view by sendBeacon (JSON body). Always 204."""
    data, reason = parse_body(await read_body(request))
    page_view(request, data, reason)
    return web.Response(status=204, headers=NO_STORE)


async def read_body(request: web.Request) -> bytes | None:
    """At most MAX_BODY bytes of the body; None when it is longer (not read further)."""
    if (request.content_length or 0) > MAX_BODY:
        return None
    body = bytearray()
    for _ in range(64):  # chunks arrive whole; the bound only guards against a trickle
        chunk = await request.content.read(MAX_BODY + 1 - len(body))
        if not chunk:
            break
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return bytes(body)


def parse_body(body: bytes | None) -> tuple[Mapping[str, Any], str | None]:
    """The beacon's fields, or ({}, reason) for a body that is not a JSON object."""
    if body is None:
        return {}, "body_too_long"
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}, "bad_body"
    if not isinstance(data, dict):
        return {}, "bad_body"
    return data, None


def _text(value: Any) -> str | None:
    """A field as text, or None for anything else (numbers, lists, empty)."""
    if isinstance(value, str) and value:
        return value[:MAX_VALUE]
    return None


def site_of(signer: Signer, key: str | None) -> tuple[int, int, str | None]:
    """(site id, flags, reject reason) of a site key; (0, 0, reason) when refused."""
    if key is None:
        return 0, 0, "missing_key"
    try:
        token = signer.verify(key)
    except TokenError as exc:
        return 0, 0, exc.reason
    if token.kind != KIND_SITE:
        return 0, 0, "wrong_kind"
    return token.job_id, token.recipient_id or 0, None


def opted_out(request: web.Request, data: Mapping[str, Any]) -> bool:
    """Do Not Track or Global Privacy Control, from the headers or the snippet."""
    h = request.headers
    return h.get("DNT") == "1" or h.get("Sec-GPC") == "1" or data.get("p") in (1, "1", True)


def contact_of(request: web.Request, token: str | None) -> str | None:
    """'mail_job:recipient' of a verified contact parameter; a forged one is dropped and counted."""
    if token is None:
        return None
    try:
        t = request.app[SIGNER].verify(token)
    except TokenError as exc:
        request.app[METRICS].repaired.labels(f"contact_{exc.reason}").inc()
        return None
    if t.kind != KIND_CONTACT or t.recipient_id is None:
        request.app[METRICS].repaired.labels("contact_wrong_kind").inc()
        return None
    return f"{t.job_id}:{t.recipient_id}"


def page_view(request: web.Request, data: Mapping[str, Any], reason: str | None) -> None:
    """Record one page view as the site's flags allow (or nothing: tracking off)."""
    key = data.get("k")
    job, flags, refused = site_of(request.app[SIGNER], key if isinstance(key, str) and key else None)
    reason = reason or refused
    anonymous = False
    if opted_out(request, data) and not flags & SITE_DNT_IGNORE:
        if reason is None and not flags & SITE_DNT_BLIND:
            return  # the default: Do Not Track / GPC turn tracking off
        anonymous = True
    extra = {"url": _text(data.get("u")), "title": _text(data.get("t")), "screen": _text(data.get("s"))}
    if reason is None and not anonymous:
        visitor = _text(data.get("v"))
        if visitor and not flags & (SITE_BLIND | SITE_COOKIELESS) and _VISITOR.fullmatch(visitor):
            extra["visitor_id"] = visitor
        if not flags & (SITE_BLIND | SITE_UNIQUE):
            extra["contact"] = contact_of(request, _text(data.get("c")))
    request.app[RECORDER].record(request, "page", job if reason is None else 0, reason=reason, extra=extra,
                                 referer=_text(data.get("r")) or "", language=_text(data.get("l")),
                                 anonymous=anonymous)

