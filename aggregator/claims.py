"""Which jobs a roll-up batch takes, and the locks that let aggregators share the work.

Several aggregators may run on one database (plain PostgreSQL or the
coordinator of a Citus cluster). Work is shared by job:

- the hits waiting are listed by the transactions that wrote them: one row
  of ``hit_runs`` per job, kind and transaction, with its time span, written
  with the hits (schema.sql); no index of unrolled rows, so the marking of a
  kept row can be a HOT update;
- a run lists the jobs with hits to roll up (``Pending``), in job_id order,
  and takes them in turn: a job whose batch was full goes to the back of the
  list, so under a backlog every job's roll-up moves, not the first job's alone;
- a batch takes jobs one after another with ``pg_try_advisory_xact_lock``
  on the job and claims each job's oldest unrolled hits with ``job_id = $1``,
  read by the key from the oldest of the job's runs on (on Citus a
  row-locking claim must name its shard), until the batch is
  full; a job another aggregator holds is left for later, so two aggregators
  roll up different jobs side by side;
- when only jobs held by others are left, a batch that holds no job lock
  waits for one of them (one lock, so no lock-order deadlock) and takes its
  next hits; a batch that locked a job another aggregator had meanwhile
  drained (a lock held until the transaction ends) returns empty instead,
  and the next batch, holding nothing, waits.

Exactly once rests on the per-job lock: only the batch holding a job's lock
reads (claims) and marks that job's unrolled hits, and it takes its snapshot
after the lock, so it sees the hits the job's previous batch marked (a commit
is visible before its locks are released). The claim is a plain read, no row
lock (FOR UPDATE would write every claimed row once more, with WAL, before
the marking rewrites it). As a safety net the marking takes only hits still
unrolled and ``mark`` refuses a batch in which any claimed hit was marked by
someone else (``ClaimLost``: the batch rolls back, nothing is counted
twice). The same lock serialises the merges into one job's roll-up rows
(unique counts, sessions), which two batches of the same job must not
interleave.

Every batch also holds the shared gate; erasure, key destruction and salt
destruction take it exclusively before they write anything, so they wait for
the batches in flight, a batch never waits for them, and a batch never merges
what they have just removed.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

# The gate is the one-key advisory lock LOCK_KEY (the former merge lock); a
# job's lock the two-key (LOCK_KEY, hash of job_id), a key space of its own.
LOCK_KEY = 7079437
JOB_LOCK = f"SELECT pg_advisory_xact_lock({LOCK_KEY}, hashint8($1::bigint))"
TRY_JOB_LOCK = f"SELECT pg_try_advisory_xact_lock({LOCK_KEY}, hashint8($1::bigint))"
GATE_SHARED = f"SELECT pg_advisory_xact_lock_shared({LOCK_KEY})"
GATE_EXCLUSIVE = f"SELECT pg_advisory_xact_lock({LOCK_KEY})"

# A batch locks at most this many jobs: advisory locks take slots of the lock
# table (max_locks_per_transaction), and thousands of tiny jobs would fill it.
MAX_JOBS_PER_BATCH = 50
# The jobs with hits waiting, from the runs the writers recorded (hit_runs,
# schema.sql): a table of one row per job, kind and transaction not yet rolled up.
PENDING_RUNS = """
SELECT job_id, min(first_at) AS first, max(last_at) AS last FROM hit_runs WHERE pages = $1
GROUP BY job_id ORDER BY job_id
"""
# One job's ($1) runs of one kind ($2), read before its hits (so every hit of a run read is visible to the claim).
JOB_RUNS = "SELECT first_id, first_at, last_at FROM hit_runs WHERE job_id = $1 AND pages = $2"
# The runs ($2) of one job ($1) a batch has finished, in its transaction.
RUNS_DONE = "DELETE FROM hit_runs WHERE job_id = $1 AND first_id = ANY($2::uuid[])"
# A run per job and kind spanning every hit waiting (schema.sql: pixeltrack_rebuild_runs): how many it wrote.
REBUILD_RUNS = "SELECT pixeltrack_rebuild_runs()"


@dataclass(frozen=True)
class Backlog:
    """Which hits a roll-up takes: its kind of hit_runs (page views, else mail hits)."""

    pages: bool


@dataclass
class Pending:
    """The jobs a run still has to roll up, and the ones it found held by another aggregator."""

    todo: list[int]
    first: dt.datetime | None = None  # the oldest pending hit of any job
    last: dt.datetime | None = None  # and the newest
    held: list[int] = field(default_factory=list)
    backlog: Backlog = Backlog(pages=False)

    def __bool__(self) -> bool:
        return bool(self.todo or self.held)


async def pending(conn: asyncpg.Connection, backlog: Backlog) -> Pending:
    """The jobs with hits waiting, in job_id order, with the oldest and newest of their runs (hit_runs)."""
    rows = await conn.fetch(PENDING_RUNS, backlog.pages)
    if not rows:
        return Pending([], backlog=backlog)
    return Pending([r["job_id"] for r in rows], min(r["first"] for r in rows), max(r["last"] for r in rows),
                   backlog=backlog)


async def claim(
    conn: asyncpg.Connection, jobs: Pending, sql: str, limit: int, until: dt.datetime | None = None
) -> list[asyncpg.Record]:
    """In the caller's transaction: up to ``limit`` hits of jobs this batch may lock (``sql``: $1 job, $2 limit,
    $3 the oldest hit to look at; with ``until``, $4 the newest), in time order.

    Jobs drained leave ``jobs``; a job whose batch was full goes to the back of ``jobs.todo`` (it
    comes last in the hits), so the next batch starts with the next job in turn.
    """
    more = () if until is None else (until,)

    async def one(job: int, room: int, oldest: dt.datetime) -> list[asyncpg.Record]:
        return list(await conn.fetch(sql, job, room, oldest, *more))

    def newest(rows: list[asyncpg.Record]) -> dt.datetime:
        return rows[-1]["received_at"]  # type: ignore[no-any-return]

    return [hit for rows in await claim_with(conn, jobs, one, limit, newest, until) for hit in rows]


Rows = TypeVar("Rows", bound=Sized)
Fetch = Callable[[int, int, dt.datetime], Awaitable[Rows]]


async def claim_with(
    conn: asyncpg.Connection, jobs: Pending, fetch: Fetch[Rows], limit: int,
    newest: Callable[[Rows], dt.datetime], until: dt.datetime | None = None,
) -> list[Rows]:
    """``claim`` with each job's hits fetched by ``fetch(job, room, oldest)`` (at most ``room`` of them, in time
    order, none received before ``oldest`` nor after ``until``): their chunks. ``newest``: the time of the last
    of a chunk."""
    await conn.execute(GATE_SHARED)
    chunks: list[Rows] = []
    hits = 0
    taken = 0
    for job in list(jobs.todo):
        if hits >= limit or taken >= MAX_JOBS_PER_BATCH:
            break
        jobs.todo.remove(job)
        if not await conn.fetchval(TRY_JOB_LOCK, job):
            jobs.held.append(job)
            continue
        taken += 1
        rows = await _claim_job(conn, jobs, job, fetch, limit - hits, newest, until)
        if rows is not None:
            chunks.append(rows)
            hits += len(rows)
    if not hits and not jobs.todo and jobs.held and not taken:
        job = jobs.held.pop(0)
        await conn.execute(JOB_LOCK, job)  # the other aggregator's batch of it commits first
        rows = await _claim_job(conn, jobs, job, fetch, limit, newest, until)
        chunks = [] if rows is None else [rows]
    return chunks


async def _claim_job(
    conn: asyncpg.Connection, jobs: Pending, job: int, fetch: Fetch[Rows], room: int,
    newest: Callable[[Rows], dt.datetime], until: dt.datetime | None,
) -> Rows | None:
    """One job's hits, from the oldest of its runs on (None: it has none left); the runs the batch takes whole
    deleted in its transaction.

    The runs are read first, so every hit of theirs is visible to the claim (one commit wrote both). A claim
    that was not full took every hit of the job up to ``until``: the runs that end by then are done. A full one
    took every hit before its newest instant (the claim is in time order; a run ending at that instant may have
    hits the batch left): the runs that end before it are done. A run not done is read again by the next batch,
    whose claim starts at its first hit and skips the ones rolled up since.
    """
    runs = await conn.fetch(JOB_RUNS, job, jobs.backlog.pages)
    if not runs:
        return None  # another aggregator finished it after the listing
    rows = await fetch(job, room, min(r["first_at"] for r in runs))
    if len(rows) == room:
        jobs.todo.append(job)  # maybe more: after the other jobs' turn (a backlog never starves them)
        end = newest(rows)
        done = [r["first_id"] for r in runs if r["last_at"] < end]
    else:
        done = [r["first_id"] for r in runs if until is None or r["last_at"] <= until]
    if done:
        await conn.execute(RUNS_DONE, job, done)
    return rows


class ClaimLost(RuntimeError):
    """Claimed hits were no longer unrolled when marked: the batch must roll back."""


@dataclass(frozen=True)
class Whole:
    """A job whose claimed hits all go on a track that keeps nothing per hit: deleted by their span, with no
    batch row to join (``mark``). The claim took every unrolled mail hit of the job in its span, and until the
    batch commits nothing but a collector can change the job's unrolled hits: the job's lock keeps other
    aggregators off, the gate keeps erasure off, and the collector only adds hits. So the span's delete takes
    the claimed hits and, if a transaction committed more into the span since the claim, those too: a count
    above the claim's says so, and ``keys`` (the claimed hits' ids and times) delete by key instead."""

    keys: Callable[[], tuple[list[Any], list[dt.datetime]]]


def whole(
    dropped: Mapping[int, int], spanned: Mapping[int, Span], keys: Callable[[int], tuple[list[Any], list[dt.datetime]]]
) -> dict[int, Whole]:
    """The jobs whose claimed hits all go on a track that keeps nothing per hit (``dropped``: how many of each
    job's do, ``spanned``: each job's span, ``spans``), deleted by their span (``Whole``; ``keys(job)``: the
    ids and times of a job's claimed hits)."""
    return {job: Whole(functools.partial(keys, job)) for job, n in dropped.items() if n == spanned[job].hits}


@dataclass
class Span:
    """A job's claimed hits in a batch: how many, and their first and last received_at."""

    hits: int
    first: dt.datetime
    last: dt.datetime


def spans(hits: Sequence[Mapping[str, Any]]) -> dict[int, Span]:
    """Each job's claimed hits: statements that write raw_hits go job by job."""
    out: dict[int, Span] = {}
    for hit in hits:
        job, at = hit["job_id"], hit["received_at"]
        span = out.get(job)
        if span is None:
            out[job] = Span(1, at, at)
            continue
        span.hits += 1
        if at < span.first:
            span.first = at
        elif at > span.last:
            span.last = at
    return out


async def mark(
    conn: asyncpg.Connection,
    sql: str,
    spanned: Mapping[int, Span],
    drop: str | None = None,
    dropped: Mapping[int, int] | None = None,
    whole: Mapping[int, Whole] | None = None,
    spans_sql: tuple[str, str] | None = None,
    by_job: Mapping[int, str] | None = None,
) -> None:
    """Mark the claimed hits rolled, one statement a job (``sql``: $1 now, $2 job, $3 first, $4 last; ``spanned``:
    each job's claimed hits, ``spans``).

    ``drop`` ($1 job, $2 first, $3 last): a statement that deletes the
    claimed hits ``sql`` leaves out; ``dropped``: how many of each job's hits
    it takes. A job's statement runs only where it has hits to take, the
    deletion first: run after the marking, it stepped over the job's rows the
    marking had just rewritten as well (twice the index entries: a personal
    job of 52k hits, 51 ms to delete nothing). Both touch only hits still
    unrolled; one fewer than claimed in all means another transaction rolled
    it up meanwhile, and the batch is refused.

    ``whole``: the jobs whose claimed hits all go (``Whole``), none of them in
    the batch rows ``sql`` and ``drop`` join; ``spans_sql``: the statements
    that delete such a job's hits by span ($1 job, $2 first, $3 last) and by
    key ($4 ids, $5 times). A delete by span that took more hits than the
    claim is undone (a savepoint) and the keys' taken instead.

    ``by_job``: a job's own statement in place of ``sql`` (the same parameters and rows).
    """
    now = dt.datetime.now(dt.UTC)
    for job, span in sorted(spanned.items()):
        if whole is not None and job in whole:
            assert spans_sql is not None
            await _drop_whole(conn, job, span, whole[job], *spans_sql)
            continue
        gone = None if dropped is None else dropped.get(job, 0)  # None: not known, both statements run
        marked = 0
        if drop is not None and gone != 0:
            marked += int((await conn.execute(drop, job, span.first, span.last)).split()[-1])
        if gone is None or gone < span.hits:
            mine = sql if by_job is None else by_job.get(job, sql)
            marked += int((await conn.execute(mine, now, job, span.first, span.last)).split()[-1])
        if marked != span.hits:
            raise ClaimLost(f"job {job}: {span.hits} hits claimed, {marked} still unrolled when marked")


async def _drop_whole(
    conn: asyncpg.Connection, job: int, span: Span, claimed: Whole, by_span: str, by_key: str
) -> None:
    """``mark`` of a job whose claimed hits all go: deleted by their span, else by their keys."""
    try:
        async with conn.transaction():  # a savepoint, undone when the span held more hits than the claim
            gone = int((await conn.execute(by_span, job, span.first, span.last)).split()[-1])
            if gone > span.hits:
                raise _OtherHits
    except _OtherHits:
        ids, times = claimed.keys()
        gone = int((await conn.execute(by_key, job, span.first, span.last, ids, times)).split()[-1])
    if gone != span.hits:
        raise ClaimLost(f"job {job}: {span.hits} hits claimed, {gone} still unrolled when deleted")


class _OtherHits(Exception):
    """A span's delete took other hits than the claimed: undone."""
