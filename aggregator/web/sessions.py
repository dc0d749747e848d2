"""Sessions: a visitor's page views with no gap of 30 minutes or more.

Open sessions live in ``site_sessions``; a batch's views extend the latest
session of their visitor key when close enough in time, otherwise start a
new one whose first view is the entry page and whose source is the entry's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from aggregator.web import queries

GAP = dt.timedelta(minutes=30)


@dataclass
class View:
    """One counted page view (attributed, not a machine's); ``recognised``: of a recognised browser."""

    job_id: int
    at: dt.datetime
    page: str
    vkey: bytes | None
    salt_day: dt.date | None
    enriched: dict[str, Any] = field(repr=False)
    recognised: bool = False


@dataclass
class Session:
    """A session as the batch leaves it; ``session_id`` None until stored."""

    job_id: int
    vkey: bytes
    salt_day: dt.date | None
    started_at: dt.datetime
    last_at: dt.datetime
    pages: int = 1
    entry: View | None = None
    session_id: int | None = None
    changed: bool = False

    def takes(self, at: dt.datetime) -> bool:
        """Whether a view at ``at`` belongs to this session."""
        return self.started_at - GAP < at and at - self.last_at < GAP

    def add(self, at: dt.datetime) -> None:
        """Count one more view."""
        self.pages += 1
        self.started_at, self.last_at = min(self.started_at, at), max(self.last_at, at)
        self.changed = True


async def open_sessions(conn: asyncpg.Connection, views: list[View]) -> dict[tuple[int, bytes], Session]:
    """The latest stored session of each visitor key that may still take a view."""
    keys = sorted({(v.job_id, v.vkey) for v in views if v.vkey is not None})
    since = min(v.at for v in views) - GAP
    rows = await conn.fetch(queries.OPEN_SESSIONS, [k[0] for k in keys], [k[1] for k in keys], since)
    return {
        (r["job_id"], bytes(r["vkey"])): Session(r["job_id"], bytes(r["vkey"]), None, r["started_at"],
                                                  r["last_at"], r["pages"], session_id=r["session_id"])
        for r in rows
    }


async def sessionize(conn: asyncpg.Connection, views: list[View]) -> list[Session]:
    """Extend or start sessions for the keyed views; return the sessions started."""
    keyed = sorted((v for v in views if v.vkey is not None), key=lambda v: v.at)
    if not keyed:
        return []
    current = await open_sessions(conn, keyed)
    stored = list(current.values())
    started: list[Session] = []
    for view in keyed:
        assert view.vkey is not None
        key = (view.job_id, view.vkey)
        session = current.get(key)
        if session is not None and session.takes(view.at):
            session.add(view.at)
            continue
        session = current[key] = Session(view.job_id, view.vkey, view.salt_day, view.at, view.at, entry=view)
        started.append(session)
    await _store(conn, [s for s in stored if s.changed], started)
    return started


async def _store(conn: asyncpg.Connection, changed: list[Session], started: list[Session]) -> None:
    if changed:
        await conn.execute(queries.UPDATE_SESSIONS, [s.job_id for s in changed], [s.session_id for s in changed],
                           [s.started_at for s in changed], [s.last_at for s in changed], [s.pages for s in changed])
    if started:
        await conn.execute(
            queries.INSERT_SESSIONS, [s.job_id for s in started], [s.vkey for s in started],
            [s.salt_day for s in started], [s.started_at for s in started], [s.last_at for s in started],
            [s.pages for s in started], [s.entry.page if s.entry else "" for s in started],
        )
