"""The right to erasure: `pixeltrack forget --recipient R [--job J]`.

Removes a recipient's personal data from raw hits and roll-ups: their
per-recipient rows, the keyed hashes that recognise them, and recipient,
address, agent and location detail of their raw hits. Aggregate counts stay
(they no longer point at anyone); later hits from their tokens are counted
but never attributed again (forgotten_recipients).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from aggregator.mail.queries import MERGE_LOCK
from aggregator.mail.tracks import recipient_hash

log = logging.getLogger(__name__)

FIND = """
SELECT job_id, recipient_id FROM recipients
WHERE recipient = $1 AND ($2::bigint IS NULL OR job_id = $2) ORDER BY job_id
"""
# Runs first: it waits for a roll-up that holds these hits claimed, so what
# that run merges is seen (and removed) by the statements after it.
SCRUB_RAW = """
UPDATE raw_hits SET recipient_id = NULL, client_ip = NULL, user_agent = NULL, referer = NULL,
    accept_language = NULL, region = NULL, city = NULL, asn = NULL, network = NULL, click_id = NULL
WHERE job_id = $1 AND recipient_id = $2
"""
DELETE_RECIPIENT = "DELETE FROM report_recipients WHERE job_id = $1 AND recipient_id = $2"
DELETE_RECIPIENT_LINKS = "DELETE FROM report_recipient_links WHERE job_id = $1 AND recipient_id = $2"
JOB_KEY = "SELECT key FROM job_keys WHERE job_id = $1"
# Website tracking: the contact a mail click identified on a personal site.
SCRUB_SITE_RAW = "UPDATE raw_hits SET contact = NULL WHERE kind = 'page' AND contact = $1::bigint || ':' || $2::bigint"
DELETE_SITE_VIEWS = "DELETE FROM site_contact_views WHERE mail_job_id = $1 AND recipient_id = $2"
DELETE_SITE_CONTACTS = "DELETE FROM site_contacts WHERE mail_job_id = $1 AND recipient_id = $2"
DELETE_SEEN = "DELETE FROM unique_seen WHERE job_id = $1 AND hash = $2"
REMEMBER = """
INSERT INTO forgotten_recipients (job_id, recipient_id) VALUES ($1, $2)
ON CONFLICT (job_id, recipient_id) DO NOTHING
"""


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

    def describe(self) -> str:
        """One line for the operator."""
        return (
            f"job {self.job_id}, recipient #{self.recipient_id}: {self.raw_hits} raw hits scrubbed, "
            f"{self.recipient_rows} recipient and {self.link_rows} per-link roll-up rows deleted, "
            f"{self.hashes} unique-visitor hashes deleted, {self.site_rows} website contact rows deleted"
        )


def _count(status: str) -> int:
    return int(status.split()[-1])


async def forget_one(conn: asyncpg.Connection, job_id: int, recipient_id: int) -> Forgotten:
    """Erase one recipient of one job (inside the caller's transaction)."""
    raw = _count(await conn.execute(SCRUB_RAW, job_id, recipient_id))
    await conn.execute(MERGE_LOCK)
    rows = _count(await conn.execute(DELETE_RECIPIENT, job_id, recipient_id))
    links = _count(await conn.execute(DELETE_RECIPIENT_LINKS, job_id, recipient_id))
    key = await conn.fetchval(JOB_KEY, job_id)
    hashes = 0
    if key is not None:
        hashes = _count(await conn.execute(DELETE_SEEN, job_id, recipient_hash(key, recipient_id)))
    raw += _count(await conn.execute(SCRUB_SITE_RAW, job_id, recipient_id))
    site = _count(await conn.execute(DELETE_SITE_VIEWS, job_id, recipient_id))
    site += _count(await conn.execute(DELETE_SITE_CONTACTS, job_id, recipient_id))
    await conn.execute(REMEMBER, job_id, recipient_id)
    return Forgotten(job_id, recipient_id, raw, rows, links, hashes, site)


async def forget(conn: asyncpg.Connection, recipient: str, job_id: int | None = None) -> list[Forgotten]:
    """Erase ``recipient`` (as imported) from one job or all; one transaction."""
    async with conn.transaction():
        found = await conn.fetch(FIND, recipient, job_id)
        done = [await forget_one(conn, r["job_id"], r["recipient_id"]) for r in found]
    for item in done:
        log.info("forgot %s", item.describe())
    return done
