"""What a roll-up batch knows beyond its own hits, so that no verdict depends on where batches split.

The behavioural rules (aggregator/enrich/machine.py) judge a click by its
recipient's events around it: their clicks within W seconds either side
(PIXELTRACK_SCANNER_BURST_SECONDS), and whether they opened the mail by A
seconds after it (PIXELTRACK_SCANNER_OPEN_AHEAD). Document reading
(reading.py) must know whether a reader's last view in the batch is followed
within a second by another page (then it was a pre-load). A batch holds only
some of those events; the others are

- earlier, in hits rolled up by earlier batches, whose recipient ids may be
  gone (non-personal tracks): the roll-up keeps, by the job's keyed
  recipient hash, each recipient's earliest open (``mail_openers``) and
  their clicks in the last W seconds of the job's rolled-up time
  (``recent_clicks``);
- later, in hits not rolled up yet, which still carry their recipient id:
  the job's unclaimed hits up to ``look_ahead`` after the batch's newest.

Batches of a job are claimed in time order, so that is all of them. The
scheduled roll-up claims only hits older than PIXELTRACK_ROLLUP_HOLD, by
when the later ones have arrived; a hit that arrives after that is judged
with what is known then, and never changes a verdict already merged.

Only recipients with a keyed hash (personal, unique and anonymous tracks,
while the job key lives) are linked to their other events: a blind hit's
recipient, one erased with ``forget``, or one whose job key is destroyed
gets the rules that need one hit only (and the send-time rule).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import asyncpg

from aggregator.config import AggregatorConfig
from aggregator.enrich.enricher import Enriching, enrich_parts
from aggregator.enrich.machine import Outside, link_key
from aggregator.mail import queries
from aggregator.mail import tracks as modes
from aggregator.mail.reading import BURST_SECONDS, PageView
from aggregator.mail.rows import BatchBuilder
from pixeltrack.core import columns

Recipient = tuple[int, int]  # (job_id, recipient_id)
Reader = tuple[int, bytes]  # (job_id, keyed hash)

# One job ($1): its unclaimed mail hits received in [$3, $4] that the batch's verdicts look at, the
# opens and clicks of its clickers ($2) and the document views of its readers ($5). Only a view is
# enriched (a machine's is no reading): opens and clicks come without the headers (less to decode).
# Clicks only up to $6 (the burst window past the batch's newest: no later click shares a window
# with one of the batch's), views only before $7 (the pre-load second). The ids are looked up in
# a hashed subplan: `= ANY(array)` over a batch's thousands cost 3x as much, 6x under a generic
# plan (a 20k-hit batch, 2.7k clickers: 59 and 122 -> 20 ms; a batch a few seconds long reads
# much of the 10 s ahead).
_VIEW_ONLY = {name: f"CASE WHEN kind = 'doc' THEN {name} END" for name in (*columns.HEADERS, "method", "prefetch")}
AHEAD = f"""
SELECT {columns.listed(columns.HIT, client_ip="CASE WHEN kind = 'doc' THEN host(client_ip) END", **_VIEW_ONLY)}
FROM raw_hits
WHERE job_id = $1 AND rolled_at IS NULL AND kind <> 'page' AND reject_reason IS NULL AND received_at BETWEEN $3 AND $4
  AND (kind = 'open' AND recipient_id IN (SELECT unnest($2::bigint[]))
       OR kind = 'click' AND received_at <= $6 AND recipient_id IN (SELECT unnest($2::bigint[]))
       OR kind = 'doc' AND received_at < $7 AND recipient_id IN (SELECT unnest($5::bigint[])))
"""
# What earlier batches kept of one job's ($1) clickers ($2, their hashes), one job a statement
# (one shard on Citus, where a statement over all jobs ran on every shard: 55-64 -> 8 ms for 2,000
# clickers). Each hash looked up by key (the lateral subquery is kept apart by OFFSET 0): a join
# let the planner hash the job's whole mail_openers once it had some history (3,000 clickers over
# 200,000 openers: 34 ms, by key 6 ms), so the cost follows the batch.
OPENERS = """
SELECT k.hash, s.first_open FROM unnest($2::bytea[]) AS k(hash)
CROSS JOIN LATERAL (SELECT s.first_open FROM mail_openers s WHERE s.job_id = $1 AND s.hash = k.hash OFFSET 0) s
"""
RECENT = """
SELECT k.hash, s.at, s.link_key FROM unnest($2::bytea[]) AS k(hash)
CROSS JOIN LATERAL (SELECT s.at, s.link_key FROM recent_clicks s WHERE s.job_id = $1 AND s.hash = k.hash OFFSET 0) s
"""
SAVE_OPENERS = """
INSERT INTO mail_openers AS t (job_id, hash, first_open)
SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::timestamptz[])
ON CONFLICT (job_id, hash) DO UPDATE SET first_open = excluded.first_open
WHERE excluded.first_open < t.first_open
"""
SAVE_CLICKS = """
INSERT INTO recent_clicks (job_id, hash, at, link_key)
SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::timestamptz[], $4::bigint[]) ON CONFLICT DO NOTHING
"""
# One job a statement (on Citus, one shard).
PRUNE = "DELETE FROM recent_clicks WHERE job_id = $1 AND at < $2"
# How many of one job's ($1) mail hits not rolled up were received at one instant ($2).
AT_INSTANT = """
SELECT count(*) FROM raw_hits WHERE job_id = $1 AND rolled_at IS NULL AND kind <> 'page' AND received_at = $2
"""
# The limit of a claim that takes every hit of one instant.
WHOLE = 2**62


async def whole_instants(conn: asyncpg.Connection, hits: list[asyncpg.Record], limit: int) -> list[asyncpg.Record]:
    """A full claim (queries.CLAIM) with the rest of its newest instant: batches never split one.

    Reading time orders a reader's views by time; views of one instant cut
    in two by a batch would be ordered by where the cut fell. Only the job
    claimed last can have filled the batch, and its hits come last, in time
    order (the claim's ORDER BY): its newest instant is the batch's tail.
    """
    if len(hits) < limit:
        return hits
    job, newest = hits[-1]["job_id"], hits[-1]["received_at"]
    claimed = 0
    for hit in reversed(hits):
        if hit["received_at"] != newest or hit["job_id"] != job:
            break
        claimed += 1
    if await conn.fetchval(AT_INSTANT, job, newest) <= claimed:
        return hits
    oldest = min(h["received_at"] for h in hits if h["job_id"] == job)  # the job's claim again, to the instant's end
    return [h for h in hits if h["job_id"] != job] + list(await conn.fetch(queries.CLAIM, job, WHOLE, oldest, newest))


def look_ahead(config: AggregatorConfig) -> dt.timedelta:
    """How far past a batch's newest hit its verdicts look: the rules' windows, and a pre-load's second."""
    return dt.timedelta(seconds=max(config.enrich.context_seconds, BURST_SECONDS))


@dataclass
class Known:
    """A batch's linked recipients and what is known of them beyond it.

    ``newest``, ``opens``, ``clicks`` and ``clicked`` come from the one pass
    over the batch's hits that ``load`` makes; ``save`` writes them.
    """

    hashes: dict[Recipient, bytes] = field(default_factory=dict)
    outside: dict[Recipient, Outside] = field(default_factory=dict)  # recipients with clicks: the rules' context
    views_ahead: defaultdict[Reader, list[PageView]] = field(default_factory=lambda: defaultdict(list))
    newest: dict[int, dt.datetime] = field(default_factory=dict)  # each job's newest claimed hit
    opens: dict[Reader, dt.datetime] = field(default_factory=dict)  # linked recipients' earliest open in the batch
    clicks: set[tuple[int, bytes, dt.datetime, int]] = field(default_factory=set)  # in each job's last W seconds
    clicked: set[int] = field(default_factory=set)  # jobs with linked clicks: their recent clicks are pruned
    links: dict[str | None, int | None] = field(default_factory=dict)  # link_key by link, once a batch

    def link_key(self, link: str | None) -> int | None:
        """machine.link_key of a clicked link, worked out once a batch (a mailing has a few links)."""
        try:
            return self.links[link]
        except KeyError:
            found = self.links[link] = link_key(link)
            return found


async def load(
    conn: asyncpg.Connection,
    hits: Sequence[Mapping[str, Any]],
    tracks: Sequence[str],
    builder: BatchBuilder,
    enricher: Enriching,
    config: AggregatorConfig,
) -> Known:
    """What the batch's rules and reading need to know of its recipients beyond the batch."""
    known = Known()
    readers, clickers = _gather(known, hits, tracks, builder, config)
    if not (readers or clickers):
        return known
    known.outside = {key: Outside() for key in clickers}
    await earlier(conn, known, clickers)
    await later(conn, known, lambda: {h["hit_id"] for h in hits}, clickers, readers, enricher, config)
    return known


_LATE = "late"  # a hit's second round in _gather


def _gather(
    known: Known, hits: Sequence[Mapping[str, Any]], tracks: Sequence[str], builder: BatchBuilder,
    config: AggregatorConfig,
) -> tuple[set[Recipient], list[Recipient]]:
    """One pass over the batch: the linked recipients' hashes (``known``), what ``save`` keeps, and
    the recipients whose views or clicks need the context (readers, and clickers sorted)."""
    hashes, newest, opens = known.hashes, known.newest, known.opens
    clicks: list[tuple[int, bytes, dt.datetime, str | None]] = []
    readers: set[Recipient] = set()
    clickers: set[Recipient] = set()
    # A hit not hashed itself (e.g. a rejected one) of a recipient whose other hits are: known
    # once all hashes are, so it comes round again after the batch, as _LATE.
    late: list[tuple[Mapping[str, Any], str]] = []
    for hit, track in chain(zip(hits, tracks, strict=True), late):
        job, at = hit["job_id"], hit["received_at"]
        if job not in newest or at > newest[job]:
            newest[job] = at
        key = (job, hit["recipient_id"])
        rhash = hashes.get(key)
        if rhash is None:
            if track not in modes.HASHED:
                if key[1] is not None and track is not _LATE:
                    late.append((hit, _LATE))
                continue
            rhash = builder.rhash(*key)
            if rhash is None:
                continue
            hashes[key] = rhash
        kind = hit["kind"]
        if kind == "open":
            first = opens.get(reader := (job, rhash))
            if first is None or at < first:
                opens[reader] = at
        elif kind == "click":
            clickers.add(key)
            clicks.append((job, rhash, at, hit["link"]))
        elif kind == "doc":
            readers.add(key)
    window = dt.timedelta(seconds=config.enrich.scanner_burst_seconds)
    for job, rhash, at, link in clicks:
        known.clicked.add(job)
        if at >= newest[job] - window and (found := known.link_key(link)) is not None:
            known.clicks.add((job, rhash, at, found))
    return readers, sorted(clickers)


async def earlier(conn: asyncpg.Connection, known: Known, clickers: list[Recipient]) -> None:
    """Opens and recent clicks of the batch's clickers that earlier batches rolled up."""
    if not clickers:
        return
    by_hash = {(job, known.hashes[(job, rid)]): (job, rid) for job, rid in clickers}
    jobs: defaultdict[int, list[bytes]] = defaultdict(list)
    for job, rhash in by_hash:
        jobs[job].append(rhash)
    for job, hashes in sorted(jobs.items()):
        for r in await conn.fetch(OPENERS, job, hashes):
            known.outside[by_hash[(job, bytes(r["hash"]))]].opens.append(r["first_open"])
        for r in await conn.fetch(RECENT, job, hashes):
            known.outside[by_hash[(job, bytes(r["hash"]))]].clicks.append((r["at"], r["link_key"]))


async def later(
    conn: asyncpg.Connection,
    known: Known,
    claimed_ids: Callable[[], set[Any]],
    clickers: list[Recipient],
    readers: set[Recipient],
    enricher: Enriching,
    config: AggregatorConfig,
) -> None:
    """Unclaimed hits of the batch's clickers and readers, up to ``look_ahead`` after each job's newest.

    ``claimed_ids``: the ids of the batch's hits (at least those of each job's newest instant), asked for
    only when a hit found is of such an instant.
    """
    claimed: set[Any] | None = None
    wanted: defaultdict[int, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for job, rid in clickers:
        wanted[job][0].append(rid)
    for job, rid in sorted(readers):
        wanted[job][1].append(rid)
    docs: list[Mapping[str, Any]] = []
    ahead, burst = look_ahead(config), dt.timedelta(seconds=config.enrich.scanner_burst_seconds)
    preload = dt.timedelta(seconds=BURST_SECONDS)
    for job, (clicking, reading) in sorted(wanted.items()):
        newest = known.newest[job]
        args = clicking, newest, newest + ahead, reading, newest + burst, newest + preload
        for hit in await conn.fetch(AHEAD, job, *args):
            # Of the hits found, only those of the job's newest instant can be the batch's own.
            if hit["received_at"] == newest:
                claimed = claimed_ids() if claimed is None else claimed
                if hit["hit_id"] in claimed:
                    continue
            _note(known, hit, docs)
    if docs:
        for hit, parts in zip(docs, enrich_parts(enricher, docs, {}), strict=True):
            if parts[0].get("traffic") != "machine" and hit["page"] is not None:  # the client part tells
                reader = (hit["job_id"], known.hashes[(hit["job_id"], hit["recipient_id"])])
                known.views_ahead[reader].append(PageView(hit["received_at"], hit["page"]))


def _note(known: Known, hit: Mapping[str, Any], docs: list[Mapping[str, Any]]) -> None:
    """One unclaimed hit: an open or click for the rules, a page view for reading."""
    kind = hit["kind"]
    if kind == "doc":
        docs.append(hit)
    elif (outside := known.outside.get((hit["job_id"], hit["recipient_id"]))) is None:
        return
    elif kind == "open":
        outside.opens.append(hit["received_at"])
    elif (link := known.link_key(hit["link"])) is not None:
        outside.clicks.append((hit["received_at"], link))


async def save(conn: asyncpg.Connection, known: Known, config: AggregatorConfig) -> None:
    """Keep what later batches need of this one: earliest opens, and the clicks of the last W seconds."""
    if known.opens:
        rows = sorted((*k, v) for k, v in known.opens.items())
        await conn.execute(SAVE_OPENERS, *[list(col) for col in zip(*rows, strict=True)])
    if known.clicks:
        await conn.execute(SAVE_CLICKS, *[list(col) for col in zip(*sorted(known.clicks), strict=True)])
    window = dt.timedelta(seconds=config.enrich.scanner_burst_seconds)
    for job in sorted(known.clicked):
        await conn.execute(PRUNE, job, known.newest[job] - window)
