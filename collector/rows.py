"""Handler tuples into COPY rows, a column at a time.

The flusher turns each buffered hit (see ``HIT_FIELDS``) into a row of
``COLUMNS``: an id, a timestamp, the resolved client address and text made
safe for PostgreSQL. Done row by row in Python this was the flusher's largest
cost; here the batch is transposed once (``zip(*batch)``) and every column is
made by C-level ``map``/``zip``, and a text column is checked as a whole (one
join, ``isascii``, a NUL search and the longest length) so the per-value
repair in ``clean_text`` runs only for a column that needs it. Same rows,
same repair counts as value by value (tests/collector/test_rows.py).
"""

from __future__ import annotations

import datetime as dt
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any

from asyncpg.pgproto.pgproto import UUID as _PgUUID  # a uuid.UUID made in C

from collector.cleaning import LIMITS, ClientAddress, clean_text

# The order of a hit as the handler appends it ...
HIT_FIELDS = ("ts", "kind", "job_id", "recipient_id", "link", "page", "peer", "xff",
              "user_agent", "referer", "accept_language", "method", "prefetch", "reject_reason", "extra")
# ``extra`` is None for mail hits, or a dict of these text columns (page views
# of website tracking), each cleaned like a header and cut at its limit.
EXTRA_COLUMNS = {"url": 2048, "title": 512, "visitor_id": 64, "screen": 32, "contact": 512}
# ... and of a row as COPY writes it.
COLUMNS = ("hit_id", "received_at", "kind", "job_id", "recipient_id", "link", "page", "client_ip",
           "user_agent", "referer", "accept_language", "method", "prefetch", "reject_reason", *EXTRA_COLUMNS)
UUID_AT, TIME_AT, KIND_AT, JOB_AT = 0, 1, 2, 3
# Each column's PostgreSQL type ("?": may be NULL), as the spool checks a batch before replaying it.
COLUMN_TYPES = ("uuid", "timestamptz", "text", "bigint", "bigint?", "text?", "integer?", "inet?", "text?", "text?",
                "text?", "text", "boolean", "text?", *("text?",) * len(EXTRA_COLUMNS))
Hit = tuple[Any, ...]

# Positional map() arguments: keyword partials cost half as much again per value.
_ID_BYTES = struct.Struct(">8sQ").pack  # prefix + counter, the 16 bytes of a hit id
_NO_EXTRA = (None,) * len(EXTRA_COLUMNS)


class Tally:
    """One batch's counts by kind, reject reason and repair, added to the metrics at its end."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.repairs: Counter[str] = Counter()


class RowMaker:
    """Makes COPY rows with ids unique to this process: a random 8-byte prefix and a counter."""

    def __init__(self, prefix: bytes, addresses: ClientAddress) -> None:
        self.prefix = prefix
        self.addresses = addresses
        self.count = 0

    def rows(self, batch: Sequence[Hit], tally: Tally, first: int | None = None) -> list[Hit]:
        """The COPY rows of ``batch``, in order; counts go to ``tally``.

        The ids are the prefix and ``first + 1``, ``first + 2``, ...: the hits' places
        in the order they were appended (and journaled), so a hit replayed from the
        journal gets the id it had. Without ``first`` the counter runs on.
        """
        if not batch:
            return []
        ts, kinds, jobs, rcpts, links, pages, peers, xffs, uas, refs, langs, methods, prefetch, reasons, extras = (
            zip(*batch, strict=True))
        start = self.count if first is None else first
        self.count = max(self.count, start + len(batch))
        ids = map(_PgUUID, map(_ID_BYTES, repeat(self.prefix), range(start + 1, start + len(batch) + 1)))
        stamps = map(dt.datetime.fromtimestamp, ts, repeat(dt.UTC))
        _count(kinds, reasons, tally)
        repairs = tally.repairs
        return list(zip(
            ids, stamps, kinds, jobs, rcpts, text_column(links, LIMITS["link"], repairs), pages,
            self._addresses(peers, xffs, repairs), text_column(uas, LIMITS["user_agent"], repairs),
            text_column(refs, LIMITS["referer"], repairs), text_column(langs, LIMITS["accept_language"], repairs),
            methods, prefetch, reasons, *_extra_columns(extras, repairs),
            strict=False,  # the extra columns of mail hits are endless repeat(None)
        ))

    def _addresses(self, peers: Sequence[str | None], xffs: Sequence[str | None],
                   repairs: Counter[str]) -> Iterable[str | None]:
        resolve = self.addresses.resolve
        # Without X-Forwarded-For, resolve() is pure: once per distinct peer.
        known = {peer: resolve(peer, None, repairs) for peer in set(peers)}
        if not any(xffs):
            return map(known.__getitem__, peers)
        return [known[p] if x is None else resolve(p, x, repairs) for p, x in zip(peers, xffs, strict=True)]


def _count(kinds: Sequence[str], reasons: Sequence[str | None], tally: Tally) -> None:
    if not any(reasons):
        tally.kinds.update(kinds)  # counted in C
        return
    for kind, reason in zip(kinds, reasons, strict=True):
        if reason is None:
            tally.kinds[kind] += 1
        else:
            tally.reasons[reason] += 1


def text_column(values: Sequence[str | None], limit: int, repairs: Counter[str]) -> Sequence[str | None]:
    """``values`` as they are when none needs repair, else each through ``clean_text``."""
    present = list(filter(None, values))
    if not present:
        return values
    joined = "".join(present)
    if joined.isascii() and "\x00" not in joined and max(map(len, present)) <= limit:
        return values
    return [clean_text(v, limit, repairs) for v in values]


def _extra_columns(extras: Sequence[dict[str, Any] | None], repairs: Counter[str]) -> Iterable[Iterable[Any]]:
    if not any(extras):
        return repeat(repeat(None), len(EXTRA_COLUMNS))  # zip() stops at the batch's end
    per_row = [_NO_EXTRA if e is None else
               tuple(clean_text(e.get(name), limit, repairs) for name, limit in EXTRA_COLUMNS.items())
               for e in extras]
    return zip(*per_row, strict=True)
