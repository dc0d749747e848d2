"""Who may see what: authentication, CSRF, roles and the security headers of every answer.

Every route needs a logged-in session (pages: else a redirect to /login) or
an API bearer token (/api/: else 401), except the log-in page and the static
files. Every POST of a session must carry the session's CSRF token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from pixeltrack.dashboard import accounts
from pixeltrack.dashboard.accounts import Principal
from pixeltrack.dashboard.keys import POOL, PRINCIPAL, SESSION_COOKIE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API = "/api/"
PUBLIC = ("/login", "/static/")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


def is_public(path: str) -> bool:
    """The log-in page and static files answer without authentication."""
    return path == "/login" or path.startswith("/static/")


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: security headers on every answer, errors included."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")


def api_error(status: int, message: str, **extra: Any) -> web.Response:
    """A JSON error body with the right status."""
    body = {"error": {"status": status, "message": message, **extra}}
    response = web.json_response(body, status=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="pixeltrack"'
    return response


def principal(request: web.Request) -> Principal:
    """Who the request acts for (set by the auth middleware)."""
    return request[PRINCIPAL]


def require_admin(request: web.Request) -> Principal:
    """The admin the request acts for, or 403."""
    who = principal(request)
    if not who.admin:
        if request.path.startswith(API):
            raise web.HTTPForbidden(text='{"error": {"status": 403, "message": "needs an admin"}}',
                                    content_type="application/json")
        raise web.HTTPForbidden(text="Only admins may open this page.")
    return who


def bearer(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def _api_principal(request: web.Request) -> Principal | None:
    token = bearer(request)
    if not token or len(token) > 200:
        return None
    async with request.app[POOL].acquire() as conn:
        return await accounts.token_principal(conn, token)


async def _session_principal(request: web.Request) -> Principal | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 200:
        return None
    async with request.app[POOL].acquire() as conn:
        return await accounts.session_principal(conn, token)


async def csrf_ok(request: web.Request, expected: str | None) -> bool:
    """The form field (or header) equals the session's CSRF token."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    return bool(expected and sent) and hmac.compare_digest(str(sent), str(expected))


def to_login(request: web.Request) -> web.HTTPFound:
    """A redirect to the log-in page that comes back here afterwards."""
    return web.HTTPFound("/login?next=" + quote(request.path_qs, safe=""))


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sets request[PRINCIPAL] or answers 401 / redirects; checks CSRF on POSTs of sessions."""
    if is_public(request.path):
        return await handler(request)
    if request.path.startswith(API):
        who = await _api_principal(request)
        if who is None:
            return api_error(401, "a valid API token is needed: Authorization: Bearer TOKEN")
        request[PRINCIPAL] = who
        return await handler(request)
    who = await _session_principal(request)
    if who is None:
        raise to_login(request)
    if request.method not in ("GET", "HEAD", "OPTIONS") and not await csrf_ok(request, who.csrf_token):
        raise web.HTTPForbidden(text="The form's CSRF token is missing or wrong: reload the page and try again.")
    request[PRINCIPAL] = who
    return await handler(request)


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API answers are JSON, errors too (404, 405, 413 ...)."""
    if not request.path.startswith(API):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        return api_error(exc.status, exc.reason)
