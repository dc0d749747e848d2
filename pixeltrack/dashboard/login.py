"""Log-in and log-out.

The log-in form has no session yet, so its CSRF token is a double submit:
a random value in a cookie and in the form, which must match. Failed
attempts are limited per client address and per e-mail (429 past the limit).
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web

from pixeltrack.dashboard import accounts
from pixeltrack.dashboard.keys import CONFIG, LOGIN_COOKIE, LOGIN_LIMIT, POOL, SESSION_COOKIE
from pixeltrack.dashboard.render import page
from pixeltrack.dashboard.security import CSRF_FIELD

MAX_FIELD = 1000


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only (no //host, no scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target if target.isprintable() else "/"


def _cookie_flags(request: web.Request) -> dict[str, object]:
    return {"httponly": True, "samesite": "Lax", "secure": request.app[CONFIG].secure_cookies, "path": "/"}


def _form(request: web.Request, error: str | None = None, status: int = 200, email: str = "") -> web.Response:
    # One value per browser: a second log-in page (another tab, the favicon's
    # redirect) must not invalidate the form already shown.
    token = request.cookies.get(LOGIN_COOKIE, "")
    if not (20 <= len(token) <= 64 and token.isascii() and token.replace("-", "").replace("_", "").isalnum()):
        token = secrets.token_urlsafe(24)
    response = page(request, "login.html", status=status, login_csrf=token, error=error, email=email,
                    next=safe_next(request.query.get("next")))
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, **_cookie_flags(request))  # type: ignore[arg-type]
    return response


async def login_page(request: web.Request) -> web.Response:
    """GET /login."""
    return _form(request)


async def login(request: web.Request) -> web.StreamResponse:
    """POST /login: check the form's token, the rate limit, then the password."""
    form = await request.post()
    email, password, sent = (str(form.get(k, ""))[:MAX_FIELD] for k in ("email", "password", CSRF_FIELD))
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie, sent):
        return _form(request, "The form expired; please try again.", 403, email)
    limit, address, who = request.app[LOGIN_LIMIT], f"ip:{request.remote}", f"email:{email.strip().lower()}"
    if limit.blocked(address, who):
        return _form(request, "Too many failed attempts; wait a minute and try again.", 429, email)
    async with request.app[POOL].acquire() as conn:
        user = await accounts.verify_password(conn, email, password)
        if user is None:
            limit.add(address, who)
            return _form(request, "Wrong e-mail or password.", 401, email)
        limit.clear(who)
        token = await accounts.open_session(conn, user["user_id"], request.app[CONFIG].session_hours)
    response = web.HTTPFound(safe_next(str(form.get("next", "/"))))
    response.set_cookie(SESSION_COOKIE, token, max_age=request.app[CONFIG].session_hours * 3600,
                        **_cookie_flags(request))  # type: ignore[arg-type]
    response.del_cookie(LOGIN_COOKIE, path="/")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    """POST /logout (CSRF checked by the middleware)."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        async with request.app[POOL].acquire() as conn:
            await accounts.close_session(conn, token)
    response = web.HTTPFound("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response
