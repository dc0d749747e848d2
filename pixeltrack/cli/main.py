"""The `pixeltrack` console script: argument parsing and dispatch."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from pixeltrack.cli import jobs as commands
from pixeltrack.core.config import ConfigError
from pixeltrack.core.jobs import KINDS, MODES

log = logging.getLogger("pixeltrack")


def _add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="address to listen on (env PIXELTRACK_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (env PIXELTRACK_PORT, default 8080)")


def _db_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("initdb", help="apply schema.sql (idempotent)")
    p.set_defaults(func=commands.cmd_initdb)

    job = sub.add_parser("job", help="create and list jobs").add_subparsers(dest="job_cmd", required=True)
    p = job.add_parser("create", help="create a job and print its id")
    p.add_argument("--name", required=True)
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--kind", default="mail", choices=KINDS)
    p.set_defaults(func=commands.cmd_job_create)
    job.add_parser("list", help="list jobs").set_defaults(func=commands.cmd_job_list)

    rec = sub.add_parser("recipients", help="import recipients").add_subparsers(dest="rec_cmd", required=True)
    p = rec.add_parser("import", help="import a CSV: recipient,consent,birth_year,gender,zip")
    p.add_argument("--job", type=int, required=True)
    p.add_argument("file")
    p.set_defaults(func=commands.cmd_recipients_import)

    p = sub.add_parser("mint", help="print tracked URLs for a recipient, or a mail-merge CSV")
    p.add_argument("--job", type=int, required=True)
    p.add_argument("--recipient", help="the recipient as imported (omit for blind jobs)")
    p.add_argument("--url", action="append", help="destination to track (repeatable)")
    p.add_argument("--all", action="store_true", help="CSV with one row per recipient")
    p.add_argument("--doc", action="store_true", help="document-page pixel URLs instead of the open pixel")
    p.add_argument("--pages", type=int, default=1, help="with --doc: how many pages")
    p.add_argument("--base-url", help="public base URL of the collector (env PIXELTRACK_BASE_URL)")
    p.set_defaults(func=commands.cmd_mint)


def _service_commands(sub: argparse._SubParsersAction) -> None:
    from collector import commands as collector_commands
    from pixeltrack.cli import up

    p = sub.add_parser("up", help="start everything: database, collector and aggregator")
    _add_server_flags(p)
    p.set_defaults(func=up.cmd_up, up=True)
    p = sub.add_parser("collector", help="run the collector")
    _add_server_flags(p)
    p.add_argument("--workers", type=int, default=None, help="processes sharing the port (SO_REUSEPORT)")
    p.set_defaults(func=collector_commands.cmd_collector)
    try:
        from aggregator import commands as aggregator_commands
    except ImportError:  # the aggregator is optional for a collector-only host
        return
    aggregator_commands.register(sub)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = argparse.ArgumentParser(prog="pixeltrack", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _service_commands(sub)
    _db_commands(sub)
    for extra in ("pixeltrack.cli.websites", "pixeltrack.cli.triggers"):  # optional command sets register here
        try:
            module = __import__(extra, fromlist=["register"])
        except ImportError:
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = commands.resolve(os.environ, up=getattr(args, "up", False))
        return int(args.func(args, settings))
    except ConfigError as exc:
        print(f"pixeltrack: configuration error: {exc}", file=sys.stderr)
        return 2
    except (LookupError, ValueError) as exc:
        print(f"pixeltrack: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
