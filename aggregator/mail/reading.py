"""Reading time per document page, from the page pixels (kind 'doc') of one reader.

A reader is a recipient, known by the job's keyed recipient hash (``rhash``),
so unique and anonymous jobs have readers too without any identity. Each
page view is timed by the gap to the same reader's next page view, capped at
the idle limit (``PIXELTRACK_READING_IDLE``, default 5 minutes; a longer gap
also ends the reading session), as Papermark and DocSend do. The last view
has no time: nothing tells when the reader stopped. Two or more pages within
a second of each other are a viewer pre-loading every image: not reading, so
neither a view nor any time. The same page again within a second is one view.

Merged at roll-up (``merge_reads``, in the roll-up's transaction) into
aggregates per page for every mode (views only for blind jobs, whose hits
tell no reader apart) and, for personal tracking, per reader and page: a
view (and its seconds) is the reader's only if that view's own track is
personal, so a view from before a recipient's consent stays the page's
alone, in whichever batch it comes.

The same views give the same figures however they are split into batches:
a reader's last view so far waits in ``doc_reading_state`` for the next
one to time it; whether it starts a pre-load burst is told by the reader's
views in the second after it, which the roll-up looks ahead to
(aggregator/mail/context.py); and seconds are summed in whole microseconds
(``MICROS``), so no sum depends on the order of its terms.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg

from aggregator.mail.queries import BATCH_COLUMNS, DOC_PAGE

BURST_SECONDS = 1.0
MICROS = 1_000_000  # seconds are summed as whole microseconds, stored as their seconds


@dataclass(frozen=True, slots=True)
class PageView:
    """One page pixel of one reader."""

    at: dt.datetime
    page: int


@dataclass(frozen=True, slots=True)
class Read:
    """A page view as read: its seconds (None for a pre-load or while no later view tells)."""

    at: dt.datetime
    page: int
    seconds: float | None
    preload: bool
    new_session: bool


def collapse(views: Sequence[PageView], burst: float = BURST_SECONDS) -> list[PageView]:
    """Views in time order, a repeat of the same page within ``burst`` seconds dropped."""
    kept: list[PageView] = []
    for view in sorted(views, key=lambda v: (v.at, v.page)):
        if kept and kept[-1].page == view.page and (view.at - kept[-1].at).total_seconds() < burst:
            continue
        kept.append(view)
    return kept


def reads(views: Sequence[PageView], idle: float, burst: float = BURST_SECONDS) -> list[Read]:
    """One reader's views, timed: gap to the next view capped at ``idle``; pre-load bursts untimed."""
    kept = collapse(views, burst)
    gaps = [(b.at - a.at).total_seconds() for a, b in zip(kept, kept[1:], strict=False)]
    out = []
    for i, view in enumerate(kept):
        before = gaps[i - 1] if i else None
        after = gaps[i] if i < len(gaps) else None
        preload = (before is not None and before < burst) or (after is not None and after < burst)
        seconds = None if preload or after is None else min(after, idle)
        out.append(Read(view.at, view.page, seconds, preload, before is None or before > idle))
    return out


# ----------------------------------------------------------------- roll-up --
# Where the batch rows (aggregator.mail.rows, queries.BATCH_COLUMNS order) hold what reading needs.
READ = ("received_at", "job_id", "kind", "track", "machine", "recipient_id", "rhash")
_AT, _JOB, _KIND, _TRACK, _MACHINE, _RECIPIENT, _RHASH = (BATCH_COLUMNS.index(name) for name in READ)
LOAD_STATE = """
SELECT s.job_id, s.hash, s.last_at, s.last_page, s.last_preload, s.furthest, s.last_personal
FROM unnest($1::bigint[], $2::bytea[]) AS k(job_id, hash)
JOIN doc_reading_state s ON s.job_id = k.job_id AND s.hash = k.hash
"""
SAVE_STATE = """
INSERT INTO doc_reading_state AS t (job_id, hash, last_at, last_page, last_preload, furthest, last_personal)
SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::timestamptz[], $4::integer[], $5::boolean[], $6::integer[],
                     $7::boolean[])
ON CONFLICT (job_id, hash) DO UPDATE SET last_at = excluded.last_at, last_page = excluded.last_page,
    last_preload = excluded.last_preload, furthest = excluded.furthest, last_personal = excluded.last_personal
"""
# A page's readers: scope 'doc_page' of unique_seen, in the row of the page
# (link_id). The row may be there for another scope (a link id or page 0
# equal to the page number): its bit is set then, and only a row that did
# not have it yet comes back (a new reader of the page).
SEEN_PAGES = f"""
INSERT INTO unique_seen AS s (job_id, link_id, hash, scopes)
SELECT job_id, page, hash, {DOC_PAGE} FROM unnest($1::bigint[], $2::bigint[], $3::bytea[]) AS r(job_id, page, hash)
ON CONFLICT (job_id, link_id, hash) DO UPDATE SET scopes = s.scopes | excluded.scopes
WHERE s.scopes & excluded.scopes = 0
RETURNING job_id, link_id
"""
# Both terms of a seconds sum are whole microseconds: rounded back to them, the
# sum is the same whatever came first (exact while below 30 years a page).
MERGE_PAGES = """
INSERT INTO doc_pages AS t (job_id, page, views, preloaded, readers, furthest, seconds, timed)
SELECT * FROM unnest($1::bigint[], $2::integer[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                     $7::float8[], $8::bigint[])
ON CONFLICT (job_id, page) DO UPDATE SET
    views = t.views + excluded.views, preloaded = t.preloaded + excluded.preloaded,
    readers = t.readers + excluded.readers, furthest = t.furthest + excluded.furthest,
    seconds = round((t.seconds + excluded.seconds) * 1e6::float8) / 1e6::float8, timed = t.timed + excluded.timed
"""
MERGE_SECONDS = """
INSERT INTO doc_page_seconds AS t (job_id, page, seconds, views)
SELECT * FROM unnest($1::bigint[], $2::integer[], $3::integer[], $4::bigint[])
ON CONFLICT (job_id, page, seconds) DO UPDATE SET views = t.views + excluded.views
"""
MERGE_READERS = """
INSERT INTO doc_reader_pages AS t (job_id, recipient_id, page, views, seconds)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::integer[], $4::bigint[], $5::float8[])
ON CONFLICT (job_id, recipient_id, page) DO UPDATE SET
    views = t.views + excluded.views, seconds = round((t.seconds + excluded.seconds) * 1e6::float8) / 1e6::float8
"""
PAGE_FIELDS = ("views", "preloaded", "readers", "furthest", "seconds", "timed")


@dataclass(frozen=True, slots=True)
class Last:
    """A reader's last view so far (``doc_reading_state``)."""

    at: dt.datetime
    page: int
    preload: bool
    furthest: int
    personal: bool = False  # on the personal track: its seconds are its reader's (doc_reader_pages)


@dataclass
class Tally:
    """One batch's additions, merged with one statement per table (seconds as whole microseconds)."""

    pages: defaultdict[tuple[int, int], dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: dict.fromkeys(PAGE_FIELDS, 0))
    )
    seconds: defaultdict[tuple[int, int, int], int] = field(default_factory=lambda: defaultdict(int))
    readers: defaultdict[tuple[int, int, int], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    seen: set[tuple[int, bytes, int]] = field(default_factory=set)

    def view(self, job: int, rid: int | None, page: int, count: int = 1) -> None:
        """A view counted (or, with -1, one found to be a pre-load after all)."""
        self.pages[(job, page)]["views"] += count
        if rid is not None:
            self.readers[(job, rid, page)][0] += count

    def timed(self, job: int, rid: int | None, page: int, seconds: float) -> None:
        """Reading seconds of one view."""
        micros = round(seconds * MICROS)  # a gap is whole microseconds
        self.pages[(job, page)]["seconds"] += micros
        self.pages[(job, page)]["timed"] += 1
        self.seconds[(job, page, round(seconds))] += 1
        if rid is not None:
            self.readers[(job, rid, page)][1] += micros

    async def merge(self, conn: asyncpg.Connection) -> None:
        """Readers of each page first (new unique_seen rows), then every table."""
        if self.seen:
            seen = sorted((job, page, rhash) for job, rhash, page in self.seen)  # unique_seen's order
            added = await conn.fetch(SEEN_PAGES, *[list(col) for col in zip(*seen, strict=True)])
            for r in added:
                self.pages[(r["job_id"], r["link_id"])]["readers"] += 1
        tables: tuple[tuple[str, list[tuple[Any, ...]]], ...] = (
            (MERGE_PAGES, [(*k, *(v[f] / MICROS if f == "seconds" else v[f] for f in PAGE_FIELDS))
                           for k, v in self.pages.items()]),
            (MERGE_SECONDS, [(*k, v) for k, v in self.seconds.items()]),
            (MERGE_READERS, [(*k, views, micros / MICROS) for k, (views, micros) in self.readers.items()]),
        )  # fmt: skip
        for sql, rows in tables:
            if rows:
                await conn.execute(sql, *[list(col) for col in zip(*sorted(rows), strict=True)])


def preloads(read: Read, ahead: Sequence[PageView], idle: float) -> bool:
    """Whether the views ``ahead`` of a reader's last view ``read`` make it the start of a pre-load burst."""
    after = [v for v in ahead if v.at > read.at]
    return bool(after) and reads([PageView(read.at, read.page), *after], idle)[0].preload


def advance(
    job: int, rid: int | None, last: Last | None, views: list[PageView], idle: float, tally: Tally,
    ahead: Sequence[PageView] = (), personal: Set[tuple[dt.datetime, int]] = frozenset(),
) -> tuple[Last, list[int]]:
    """Add one reader's new views of a batch to ``tally``; return their new last view and the pages read.

    ``ahead``: the reader's views after the batch, which tell whether its last view is a pre-load.
    ``personal``: the (time, page) of the views on the personal track: only those count for the
    reader ``rid`` (doc_reader_pages), each by its own track, so a view before the recipient's
    consent is never theirs, in whichever batch it comes or the view that times it.
    """

    def whose(at: dt.datetime, page: int) -> int | None:
        return rid if (at, page) in personal else None

    late = [v for v in views if last is not None and v.at <= last.at]
    for view in late:  # arrived after later views were rolled up: a view, but untimed
        tally.view(job, whose(view.at, view.page), view.page)
    on_time = [v for v in views if last is None or v.at > last.at]
    timed = reads(([PageView(last.at, last.page)] if last else []) + on_time, idle)
    if len(timed) > (1 if last else 0) and preloads(timed[-1], ahead, idle):
        timed[-1] = replace(timed[-1], preload=True, seconds=None)
    rest = timed
    if last is not None:
        # The last view was judged with the views of the second after it (ahead): one
        # that comes within that second now arrived late and leaves its verdict as it is.
        first, rest = timed[0], timed[1:]
        if not last.preload and not first.preload and first.seconds is not None:
            tally.timed(job, rid if last.personal else None, last.page, first.seconds)
    for read in rest:
        if read.preload:
            tally.pages[(job, read.page)]["preloaded"] += 1
            continue
        tally.view(job, whose(read.at, read.page), read.page)
        if read.seconds is not None:
            tally.timed(job, whose(read.at, read.page), read.page, read.seconds)
    counted = [v.page for v in late] + [r.page for r in rest if not r.preload]
    furthest = max([last.furthest if last else 0, *counted])
    if last is not None and not rest:
        return replace(last, furthest=furthest), counted
    end = timed[-1]
    return Last(end.at, end.page, end.preload, furthest, (end.at, end.page) in personal), counted


async def merge_reads(
    conn: asyncpg.Connection, hits: Sequence[Mapping[str, Any]], rows: Sequence[Sequence[Any]], idle: float,
    ahead: Mapping[tuple[int, bytes], Sequence[PageView]] | None = None,
) -> None:
    """Merge the batch's human document views in the roll-up's transaction.

    ``rows``: each hit's batch row (what rollup_batch holds: track, machine, rhash), read here
    rather than back from the table. ``ahead``: each reader's human views not rolled up yet
    (aggregator.mail.context).
    """
    tally = Tally()
    readers: defaultdict[tuple[int, bytes], list[PageView]] = defaultdict(list)
    ids: dict[tuple[int, bytes], int] = {}  # a reader's recipient, for their views on the personal track
    personal: defaultdict[tuple[int, bytes], set[tuple[dt.datetime, int]]] = defaultdict(set)
    for hit, row in zip(hits, rows, strict=True):
        if row[_KIND] != "doc" or row[_MACHINE] or row[_TRACK] == "rejected" or (page := hit["page"]) is None:
            continue
        if row[_RHASH] is None:  # blind, or the job's key is destroyed: a view, no reader
            tally.view(row[_JOB], None, page)
            continue
        key = (row[_JOB], row[_RHASH])
        readers[key].append(PageView(row[_AT], page))
        ids[key] = hit["recipient_id"]
        if row[_RECIPIENT] is not None:
            personal[key].add((row[_AT], page))
    if readers:
        await _advance_all(conn, readers, ids, personal, idle, tally, ahead or {})
    await tally.merge(conn)


async def _advance_all(conn: asyncpg.Connection, readers: Mapping[tuple[int, bytes], list[PageView]],
                       ids: Mapping[tuple[int, bytes], int], personal: Mapping[tuple[int, bytes], Set[Any]],
                       idle: float, tally: Tally,
                       ahead: Mapping[tuple[int, bytes], Sequence[PageView]]) -> None:  # fmt: skip
    keys = sorted(readers)
    states = {
        (r["job_id"], bytes(r["hash"])): Last(r["last_at"], r["last_page"], r["last_preload"], r["furthest"],
                                              r["last_personal"])
        for r in await conn.fetch(LOAD_STATE, [k[0] for k in keys], [k[1] for k in keys])
    }
    saved = []
    for key in keys:
        job, rhash = key
        before = states.get(key)
        after, counted = advance(job, ids.get(key), before, readers[key], idle, tally, ahead.get(key, ()),
                                 personal.get(key, frozenset()))
        old = before.furthest if before else 0
        if after.furthest != old:  # the reader got further: reached by one more reader from here back
            if old:
                tally.pages[(job, old)]["furthest"] -= 1
            tally.pages[(job, after.furthest)]["furthest"] += 1
        tally.seen.update((job, rhash, page) for page in counted)
        saved.append((job, rhash, after.at, after.page, after.preload, after.furthest, after.personal))
    await conn.execute(SAVE_STATE, *[list(col) for col in zip(*saved, strict=True)])
