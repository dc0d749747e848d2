"""Website tracking at the edge: the snippet, page-view hits, identified clicks.

``GET /t.js`` serves the snippet (cacheable, ETag). ``GET /r.gif`` and
``POST /r`` (sendBeacon) take page views: the site key is a signed token
carrying the site id and the flags to apply here (privacy mode, Do Not Track
policy, cookie-less), so no request needs the database. Like the pixels they
answer the same whatever they receive; an unknown key is recorded with job 0
and a reason, never attributed. The only await is reading a bounded body.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from collector import views
from collector.pixel import NO_STORE
from collector.state import METRICS, SIGNER
from pixeltrack.tokens import (
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

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 8192       # a beacon is a few hundred bytes; the rest is not read
MAX_VALUE = 4096      # per field before the write buffer's own column limits
CONTACT_PARAM = "pt_c"
_VISITOR = re.compile(r"[0-9A-Za-z_-]{8,64}")
_COMMENT = re.compile(r"^\s*//.*$\n?|^\s+", re.MULTILINE)


def minify(source: str) -> bytes:
    """The snippet as served: whole-line comments, indentation and blank lines gone."""
    return "\n".join(line for line in _COMMENT.sub("", source).splitlines() if line).encode() + b"\n"


SNIPPET = minify((STATIC / "t.js").read_text(encoding="utf-8"))
SNIPPET_GZ = gzip.compress(SNIPPET, compresslevel=9, mtime=0)
ETAG = '"' + hashlib.blake2b(SNIPPET, digest_size=8).hexdigest() + '"'
SNIPPET_HEADERS = {
    "Content-Type": "application/javascript; charset=utf-8",
    "Cache-Control": "public, max-age=86400",
    "ETag": ETAG,
    "Vary": "Accept-Encoding",
}


def add_routes(app: web.Application) -> None:
    """Register the snippet and the page-view endpoints."""
    app.router.add_get("/t.js", snippet)
    app.router.add_get("/r.gif", page_pixel)
    app.router.add_post("/r", page_beacon)


def _etag_matches(header: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or ETAG in tags


async def snippet(request: web.Request) -> web.Response:
    """GET /t.js: the snippet, gzipped when the browser takes it; 304 when unchanged."""
    if _etag_matches(request.headers.get("If-None-Match", "")):
        return web.Response(status=304, headers={k: SNIPPET_HEADERS[k] for k in ("Cache-Control", "ETag", "Vary")})
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        return web.Response(body=SNIPPET_GZ, headers={**SNIPPET_HEADERS, "Content-Encoding": "gzip"})
    return web.Response(body=SNIPPET, headers=SNIPPET_HEADERS)


async def page_pixel(request: web.Request) -> web.StreamResponse:
    """GET /r.gif?k=KEY&u=...: a page view by image. Always the GIF."""
    page_view(request, request.query, None)
    return views.gif()


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
    request.app[views.HITS].record(request, "page", job if reason is None else 0, None, None, None, reason, extra,
                 referer=_text(data.get("r")) or "", language=_text(data.get("l")), anonymous=anonymous)


def with_contact(signer: Signer, url: str, job: int, recipient: int) -> str:
    """``url`` with the signed contact parameter added to its query (fragment kept)."""
    token = signer.mint(KIND_CONTACT, job, recipient)
    base, hash_mark, fragment = url.partition("#")
    sep = "" if base.endswith(("?", "&")) else "&" if "?" in base else "?"
    return f"{base}{sep}{CONTACT_PARAM}={token}{hash_mark}{fragment}"
