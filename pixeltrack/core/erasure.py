"""Erasure tombstones: what `pixeltrack forget` leaves of a recipient.

After ``forget`` a recipient's ``recipients`` row is gone. What stays, in
``forgotten_recipients``, is per job:

- the recipient's number (``recipient_id``), the number their old tokens
  carry, so hits from those tokens are counted without identity and the
  number is never given to anyone else;
- ``tombstone``: HMAC-SHA256 over (job id, the recipient as imported,
  trimmed and case-folded), keyed with this installation's erasure key. It
  lets minting and a re-import recognise the person without storing who they
  were: the address cannot be read back from it, and the same person
  forgotten in two jobs has two unrelated tombstones.

The erasure key is made by the first ``forget`` and kept in ``erasure_key``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

import asyncpg

KEY = "SELECT key FROM erasure_key"
NEW_KEY = "INSERT INTO erasure_key (key) VALUES ($1) ON CONFLICT DO NOTHING"
MATCHING = """
SELECT tombstone FROM forgotten_recipients WHERE job_id = $1 AND tombstone = ANY($2::bytea[])
"""


class ForgottenRecipient(LookupError):
    """The recipient was erased with `pixeltrack forget`: nothing is minted for them."""

    def __init__(self, job_id: int, recipient: str) -> None:
        super().__init__(
            f"job {job_id}: recipient {recipient!r} was erased with `pixeltrack forget`; "
            "no tracked URLs are made for them"
        )


class ForgottenInImport(ValueError):
    """An import names recipients erased from that job; nothing was imported."""

    def __init__(self, job_id: int, rows: Sequence[int]) -> None:
        shown = ", ".join(str(r) for r in rows)
        super().__init__(
            f"job {job_id}: data row(s) {shown} name recipients erased with `pixeltrack forget`, "
            "who may not be tracked again in this job; nothing was imported"
        )
        self.rows = list(rows)


def tombstone(key: bytes, job_id: int, recipient: str) -> bytes:
    """The keyed hash recognising ``recipient`` of ``job_id`` once forgotten."""
    message = f"{job_id}\x1f{recipient.strip().casefold()}".encode()
    return hmac.new(key, message, hashlib.sha256).digest()


async def erasure_key(conn: asyncpg.Connection) -> bytes | None:
    """The installation's erasure key; None when nothing was ever forgotten."""
    key = await conn.fetchval(KEY)
    return None if key is None else bytes(key)


async def make_erasure_key(conn: asyncpg.Connection) -> bytes:
    """The installation's erasure key, made on first use."""
    await conn.execute(NEW_KEY, secrets.token_bytes(32))
    return bytes(await conn.fetchval(KEY))


async def forgotten_among(conn: asyncpg.Connection, job_id: int, recipients: Sequence[str]) -> list[int]:
    """Indexes of ``recipients`` (as imported) erased from ``job_id``."""
    key = await erasure_key(conn)
    if key is None or not recipients:
        return []
    stones = [tombstone(key, job_id, r) for r in recipients]
    found = {bytes(r["tombstone"]) for r in await conn.fetch(MATCHING, job_id, stones)}
    return [i for i, stone in enumerate(stones) if stone in found]
