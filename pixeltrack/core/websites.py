"""Tracked websites: their settings, their signed keys and the snippet tag to paste.

A site is a job of kind 'site' plus a row in ``sites``. Its key is a signed
token (KIND_SITE) holding the site id and the flags the collector applies
without a database lookup; changing a setting means pasting a new key.
"""

from __future__ import annotations

import html
from typing import Any

import asyncpg

from pixeltrack.core import jobs
from pixeltrack.core.tokens import (
    KIND_SITE,
    SITE_BLIND,
    SITE_COOKIELESS,
    SITE_DNT_BLIND,
    SITE_DNT_IGNORE,
    SITE_SPA_HASH,
    SITE_UNIQUE,
    Signer,
)

SITE_MODES = ("personal", "unique", "blind")
DNT_POLICIES = ("off", "blind", "ignore")
MODE_FLAGS = {"personal": 0, "unique": SITE_UNIQUE, "blind": SITE_BLIND}
DNT_FLAGS = {"off": 0, "blind": SITE_DNT_BLIND, "ignore": SITE_DNT_IGNORE}

INSERT_SITE = """
INSERT INTO sites (job_id, domain, dnt_policy, cookieless, spa_hash) VALUES ($1, $2, $3, $4, $5)
"""
SELECT_SITES = """
SELECT s.job_id, j.mode, s.domain, s.dnt_policy, s.cookieless, s.spa_hash
FROM sites s JOIN jobs j USING (job_id) ORDER BY s.job_id
"""
# Which recipients of a mail job may be identified on a website by a click.
IDENTIFIABLE = """
SELECT r.recipient_id FROM recipients r JOIN jobs j USING (job_id)
WHERE r.job_id = $1 AND (j.mode = 'personal' OR (j.mode = 'permission_personal' AND r.consent))
"""


def site_flags(mode: str, dnt_policy: str = "off", cookieless: bool = False, spa_hash: bool = False) -> int:
    """The flag bits a site key carries."""
    flags = MODE_FLAGS[mode] | DNT_FLAGS[dnt_policy]
    return flags | (SITE_COOKIELESS if cookieless else 0) | (SITE_SPA_HASH if spa_hash else 0)


def site_key(signer: Signer, site: asyncpg.Record | dict[str, Any]) -> str:
    """The signed key of a site row (job_id, mode and settings)."""
    flags = site_flags(site["mode"], site["dnt_policy"], site["cookieless"], site["spa_hash"])
    return signer.mint(KIND_SITE, site["job_id"], flags)


def snippet_html(base_url: str, key: str) -> str:
    """The exact tag to paste into every page."""
    return f'<script async src="{html.escape(base_url.rstrip("/"))}/t.js" data-site="{key}"></script>'


async def create_site(conn: asyncpg.Connection, domain: str, mode: str, dnt_policy: str = "off",
                      cookieless: bool = False, spa_hash: bool = False) -> dict[str, Any]:
    """Create the site's job and settings in one transaction; return the site row."""
    domain = domain.strip().lower().rstrip(".")
    if mode not in SITE_MODES:
        raise ValueError(f"a site's mode must be one of {', '.join(SITE_MODES)}")
    if dnt_policy not in DNT_POLICIES:
        raise ValueError(f"--dnt must be one of {', '.join(DNT_POLICIES)}")
    if not domain or "/" in domain or " " in domain:
        raise ValueError(f"--domain must be a host name like example.com, got {domain!r}")
    async with conn.transaction():
        job_id = await jobs.create_job(conn, domain, mode, "site")
        await conn.execute(INSERT_SITE, job_id, domain, dnt_policy, cookieless, spa_hash)
    return {"job_id": job_id, "mode": mode, "domain": domain, "dnt_policy": dnt_policy,
            "cookieless": cookieless, "spa_hash": spa_hash}


async def identifiable(conn: asyncpg.Connection, job_id: int) -> set[int]:
    """Recipients of a mail job whose clicks may carry their identity to a website."""
    return {r["recipient_id"] for r in await conn.fetch(IDENTIFIABLE, job_id)}
