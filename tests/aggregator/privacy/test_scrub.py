"""The one scrub rule: every PERSONAL column and nothing else, for each scope."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg

from aggregator.privacy.retention import scrub_expired
from aggregator.privacy.scrub import Scope, scrub
from pixeltrack.core import columns
from tests.support.hits import T0, add_job

SAMPLE = {"uuid": None, "timestamptz": T0, "text": "x", "bigint": 7, "integer": 3, "inet": "203.0.113.7",
          "boolean": True}


def full_hit(**values: Any) -> dict[str, Any]:
    """A raw hit with every column set (recipient 7 of job 5 unless told)."""
    row = {name: SAMPLE[columns.TYPES[name]] for name in columns.RAW_HITS}
    return row | {"hit_id": uuid.uuid4(), "job_id": 5, "kind": "open", "contact": "5:7"} | values


async def insert(conn: asyncpg.Connection, *hits: dict[str, Any]) -> None:
    await conn.copy_records_to_table("raw_hits", records=[tuple(h[c] for c in columns.RAW_HITS) for h in hits],
                                     columns=columns.RAW_HITS)


async def scrubbed(conn: asyncpg.Connection) -> list[tuple[str, bool]]:
    """(visitor/marker, scrubbed) per hit: scrubbed = every PERSONAL column NULL and every other one kept."""
    out = []
    for row in await conn.fetch("SELECT * FROM raw_hits ORDER BY title"):
        personal = [row[c] is None for c in columns.PERSONAL]
        kept = all(row[c] is not None for c in columns.RAW_HITS if c not in columns.PERSONAL)
        assert kept and (all(personal) or not any(personal)), dict(row)
        out.append((row["title"], all(personal)))
    return out


class TestScrub:
    """Each scope nulls exactly PERSONAL on the hits it takes and counts them."""

    async def test_recipient(self, conn: asyncpg.Connection) -> None:
        """Recipient 7 of job 5: one of three hits (another recipient, another job)."""
        await insert(conn, full_hit(title="a"), full_hit(title="b", recipient_id=8), full_hit(title="c", job_id=6))
        assert await scrub(conn, Scope.RECIPIENT, 5, 7) == 1
        assert await scrubbed(conn) == [("a", True), ("b", False), ("c", False)]

    async def test_contact(self, conn: asyncpg.Connection) -> None:
        """Page views carrying contact 5:7, not 5:8 and not a mail hit."""
        await insert(conn, full_hit(title="a", kind="page", job_id=9), full_hit(title="b", kind="page", contact="5:8"),
                     full_hit(title="c"))
        assert await scrub(conn, Scope.CONTACT, 5, 7) == 1
        assert await scrubbed(conn) == [("a", True), ("b", False), ("c", False)]

    async def test_contact_visitors(self, conn: asyncpg.Connection) -> None:
        """Both page views of the visitor cookie contact 5:7 was identified by on site 9; not another cookie."""
        await conn.execute("INSERT INTO site_contacts VALUES (9, 'va', 5, 7, $1, NULL)", T0)
        await insert(conn, *(full_hit(title=t, kind="page", job_id=9, visitor_id="va", contact="9:1") for t in "ab"),
                     full_hit(title="c", kind="page", job_id=9, visitor_id="vb"))
        assert await scrub(conn, Scope.CONTACT_VISITORS, 5, 7) == 2
        assert await scrubbed(conn) == [("a", True), ("b", True), ("c", False)]

    async def test_expired(self, conn: asyncpg.Connection) -> None:
        """Rolled hits older than their job's 5 days; not a 90-day job's, not a newer one."""
        short, long_ = await add_job(conn, "personal", retention_days=5), await add_job(conn, "personal")
        now = T0 + dt.timedelta(days=8)
        await insert(conn, full_hit(title="a", job_id=short), full_hit(title="b", job_id=long_),
                     full_hit(title="c", job_id=short, received_at=now - dt.timedelta(days=4)))
        assert await scrub_expired(conn, now) == 1
        assert await scrubbed(conn) == [("a", True), ("b", False), ("c", False)]
