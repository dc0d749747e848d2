"""One roll-up run: claim, enrich, merge and mark, a transaction per batch.

Exactly once: the claim, the merges into the report tables and the marking
of the claimed hits (rolled_at and scrubbing for personal and rejected hits,
deletion for the tracks that keep nothing per hit) commit together or not at all,
so a run killed half-way leaves nothing applied; a batch claims and marks
a job's hits under the job's lock (aggregator.claims), so a concurrent run
never takes the same hits and the runs share the work by job.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import polars as pl

from aggregator import claims
from aggregator.config import AggregatorConfig
from aggregator.enrich.enricher import Enricher, Enriching, enrich_parts, make_enricher
from aggregator.enrich.run import Parts
from aggregator.mail import context, frames, queries
from aggregator.mail import tracks as modes
from aggregator.mail.reading import merge_reads
from aggregator.mail.rows import BATCH_COLUMNS, PROFILE_COLUMNS, BatchBuilder
from aggregator.mail.who import job_keys, lookup

log = logging.getLogger(__name__)

Fault = Callable[[], Awaitable[None]]
# No hold-back: everything received so far may be claimed.
EVER = dt.datetime.max.replace(tzinfo=dt.UTC)
# Young-generation threshold while batches run, per hit of a batch: a batch holds about 9
# tracked objects a hit at its peak (171k in a 20,000-hit batch), so none is collected inside one.
GC_PER_HIT = 50


@dataclass
class RunStats:
    """What a run did and where its time went (seconds per stage)."""

    hits: int = 0
    batches: int = 0
    columns: int = 0  # of the batches, how many were built on columns (aggregator.mail.frames)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, started: float) -> float:
        """Account the time since ``started`` to ``stage``; return now."""
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - started
        return now


async def who_of(conn: asyncpg.Connection, hits: Sequence[Mapping[str, Any]]) -> modes.Who:
    """The batch's jobs and recipients, once each (a recipient's hits share one lookup)."""
    recipients: dict[int, set[int]] = {}  # by job: every job of the batch, with or without recipients
    for hit in hits:
        ids = recipients.get(job := hit["job_id"])
        if ids is None:
            ids = recipients[job] = set()
        if (rid := hit["recipient_id"]) is not None:
            ids.add(rid)
    return await lookup(conn, recipients)


async def builder_for(
    conn: asyncpg.Connection, hits: Sequence[Mapping[str, Any]], tracks: Sequence[str], who: modes.Who
) -> BatchBuilder:
    """The batch's row builder, with the keys of the jobs whose hits are hashed (``tracks``: each hit's)."""
    hashed = {h["job_id"] for h, track in zip(hits, tracks, strict=True) if track in modes.HASHED}
    return BatchBuilder(await job_keys(conn, hashed), who)


async def merge(
    conn: asyncpg.Connection, hits: Sequence[Mapping[str, Any]], enriched: Sequence[Parts], stats: RunStats,
    builder: BatchBuilder, tracks: Sequence[str],
) -> list[tuple[Any, ...]]:
    """Under the jobs' locks: batch rows in, roll-ups merged, raw hits marked (``tracks``: each hit's); the rows."""
    t = time.perf_counter()
    rows = builder.rows(hits, enriched, tracks)
    t = stats.add("build", t)
    await conn.copy_records_to_table("rollup_profile", records=builder.profile_rows(), columns=PROFILE_COLUMNS)
    await conn.copy_records_to_table("rollup_batch", records=rows, columns=BATCH_COLUMNS)
    t = stats.add("copy", t)
    dropped = Counter(hit["job_id"] for hit, track in zip(hits, tracks, strict=True) if track in modes.ROWLESS)
    spanned = claims.spans(hits)

    # The merges read every batch row here (rollup_batch), so all are copied; the marking deletes the jobs
    # whose hits all go by their span all the same.
    def keys(job: int) -> tuple[list[Any], list[dt.datetime]]:
        mine = [hit for hit in hits if hit["job_id"] == job]
        return [hit["hit_id"] for hit in mine], [hit["received_at"] for hit in mine]

    kept: dict[int, set[str]] = {}
    for hit, track in zip(hits, tracks, strict=True):
        if track not in modes.ROWLESS:
            kept.setdefault(hit["job_id"], set()).add(track)
    await merge_copied(conn, stats, builder, t, dropped, spanned, whole=claims.whole(dropped, spanned, keys),
                       kept={job: frozenset(found) for job, found in kept.items()})
    return rows


async def merge_frame(
    conn: asyncpg.Connection, batch: frames.Batch, enriched: frames.Enriched, stats: RunStats
) -> pl.DataFrame:
    """``merge`` of a batch on columns (aggregator.mail.frames); the rows."""
    t = time.perf_counter()
    rows, profiles = frames.batch_rows(enriched, batch)
    dropped, spanned = frames.dropped(batch.hits), frames.spans(batch.hits)
    whole = frames.whole(batch.hits, dropped, spanned)
    t = stats.add("build", t)
    await conn.execute(frames.CREATE_STAGES)
    await conn.copy_records_to_table("rollup_profile", records=profiles, columns=PROFILE_COLUMNS)
    await frames.copy_rows(conn, rows, whole)
    t = stats.add("copy", t)
    t = await frames.merge_grouped(conn, rows, profiles, stats.add, t)
    await frames.copy_frame(conn, "seen_pick", frames.picks(rows))
    merges = await frames.after_seen(conn, rows)
    await merge_copied(conn, stats, batch.builder, t, dropped, spanned, merges=merges, picked=True, whole=whole,
                       kept=frames.kept(batch.hits))
    return rows


async def merge_copied(
    conn: asyncpg.Connection, stats: RunStats, builder: BatchBuilder, t: float, dropped: Mapping[int, int],
    spanned: Mapping[int, claims.Span], merges: Sequence[tuple[str, str]] = queries.MERGES, picked: bool = False,
    whole: Mapping[int, claims.Whole] | None = None, *, kept: Mapping[int, frozenset[str]],
) -> None:
    """The rest of ``merge`` once the batch's rows are in: unique counting, the merges, the marking
    (``dropped``: each job's hits on a track that keeps nothing; ``spanned``: each job's claimed span;
    ``merges``: (name, statement) of what to merge once unique counting is done, the rest the caller merged
    already; ``picked``: seen_pick filled by the caller; ``whole``: the jobs whose hits all go, deleted by
    their span, ``claims.Whole``; ``kept``: the tracks of each job's hits that keep a row, which choose its
    marking, queries.marking)."""
    if not picked:
        await conn.execute(queries.SEEN_PICK)
    for job in sorted(job for job, key in builder.keys.items() if key is not None):  # the jobs with hashes
        await conn.execute(queries.SEEN_KNOWN, job)  # one job a statement: one shard on Citus
    await conn.execute(queries.ANALYZE_KNOWN)
    await conn.execute(queries.SEEN_DELTA)
    for row in await conn.fetch(queries.CHANGED):
        await conn.execute(queries.SEEN_UPDATE, row["job_id"])  # one job a statement, as SEEN_KNOWN
    await conn.execute(queries.SEEN_INSERT)
    t = stats.add("seen", t)
    for name, sql in merges:
        await conn.execute(sql)
        t = stats.add(f"merge_{name}", t)
    # Analyzed for the marking only: analyzed before the merges, the
    # unique-visitor statements took 3x as long on top of a long history.
    await conn.execute(queries.ANALYZE_BATCH)
    await conn.execute(queries.NO_NESTED_LOOP)
    by_job = {job: queries.marking(tracks) for job, tracks in kept.items()}
    await claims.mark(conn, queries.MARK_ROLLED, spanned, queries.DROP_ROLLED, dropped, whole,
                      (queries.DROP_SPAN, queries.DROP_KEYS), by_job)  # fmt: skip
    await conn.execute(queries.NESTED_LOOP)
    stats.add("mark", t)


async def run_batch(
    conn: asyncpg.Connection,
    config: AggregatorConfig,
    enricher: Enriching,
    stats: RunStats,
    jobs: claims.Pending,
    fault: Fault | None = None,
    until: dt.datetime = EVER,
) -> int:
    """Roll up one batch of ``jobs`` (hits received up to ``until``) in one transaction; return how many it took.

    With the production enricher a batch is claimed as columns (aggregator.mail.frames) and built on them as
    ``config.engine`` says ("auto": from ``config.columns_from`` hits), else turned into the per-hit path's hits;
    another enricher's (tests' stand-ins, which give rows only) are claimed and built hit by hit.
    """
    on_columns = isinstance(enricher, Enricher) and config.engine != "hits"
    async with conn.transaction():
        t = time.perf_counter()
        await conn.execute(queries.CREATE_BATCH)
        claimed: pl.DataFrame | None = None
        if on_columns:
            claimed = await frames.claim(conn, jobs, config.batch_size, until)
            taken = claimed.height
            if config.engine == "auto" and taken < config.columns_from:  # a small batch costs less hit by hit
                hits, claimed = frames.as_hits(claimed), None
        else:
            hits = await claims.claim(conn, jobs, queries.CLAIM, config.batch_size, until)
            hits = await context.whole_instants(conn, hits, config.batch_size)
            taken = len(hits)
        t = stats.add("claim", t)
        if not taken:
            return 0
        if claimed is None:
            await roll_hits(conn, config, enricher, stats, hits, fault, t)
        else:
            assert isinstance(enricher, Enricher)
            stats.columns += 1
            await roll_frame(conn, config, enricher, stats, claimed, fault, t)
    return taken


async def roll_hits(
    conn: asyncpg.Connection, config: AggregatorConfig, enricher: Enriching, stats: RunStats,
    hits: Sequence[Mapping[str, Any]], fault: Fault | None, t: float,
) -> None:
    """A claimed batch hit by hit, in the caller's transaction (``t``: when its claim's stage ended)."""
    who = await who_of(conn, hits)
    t = stats.add("claim", t)
    tracks = [modes.track_of(h, who) for h in hits]  # once a hit, for the keys, the context and the rows
    builder = await builder_for(conn, hits, tracks, who)
    known = await context.load(conn, hits, tracks, builder, enricher, config)
    t = stats.add("context", t)
    enriched = enrich_parts(enricher, hits, who.sent, known.outside)
    stats.add("enrich", t)
    if fault is not None:
        await fault()  # tests: a run killed between claim and merge
    rows = await merge(conn, hits, enriched, stats, builder, tracks)
    t = time.perf_counter()
    await context.save(conn, known, config)
    t = stats.add("context_save", t)
    await merge_reads(conn, hits, rows, config.reading_idle, known.views_ahead)  # reading time, same transaction
    stats.add("reading", t)


async def roll_frame(
    conn: asyncpg.Connection, config: AggregatorConfig, enricher: Enricher, stats: RunStats,
    hits: pl.DataFrame, fault: Fault | None, t: float,
) -> None:
    """``roll_hits`` on columns: the same stages, the same rows and statements."""
    batch = await frames.judge(conn, hits)
    del hits  # a batch's frames are kept once each (the aggregator's peak memory)
    t = stats.add("claim", t)
    known, opens = await frames.load_context(conn, batch, enricher, config)
    t = stats.add("context", t)
    enriched = frames.enrich(batch, enricher, known, config)
    batch.hits = enriched.hits
    stats.add("enrich", t)
    if fault is not None:
        await fault()  # tests: a run killed between claim and merge
    rows = await merge_frame(conn, batch, enriched, stats)
    t = time.perf_counter()
    await frames.save_context(conn, known, opens, config)
    t = stats.add("context_save", t)
    doc_hits, doc_rows = frames.documents(rows)
    await merge_reads(conn, doc_hits, doc_rows, config.reading_idle, known.views_ahead)
    stats.add("reading", t)


@contextlib.contextmanager
def fewer_collections(batch_size: int) -> Iterator[None]:
    """Collect the young generation past GC_PER_HIT tracked objects a batch hit, not every 700; then restore.

    A batch allocates hundreds of thousands of objects that live until it
    ends (claimed records, enrichment dicts, batch rows) and leaves no cycles
    worth finding early; at 700 the collector walks them again and again
    (about 1.5 us per hit, a tenth of the aggregator's own CPU), and at
    100,000 still once or twice a batch (0.8 us per hit). Freed at the end of
    the batch, they are never walked.
    """
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], GC_PER_HIT * batch_size), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


async def rollup(
    conn: asyncpg.Connection,
    config: AggregatorConfig,
    enricher: Enriching | None = None,
    fault: Fault | None = None,
    stop: asyncio.Event | None = None,
    hold: float = 0.0,
    stats: RunStats | None = None,
) -> RunStats:
    """Roll up every hit not yet rolled up, batch after batch (until ``stop``); return the stats.

    ``hold``: leave the hits of the last so many seconds (the scheduled roll-up's
    PIXELTRACK_ROLLUP_HOLD), so that what their verdicts look ahead to has arrived.
    ``stats``: where to account the stages (benchmarks pass one that splits CPU).
    """
    enricher = enricher or make_enricher(config.enrich)
    if isinstance(enricher, Enricher):  # a run that may go on columns
        frames.warm()
    stats = stats if stats is not None else RunStats()
    started = time.perf_counter()
    until = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=hold) if hold > 0 else EVER
    jobs = await claims.pending(conn, queries.PENDING)
    with fewer_collections(config.batch_size):
        while jobs and (stop is None or not stop.is_set()):
            taken = await run_batch(conn, config, enricher, stats, jobs, fault, until)
            if taken:
                stats.hits += taken
                stats.batches += 1
    if stats.hits:
        log.info("rolled up %d hits in %d batches, %.3f s", stats.hits, stats.batches, time.perf_counter() - started)
    return stats

