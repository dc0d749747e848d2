"""Which jobs a roll-up batch takes, and the locks that let aggregators share the work.

Several aggregators may run on one database (plain PostgreSQL or the
coordinator of a Citus cluster). Work is shared by job:

- a run lists the jobs with hits to roll up (``Pending``), in job_id order,
  and takes them in turn: a job whose batch was full goes to the back of the
  list, so under a backlog every job's roll-up moves, not the first job's alone;
- a batch takes jobs one after another with ``pg_try_advisory_xact_lock``
  on the job and claims each job's oldest unrolled hits with ``job_id = $1``
  (on Citus a row-locking claim must name its shard), until the batch is
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
# Jobs a run finds by probing the index one job at a time before it reads the
# whole backlog instead (Backlog.every). A probe is a few index look-ups; the
# read costs about 0.13 us a hit waiting, and the scheduled roll-up leaves the
# hold-back's hits waiting every run (loadtest.bench_pending, 250,000 waiting
# over five jobs: 32 ms a read, 1.9 ms for the probes).
PROBED_JOBS = 256
SMALLEST_JOB = -(2**63)


@dataclass(frozen=True)
class Backlog:
    """How a roll-up finds its jobs: statements over its partial index of the hits waiting."""

    next_job: str  # the first job id >= $1 with hits waiting (one probe of the index), or none
    span: str  # first and last: the oldest and newest hit waiting of job $1
    every: str  # job_id, first, last of every job with hits waiting, by job_id: one read of all of them

    @classmethod
    def of(cls, kinds: str) -> Backlog:
        """The statements for the hits waiting of ``kinds`` (a condition on kind: its partial index's)."""
        waiting = f"rolled_at IS NULL AND {kinds}"
        return cls(
            next_job=f"SELECT job_id FROM raw_hits WHERE {waiting} AND job_id >= $1 ORDER BY job_id LIMIT 1",
            span=f"""
SELECT min(received_at) AS first, max(received_at) AS last FROM raw_hits WHERE job_id = $1 AND {waiting}
""",
            every=f"""
SELECT job_id, min(received_at) AS first, max(received_at) AS last FROM raw_hits
WHERE {waiting} GROUP BY job_id ORDER BY job_id
""",
        )


@dataclass
class Pending:
    """The jobs a run still has to roll up, and the ones it found held by another aggregator."""

    todo: list[int]
    first: dt.datetime | None = None  # the oldest pending hit of any job
    last: dt.datetime | None = None  # and the newest
    held: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.todo or self.held)


async def pending(conn: asyncpg.Connection, backlog: Backlog) -> Pending:
    """The jobs with unrolled hits, in job_id order, with their oldest and newest.

    A loose index scan: the next job with hits waiting, then its span, job after
    job, so that finding the work costs what the jobs do, not what the backlog
    does; past PROBED_JOBS jobs, one read of the whole backlog (``every``) instead.
    On Citus a probe is one query of every shard, a span one of the job's.
    """
    rows: list[tuple[int, dt.datetime, dt.datetime]] = []
    job = SMALLEST_JOB
    for _ in range(PROBED_JOBS):
        found = await conn.fetchval(backlog.next_job, job)
        if found is None:
            break
        span = await conn.fetchrow(backlog.span, found)
        if span["first"] is not None:  # (rolled up since the probe: gone)
            rows.append((found, span["first"], span["last"]))
        if found == -SMALLEST_JOB - 1:
            break
        job = found + 1
    else:
        rows = [(r["job_id"], r["first"], r["last"]) for r in await conn.fetch(backlog.every)]
    if not rows:
        return Pending([])
    return Pending([job for job, _, _ in rows], min(r[1] for r in rows), max(r[2] for r in rows))


async def claim(conn: asyncpg.Connection, jobs: Pending, sql: str, limit: int, *more: object) -> list[asyncpg.Record]:
    """In the caller's transaction: up to ``limit`` hits of jobs this batch may lock (``sql``: $1 job, $2 limit).

    Jobs drained leave ``jobs``; a job whose batch was full goes to the back of ``jobs.todo`` (it
    comes last in the hits), so the next batch starts with the next job in turn. ``more``: further
    parameters of ``sql`` ($3 ...).
    """

    async def one(job: int, room: int) -> list[asyncpg.Record]:
        return list(await conn.fetch(sql, job, room, *more))

    return [hit for rows in await claim_with(conn, jobs, one, limit) for hit in rows]


Rows = TypeVar("Rows", bound=Sized)


async def claim_with(
    conn: asyncpg.Connection, jobs: Pending, fetch: Callable[[int, int], Awaitable[Rows]], limit: int
) -> list[Rows]:
    """``claim`` with each job's hits fetched by ``fetch(job, room)`` (at most ``room`` of them): their chunks."""
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
        chunks.append(await _claim_job(jobs, job, fetch, limit - hits))
        hits += len(chunks[-1])
    if not hits and not jobs.todo and jobs.held and not taken:
        job = jobs.held.pop(0)
        await conn.execute(JOB_LOCK, job)  # the other aggregator's batch of it commits first
        chunks = [await _claim_job(jobs, job, fetch, limit)]
    return chunks


async def _claim_job(jobs: Pending, job: int, fetch: Callable[[int, int], Awaitable[Rows]], room: int) -> Rows:
    rows = await fetch(job, room)
    if len(rows) == room:
        jobs.todo.append(job)  # maybe more: after the other jobs' turn (a backlog never starves them)
    return rows


class ClaimLost(RuntimeError):
    """Claimed hits were no longer unrolled when marked: the batch must roll back."""


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
    """
    now = dt.datetime.now(dt.UTC)
    for job, span in sorted(spanned.items()):
        gone = None if dropped is None else dropped.get(job, 0)  # None: not known, both statements run
        marked = 0
        if drop is not None and gone != 0:
            marked += int((await conn.execute(drop, job, span.first, span.last)).split()[-1])
        if gone is None or gone < span.hits:
            marked += int((await conn.execute(sql, now, job, span.first, span.last)).split()[-1])
        if marked != span.hits:
            raise ClaimLost(f"job {job}: {span.hits} hits claimed, {marked} still unrolled when marked")
