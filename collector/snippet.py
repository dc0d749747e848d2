"""The website snippet ``/t.js``: read from ``static/t.js``, minified once at import, served with an ETag."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static"
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
