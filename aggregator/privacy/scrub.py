"""One scrub rule for raw hits, used by erasure (forget) and retention (purge).

Scrubbing sets every column of pixeltrack.core.columns.PERSONAL to NULL:
recipient, address, headers, the detail that narrows a hit down to a
household (region, city, ASN, network, ad click id) and the visitor cookie,
screen and contact of page views. What a hit was (kind, time, link, device,
country, human or machine) stays, so counts stay true. The scopes below
differ only in which hits they take.
"""

from __future__ import annotations

import datetime as dt
import enum

import asyncpg

from pixeltrack.core import columns

_SET = columns.nulled(columns.PERSONAL)


class Scope(enum.Enum):
    """Which raw hits a scrub takes (each value is its whole UPDATE)."""

    # $1 job, $2 recipient: the hits of one recipient's tokens.
    RECIPIENT = f"UPDATE raw_hits SET {_SET} WHERE job_id = $1 AND recipient_id = $2"
    # $1 mail job, $2 recipient: page views carrying them as contact.
    CONTACT = f"UPDATE raw_hits SET {_SET} WHERE kind = 'page' AND contact = $1::bigint || ':' || $2::bigint"
    # $1 mail job, $2 recipient: page views of the visitor cookies a contact
    # identified (raw_hits_visitor index), their anonymous views before it too.
    CONTACT_VISITORS = f"""
UPDATE raw_hits h SET {_SET}
FROM site_contacts c
WHERE c.mail_job_id = $1 AND c.recipient_id = $2
  AND h.kind = 'page' AND h.job_id = c.job_id AND h.visitor_id = c.visitor_id
"""
    # $1 job, $2 cutoff: its rolled personal hits older than its retention
    # (they outlive it when a longer-lived job keeps their day partition);
    # uses raw_hits_recipient, so only hits that still carry a recipient are
    # read. The cutoff comes computed (aggregator.privacy.retention): Citus
    # refuses an UPDATE whose WHERE computes with a column and a STABLE function.
    EXPIRED = f"""
UPDATE raw_hits SET {_SET}
WHERE job_id = $1 AND recipient_id IS NOT NULL AND rolled_at IS NOT NULL AND received_at < $2
"""


async def scrub(conn: asyncpg.Connection, scope: Scope, *args: int | dt.datetime) -> int:
    """Scrub the raw hits ``scope`` takes (with its parameters); return how many."""
    status = await conn.execute(scope.value, *args)
    return int(status.split()[-1])
