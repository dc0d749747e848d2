"""The columns engine's recipients (frames.who_of) are who.lookup's, one row each, as a frame.

A recipient erased with ``forget`` keeps a tombstone in forgotten_recipients and may still have a row in
recipients: who.lookup lets the tombstone win, and so must the frame (a consenting recipient who was erased
is blind, never personal).
"""

from __future__ import annotations

import asyncpg
import polars as pl

from aggregator.mail import frames
from aggregator.mail.who import lookup
from tests.support.hits import T0, add_job, add_recipients


async def test_the_frame_holds_what_lookup_finds(conn: asyncpg.Connection) -> None:
    """A permission job with recipients 1-3 consenting (3 also erased) and 4 not, an anonymous job's recipient
    with a profile, a unique job's erased recipient 2 and plain recipient 1, and an id with no row at all."""
    permission, anonymous, unique = [await add_job(conn, mode) for mode in ("permission_personal", "anonymous",
                                                                           "unique")]  # fmt: skip
    await add_recipients(conn, permission, 3, consent=True)
    await add_recipients(conn, permission, 1, first=4)
    await add_recipients(conn, anonymous, 1, profile=(1980, "f", "80331"))
    await add_recipients(conn, unique, 2)
    await conn.executemany("INSERT INTO forgotten_recipients (job_id, recipient_id) VALUES ($1, $2)",
                           [(permission, 3), (unique, 2)])  # fmt: skip
    ids = {permission: [1, 2, 3, 4, 9], anonymous: [1], unique: [1, 2]}
    hits = pl.DataFrame([(job, rid) for job, rids in ids.items() for rid in rids], orient="row",
                        schema={"job_id": pl.Int64, "recipient_id": pl.Int64})  # fmt: skip
    who, people = await frames.who_of(conn, hits)
    expected = await lookup(conn, ids)
    assert who.modes == expected.modes
    got = {(job, rid): (consent_from, birth_year, gender, zip_code, forgotten)
           for job, rid, consent_from, birth_year, gender, zip_code, forgotten in people.iter_rows()}  # fmt: skip
    assert len(got) == people.height
    consented = frames.micros(T0) - 86_400_000_000  # add_recipients' consent: a day before T0
    assert got == {
        (permission, 1): (consented, None, None, None, False), (permission, 2): (consented, None, None, None, False),
        (permission, 3): (None, None, None, None, True), (permission, 4): (None, None, None, None, False),
        (anonymous, 1): (None, 1980, "f", "80331", False), (unique, 2): (None, None, None, None, True),
    }  # fmt: skip
    assert {key: p.forgotten for key, p in expected.people.items()} == {key: v[4] for key, v in got.items()}
