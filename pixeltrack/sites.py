"""`pixeltrack site ...`: tracked websites, their keys and the snippet to paste.

A site is a job of kind 'site' plus a row in ``sites``. Its key is a signed
token (KIND_SITE) holding the site id and the flags the collector applies
without a database lookup; changing a setting means pasting a new key.
"""

from __future__ import annotations

import argparse
import html
import sys
from typing import Any

import asyncpg

from pixeltrack import commands, jobs
from pixeltrack.config import CommonConfig
from pixeltrack.tokens import (
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


def cmd_site_create(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Create a site; print its id, key and the HTML to paste."""
    signer = Signer(commands.need_secret(settings))

    async def work(conn: asyncpg.Connection) -> int:
        site = await create_site(conn, args.domain, args.mode, args.dnt, args.cookieless, args.spa_hash)
        key = site_key(signer, site)
        print(f"site {site['job_id']} ({site['domain']}, {site['mode']})")
        print(f"key: {key}")
        print("paste into every page:")
        print(snippet_html(args.base_url or settings.base_url, key))
        return 0

    return commands.run_db(settings, work)


def cmd_site_list(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Show the sites with their settings and keys."""
    signer = Signer(commands.need_secret(settings))

    async def work(conn: asyncpg.Connection) -> int:
        print(f"{'id':>6}  {'mode':<9} {'dnt':<7} {'cookieless':<10} {'spa_hash':<8} {'domain':<28} key")
        for r in await conn.fetch(SELECT_SITES):
            print(f"{r['job_id']:>6}  {r['mode']:<9} {r['dnt_policy']:<7} {str(r['cookieless']).lower():<10} "
                  f"{str(r['spa_hash']).lower():<8} {r['domain']:<28} {site_key(signer, r)}")
        return 0

    return commands.run_db(settings, work)


def cmd_site_report(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Print one site's report (table, json or csv)."""
    from aggregator.sites.report import render_site, site_report

    async def work(conn: asyncpg.Connection) -> int:
        sys.stdout.write(render_site(await site_report(conn, args.site), args.format))
        return 0

    return commands.run_db(settings, work)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `site create|list|report` to the `pixeltrack` command."""
    site = sub.add_parser("site", help="tracked websites").add_subparsers(dest="site_cmd", required=True)
    p = site.add_parser("create", help="create a site; print its key and the snippet HTML")
    p.add_argument("--domain", required=True, help="the site's domain, e.g. example.com")
    p.add_argument("--mode", required=True, choices=SITE_MODES)
    p.add_argument("--dnt", default="off", choices=DNT_POLICIES,
                   help="Do Not Track / GPC: off = no tracking (default), blind, ignore")
    p.add_argument("--cookieless", action="store_true", help="no cookies; visitors as a daily salted hash")
    p.add_argument("--spa-hash", action="store_true", help="count hash changes as page views")
    p.add_argument("--base-url", help="public base URL of the collector (env PIXELTRACK_BASE_URL)")
    p.set_defaults(func=cmd_site_create)
    site.add_parser("list", help="list sites and their keys").set_defaults(func=cmd_site_list)
    p = site.add_parser("report", help="a site's report")
    p.add_argument("--site", type=int, required=True)
    p.add_argument("--format", default="table", choices=("table", "json", "csv"))
    p.set_defaults(func=cmd_site_report)
