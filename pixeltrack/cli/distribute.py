"""`pixeltrack distribute`: lay the schema out over a Citus cluster (see pixeltrack/core/distribute.sql)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from pixeltrack.core import db
from pixeltrack.core.config import CommonConfig


def cmd_distribute(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Apply the schema and distribute it on the Citus coordinator DATABASE_URL names; print the layout."""
    assert settings.database_url
    tables = asyncio.run(db.distribute(settings.database_url))
    for kind in ("reference", "distributed"):
        names = [t["name"] for t in tables if t["kind"] == kind]
        groups = {t["colocationid"] for t in tables if t["kind"] == kind}
        where = "on every node" if kind == "reference" else f"by job_id, co-location group(s) {sorted(groups)}"
        print(f"{len(names)} {kind} tables {where}: {', '.join(names)}")
    return 0


def register(sub: Any) -> None:
    """Add `distribute` to the pixeltrack CLI."""
    p = sub.add_parser("distribute", help="distribute the schema over a Citus cluster (DATABASE_URL = coordinator)")
    p.set_defaults(func=cmd_distribute)
