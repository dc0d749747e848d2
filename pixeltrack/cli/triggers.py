"""`pixeltrack trigger create | list | delete | deliveries | replay`: real-time alerts."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from aggregator.triggers.config import TriggerConfig
from aggregator.triggers.store import (
    COUNTED,
    EVENTS,
    TriggerSpec,
    create_trigger,
    delete_trigger,
    deliveries,
    list_triggers,
    replay,
)
from pixeltrack.cli.jobs import run_db
from pixeltrack.core.config import CommonConfig


def _when(value: Any) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def cmd_create(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Create a trigger and print its id (and, on stderr, the signing secret made for a webhook)."""
    config = TriggerConfig.from_env(os.environ)
    spec = TriggerSpec(
        event=args.on, job_id=args.job, site_id=args.site, webhook=args.webhook, secret=args.secret,
        email=args.email, link=args.link, page=args.page, seconds=args.seconds, url_pattern=args.url_pattern,
        count=args.count, of=args.of,
    )  # fmt: skip

    async def work(conn: Any) -> int:
        trigger_id, secret = await create_trigger(conn, spec, allow_private=config.allow_private)
        print(trigger_id)
        if secret is not None and args.secret is None:
            print(f"signing secret (receivers check Pixeltrack-Signature with it): {secret}", file=sys.stderr)
        return 0

    return run_db(settings, work)


def cmd_list(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Every trigger: what it watches, where it sends, how its deliveries stand."""

    async def work(conn: Any) -> int:
        rows = await list_triggers(conn)
        print(f"{'id':>5}  {'watches':<10} {'event':<14} {'pending':>7} {'sent':>6} {'dead':>5}  filters -> target")
        for r in rows:
            watched = f"{'site' if r['job_kind'] == 'site' else 'job'} {r['job_id']}"
            filters = " ".join(f"{k}={v}" for k, v in json.loads(r["filters"]).items()) or "-"
            print(f"{r['trigger_id']:>5}  {watched:<10} {r['event']:<14} {r['pending']:>7} {r['delivered']:>6} "
                  f"{r['dead']:>5}  {filters} -> {r['target_kind']} {r['target']}")  # fmt: skip
        return 0

    return run_db(settings, work)


def cmd_delete(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Delete a trigger and its outbox; exit 1 when there is none."""

    async def work(conn: Any) -> int:
        if not await delete_trigger(conn, args.trigger):
            print(f"pixeltrack trigger delete: no trigger {args.trigger}", file=sys.stderr)
            return 1
        print(f"deleted trigger {args.trigger}")
        return 0

    return run_db(settings, work)


def cmd_deliveries(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Every delivery, its status and next retry, and each attempt under it."""

    async def work(conn: Any) -> int:
        rows, attempts = await deliveries(conn, args.trigger)
        print(f"{'delivery':>8} {'trigger':>7}  {'event':<14} {'status':<9} {'tries':>5}  {'next retry':<19}  event id")
        for r in rows:
            retry = _when(r["next_at"]) if r["status"] == "pending" else "-"
            print(f"{r['delivery_id']:>8} {r['trigger_id']:>7}  {r['type']:<14} {r['status']:<9} {r['attempts']:>5}"
                  f"  {retry:<19}  {r['event_id']}")  # fmt: skip
            for a in attempts.get(r["delivery_id"], []):
                result = "ok" if a["ok"] else "failed"
                status = f" HTTP {a['http_status']}" if a["http_status"] is not None else ""
                error = f": {a['error']}" if a["error"] and not a["ok"] else ""
                print(f"{'':>18}attempt {a['attempt']} at {_when(a['started_at'])}, {a['seconds']:.3f} s, "
                      f"{result}{status}{error}")  # fmt: skip
        return 0

    return run_db(settings, work)


def cmd_replay(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Send a delivery again, with the same event id (for a day of retries again)."""
    retry_for = TriggerConfig.from_env(os.environ).retry_for

    async def work(conn: Any) -> int:
        if not await replay(conn, args.delivery, retry_for):
            print(f"pixeltrack trigger replay: no delivery {args.delivery}", file=sys.stderr)
            return 1
        print(f"delivery {args.delivery} queued again")
        return 0

    return run_db(settings, work)


def _create_parser(sub: Any) -> None:
    p = sub.add_parser("create", help="create a trigger and print its id")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--job", type=int, metavar="J", help="a mail job")
    which.add_argument("--site", type=int, metavar="S", help="a website (site.contact)")
    p.add_argument("--on", required=True, choices=EVENTS, metavar="EVENT", help=", ".join(EVENTS))
    p.add_argument("--link", metavar="URL", help="click: this link only (ending in * : links under this prefix)")
    p.add_argument("--page", type=int, metavar="N", help="doc.page: this page only")
    p.add_argument("--seconds", type=int, metavar="N", help="doc.read: reading time in all that raises it")
    p.add_argument("--url-pattern", metavar="GLOB", help="site.contact: glob on the page's path, e.g. /pricing*")
    p.add_argument("--count", type=int, metavar="N", help="job.threshold: unique human opens or clicks to reach")
    p.add_argument("--of", choices=COUNTED, help="job.threshold: what is counted (default opens)")
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--webhook", metavar="URL", help="POST each event here (http or https, public address)")
    to.add_argument("--email", metavar="ADDRESS", help="mail each event here (PIXELTRACK_SMTP_URL)")
    p.add_argument("--secret", metavar="S", help="webhook signing secret (default: a random one, printed once)")
    p.set_defaults(func=cmd_create)


def register(subparsers: Any) -> None:
    """Add `trigger` and its subcommands to the pixeltrack CLI."""
    sub = subparsers.add_parser("trigger", help="real-time alerts: webhooks and e-mails on events").add_subparsers(
        dest="trigger_cmd", required=True
    )
    _create_parser(sub)
    sub.add_parser("list", help="list triggers").set_defaults(func=cmd_list)
    p = sub.add_parser("delete", help="delete a trigger and its deliveries")
    p.add_argument("trigger", type=int, metavar="TRIGGER")
    p.set_defaults(func=cmd_delete)
    p = sub.add_parser("deliveries", help="every delivery attempt, status and next retry")
    p.add_argument("--trigger", type=int, metavar="T")
    p.set_defaults(func=cmd_deliveries)
    p = sub.add_parser("replay", help="send a delivery again (same event id)")
    p.add_argument("delivery", type=int, metavar="DELIVERY")
    p.set_defaults(func=cmd_replay)
