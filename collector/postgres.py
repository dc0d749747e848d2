"""Rows into PostgreSQL: binary COPY, the idempotent insert replays use, and splitting out rows it refuses.

A batch refused for its data (which the edge cleaning should make impossible)
is split until the bad row is isolated and set aside in
``quarantine/rows.jsonl``; the other rows are written. A refusal that says
"try later" (the server, the network) is raised for the caller to spool.

Tombstones. Every transaction that puts hits into raw_hits also records, in
``copied_hits``, the runs of consecutive ids it put there (``runs``: one row
for a batch of one process, as a flush makes it). The aggregator deletes the
raw rows of hits whose job keeps nothing per hit once they are rolled up, so
ON CONFLICT on raw_hits' key alone no longer makes a replay exact: a batch
whose COPY committed although its client saw a timeout (and spooled it), or
a dead collector's journal holding hits already in PostgreSQL, would put
deleted hits back and the aggregator would count them twice. So a replay (and
the retry after a 23505) stages its rows, inserts only those in no tombstone
range and not in raw_hits, and writes tombstones for exactly the ids it
inserted, in the same transaction. A direct COPY (not idempotent) writes its
tombstones in its own transaction too. A run that overlaps one already
recorded is refused on copied_hits' key (TOMBSTONES gives it the other run's
first id), so a direct re-COPY of hits already copied (a COPY that committed
though its client saw a timeout, retried while the spool refuses) fails with
23505 and takes the idempotent way. The ``hits`` of a tombstone is the number
of rows its transaction put in raw_hits (the dashboard's hits per minute sum
them). Each COPY costs one more statement and BEGIN/COMMIT, three round trips
per batch, not per hit: about 0.26 ms of the collector's CPU and 0.13 ms of
PostgreSQL's per COPY (1-row batches, old against new, median of 6 rounds),
so 0.2 us a hit (both sides) in a 2000-row flush, 0.08 in 5000, below the noise of
``loadtest.bench_cost``. The literal ``INSERT ...; COMMIT`` in one simple query
saved one of them (about 0.09 ms of the collector's CPU) but builds SQL from values.

The window the design accepts: a replay whose INSERT began before a
concurrent COPY of the same ids committed does not see that COPY's tombstone;
if the aggregator deleted those rows in between, they are inserted again. It
takes a COPY still running on the server after its client gave up (and
spooled the batch), a replay of that batch, and a roll-up of those very hits,
all within that moment. The replay's own tombstone insert, a later statement
with a fresh snapshot, then sees the COPY's run, overlaps it and fails
with 23505, rolling the replay back (it is split and retried like a refused
batch, and skips those ids then). ``tests/collector/test_tombstones.py``
(``TestRaceWithACopy``) makes that moment happen: a replay held after its
snapshot while a COPY of overlapping ids commits and is deleted inserts the
ids, is refused on its tombstone and, split, skips them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from operator import attrgetter, lt
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import orjson

from collector.metrics import Metrics
from collector.rows import COLUMNS, JOB_AT, KIND_AT, TIME_AT, UUID_AT, Hit

log = logging.getLogger(__name__)

REPLAY_STAGE = "CREATE TEMP TABLE IF NOT EXISTS replay_hits (LIKE raw_hits) ON COMMIT DELETE ROWS"
# The staged rows neither in raw_hits nor in a tombstone: the last run that
# starts at or before an id (one step back along copied_hits' key) covers it
# when it ends at or after it.
REPLAY_MERGE = (
    f"INSERT INTO raw_hits ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM replay_hits r "
    "WHERE NOT EXISTS (SELECT FROM (SELECT c.last_id FROM copied_hits c WHERE c.first_id <= r.hit_id "
    "ORDER BY c.first_id DESC LIMIT 1) t WHERE t.last_id >= r.hit_id) "
    "ON CONFLICT DO NOTHING RETURNING hit_id, received_at, job_id, kind"
)
# The runs (first ids, last ids, counts). A run overlapping one already
# recorded (runs are disjoint, so the last to start at or before its end is the
# only one to look at) takes that one's first id: the insert fails on the key
# (23505) and the batch goes the idempotent way, whatever ids it repeats.
TOMBSTONES = (
    "INSERT INTO copied_hits (first_id, last_id, hits) "
    "SELECT CASE WHEN o.last_id >= u.first_id THEN o.first_id ELSE u.first_id END, u.last_id, u.hits "
    "FROM unnest($1::uuid[], $2::uuid[], $3::integer[]) AS u (first_id, last_id, hits) "
    "LEFT JOIN LATERAL (SELECT c.first_id, c.last_id FROM copied_hits c WHERE c.first_id <= u.last_id "
    "ORDER BY c.first_id DESC LIMIT 1) o ON true"
)
# The hits waiting to be rolled up (hit_runs, schema.sql): each job's and
# kind's first id, time span and count among the rows the transaction put into
# raw_hits, recorded in that transaction. With the tombstones in one statement
# (both tables are plain ones, on the coordinator on Citus): no round trip more.
# A run whose key is taken (ids written again once their tombstones were
# purged, or a table emptied by hand but for hit_runs) widens the run there:
# it never refuses the batch.
def _runs_insert(first: int) -> str:
    """The insert of hit_runs' rows from arrays, its parameters numbered from ``first``."""
    p = [f"${first + n}" for n in range(6)]
    return ("INSERT INTO hit_runs (job_id, pages, first_id, first_at, last_at, hits) "
            f"SELECT * FROM unnest({p[0]}::bigint[], {p[1]}::boolean[], {p[2]}::uuid[], {p[3]}::timestamptz[], "
            f"{p[4]}::timestamptz[], {p[5]}::integer[]) "
            "ON CONFLICT (job_id, first_id) DO UPDATE SET first_at = least(hit_runs.first_at, excluded.first_at), "
            "last_at = greatest(hit_runs.last_at, excluded.last_at), hits = hit_runs.hits + excluded.hits")


RUNS = _runs_insert(1)  # ``waiting``'s rows alone (tests that write raw_hits as the collector does)
RECORD = f"WITH tombstones AS ({TOMBSTONES}) {_runs_insert(4)}"
# What says "PostgreSQL cannot take this now" rather than "this data is wrong".
UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
# Rows COPY-encoded between two yields to the event loop: a 5000-row batch in
# one go held the loop ~20 ms, and every request arriving meanwhile waited.
# Measured p99 at 4000 req/s: 11.5 ms with 500-row chunks, 5.2 ms with 100,
# 2.7 ms with 50 (and PostgreSQL off the collector's core).
CHUNK = 50


async def _yielding(records: list[Hit]) -> AsyncIterator[Hit]:
    """``records`` for COPY, yielding to the event loop every CHUNK rows (asyncpg encodes lazily)."""
    for start in range(0, len(records), CHUNK):
        for record in records[start : start + CHUNK]:
            yield record
        await asyncio.sleep(0)


def runs(ids: Sequence[uuid.UUID]) -> list[tuple[uuid.UUID, uuid.UUID, int]]:
    """The runs of consecutive ids of one prefix among ``ids``, by first id: (first, last, how many of ``ids``).

    A hit id is an 8-byte prefix and an 8-byte ordinal (``collector.rows``), so
    consecutive ordinals of one prefix are consecutive 128-bit integers with
    the same upper half. A flush's batch is one run: that is checked first, with
    two integers and a comparison of neighbours in C; anything else is sorted
    and cut where the next id is not the next ordinal. An id given twice counts
    twice (rows, not ids: a hand-made batch may repeat one at another time).
    """
    if not ids:
        return []
    first, last = ids[0], ids[-1]
    low, high = first.int, last.int
    if high - low == len(ids) - 1 and low >> 64 == high >> 64 and all(map(lt, ids, ids[1:])):
        return [(first, last, len(ids))]
    ints = sorted(map(attrgetter("int"), ids))
    found: list[tuple[uuid.UUID, uuid.UUID, int]] = []
    start = previous = ints[0]
    count = 0
    for n in ints:
        if n != previous and (n != previous + 1 or n >> 64 != previous >> 64):
            found.append((uuid.UUID(int=start), uuid.UUID(int=previous), count))
            start, count = n, 0
        previous = n
        count += 1
    found.append((uuid.UUID(int=start), uuid.UUID(int=previous), count))
    return found


def _columns(found: list[tuple[uuid.UUID, uuid.UUID, int]]) -> list[list[object]]:
    """TOMBSTONES' arguments: the runs' first ids, last ids and counts."""
    return [[run[i] for run in found] for i in range(3)]


def waiting(rows: Sequence[Sequence[object]], at: tuple[int, int, int, int] = (UUID_AT, TIME_AT, JOB_AT, KIND_AT)
            ) -> list[list[object]]:
    """hit_runs' rows for ``rows`` as RUNS' arguments (RECORD's $4-$9): for each job and kind of roll-up (page views or
    mail hits), the first id, the oldest and newest received_at, how many. ``at``: where the id, the time, the
    job and the kind are in a row."""
    uid, when, job_at, kind_at = at
    found: dict[tuple[object, bool], list[Any]] = {}
    for row in rows:
        key = (row[job_at], row[kind_at] == "page")
        run = found.get(key)
        received = row[when]
        if run is None:
            found[key] = [row[uid], received, received, 1]
            continue
        if received < run[1]:
            run[1] = received
        elif received > run[2]:
            run[2] = received
        run[3] += 1
    keys = list(found)
    values = list(found.values())
    return [[job for job, _ in keys], [pages for _, pages in keys], *([run[i] for run in values] for i in range(4))]


def recorded(ids: Sequence[uuid.UUID], rows: Sequence[Sequence[object]], **at: Any) -> list[list[object]]:
    """RECORD's arguments for ``rows`` (their ``ids``): the tombstones' and the runs'."""
    return [*_columns(runs(ids)), *waiting(rows, **at)]


def transient(exc: BaseException) -> bool:
    """True for errors that say 'try later' rather than 'this data is wrong'."""
    state = getattr(exc, "sqlstate", None) or ""
    return not (state.startswith("22") or state.startswith("23"))


class Copied(NamedTuple):
    """What a ``RowWriter.copy`` did with its rows; the rest were set aside (quarantined)."""

    written: int  # put into raw_hits now
    already: int  # skipped: in raw_hits already, or copied before (a tombstone's run: maybe rolled up and deleted)


class RowWriter:
    """Writes COPY rows through ``pool``; rows PostgreSQL refuses go to ``quarantine_dir``."""

    def __init__(self, pool: asyncpg.Pool, metrics: Metrics, quarantine_dir: Path) -> None:
        self.pool = pool
        self.metrics = metrics
        self.quarantine_dir = quarantine_dir

    async def copy(self, records: list[Hit], idempotent: bool = False) -> Copied:
        """COPY ``records`` and their tombstones in one transaction (``idempotent``: see ``_merge``)."""
        try:
            if idempotent:
                return await self._merge(records)
            written = recorded([r[UUID_AT] for r in records], records)
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.copy_records_to_table("raw_hits", records=_yielding(records), columns=COLUMNS)
                await conn.execute(RECORD, *written)
            return Copied(len(records), 0)
        except asyncpg.PostgresError as exc:
            if transient(exc):
                raise
            if getattr(exc, "sqlstate", "") == "23505" and not idempotent:
                return await self.copy(records, idempotent=True)  # part of it is in already (raw_hits or a run)
            return await self._split(records, exc, idempotent)
        except (TypeError, ValueError, ArithmeticError) as exc:  # a value the client side cannot encode
            return await self._split(records, exc, idempotent)

    async def _merge(self, records: list[Hit]) -> Copied:
        """Through a staging table: the rows in neither raw_hits nor a tombstone, and tombstones for exactly those."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(REPLAY_STAGE)
            await conn.copy_records_to_table("replay_hits", records=records, columns=COLUMNS)
            inserted = await conn.fetch(REPLAY_MERGE)
            if inserted:
                await conn.execute(RECORD, *recorded([r[0] for r in inserted], inserted, at=(0, 1, 2, 3)))
        return Copied(len(inserted), len(records) - len(inserted))

    async def _split(self, records: list[Hit], exc: BaseException, idempotent: bool) -> Copied:
        self.metrics.copy_failures.inc()
        if len(records) == 1:
            self._quarantine(records[0], exc)
            return Copied(0, 0)
        half = len(records) // 2
        first = await self.copy(records[:half], idempotent)
        second = await self.copy(records[half:], idempotent)
        return Copied(first.written + second.written, first.already + second.already)

    def _quarantine(self, record: Hit, exc: BaseException) -> None:
        path = self.quarantine_dir / "rows.jsonl"
        line = orjson.dumps({"error": str(exc), "row": [str(v) if v is not None else None for v in record]})
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as f:
                f.write(line + b"\n")
        except OSError as error:
            self.metrics.lost.inc()
            log.error("1 hit lost: PostgreSQL refused it (%s) and %s cannot take it (%s): %r", exc, path, error, line)
            return
        self.metrics.repaired.labels("quarantined").inc()
        log.error("a hit PostgreSQL refused was set aside in %s: %s", path, exc)
