"""The `pixeltrack` console script: argument parsing and dispatch."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from collections.abc import Sequence

from aggregator import commands as aggregator_commands
from collector import commands as collector_commands
from pixeltrack.cli import distribute, logs, triggers, up, websites
from pixeltrack.cli import jobs as commands
from pixeltrack.core.config import CommonConfig, ConfigError
from pixeltrack.core.jobs import KINDS, MODES
from pixeltrack.core.times import parse_time
from pixeltrack.dashboard import commands as dashboard_commands

log = logging.getLogger("pixeltrack")


def _add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="address to listen on (env PIXELTRACK_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (env PIXELTRACK_PORT, default 8080)")


def time_arg(text: str) -> dt.datetime:
    """An ISO 8601 time argument in UTC (argparse names the option when it does not parse)."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _db_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("initdb", help="apply schema.sql (idempotent)")
    p.set_defaults(func=commands.cmd_initdb)

    job = sub.add_parser("job", help="create and list jobs").add_subparsers(dest="job_cmd", required=True)
    p = job.add_parser("create", help="create a job and print its id")
    p.add_argument("--name", required=True)
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--kind", default="mail", choices=KINDS)
    p.add_argument("--sent-at", type=time_arg, metavar="TIME",
                   help="when the mail went out (ISO 8601, no offset = UTC); or later: `job sent`")
    p.set_defaults(func=commands.cmd_job_create)
    job.add_parser("list", help="list jobs").set_defaults(func=commands.cmd_job_list)
    p = job.add_parser("sent", help="record that a mail job went out (link scanners click within seconds of it)")
    p.add_argument("job", type=int, metavar="J")
    p.add_argument("--at", type=time_arg, metavar="TIME", help="ISO 8601, no offset = UTC (default: now)")
    p.set_defaults(func=commands.cmd_job_sent)

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
    p = sub.add_parser("up", help="start everything: database, collector and aggregator")
    _add_server_flags(p)
    p.set_defaults(func=up.cmd_up, up=True)
    p = sub.add_parser("collector", help="run the collector")
    _add_server_flags(p)
    p.add_argument("--workers", type=int, default=None, help="processes sharing the port (SO_REUSEPORT)")
    p.set_defaults(func=collector_commands.cmd_collector)
    aggregator_commands.register(sub)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = argparse.ArgumentParser(prog="pixeltrack", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show every log line (the embedded server's, the scheduler's, DEBUG)")
    sub = parser.add_subparsers(dest="command", required=True)
    _service_commands(sub)
    _db_commands(sub)
    websites.register(sub)
    triggers.register(sub)
    distribute.register(sub)
    dashboard_commands.register(sub)  # dashboard, user, token
    return parser


def is_service(args: argparse.Namespace) -> bool:
    """True for the long-running commands, whose INFO log lines are their output."""
    if args.command == "aggregator":
        return not (args.once or args.purge)
    return args.command in ("up", "collector")


def setup_logging(args: argparse.Namespace) -> None:
    """Terminal and log file (``<data dir>/pixeltrack.log``, when the data folder is in use)."""
    common = CommonConfig.from_env(os.environ)
    in_use = common.database_url is None or common.data_dir.is_dir()
    args.log_file = logs.configure(verbose=args.verbose, service=is_service(args),
                                   log_file=common.data_dir / logs.LOG_FILE if in_use else None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        setup_logging(args)
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
