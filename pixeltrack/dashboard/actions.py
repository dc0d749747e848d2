"""What Manage and the API change, in one place: jobs, sites, recipients, the mail-merge CSV.

Each checks its input and raises ValueError with a message for a person
(the page shows it, the API answers 422 with it); the work itself is the
core's (jobs, websites, mint), as the CLI does it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from pixeltrack.core import jobs, websites
from pixeltrack.core.mint import Minter, check_destination
from pixeltrack.core.tokens import Signer
from pixeltrack.dashboard import csvout
from pixeltrack.dashboard.config import DashboardConfig
from pixeltrack.dashboard.queries import MAIL_JOBS, SET_SENT_AT

MAX_NAME = 200
MAX_URLS = 50
CHUNK = 5000


def check_name(name: Any) -> str:
    """A job name: printable text of 1 to 200 characters."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or not name.isprintable():
        raise ValueError(f"the name must be printable text of 1 to {MAX_NAME} characters")
    return name.strip()


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO 8601 time (a form's datetime-local is taken as UTC); empty is None."""
    if value in (None, ""):
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("the send time must be an ISO 8601 time such as 2024-05-06T10:00")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError("the send time must be an ISO 8601 time such as 2024-05-06T10:00") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


async def create_job(conn: asyncpg.Connection, name: Any, mode: Any, sent_at: Any = None) -> int:
    """A mail job with its send time; returns its id."""
    name, when = check_name(name), parse_time(sent_at)
    if mode not in jobs.MODES:
        raise ValueError(f"mode must be one of {', '.join(jobs.MODES)}")
    async with conn.transaction():
        job_id = await jobs.create_job(conn, name, mode, "mail")
        if when is not None:
            await conn.execute(SET_SENT_AT, job_id, when)
    return job_id


def flag(value: Any) -> bool:
    """A checkbox or JSON boolean."""
    return value is True or value in ("on", "true", "1", "yes")


async def create_site(conn: asyncpg.Connection, domain: Any, mode: Any, dnt: Any = "off",
                      cookieless: Any = False, spa_hash: Any = False) -> dict[str, Any]:
    """A tracked website (the core checks domain, mode and policy)."""
    if not isinstance(domain, str) or len(domain) > 253 or not domain.isprintable():
        raise ValueError("the domain must be a host name like example.com")
    if mode not in websites.SITE_MODES or dnt not in websites.DNT_POLICIES:
        raise ValueError(f"mode must be one of {', '.join(websites.SITE_MODES)}, "
                         f"dnt one of {', '.join(websites.DNT_POLICIES)}")
    return await websites.create_site(conn, domain, mode, dnt, flag(cookieless), flag(spa_hash))


def snippet(config: DashboardConfig, site: asyncpg.Record | dict[str, Any]) -> dict[str, str] | None:
    """The site's signed key and the tag to paste; None without a signing key."""
    if config.secrets is None:
        return None
    key = websites.site_key(Signer(config.secrets.current), site)
    return {"key": key, "snippet": websites.snippet_html(config.base_url, key)}


async def import_recipients(conn: asyncpg.Connection, job_id: int, text: str) -> tuple[int, int]:
    """All rows or none (jobs.RecipientsError lists every bad line); (added, updated)."""
    job = await jobs.get_job(conn, job_id)
    if job["kind"] != "mail":
        raise ValueError("recipients belong to mail jobs, not to sites")
    return await jobs.import_recipients(conn, job_id, jobs.parse_csv(text.lstrip("\ufeff")))


def destinations(raw: str | list[Any]) -> list[str]:
    """Tracked destinations, one per line (or a list), each checked as the minting checks it."""
    urls = [u.strip() for u in (raw.splitlines() if isinstance(raw, str) else raw) if isinstance(u, str)]
    urls = [check_destination(u) for u in urls if u]
    if len(urls) > MAX_URLS:
        raise ValueError(f"at most {MAX_URLS} destinations")
    return urls


async def merge_csv(conn: asyncpg.Connection, config: DashboardConfig, job_id: int,
                    urls: list[str]) -> AsyncIterator[str]:
    """The mail-merge CSV of `pixeltrack mint --all`, in chunks (links registered first)."""
    if config.secrets is None:
        raise ValueError("no signing key: set PIXELTRACK_SECRET to mint URLs")
    job = await jobs.get_job(conn, job_id)
    if job["kind"] != "mail":
        raise ValueError("mail-merge files are made for mail jobs")
    minter = Minter(config.secrets.current, config.base_url)
    await jobs.register_links(conn, job_id, urls)
    identified = await websites.identifiable(conn, job_id)
    header, *_ = minter.merge_rows(job_id, [], urls)
    yield csvout.to_csv(header, [])
    if job["mode"] == "blind":
        yield csvout.to_csv(None, list(minter.merge_rows(job_id, [(None, "")], urls))[1:])
        return
    async with conn.transaction():
        cursor = await conn.cursor(jobs.SELECT_RECIPIENTS, job_id)
        while rows := await cursor.fetch(CHUNK):
            targets = [(r["recipient_id"], r["recipient"]) for r in rows]
            yield csvout.to_csv(None, list(minter.merge_rows(job_id, targets, urls, identified))[1:])


async def mail_jobs(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Mail jobs, newest first."""
    return list(await conn.fetch(MAIL_JOBS))
