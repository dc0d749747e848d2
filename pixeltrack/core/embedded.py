"""The embedded PostgreSQL used when DATABASE_URL is not set (pgserver)."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_servers: dict[Path, Any] = {}


def embedded_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded server in ``data_dir/pg`` and return its URL.

    The server outlives nothing: pgserver stops it when the last process that
    asked for it exits.
    """
    pgdata = (data_dir / "pg").resolve()
    if pgdata not in _servers:
        try:
            import pgserver
        except ImportError as exc:  # pragma: no cover - pgserver is a core dependency
            raise RuntimeError("DATABASE_URL is not set and pgserver is not installed") from exc
        pgdata.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL in %s", pgdata)
        _servers[pgdata] = pgserver.get_server(pgdata, cleanup_mode="stop")
    return str(_servers[pgdata].get_uri())


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
