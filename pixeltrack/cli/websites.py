"""`pixeltrack site create|list`: tracked websites, their keys and the snippet to paste (see core.websites)."""

from __future__ import annotations

import argparse

import asyncpg

from pixeltrack.cli import jobs as commands
from pixeltrack.core.config import CommonConfig
from pixeltrack.core.tokens import Signer
from pixeltrack.core.websites import DNT_POLICIES, SELECT_SITES, SITE_MODES, create_site, site_key, snippet_html


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


def register(sub: argparse._SubParsersAction) -> None:
    """Add `site create|list` to the `pixeltrack` command (reports: `pixeltrack report --site S`)."""
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
