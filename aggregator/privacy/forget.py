"""The right to erasure: `pixeltrack forget --recipient R [--job J]`.

Removes a recipient's identity and profile everywhere: the ``recipients`` row
(address, consent, birth year, gender, zip), their per-recipient roll-ups,
the keyed hashes that recognise them, their website contact with its page
history, and scrubs (aggregator.privacy.scrub) their raw hits, rolled up or
not, and the page views of the visitor cookies they were identified by.
Aggregate counts stay: they no longer point at anyone.

What stays is a tombstone (pixeltrack.core.erasure): their token number and
a keyed hash of (job, address). Hits that arrive later from their old tokens,
straight or replayed from a spool or journal, go through raw_hits like any
other and are counted without identity (tracks.BLIND); minting for them and
importing them into the job again are refused.

Two transactions: the tombstones commit first, so from then on no roll-up
attributes their hits; the second waits for any roll-up that claimed their
hits before that (the scrub needs those rows), then removes what it merged.
Run again on an erased recipient it finds them by their tombstone and
scrubs again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from aggregator import claims
from aggregator.mail.tracks import recipient_hash
from aggregator.privacy.scrub import Scope, scrub
from pixeltrack.core import erasure

log = logging.getLogger(__name__)

FIND = """
SELECT job_id, recipient_id FROM recipients
WHERE recipient = $1 AND ($2::bigint IS NULL OR job_id = $2) ORDER BY job_id
"""
TOMBSTONED_JOBS = """
SELECT DISTINCT job_id FROM forgotten_recipients
WHERE tombstone IS NOT NULL AND ($1::bigint IS NULL OR job_id = $1) ORDER BY job_id
"""
FIND_TOMBSTONED = """
SELECT f.job_id, f.recipient_id FROM forgotten_recipients f
JOIN unnest($1::bigint[], $2::bytea[]) AS t(job_id, tombstone) USING (job_id, tombstone)
"""
REMEMBER = """
INSERT INTO forgotten_recipients (job_id, recipient_id, tombstone) VALUES ($1, $2, $3)
ON CONFLICT (job_id, recipient_id) DO UPDATE SET tombstone = excluded.tombstone
"""
DELETE_RECIPIENT = "DELETE FROM report_recipients WHERE job_id = $1 AND recipient_id = $2"
DELETE_RECIPIENT_LINKS = "DELETE FROM report_recipient_links WHERE job_id = $1 AND recipient_id = $2"
JOB_KEY = "SELECT key FROM job_keys WHERE job_id = $1"
# A row per link and hash, a bit per scope counted in (schema.sql): a hash per scope, as counted before.
DELETE_SEEN = "DELETE FROM unique_seen WHERE job_id = $1 AND hash = $2 RETURNING scopes"
# What the behavioural rules keep of them between batches (aggregator.mail.context).
DELETE_RULE_STATE = (
    "DELETE FROM mail_openers WHERE job_id = $1 AND hash = $2",
    "DELETE FROM recent_clicks WHERE job_id = $1 AND hash = $2",
)
# Website tracking: the contact a mail click identified on a personal site.
DELETE_SITE_VIEWS = "DELETE FROM site_contact_views WHERE mail_job_id = $1 AND recipient_id = $2"
DELETE_SITE_CONTACTS = "DELETE FROM site_contacts WHERE mail_job_id = $1 AND recipient_id = $2"
# Last: address, consent and profile.
DELETE_IDENTITY = "DELETE FROM recipients WHERE job_id = $1 AND recipient_id = $2"


@dataclass(frozen=True)
class Forgotten:
    """What was removed for one recipient of one job."""

    job_id: int
    recipient_id: int
    raw_hits: int
    recipient_rows: int
    link_rows: int
    hashes: int
    site_rows: int = 0
    page_views: int = 0
    identity: int = 0
    rule_rows: int = 0

    def describe(self) -> str:
        """One line for the operator."""
        who = "address and profile deleted" if self.identity else "already erased"
        return (
            f"job {self.job_id}, recipient #{self.recipient_id}: {self.raw_hits} raw hits scrubbed, "
            f"{self.recipient_rows} recipient and {self.link_rows} per-link roll-up rows deleted, "
            f"{self.hashes} unique-visitor hashes and {self.rule_rows} machine-rule rows deleted, "
            f"{self.site_rows} website contact rows deleted, "
            f"{self.page_views} page views of their visitor cookies scrubbed, {who}; tombstone kept"
        )


def _count(status: str) -> int:
    return int(status.split()[-1])


async def forget_one(conn: asyncpg.Connection, job_id: int, recipient_id: int) -> Forgotten:
    """Erase one tombstoned recipient of one job (inside the caller's transaction)."""
    # The exclusive gate before any write: it waits for the roll-up batches
    # in flight (one may have claimed these hits, without a row lock, and
    # would wait for ours to mark them), and no batch starts until we commit.
    await conn.execute(claims.GATE_EXCLUSIVE)
    raw = await scrub(conn, Scope.RECIPIENT, job_id, recipient_id)
    raw += await scrub(conn, Scope.CONTACT, job_id, recipient_id)
    views = await scrub(conn, Scope.CONTACT_VISITORS, job_id, recipient_id)
    rows = _count(await conn.execute(DELETE_RECIPIENT, job_id, recipient_id))
    links = _count(await conn.execute(DELETE_RECIPIENT_LINKS, job_id, recipient_id))
    key = await conn.fetchval(JOB_KEY, job_id)
    hashes = rule = 0
    if key is not None:
        rhash = recipient_hash(key, recipient_id)
        hashes = sum(int(r["scopes"]).bit_count() for r in await conn.fetch(DELETE_SEEN, job_id, rhash))
        rule = sum([_count(await conn.execute(sql, job_id, rhash)) for sql in DELETE_RULE_STATE])
    site = _count(await conn.execute(DELETE_SITE_VIEWS, job_id, recipient_id))
    site += _count(await conn.execute(DELETE_SITE_CONTACTS, job_id, recipient_id))
    identity = _count(await conn.execute(DELETE_IDENTITY, job_id, recipient_id))
    return Forgotten(job_id, recipient_id, raw, rows, links, hashes, site, views, identity, rule)


async def find(conn: asyncpg.Connection, key: bytes, recipient: str, job_id: int | None) -> list[tuple[int, int]]:
    """(job, recipient number) of ``recipient``: imported ones, and erased ones by their tombstone."""
    found = {(r["job_id"], r["recipient_id"]) for r in await conn.fetch(FIND, recipient, job_id)}
    jobs = [r["job_id"] for r in await conn.fetch(TOMBSTONED_JOBS, job_id)]
    if jobs:
        stones = [erasure.tombstone(key, job, recipient) for job in jobs]
        found |= {(r["job_id"], r["recipient_id"]) for r in await conn.fetch(FIND_TOMBSTONED, jobs, stones)}
    return sorted(found)


async def forget(conn: asyncpg.Connection, recipient: str, job_id: int | None = None) -> list[Forgotten]:
    """Erase ``recipient`` (as imported) from one job or all: tombstones, then everything else."""
    async with conn.transaction():
        key = await erasure.make_erasure_key(conn)
        found = await find(conn, key, recipient, job_id)
        await conn.executemany(REMEMBER, [(job, rid, erasure.tombstone(key, job, recipient)) for job, rid in found])
    async with conn.transaction():
        done = [await forget_one(conn, job, rid) for job, rid in found]
    for item in done:
        log.info("forgot %s", item.describe())
    return done
