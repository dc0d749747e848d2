"""Who may reach what: every route needs a session or a token; log-in limits, CSRF, roles and headers."""

from __future__ import annotations

import re

import asyncpg
from aiohttp.test_utils import TestClient

from pixeltrack.dashboard import accounts
from pixeltrack.dashboard.security import CSP
from tests.dashboard.conftest import ADMIN, PASSWORD, VIEWER, csrf_of, log_in

PARAM = re.compile(r"\{[^}]+\}")


def routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every route of the app, path parameters filled with 1."""
    out = []
    for route in client.app.router.routes():
        path = PARAM.sub("1", route.resource.canonical)
        if route.method != "HEAD":
            out.append((route.method, path))
    return out


class TestNothingWithoutAuthentication:
    """Every route but /login and static files answers 302 to /login (pages) or 401 (API) without credentials."""

    async def test_every_route(self, client: TestClient) -> None:
        """Walks the router: pages redirect to the log-in, the API answers 401 with a JSON error."""
        checked = 0
        for method, path in routes(client):
            if path == "/login" or path.startswith("/static"):
                continue
            answer = await client.request(method, path, allow_redirects=False)
            if path.startswith("/api/"):
                assert answer.status == 401, (method, path)
                assert (await answer.json())["error"]["status"] == 401
                assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            else:
                assert answer.status == 302, (method, path)
                assert answer.headers["Location"].startswith("/login?next="), (method, path)
            checked += 1
        assert checked == 24  # 13 pages and forms, 11 API routes

    async def test_public_routes(self, client: TestClient) -> None:
        """The log-in page and the static files answer; a bad session cookie or bearer token is no better than none."""
        assert (await client.get("/login")).status == 200
        css = await client.get("/static/dashboard.css")
        assert (css.status, css.content_type) == (200, "text/css")
        assert (await client.get("/static/live.js")).status == 200
        client.session.cookie_jar.update_cookies({"pt_session": "made-up"})
        assert (await client.get("/", allow_redirects=False)).status == 302
        assert (await client.get("/api/v1/jobs", headers={"Authorization": "Bearer pt_nope"})).status == 401
        assert (await client.get("/api/v1/jobs", headers={"Authorization": "Basic eDp5"})).status == 401


class TestLogIn:
    """The log-in form: right password in, wrong password out, attempts limited, CSRF-protected."""

    async def test_right_password(self, client: TestClient) -> None:
        """A session cookie, HttpOnly and SameSite=Lax; the overview then answers."""
        form = await (await client.get("/login")).text()
        answer = await client.post("/login", data={"email": "Admin@Example.org ", "password": PASSWORD,
                                                   "csrf_token": csrf_of(form), "next": "/manage"},
                                   allow_redirects=False)
        assert (answer.status, answer.headers["Location"]) == (302, "/manage")
        cookie = answer.cookies["pt_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]
        assert (await client.get("/", allow_redirects=False)).status == 200

    async def test_wrong_password(self, client: TestClient) -> None:
        """401 with the form again, and no session."""
        form = await (await client.get("/login")).text()
        answer = await client.post("/login", data={"email": ADMIN, "password": "wrong password!",
                                                   "csrf_token": csrf_of(form)}, allow_redirects=False)
        assert answer.status == 401
        assert "Wrong e-mail or password." in await answer.text()
        assert "pt_session" not in answer.cookies
        assert (await client.get("/", allow_redirects=False)).status == 302

    async def test_offsite_next_ignored(self, client: TestClient) -> None:
        """next=//evil.example goes to / instead."""
        form = await (await client.get("/login")).text()
        answer = await client.post("/login", data={"email": ADMIN, "password": PASSWORD, "csrf_token": csrf_of(form),
                                                   "next": "//evil.example/x"}, allow_redirects=False)
        assert answer.headers["Location"] == "/"

    async def test_without_form_token(self, client: TestClient) -> None:
        """A log-in post without the form's token (cross-site) is refused with 403."""
        await client.get("/login")
        answer = await client.post("/login", data={"email": ADMIN, "password": PASSWORD, "csrf_token": "forged"},
                                   allow_redirects=False)
        assert answer.status == 403

    async def test_rate_limited(self, client: TestClient) -> None:
        """Five failures a minute for one e-mail, then 429 even for the right password."""
        statuses = []
        for password in ["wrong password!"] * 5 + [PASSWORD]:
            form = await (await client.get("/login")).text()
            answer = await client.post("/login", data={"email": VIEWER, "password": password,
                                                       "csrf_token": csrf_of(form)}, allow_redirects=False)
            statuses.append(answer.status)
        assert statuses == [401, 401, 401, 401, 401, 429]

    async def test_log_out(self, client: TestClient) -> None:
        """POST /logout with the CSRF token ends the session server-side."""
        csrf = await log_in(client)
        answer = await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
        assert answer.headers["Location"] == "/login"
        assert (await client.get("/", allow_redirects=False)).status == 302


class TestCsrfAndRoles:
    """Every POST of a session needs its CSRF token; Manage is for admins."""

    async def test_post_without_csrf(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """403, and nothing is created; with the token the same form works."""
        csrf = await log_in(client)
        answer = await client.post("/manage/jobs", data={"name": "x", "mode": "blind"})
        assert answer.status == 403
        answer = await client.post("/manage/jobs", data={"name": "x", "mode": "blind", "csrf_token": "a" * 43})
        assert answer.status == 403
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 0
        answer = await client.post("/manage/jobs", data={"name": "x", "mode": "blind", "csrf_token": csrf})
        assert answer.status == 200
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 1

    async def test_viewer_cannot_manage(self, client: TestClient, conn: asyncpg.Connection) -> None:
        """A viewer sees the overview but gets 403 on Manage and its forms, and no Manage link."""
        csrf = await log_in(client, VIEWER)
        overview = await client.get("/")
        assert overview.status == 200 and 'href="/manage"' not in await overview.text()
        assert (await client.get("/manage")).status == 403
        answer = await client.post("/manage/tokens", data={"name": "x", "csrf_token": csrf})
        assert answer.status == 403
        assert await accounts.list_tokens(conn) == []


class TestHeaders:
    """Every answer carries the CSP and the other security headers, errors and the log-in page included."""

    async def test_headers(self, client: TestClient) -> None:
        """CSP without inline script, nosniff, a referrer policy, no framing; pages are not cached."""
        for path in ("/login", "/", "/api/v1/jobs", "/static/dashboard.css", "/nowhere"):
            answer = await client.get(path, allow_redirects=False)
            assert answer.headers["Content-Security-Policy"] == CSP, path
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
            assert answer.headers["Referrer-Policy"] == "same-origin"
        assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP and "frame-ancestors 'none'" in CSP
        assert (await client.get("/login")).headers["Cache-Control"] == "no-store"

    async def test_secure_cookies(self, db_url: str, tmp_path: object, users: None) -> None:
        """PIXELTRACK_DASHBOARD_SECURE_COOKIES=1 (behind TLS): the session cookie is Secure."""
        from aiohttp.test_utils import TestServer

        from pixeltrack.dashboard.app import create_app
        from pixeltrack.dashboard.config import DashboardConfig

        config = DashboardConfig.from_env({"DATABASE_URL": db_url, "PIXELTRACK_DASHBOARD_SECURE_COOKIES": "1"})
        assert config.secure_cookies and config.port == 8081 and config.host == "127.0.0.1"
        async with TestClient(TestServer(create_app(config), host="127.0.0.1")) as secure:
            page = await secure.get("/login")
            form_cookie = page.cookies["pt_login"]
            assert form_cookie["secure"]  # so the client keeps it to itself over plain HTTP: sent by hand
            answer = await secure.post("/login", data={"email": ADMIN, "password": PASSWORD,
                                                       "csrf_token": csrf_of(await page.text())},
                                       headers={"Cookie": f"pt_login={form_cookie.value}"}, allow_redirects=False)
            assert answer.cookies["pt_session"]["secure"]
