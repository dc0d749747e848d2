"""Retention: the daily purge.

- per-job hash keys (and the hashes: unique_seen, and the machine rules'
  mail_openers and recent_clicks) are destroyed once the job's retention
  has ended, so unique-visitor state can never be linked back to anyone;
- personal raw hits older than their job's retention are scrubbed (the one
  rule of aggregator.privacy.scrub: recipient, address, headers...) when a
  longer-lived job keeps their partition alive;
- raw_hits day partitions older than the longest retention are dropped with
  DROP TABLE, never emptied with DELETE; the collectors' tombstones of the
  same age (copied_hits, which keep a replay from inserting a hit again
  after the roll-up deleted it) go with them: a hit replayed from before the
  cut-off has no partition of its own left either.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import asyncpg

from aggregator import claims
from aggregator.config import AggregatorConfig
from aggregator.privacy.scrub import Scope, scrub
from pixeltrack.core import db

log = logging.getLogger(__name__)

ENDED_JOBS = """
SELECT job_id FROM jobs
WHERE coalesce(sent_at, created_at) + retention_days * interval '1 day' < $1 ORDER BY job_id
"""
# The time of destruction comes in the SELECT list, never as a parameter or
# function in the SET list (Citus sends that to the workers, which cannot type it).
DESTROY_KEYS = """
INSERT INTO job_keys AS k (job_id, key, destroyed_at) SELECT unnest($1::bigint[]), NULL, $2::timestamptz
ON CONFLICT (job_id) DO UPDATE SET key = NULL, destroyed_at = coalesce(k.destroyed_at, excluded.destroyed_at)
WHERE k.key IS NOT NULL
"""
# A row per link and hash, a bit per scope counted in (schema.sql): a hash per scope, as counted before.
COUNT_HASHES = """
SELECT coalesce(sum(bit_count(scopes::integer::bit(16))), 0) FROM unique_seen WHERE job_id = ANY($1::bigint[])
"""
DELETE_HASHES = "DELETE FROM unique_seen WHERE job_id = ANY($1::bigint[])"
# The behavioural rules' state between batches is keyed by the same hashes (aggregator.mail.context).
DELETE_RULE_STATE = (
    "DELETE FROM mail_openers WHERE job_id = ANY($1::bigint[])",
    "DELETE FROM recent_clicks WHERE job_id = ANY($1::bigint[])",
)
RETENTIONS = "SELECT job_id, retention_days FROM jobs ORDER BY job_id"
LONGEST_RETENTION = "SELECT greatest($1::integer, coalesce(max(retention_days), 0)) FROM jobs"
DROP_PARTITIONS = "SELECT pixeltrack_drop_partitions_before($1::date)"
DELETE_TOMBSTONES = "DELETE FROM copied_hits WHERE copied_at < $1::date"


@dataclass(frozen=True)
class PurgeResult:
    """What one purge did."""

    keys_destroyed: int
    hashes_deleted: int
    hits_scrubbed: int
    partitions_dropped: tuple[str, ...]
    tombstones_deleted: int = 0


def _count(status: str) -> int:
    return int(status.split()[-1])


async def destroy_keys(conn: asyncpg.Connection, now: dt.datetime) -> tuple[int, int]:
    """Destroy the keys and hashes of jobs whose retention ended."""
    async with conn.transaction():
        await conn.execute(claims.GATE_EXCLUSIVE)
        ended = [r["job_id"] for r in await conn.fetch(ENDED_JOBS, now)]
        if not ended:
            return 0, 0
        keys = _count(await conn.execute(DESTROY_KEYS, ended, now))
        hashes = int(await conn.fetchval(COUNT_HASHES, ended))
        await conn.execute(DELETE_HASHES, ended)
        for sql in DELETE_RULE_STATE:  # not counted: `hashes` counts the unique-visitor hashes
            await conn.execute(sql, ended)
    return keys, hashes


async def scrub_expired(conn: asyncpg.Connection, now: dt.datetime) -> int:
    """Scrub the rolled personal hits older than their job's retention, job by job (the cutoff computed here)."""
    scrubbed = 0
    for job in await conn.fetch(RETENTIONS):
        scrubbed += await scrub(conn, Scope.EXPIRED, job["job_id"], now - dt.timedelta(days=job["retention_days"]))
    return scrubbed


async def purge(conn: asyncpg.Connection, config: AggregatorConfig, now: dt.datetime | None = None) -> PurgeResult:
    """Run the whole daily purge once."""
    now = now or dt.datetime.now(dt.UTC)
    await db.ensure_partitions(conn, now.date())
    keys, hashes = await destroy_keys(conn, now)
    scrubbed = await scrub_expired(conn, now)
    keep_days = await conn.fetchval(LONGEST_RETENTION, config.retention_days)
    cutoff = now.date() - dt.timedelta(days=keep_days)
    dropped = tuple(r[0] for r in await conn.fetch(DROP_PARTITIONS, cutoff))
    tombstones = _count(await conn.execute(DELETE_TOMBSTONES, cutoff))
    result = PurgeResult(keys, hashes, scrubbed, dropped, tombstones)
    log.info("purge: %s", result)
    return result
