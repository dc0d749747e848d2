"""Manage (admins only): jobs, sites and their snippets, recipients, mail-merge files, erasure, API tokens.

Each form posts here; the answer is the Manage page again with what was
done (or what was wrong, status 422) at the top.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aggregator.privacy.forget import forget
from pixeltrack.core import jobs, websites
from pixeltrack.dashboard import accounts, actions, csvout
from pixeltrack.dashboard.keys import CONFIG, POOL
from pixeltrack.dashboard.pages import path_id
from pixeltrack.dashboard.render import page
from pixeltrack.dashboard.security import require_admin

MAX_UPLOAD = 64 << 20  # the app's client_max_size: a recipients CSV of about a million rows


async def _page(request: web.Request, status: int = 200, **notes: Any) -> web.Response:
    config = request.app[CONFIG]
    async with request.app[POOL].acquire() as conn:
        mail = await actions.mail_jobs(conn)
        sites = [{**dict(s), **(actions.snippet(config, s) or {})} for s in await conn.fetch(websites.SELECT_SITES)]
        tokens = await accounts.list_tokens(conn)
        users = await conn.fetch(accounts.LIST_USERS)
    return page(request, "manage.html", status=status, mail=mail, sites=sites, tokens=tokens, users=users,
                modes=jobs.MODES, site_modes=websites.SITE_MODES, dnt_policies=websites.DNT_POLICIES,
                signing=config.secrets is not None, notes=notes)


async def manage_page(request: web.Request) -> web.Response:
    """GET /manage."""
    require_admin(request)
    return await _page(request)


async def create_job(request: web.Request) -> web.Response:
    """POST /manage/jobs: name, mode, send time."""
    require_admin(request)
    form = await request.post()
    try:
        async with request.app[POOL].acquire() as conn:
            job_id = await actions.create_job(conn, form.get("name"), form.get("mode"), form.get("sent_at"))
    except ValueError as exc:
        return await _page(request, 422, error=str(exc))
    return await _page(request, done=f"Created mail job {job_id}.")


async def create_site(request: web.Request) -> web.Response:
    """POST /manage/sites: domain, mode, Do Not Track policy, cookie-less, hash routing; shows the snippet."""
    require_admin(request)
    form = await request.post()
    try:
        async with request.app[POOL].acquire() as conn:
            site = await actions.create_site(conn, form.get("domain"), form.get("mode"), form.get("dnt", "off"),
                                             form.get("cookieless"), form.get("spa_hash"))
    except ValueError as exc:
        return await _page(request, 422, error=str(exc))
    shown = actions.snippet(request.app[CONFIG], site)
    return await _page(request, done=f"Created site {site['job_id']} ({site['domain']}).", snippet=shown)


async def upload_recipients(request: web.Request) -> web.Response:
    """POST /manage/jobs/{job_id}/recipients: a CSV file, imported whole or not at all."""
    require_admin(request)
    job_id = path_id(request, "job_id")
    upload = (await request.post()).get("file")
    if not isinstance(upload, web.FileField):
        return await _page(request, 422, error="Choose a CSV file to upload.")
    try:
        text = upload.file.read().decode("utf-8-sig")
        async with request.app[POOL].acquire() as conn:
            added, updated = await actions.import_recipients(conn, job_id, text)
    except UnicodeDecodeError:
        return await _page(request, 422, error="The file is not UTF-8 text.")
    except jobs.RecipientsError as exc:
        return await _page(request, 422, error=str(exc), lines=exc.errors)
    except (ValueError, LookupError) as exc:
        return await _page(request, 422, error=str(exc))
    return await _page(request, done=f"Imported into job {job_id}: {added} new, {updated} updated.")


async def merge_file(request: web.Request) -> web.StreamResponse:
    """POST /manage/jobs/{job_id}/merge: the mail-merge CSV (open pixel and click URLs per recipient)."""
    require_admin(request)
    job_id = path_id(request, "job_id")
    form = await request.post()
    async with request.app[POOL].acquire() as conn:
        try:
            urls = actions.destinations(str(form.get("urls", "")))
            chunks = actions.merge_csv(conn, request.app[CONFIG], job_id, urls)
            first = await anext(chunks)
        except (ValueError, LookupError) as exc:
            return await _page(request, 422, error=str(exc))
        response = web.StreamResponse(headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{csvout.safe_name(f"job-{job_id}-merge")}.csv"'})
        await response.prepare(request)
        await response.write(first.encode())
        async for chunk in chunks:
            await response.write(chunk.encode())
    await response.write_eof()
    return response


async def forget_recipient(request: web.Request) -> web.Response:
    """POST /manage/forget: erase a recipient (one job or every job)."""
    require_admin(request)
    form = await request.post()
    recipient, job = str(form.get("recipient", "")).strip(), str(form.get("job", "")).strip()
    if not recipient or len(recipient) > 320 or (job and not (job.isdigit() and len(job) < 19)):
        return await _page(request, 422, error="Give the recipient as imported, and a job number or nothing.")
    async with request.app[POOL].acquire() as conn:
        done = await forget(conn, recipient, int(job) if job else None)
    if not done:
        return await _page(request, 422, error="No such recipient.")
    return await _page(request, done="Forgot: " + "; ".join(item.describe() for item in done))


async def create_token(request: web.Request) -> web.Response:
    """POST /manage/tokens: a new API token, shown once."""
    require_admin(request)
    form = await request.post()
    try:
        async with request.app[POOL].acquire() as conn:
            token_id, token = await accounts.create_token(conn, str(form.get("name", "")),
                                                          str(form.get("role", "viewer")))
    except ValueError as exc:
        return await _page(request, 422, error=str(exc))
    return await _page(request, done=f"Created API token {token_id}. Copy it now: it is not shown again.",
                       token=token)


async def revoke_token(request: web.Request) -> web.Response:
    """POST /manage/tokens/{token_id}/revoke."""
    require_admin(request)
    token_id = path_id(request, "token_id")
    async with request.app[POOL].acquire() as conn:
        revoked = await accounts.revoke_token(conn, token_id)
    if not revoked:
        return await _page(request, 422, error=f"No live token {token_id}.")
    return await _page(request, done=f"Revoked API token {token_id}.")
