"""`pixeltrack dashboard`, `pixeltrack user add|list` and `pixeltrack token create|list|revoke`.

``register(subparsers)`` adds them to the pixeltrack CLI; each handler is a
plain function ``handler(args, settings) -> exit code``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from pixeltrack.core import db
from pixeltrack.core.config import CommonConfig, ConfigError
from pixeltrack.dashboard import accounts
from pixeltrack.dashboard.config import DashboardConfig


def dashboard_config(settings: CommonConfig, host: str | None = None, port: int | None = None) -> DashboardConfig:
    """Environment, then flags, with the resolved database URL and signing key."""
    env = dict(os.environ)
    if not settings.database_url:
        raise ConfigError("DATABASE_URL is not set: the dashboard reads the reports from PostgreSQL")
    env["DATABASE_URL"] = settings.database_url
    if settings.secrets:
        env["PIXELTRACK_SECRET"] = settings.secrets.current
    env.setdefault("PIXELTRACK_BASE_URL", settings.base_url)
    return DashboardConfig.from_env(env, host=host, port=port)


def _with_db(settings: CommonConfig, work: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    """Apply schema.sql, open a connection, run ``work(conn)``, close."""
    assert settings.database_url
    return db.run_with_connection(settings.database_url, work, with_schema=True)


def cmd_dashboard(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Serve the dashboard until Ctrl-C / SIGTERM."""
    from pixeltrack.dashboard.serve import run

    config = dashboard_config(settings, args.host, args.port)
    print(f"dashboard on {config.url}", flush=True)
    return run(config)


def read_password(from_stdin: bool) -> str:
    """The new password: one line of stdin, or typed twice at a prompt that does not echo."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat: "):
        raise ValueError("the passwords differ")
    return first


def cmd_user_add(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Create a user (or, with --replace, set an existing user's password and role)."""
    password = read_password(args.password_stdin)

    async def work(conn: asyncpg.Connection) -> int:
        user_id = await accounts.add_user(conn, args.email, password, args.role, replace=args.replace)
        print(f"user {user_id} {accounts.normal_email(args.email)} ({args.role})")
        return 0

    return _with_db(settings, work)


def cmd_user_list(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Show the users."""

    async def work(conn: asyncpg.Connection) -> int:
        for r in await conn.fetch(accounts.LIST_USERS):
            print(f"{r['user_id']:>5}  {r['role']:<6}  {r['email']}")
        return 0

    return _with_db(settings, work)


def cmd_token_create(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Make an API token and print it once (only its SHA-256 is kept)."""

    async def work(conn: asyncpg.Connection) -> int:
        token_id, token = await accounts.create_token(conn, args.name, args.role)
        print(token)
        print(f"token {token_id} ({args.role}); keep it now, it is not shown again", file=sys.stderr)
        return 0

    return _with_db(settings, work)


def cmd_token_list(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Show the tokens (never their secrets)."""

    async def work(conn: asyncpg.Connection) -> int:
        for r in await accounts.list_tokens(conn):
            state = f"revoked {r['revoked_at']:%Y-%m-%d}" if r["revoked_at"] else "live"
            print(f"{r['token_id']:>5}  {r['role']:<6}  {state:<18}  {r['name']}")
        return 0

    return _with_db(settings, work)


def cmd_token_revoke(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Revoke a token; exit 1 when there is no live token with that id."""

    async def work(conn: asyncpg.Connection) -> int:
        if not await accounts.revoke_token(conn, args.id):
            print(f"pixeltrack token revoke: no live token {args.id}", file=sys.stderr)
            return 1
        print(f"revoked token {args.id}")
        return 0

    return _with_db(settings, work)


def register(subparsers: Any) -> None:
    """Add `dashboard`, `user` and `token` to the pixeltrack CLI."""
    p = subparsers.add_parser("dashboard", help="serve the report dashboard and API (default 127.0.0.1:8081)")
    p.add_argument("--host", default=None, help="address (env PIXELTRACK_DASHBOARD_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (env PIXELTRACK_DASHBOARD_PORT, default 8081)")
    p.set_defaults(func=cmd_dashboard)

    user = subparsers.add_parser("user", help="dashboard users").add_subparsers(dest="user_cmd", required=True)
    p = user.add_parser("add", help="add a user; the password is asked for (or read from stdin)")
    p.add_argument("email")
    p.add_argument("--role", choices=accounts.ROLES, default="viewer")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.add_argument("--replace", action="store_true", help="set the password and role of an existing user")
    p.set_defaults(func=cmd_user_add)
    user.add_parser("list", help="list users").set_defaults(func=cmd_user_list)

    token = subparsers.add_parser("token", help="report API tokens").add_subparsers(dest="token_cmd", required=True)
    p = token.add_parser("create", help="make a token and print it once")
    p.add_argument("--name", required=True)
    p.add_argument("--role", choices=accounts.ROLES, default="viewer")
    p.set_defaults(func=cmd_token_create)
    token.add_parser("list", help="list tokens").set_defaults(func=cmd_token_list)
    p = token.add_parser("revoke", help="revoke a token")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_token_revoke)
