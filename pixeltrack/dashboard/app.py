"""The dashboard's aiohttp application factory, its routes and its resource lifecycle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

from aiohttp import web

from pixeltrack.core import db
from pixeltrack.dashboard import api, login, manage, pages, sites
from pixeltrack.dashboard.config import DashboardConfig
from pixeltrack.dashboard.keys import CONFIG, COUNTS, LOGIN_LIMIT, POOL, TEMPLATES
from pixeltrack.dashboard.queries import RecipientCounts
from pixeltrack.dashboard.ratelimit import RateLimiter
from pixeltrack.dashboard.render import environment
from pixeltrack.dashboard.security import add_headers, api_errors, authenticate

log = logging.getLogger(__name__)

ID = r"{%s:\d{1,19}}"


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """The connection pool, opened at start and closed at shutdown."""
    app[POOL] = await db.create_pool(app[CONFIG].database_url, min_size=1, max_size=8)
    yield
    await app[POOL].close()


def static_dir() -> Path:
    """The package's static files (CSS, the live panel's script)."""
    return Path(str(resources.files("pixeltrack.dashboard").joinpath("static")))


def add_page_routes(app: web.Application) -> None:
    """Pages: all need a session (see security.authenticate); Manage needs an admin."""
    r = app.router
    r.add_get("/login", login.login_page)
    r.add_post("/login", login.login)
    r.add_post("/logout", login.logout)
    r.add_get("/", pages.overview)
    r.add_get("/jobs/" + ID % "job_id", pages.job_page)
    r.add_get("/sites/" + ID % "site_id", sites.site_page)
    r.add_get("/sites/" + ID % "site_id" + "/live.json", sites.live_json)
    r.add_get("/manage", manage.manage_page)
    r.add_post("/manage/jobs", manage.create_job)
    r.add_post("/manage/sites", manage.create_site)
    r.add_post("/manage/jobs/" + ID % "job_id" + "/recipients", manage.upload_recipients)
    r.add_post("/manage/jobs/" + ID % "job_id" + "/merge", manage.merge_file)
    r.add_post("/manage/forget", manage.forget_recipient)
    r.add_post("/manage/tokens", manage.create_token)
    r.add_post("/manage/tokens/" + ID % "token_id" + "/revoke", manage.revoke_token)
    r.add_static("/static/", static_dir(), name="static")


def create_app(config: DashboardConfig) -> web.Application:
    """The dashboard app: pages, Manage, the report API and static files."""
    app = web.Application(middlewares=[api_errors, authenticate], client_max_size=manage.MAX_UPLOAD)
    app[CONFIG] = config
    app[TEMPLATES] = environment()
    app[LOGIN_LIMIT] = RateLimiter(config.login_attempts)
    app[COUNTS] = RecipientCounts()
    app.cleanup_ctx.append(pool_ctx)
    app.on_response_prepare.append(add_headers)
    add_page_routes(app)
    api.add_routes(app)
    return app
