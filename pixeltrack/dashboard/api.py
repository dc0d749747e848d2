"""The report API under /api/v1: bearer tokens, JSON in and out, errors as JSON with their status.

Reports are exactly what `pixeltrack report --format json|csv` prints (the
aggregator's render functions over the same dicts).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aggregator.mail.report import UnknownJob
from aggregator.privacy.forget import forget
from aggregator.render import render
from aggregator.web.render import render_site
from pixeltrack.core import jobs, websites
from pixeltrack.dashboard import accounts, actions, queries, reports
from pixeltrack.dashboard.keys import CONFIG, COUNTS, POOL
from pixeltrack.dashboard.openapi import spec
from pixeltrack.dashboard.pages import path_id
from pixeltrack.dashboard.security import api_error, require_admin

PREFIX = "/api/v1"
FORMATS = {"json": "application/json", "csv": "text/csv"}


def _format(request: web.Request) -> str:
    fmt = request.query.get("format", "json")
    if fmt not in FORMATS:
        raise web.HTTPUnprocessableEntity(text=f"format must be json or csv, got {fmt[:20]!r}")
    return fmt


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise web.HTTPUnprocessableEntity(text="the body must be a JSON object") from exc
    if not isinstance(body, dict):
        raise web.HTTPUnprocessableEntity(text="the body must be a JSON object")
    return body


async def list_jobs(request: web.Request) -> web.Response:
    """GET /api/v1/jobs: mail jobs with their recipient counts."""
    async with request.app[POOL].acquire() as conn:
        rows = [r for r in await conn.fetch(queries.JOBS) if r["kind"] == "mail"]
        counts = await request.app[COUNTS].get(conn, [r["job_id"] for r in rows])
    return web.json_response({"jobs": [
        {"job_id": r["job_id"], "name": r["name"], "mode": r["mode"], "recipients": counts.get(r["job_id"], 0),
         "sent_at": r["sent_at"] and r["sent_at"].isoformat(), "created_at": r["created_at"].isoformat()}
        for r in sorted(rows, key=lambda r: r["job_id"])]})  # fmt: skip


async def create_job(request: web.Request) -> web.Response:
    """POST /api/v1/jobs {name, mode, sent_at?} -> 201 {job_id}."""
    require_admin(request)
    body = await _body(request)
    try:
        async with request.app[POOL].acquire() as conn:
            job_id = await actions.create_job(conn, body.get("name"), body.get("mode"), body.get("sent_at"))
    except ValueError as exc:
        return api_error(422, str(exc))
    return web.json_response({"job_id": job_id}, status=201)


async def job_report(request: web.Request) -> web.Response:
    """GET /api/v1/jobs/{job_id}/report[?format=csv]."""
    job_id, fmt = path_id(request, "job_id"), _format(request)
    async with request.app[POOL].acquire() as conn:
        try:
            report = await reports.job_report(conn, job_id, request.app[CONFIG].k_anonymity, request.app[COUNTS],
                                                  recipients=True, headline=request.app[CONFIG].headline)
        except UnknownJob as exc:
            return api_error(404, str(exc))
    if report["kind"] != "mail":
        return api_error(404, f"job {job_id} is a site: /api/v1/sites/{job_id}/report")
    return web.Response(text=render(report, fmt) + ("\n" if fmt == "json" else ""),
                        content_type=FORMATS[fmt], charset="utf-8")


async def upload_recipients(request: web.Request) -> web.Response:
    """POST /api/v1/jobs/{job_id}/recipients (text/csv): all rows or none; 422 lists every bad line."""
    require_admin(request)
    job_id = path_id(request, "job_id")
    try:
        text = (await request.read()).decode("utf-8-sig")
        async with request.app[POOL].acquire() as conn:
            added, updated = await actions.import_recipients(conn, job_id, text)
    except UnicodeDecodeError:
        return api_error(422, "the body must be UTF-8 CSV")
    except jobs.RecipientsError as exc:
        return api_error(422, str(exc), lines=[{"line": n, "message": m} for n, m in exc.errors])
    except LookupError as exc:
        return api_error(404, str(exc))
    except ValueError as exc:
        return api_error(422, str(exc))
    return web.json_response({"job_id": job_id, "added": added, "updated": updated})


async def forget_recipient(request: web.Request) -> web.Response:
    """POST /api/v1/jobs/{job_id}/forget {recipient}: the right to erasure for one job."""
    require_admin(request)
    job_id = path_id(request, "job_id")
    recipient = (await _body(request)).get("recipient")
    if not isinstance(recipient, str) or not recipient.strip() or len(recipient) > 320:
        return api_error(422, "recipient must be the recipient as imported")
    async with request.app[POOL].acquire() as conn:
        done = await forget(conn, recipient.strip(), job_id)
    if not done:
        return api_error(404, f"job {job_id} has no recipient {recipient!r}")
    return web.json_response({"forgotten": [item.describe() for item in done]})


async def list_sites(request: web.Request) -> web.Response:
    """GET /api/v1/sites."""
    async with request.app[POOL].acquire() as conn:
        rows = await conn.fetch(websites.SELECT_SITES)
    return web.json_response({"sites": [dict(r) for r in rows]})


async def create_site(request: web.Request) -> web.Response:
    """POST /api/v1/sites {domain, mode, dnt?, cookieless?, spa_hash?} -> 201 with key and snippet."""
    require_admin(request)
    body = await _body(request)
    try:
        async with request.app[POOL].acquire() as conn:
            site = await actions.create_site(conn, body.get("domain"), body.get("mode"), body.get("dnt", "off"),
                                             body.get("cookieless", False), body.get("spa_hash", False))
    except ValueError as exc:
        return api_error(422, str(exc))
    return web.json_response({**site, **(actions.snippet(request.app[CONFIG], site) or {})}, status=201)


async def site_report(request: web.Request) -> web.Response:
    """GET /api/v1/sites/{site_id}/report[?format=csv]."""
    site_id, fmt = path_id(request, "site_id"), _format(request)
    async with request.app[POOL].acquire() as conn:
        try:
            report = await reports.web_report(conn, site_id, request.app[CONFIG].headline)
        except LookupError as exc:
            return api_error(404, str(exc))
    return web.Response(text=render_site(report, fmt), content_type=FORMATS[fmt], charset="utf-8")


async def list_tokens(request: web.Request) -> web.Response:
    """GET /api/v1/tokens (admins): every token without its secret."""
    require_admin(request)
    async with request.app[POOL].acquire() as conn:
        rows = await accounts.list_tokens(conn)
    return web.json_response({"tokens": [
        {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in dict(r).items()} for r in rows]})


async def revoke_token(request: web.Request) -> web.Response:
    """DELETE /api/v1/tokens/{token_id} (admins) -> 204."""
    require_admin(request)
    token_id = path_id(request, "token_id")
    async with request.app[POOL].acquire() as conn:
        if not await accounts.revoke_token(conn, token_id):
            return api_error(404, f"no live token {token_id}")
    return web.Response(status=204)


async def openapi(request: web.Request) -> web.Response:
    """GET /api/v1/openapi.json."""
    return web.json_response(spec())


def add_routes(app: web.Application) -> None:
    """Every API route; the OpenAPI description lists exactly these (a test keeps it so)."""
    r = app.router
    r.add_get(f"{PREFIX}/openapi.json", openapi)
    r.add_get(f"{PREFIX}/jobs", list_jobs)
    r.add_post(f"{PREFIX}/jobs", create_job)
    r.add_get(PREFIX + r"/jobs/{job_id:\d{1,19}}/report", job_report)
    r.add_post(PREFIX + r"/jobs/{job_id:\d{1,19}}/recipients", upload_recipients)
    r.add_post(PREFIX + r"/jobs/{job_id:\d{1,19}}/forget", forget_recipient)
    r.add_get(f"{PREFIX}/sites", list_sites)
    r.add_post(f"{PREFIX}/sites", create_site)
    r.add_get(PREFIX + r"/sites/{site_id:\d{1,19}}/report", site_report)
    r.add_get(f"{PREFIX}/tokens", list_tokens)
    r.add_delete(PREFIX + r"/tokens/{token_id:\d{1,19}}", revoke_token)
