"""The embedded PostgreSQL used when DATABASE_URL is not set (pgserver)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Any

from pixeltrack.core import db

log = logging.getLogger(__name__)

_servers: dict[Path, Any] = {}
# A fresh cluster has no tables; a command's first query would fail without them.
HAS_SCHEMA = "SELECT to_regclass('jobs') IS NOT NULL"


def embedded_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded server in ``data_dir/pg`` and return its URL.

    The server outlives nothing: pgserver stops it when the last process that
    asked for it exits.
    """
    pgdata = (data_dir / "pg").resolve()
    if pgdata not in _servers:
        pgserver = _import_pgserver()
        pgdata.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL in %s", pgdata)
        _servers[pgdata] = pgserver.get_server(pgdata, cleanup_mode="stop")
    return str(_servers[pgdata].get_uri())


def embedded_database(data_dir: Path) -> str:
    """``embedded_url``, with the schema applied when the database has none yet (first start)."""
    url = embedded_url(data_dir)
    asyncio.run(_schema_if_missing(url))
    return url


async def _schema_if_missing(url: str) -> None:
    conn = await db.connect(url)
    try:
        present = await conn.fetchval(HAS_SCHEMA)
    finally:
        await conn.close()
    if not present:
        await db.apply_schema(url)


def _import_pgserver() -> Any:
    """pgserver, imported with XDG_RUNTIME_DIR naming a private runtime folder.

    pgserver asks platformdirs for the user's runtime folder when it is
    imported (its lock file lives there, and the socket when the data path is
    too long for one). Without XDG_RUNTIME_DIR -- cron, containers, ssh with
    no login session -- platformdirs warns and falls back to /run/user/<uid>
    or <tmp>/runtime-<uid>. We make that same folder, private, and name it
    for the import, so there is nothing to warn about.
    """
    if os.environ.get("XDG_RUNTIME_DIR"):
        return importlib.import_module("pgserver")
    runtime = runtime_dir()
    if runtime is None:  # not ours to use: let platformdirs say why
        return importlib.import_module("pgserver")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        return importlib.import_module("pgserver")
    finally:
        del os.environ["XDG_RUNTIME_DIR"]


def runtime_dir() -> Path | None:
    """The user's runtime folder: /run/user/<uid> when it exists, else <tmp>/runtime-<uid> (made 0700).

    None when the folder is not a directory owned by this user (someone else
    made the predictable name first).
    """
    uid = os.geteuid()
    system = Path(f"/run/user/{uid}")
    if _private(system):
        return system
    fallback = Path(tempfile.gettempdir()) / f"runtime-{uid}"
    try:
        fallback.mkdir(mode=0o700, exist_ok=True)
        info = fallback.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
            return None
        fallback.chmod(0o700)  # XDG asks for 0700; an older platformdirs made it 0755
    except OSError:
        return None
    return fallback


def _private(path: Path) -> bool:
    """A real directory owned by this user with mode 0700."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o700


def stored_secret(data_dir: Path) -> str:
    """The signing key kept in the data folder, made on first use (for `up`)."""
    path = data_dir / "secret"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return value
