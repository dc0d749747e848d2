"""A roll-up batch on columns: the same batch rows as the per-hit path, without a Python object per hit.

The per-hit path (rollup.py with rows.py and context.py) decodes every
claimed hit into a record, enriches it from cached parts, judges it and
builds its batch row as a tuple, and encodes the row again for the COPY:
about 12 us of a hit's 20 (loadtest/RESULTS.md §19-20). Here the batch
comes from PostgreSQL as CSV (``COPY (claim) TO STDOUT``), parsed in Rust
by polars, and every step is an expression over columns; Python sees only
what is distinct in a batch, through the very functions the per-hit path
uses: each agent, address, Accept-Language and source (``run.Run``), each
(agent, kind, prefetch, address tests) verdict, each recipient's keyed
hash, each profile (``BatchBuilder.describe``), each link id. Clicks, the
one kind whose verdicts look at a recipient's other events, go through
``machine.scanner_click_indexes`` as Click tuples, and document views
through ``reading.merge_reads``: both a fraction of a batch. Unique
counting's picks (queries.SEEN_PICK) and the rows of every merge are
grouped here too; what goes back to PostgreSQL goes in COPY's binary
format, encoded from Arrow by pgpq: the rows the marking reads into
rollup_batch, the picks into seen_pick, each merge's grouped rows into a
temporary table of its own (``Staged``) that the merge's own statement
reads, where the per-hit path's reads rollup_batch.

What comes out is what the per-hit path makes, value for value (tests:
TestEngines in tests/aggregator/mail/test_batch_invariance.py draws hits and
compares every table both engines leave). Only the production ``Enricher`` goes this way; an
enricher that gives rows only (tests' stand-ins) takes the per-hit path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import io
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import polars as pl
from pgpq import ArrowToPostgresBinaryEncoder

from aggregator import claims
from aggregator.config import AggregatorConfig
from aggregator.enrich.enricher import Enricher
from aggregator.enrich.machine import BEHAVIOUR, Click, Outside, link_key, scanner_click_indexes
from aggregator.enrich.run import Run
from aggregator.mail import context, queries
from aggregator.mail import tracks as modes
from aggregator.mail.reading import READ
from aggregator.mail.rows import BATCH_COLUMNS, BatchBuilder
from aggregator.mail.who import job_keys, lookup
from pixeltrack.core import columns, timestamps

UTC = dt.UTC
_fromtimestamp = dt.datetime.fromtimestamp
EPOCH_1970 = dt.datetime(1970, 1, 1, tzinfo=UTC)
# The claim as queries.CLAIM, for a COPY to CSV: the time as microseconds since 1970 (exact, and parsed
# as a number), the id and the address as text. $1 job, $2 limit, $3 oldest and $4 newest receive time.
# The microseconds through date_part's double, rounded: its error and the product's are under 0.13 us
# each while they are under 2^52 (until 2112), so rounding gives them exactly, and it costs PostgreSQL
# 0.3 us a hit less than EXTRACT's numeric (62,483 hits: 123-125 ms against 141-144, loadtest/RESULTS.md
# §23; tests/aggregator/mail/test_claim_times.py). The order names the table's column: the output column of
# the same name is that number, and ordered by it PostgreSQL sorted the job's claimed rows (to disk past
# work_mem) where the key gives them in order (a job of 66,868 hits in psql: 140 ms against 108; the claim's
# PostgreSQL CPU 3.2 -> 2.6 us a hit; tests/aggregator/mail/test_claim_plan.py).
_CLAIMED_AS = {
    "hit_id": "hit_id::text", "received_at": "round(date_part('epoch', received_at) * 1000000)::int8",
    "client_ip": "host(client_ip)", "prefetch": "prefetch::int",
}  # fmt: skip
CLAIM = f"""
SELECT {columns.listed(queries.CLAIMED, **_CLAIMED_AS)}
FROM raw_hits WHERE job_id = $1 AND received_at BETWEEN $3 AND $4 AND rolled_at IS NULL AND kind <> 'page'
ORDER BY raw_hits.received_at LIMIT $2
"""
SCHEMA: dict[str, Any] = {
    "hit_id": pl.String, "received_at": pl.Int64, "kind": pl.String, "job_id": pl.Int64, "recipient_id": pl.Int64,
    "link": pl.String, "page": pl.Int32, "client_ip": pl.String, "user_agent": pl.String, "referer": pl.String,
    "accept_language": pl.String, "prefetch": pl.Int8, "reject_reason": pl.String,
}  # fmt: skip
assert tuple(SCHEMA) == queries.CLAIMED
# The CSV's NULL is PostgreSQL's default, an unquoted empty field, and an empty text comes quoted (""): polars
# reads the one as null and the other as "". With NULL as \N, polars took a quoted "\N" (a header, a zip that
# is that text) for null too: the columns engine saw no agent or no zip where the per-hit engine saw \N
# (test_hostile_values).
# The CSV's field separator: the ASCII unit separator, which no header or link carries but a hostile one. With
# the comma, every agent ("KHTML, like Gecko") came quoted, and polars parsed a claim of 32,819 hits in 30-37
# ms; with this one nothing is quoted but a field that holds it, 20-28 ms (loadtest/RESULTS.md §24).
SEPARATOR = "\x1f"


def at(micros: int) -> dt.datetime:
    """The datetime of microseconds since 1970, exactly (timestamps.decode's way: ``fromtimestamp`` where its
    float is exact, 1970 to 2106 on a platform that counts no leap seconds)."""
    if 0 <= micros < timestamps.FAST_DECODE:
        return _fromtimestamp(micros / 1e6, UTC)
    return EPOCH_1970 + dt.timedelta(microseconds=micros)


def micros(value: dt.datetime) -> int:
    """Microseconds since 1970 of an aware datetime, exactly."""
    return (value - EPOCH_1970) // dt.timedelta(microseconds=1)


# PostgreSQL sends a COPY's rows as its 8 kB output buffer fills, and asyncpg hands the sink each read, with a
# waiter, a task and a pause and resume of reading around it: read as fast as the server wrote, a claim came in
# 8 kB reads at about 35 us of the aggregator's CPU each (0.9 us a hit on uvloop). Waiting GATHER seconds after a
# read that may have more behind it (at least GATHERED bytes) lets the socket gather what the server writes
# meanwhile, and the next read takes it all: ten times fewer reads, 0.25 us a hit, with no more wall time (the
# server is the slower side; a full socket holds it back without CPU) and at most one wait after its last rows
# (66,868 hits: 1,794 reads -> 182, 0.87 -> 0.25 us a hit, 1.91 -> 1.74 us a hit of wall; RESULTS.md §25).
GATHER = 0.001
GATHERED = 4096


async def fetch(conn: asyncpg.Connection, sql: str, *args: Any, schema: dict[str, Any] | None = None) -> pl.DataFrame:
    """The rows of ``sql`` (CLAIM's columns, or ``schema``'s) as a frame, through a COPY to CSV."""
    schema = SCHEMA if schema is None else schema
    chunks: list[bytes] = []

    async def keep(data: bytes) -> None:
        chunks.append(bytes(data))
        if len(data) >= GATHERED:
            await asyncio.sleep(GATHER)

    await conn.copy_from_query(sql, *args, output=keep, format="csv", delimiter=SEPARATOR)
    if not chunks:
        return pl.DataFrame(schema=schema)
    return pl.read_csv(io.BytesIO(b"".join(chunks)), has_header=False, new_columns=list(schema), schema=schema,
                       quote_char='"', separator=SEPARATOR)  # fmt: skip


async def claim(conn: asyncpg.Connection, jobs: claims.Pending, limit: int, until: dt.datetime) -> pl.DataFrame:
    """claims.claim of the batch's hits as one frame, whole instants included (context.whole_instants)."""

    async def one(job: int, room: int, oldest: dt.datetime) -> pl.DataFrame:
        return await fetch(conn, CLAIM, job, room, oldest, until)

    def last_of(rows: pl.DataFrame) -> dt.datetime:
        return at(rows.item(-1, "received_at"))

    parts = await claims.claim_with(conn, jobs, one, limit, last_of, until)
    hits = pl.concat(parts) if parts else pl.DataFrame(schema=SCHEMA)
    if hits.height < limit:
        return hits
    job, newest = hits.item(-1, "job_id"), hits.item(-1, "received_at")
    tail = hits.filter((pl.col("job_id") == job) & (pl.col("received_at") == newest)).height
    if await conn.fetchval(context.AT_INSTANT, job, at(newest)) <= tail:
        return hits
    mine = pl.col("job_id") == job
    oldest = hits.filter(mine).get_column("received_at").min()  # the job's claim again, to the end of the instant
    rest = await fetch(conn, CLAIM, job, context.WHOLE, at(oldest), at(newest))  # type: ignore[arg-type]
    return pl.concat([hits.filter(~mine), rest])


def as_hits(hits: pl.DataFrame) -> list[dict[str, Any]]:
    """A claimed frame as the per-hit path's hits (what queries.CLAIM's records hold): a small batch's way there."""
    out = []
    for row in hits.iter_rows(named=True):
        row["hit_id"] = uuid.UUID(row["hit_id"])
        row["received_at"] = at(row["received_at"])
        row["prefetch"] = row["prefetch"] == 1
        out.append(row)
    return out


@dataclass
class Batch:
    """A claimed batch on columns, with what the roll-up looked up once for it."""

    hits: pl.DataFrame  # the claimed hits, with track, rhash
    who: modes.Who
    builder: BatchBuilder


# A job's ($1) recipients among ids ($2): who.lookup's statements (queries.PEOPLE, FORGOTTEN), one row a recipient
# as who.lookup keeps them (a forgotten one, with nothing else, whatever recipients still holds), with the
# consent's time in force as microseconds (the claim's way, _CLAIMED_AS), null where not given, and forgotten as
# the words polars reads (a boolean comes as t or f). Read as CSV into a frame: as records, decoded into a
# Person each and turned into rows again, they cost the aggregator about 0.2 us a hit (loadtest/RESULTS.md §25).
PEOPLE = f"""
SELECT DISTINCT ON (recipient_id) $1::int8, recipient_id,
       CASE WHEN consent THEN round(date_part('epoch', consent_changed_at) * 1000000)::int8 END,
       birth_year, gender, zip, CASE WHEN forgotten THEN 'true' ELSE 'false' END
FROM ({queries.PEOPLE}) p ORDER BY recipient_id, forgotten DESC"""
FORGOTTEN_PEOPLE = f"""
SELECT $1::int8, recipient_id, NULL::int8, NULL::int4, NULL, NULL, 'true' FROM ({queries.FORGOTTEN}) f"""
PEOPLE_SCHEMA: dict[str, Any] = {
    "job_id": pl.Int64, "recipient_id": pl.Int64, "consent_from": pl.Int64, "birth_year": pl.Int64,
    "gender": pl.String, "zip": pl.String, "forgotten": pl.Boolean,
}  # fmt: skip


async def who_of(conn: asyncpg.Connection, hits: pl.DataFrame) -> tuple[modes.Who, pl.DataFrame]:
    """rollup.who_of for a frame: the jobs (who.lookup, with no recipient), and the recipients of each as a frame
    (PEOPLE_SCHEMA), where who.lookup would look them up."""
    by_job = dict(hits.group_by("job_id").agg(pl.col("recipient_id").drop_nulls().unique()).iter_rows())
    who = await lookup(conn, dict.fromkeys(by_job, ()))
    people = [pl.DataFrame(schema=PEOPLE_SCHEMA)]
    for job, ids in sorted(by_job.items()):
        mode = who.modes.get(job)
        if mode is None or mode == "blind" or not ids:  # as who.lookup: rejected or blind whoever; no recipient
            continue
        sql = PEOPLE if mode in queries.PERSON_MODES else FORGOTTEN_PEOPLE
        people.append(await fetch(conn, sql, job, sorted(ids), schema=PEOPLE_SCHEMA))
    return who, pl.concat(people)


def with_tracks(hits: pl.DataFrame, who: modes.Who, people: pl.DataFrame) -> pl.DataFrame:
    """Each hit's track as tracks.track_of gives it, and its recipient's columns (``people``: who_of's)."""
    jobs = pl.DataFrame({"job_id": list(who.modes), "mode": list(who.modes.values())},
                        schema={"job_id": pl.Int64, "mode": pl.String})  # fmt: skip
    h = hits.join(jobs, on="job_id", how="left").join(people, on=["job_id", "recipient_id"], how="left")
    track = (
        pl.when(pl.col("reject_reason").is_not_null() | (pl.col("job_id") == 0) | pl.col("mode").is_null())
        .then(pl.lit(modes.REJECTED))
        .when((pl.col("mode") == "blind") | pl.col("recipient_id").is_null() | pl.col("forgotten").fill_null(False))
        .then(pl.lit(modes.BLIND))
        .when(pl.col("mode") == "permission_personal")
        .then(pl.when(pl.col("consent_from") <= pl.col("received_at")).then(pl.lit(modes.PERSONAL))
              .otherwise(pl.lit(modes.UNIQUE)))
        .otherwise(pl.col("mode"))
    )  # fmt: skip
    return h.with_columns(track=track)


async def judge(conn: asyncpg.Connection, hits: pl.DataFrame) -> Batch:
    """Tracks, job keys and each linked recipient's keyed hash, once a recipient.

    Each hit gets its ``position`` in the claim: joins need not keep rows in order, and the batch's steps
    that care (a reader's views of one instant, the per-hit path's order) sort by it.
    """
    who, people = await who_of(conn, hits)
    h = with_tracks(hits.with_row_index("position"), who, people)
    hashed = h.filter(pl.col("track").is_in(sorted(modes.HASHED)))
    keys = await job_keys(conn, set(hashed.get_column("job_id").unique().to_list()))
    builder = BatchBuilder(keys, who)
    pairs = hashed.select("job_id", "recipient_id").unique()
    hashes = pl.Series("rhash", [builder.rhash(job, rid) for job, rid in pairs.iter_rows()], dtype=pl.Binary)
    h = h.join(pairs.with_columns(hashes), on=["job_id", "recipient_id"], how="left").sort("position")
    return Batch(h, who, builder)


async def load_context(
    conn: asyncpg.Connection, batch: Batch, enricher: Enricher, config: AggregatorConfig
) -> tuple[context.Known, pl.DataFrame]:
    """context.load for a frame: what the rules and reading know beyond the batch, and the linked hits'
    earliest opens by (job, hash) (what ``save`` keeps)."""
    h = batch.hits
    known = context.Known()
    newest = h.group_by("job_id").agg(pl.col("received_at").max().alias("newest"))
    known.newest = {job: at(n) for job, n in newest.iter_rows()}
    # A recipient is linked by a hit of a hashed track; their other hits (a rejected one) follow.
    linked_ids = h.filter(pl.col("rhash").is_not_null()).select("job_id", "recipient_id", "rhash").unique()
    linked = h.select("job_id", "recipient_id", "kind", "received_at", "link").join(
        linked_ids, on=["job_id", "recipient_id"], how="inner")
    opens = (linked.filter(pl.col("kind") == "open").group_by("job_id", "rhash")
             .agg(pl.col("received_at").min().alias("first_open")).sort("job_id", "rhash"))  # fmt: skip
    clicks = linked.filter(pl.col("kind") == "click")
    clickers = sorted(clicks.select("job_id", "recipient_id").unique().iter_rows())
    readers = set(linked.filter(pl.col("kind") == "doc").select("job_id", "recipient_id").unique().iter_rows())
    wanted = set(clickers) | readers
    if wanted:
        for job, rid, rhash in linked_ids.iter_rows():
            if (job, rid) in wanted:
                known.hashes[(job, rid)] = rhash
    window = dt.timedelta(seconds=config.enrich.scanner_burst_seconds) // dt.timedelta(microseconds=1)
    known.clicked.update(clicks.get_column("job_id").unique().to_list())
    recent = clicks.join(newest, on="job_id").filter(pl.col("received_at") >= pl.col("newest") - window)
    for job, rhash, when, link in recent.select("job_id", "rhash", "received_at", "link").iter_rows():
        if (found := known.link_key(link)) is not None:
            known.clicks.add((job, rhash, at(when), found))
    if clickers or readers:
        known.outside = {key: Outside() for key in clickers}
        await context.earlier(conn, known, clickers)
        own = h.filter(pl.col("received_at") == pl.col("job_id").replace_strict(
            newest.get_column("job_id"), newest.get_column("newest"), return_dtype=pl.Int64))  # fmt: skip
        claimed = {uuid.UUID(hit_id) for hit_id in own.get_column("hit_id").to_list()}
        await context.later(conn, known, lambda: claimed, clickers, readers, enricher, config)
    return known, opens


async def save_context(conn: asyncpg.Connection, known: context.Known, opens: pl.DataFrame,
                       config: AggregatorConfig) -> None:  # fmt: skip
    """context.save with the earliest opens as a frame."""
    await STAGED["openers"].run(conn, opens.select("job_id", "rhash", "first_open"))
    await context.save(conn, known, config)


# Columns of the claimed hits that the batch rows do not read (enrich drops them once it is done).
DONE_WITH = ("user_agent", "referer", "accept_language", "client_ip", "prefetch", "apple", "scanner", "reason",
             "consent_from", "forgotten")  # fmt: skip


@dataclass
class Enriched:
    """The batch's hits with their parts by number: ``client`` (into ``clients``), ``geo`` (into ``geos``),
    ``lang``, ``source`` (into ``sources``) and ``masked``, as run.Run.parts gives each hit its parts."""

    hits: pl.DataFrame
    clients: list[dict[str, Any]]
    geos: list[dict[str, Any]]
    sources: list[dict[str, Any]]


def numbered(table: list[dict[str, Any]], index: dict[int, int], part: dict[str, Any]) -> int:
    """The number of ``part`` in ``table`` (by identity: equal parts are one object within a run)."""
    number = index.get(id(part))
    if number is None:
        number = index[id(part)] = len(table)
        table.append(part)
    return number


def enrich(batch: Batch, enricher: Enricher, known: context.Known, config: AggregatorConfig) -> Enriched:
    """run.Run.parts on columns: each distinct value worked out once, clicks judged as Click tuples."""
    run = Run(enricher)
    h = batch.hits
    clients: list[dict[str, Any]] = []
    geos: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    ids: dict[int, int] = {}
    agents = {text: run.agent(text) for text in h.get_column("user_agent").unique().to_list()}
    spots = []
    for raw in h.get_column("client_ip").unique().to_list():
        geo, masked, apple, scanner = run.spot(raw)
        spots.append((raw, numbered(geos, ids, geo), masked, apple, scanner))
    spot_frame = pl.DataFrame(spots, orient="row", schema={
        "client_ip": pl.String, "geo": pl.Int64, "masked": pl.String, "apple": pl.Boolean,
        "scanner": pl.Boolean})  # fmt: skip
    headers = h.get_column("accept_language").unique().to_list()
    lang_frame = pl.DataFrame({"accept_language": headers, "lang": [run.language(t) for t in headers]},
                              schema={"accept_language": pl.String, "lang": pl.String})  # fmt: skip
    found = []
    for kind, link, referer in h.select("kind", "link", "referer").unique().iter_rows():
        part = run.source({"kind": kind, "url": None, "link": link, "referer": referer}, kind)
        found.append((kind, link, referer, numbered(sources, ids, part)))
    source_frame = pl.DataFrame(found, orient="row", schema={
        "kind": pl.String, "link": pl.String, "referer": pl.String, "source": pl.Int64})  # fmt: skip
    h = (
        h.join(spot_frame, on="client_ip", how="left", nulls_equal=True)
        .join(lang_frame, on="accept_language", how="left", nulls_equal=True)
        .join(source_frame, on=["kind", "link", "referer"], how="left", nulls_equal=True)
    )
    combos = ["user_agent", "kind", "prefetch", "apple", "scanner"]
    verdicts = {}
    judged = []
    for text, kind, prefetch, apple, scanner in h.select(combos).unique().iter_rows():
        hit = {"kind": kind, "prefetch": prefetch == 1}
        verdicts[(text, kind, prefetch, apple, scanner)] = found_ = run.verdict(agents[text], hit, kind, apple, scanner)
        judged.append((text, kind, prefetch, apple, scanner, numbered(clients, ids, found_[1]), found_[0]))
    verdict_frame = pl.DataFrame(judged, orient="row", schema={
        **{n: h.schema[n] for n in combos}, "client": pl.Int64, "reason": pl.String})  # fmt: skip
    h = h.join(verdict_frame, on=combos, how="left", nulls_equal=True).sort("position")
    enriched = Enriched(h, clients, geos, sources)
    enriched = judge_clicks(enriched, run, agents, batch.who, known, config, ids)
    # What the rows need no more: the headers, above all, are most of a batch's bytes.
    enriched.hits = enriched.hits.drop(DONE_WITH)
    return enriched


def judge_clicks(
    enriched: Enriched, run: Run, agents: dict[Any, Any], who: modes.Who,
    known: context.Known, config: AggregatorConfig, ids: dict[int, int],
) -> Enriched:
    """The behavioural rules over the batch's clicks, as run.Run.parts applies them; a flagged click whose agent
    and address told nothing gets the scanner's client part.

    The send-time rule and the open rule are expressions over the clicks (the open rule over those of the
    recipients the context links, ``known.outside``); the burst rule goes through machine.scanner_click_indexes,
    for the clicks of the linked recipients with as many distinct links as a burst needs, counting their clicks
    outside the batch.
    """
    h = enriched.hits
    # What the rules read of a click: selected before filtering, so that no other column is copied.
    clicks = h.select("position", "kind", "job_id", "recipient_id", "received_at", "user_agent", "link", "lang",
                      "reason").filter(pl.col("kind") == "click")  # fmt: skip
    if not clicks.height:
        return enriched
    rules = config.enrich
    texts = clicks.get_column("user_agent").unique().to_list()
    agent_frame = pl.DataFrame({"user_agent": texts, "browser_like": [agents[t][0].browser_like for t in texts]},
                               schema={"user_agent": pl.String, "browser_like": pl.Boolean})  # fmt: skip
    links = clicks.get_column("link").unique().to_list()
    link_frame = pl.DataFrame({"link": links, "link_key": [_link_key(run, u) for u in links]},
                              schema={"link": pl.String, "link_key": pl.Int64})  # fmt: skip
    sent = pl.DataFrame({"job_id": list(who.sent), "sent": [None if v is None else micros(v)
                                                             for v in who.sent.values()]},
                        schema={"job_id": pl.Int64, "sent": pl.Int64})  # fmt: skip
    seconds = (pl.col("received_at") - pl.col("sent")) / 1e6
    clicks = (
        clicks.join(agent_frame, on="user_agent", how="left", nulls_equal=True)
        .join(link_frame, on="link", how="left", nulls_equal=True)
        .join(sent, on="job_id", how="left")
        .with_columns(lacks=~pl.col("browser_like") | pl.col("lang").is_null(),
                      early=pl.col("sent").is_not_null() & (seconds >= 0) & (seconds <= rules.scanner_send_seconds))
    )  # fmt: skip
    flagged: set[int] = set(clicks.filter("early").get_column("position").to_list())
    outside = [(job, rid, len(o.clicks), *_first_open(o.opens)) for (job, rid), o in known.outside.items()]
    if outside:
        linked = pl.DataFrame(outside, orient="row", schema={
            "job_id": pl.Int64, "recipient_id": pl.Int64, "outside_clicks": pl.Int64, "outside_open": pl.Int64,
            "unknown_open": pl.Boolean})  # fmt: skip
        mine = clicks.join(linked, on=["job_id", "recipient_id"], how="inner")
        # The open rule (machine.group_clicks): a click that lacks a browser is a scanner's unless one of its
        # recipient's opens, in the batch or outside it, came by scanner_open_ahead seconds after it (an open of
        # unknown time counts as in time). An expression: in Python, each such recipient's clicks and opens were
        # made objects (judge_clicks was about a tenth of the aggregator's py-spy samples, half of them after it
        # became this; loadtest/RESULTS.md §26).
        ahead = dt.timedelta(seconds=rules.scanner_open_ahead) // dt.timedelta(microseconds=1)
        opens = (h.select("job_id", "recipient_id", "kind", "received_at").filter(pl.col("kind") == "open")
                 .group_by("job_id", "recipient_id").agg(pl.col("received_at").min().alias("batch_open")))  # fmt: skip
        limit = pl.col("received_at") + ahead
        in_time = (pl.col("unknown_open") | (pl.col("batch_open") <= limit).fill_null(False)
                   | (pl.col("outside_open") <= limit).fill_null(False))  # fmt: skip
        lacking = mine.filter("lacks").join(opens, on=["job_id", "recipient_id"], how="left")
        flagged.update(lacking.filter(~in_time).get_column("position").to_list())
        # The burst rule, through machine.scanner_click_indexes (its open rule given no click that lacks a
        # browser), for the recipients with as many links as a burst needs, their clicks outside the batch
        # counted as distinct links.
        groups = (
            mine.group_by("job_id", "recipient_id")
            .agg((pl.col("link_key").n_unique() + pl.col("outside_clicks").first()).alias("links"))
            .filter(pl.col("links") >= rules.scanner_burst_links)
            .select("job_id", "recipient_id")
        )  # fmt: skip
        judged = mine.join(groups, on=["job_id", "recipient_id"], how="semi").sort("position")
        judged = judged.select("position", "job_id", "recipient_id", "link_key", "received_at")
        found = [Click(position, job, rid, key, at(when), False, None, None)
                 for position, job, rid, key, when in judged.iter_rows()]  # fmt: skip
        flagged.update(c.position for c in scanner_click_indexes(found, {}, {}, rules, known.outside))
    if not flagged:
        return enriched
    scanned = clicks.filter(pl.col("position").is_in(sorted(flagged)) & pl.col("reason").is_null())
    texts = scanned.get_column("user_agent").unique().to_list()
    scanner = pl.DataFrame(
        {"user_agent": texts,
         "flagged": [numbered(enriched.clients, ids, run.client_part(agents[t], "scanner", BEHAVIOUR)) for t in texts]},
        schema={"user_agent": pl.String, "flagged": pl.Int64})  # fmt: skip
    fix = scanned.select("position", "user_agent").join(scanner, on="user_agent", how="left", nulls_equal=True)
    h = h.join(fix.select("position", "flagged"), on="position", how="left")
    enriched.hits = h.with_columns(client=pl.coalesce("flagged", "client")).drop("flagged").sort("position")
    return enriched


def _first_open(opens: Sequence[dt.datetime | None]) -> tuple[int | None, bool]:
    """The earliest of a recipient's opens outside the batch in microseconds (None: none), and whether one came at
    an unknown time."""
    known = []
    for opened in opens:
        # None, or a naive time (which cannot be compared): machine.opened_in_time counts it as in time.
        with contextlib.suppress(TypeError):
            known.append(micros(opened))  # type: ignore[arg-type]
    return (min(known) if known else None), len(known) < len(opens)


def _link_key(run: Run, link: Any) -> int | None:
    """machine.link_key of a clicked link, kept in the run's table as run.Run.click keeps it."""
    key = link_key(link)
    if type(link) is str:
        run.links[link] = key
    return key


def cells(h: pl.DataFrame) -> pl.DataFrame:
    """The anonymous hits' demographic cells (tracks.cell_of): the age band of the hit's year, gender and zip
    cleaned once a distinct value."""
    anonymous = h.filter(pl.col("track") == modes.ANONYMOUS)
    genders = anonymous.get_column("gender").unique().to_list()
    zips = anonymous.get_column("zip").unique().to_list()
    def cell(**person: Any) -> tuple[str, str, str]:
        return modes.cell_of({"received_at": EPOCH_1970}, modes.NOBODY._replace(**person))

    gender_frame = pl.DataFrame({"gender": genders, "cell_gender": [cell(gender=g)[1] for g in genders]},
                                schema={"gender": pl.String, "cell_gender": pl.String})  # fmt: skip
    zip_frame = pl.DataFrame({"zip": zips, "cell_zip": [cell(zip=z)[2] for z in zips]},
                             schema={"zip": pl.String, "cell_zip": pl.String})  # fmt: skip
    age = pl.from_epoch("received_at", time_unit="us").dt.year().cast(pl.Int64) - pl.col("birth_year")
    band: Any = pl.when(pl.col("birth_year").is_null()).then(pl.lit(modes.UNKNOWN))
    for limit, name in modes.AGE_BANDS:
        band = band.when(age < limit).then(pl.lit(name))
    return (
        h.join(gender_frame, on="gender", how="left", nulls_equal=True)
        .join(zip_frame, on="zip", how="left", nulls_equal=True)
        .with_columns(age_band=band.otherwise(pl.lit("65+")))
        .sort("position")
    )


def batch_rows(enriched: Enriched, batch: Batch) -> tuple[pl.DataFrame, list[tuple[Any, ...]]]:
    """The rollup_batch rows (BATCH_COLUMNS, then the hit's page and recipient for reading) as a frame, and the
    rollup_profile rows."""
    builder = batch.builder
    h = enriched.hits
    profiles = []
    for track, client, geo, lang, source in h.select("track", "client", "geo", "lang", "source").unique().iter_rows():
        parts = (enriched.clients[client], enriched.geos[geo], lang, enriched.sources[source], None)
        profiles.append((track, client, geo, lang, source, *builder.describe(track, parts)))
    profile_frame = pl.DataFrame(profiles, orient="row", schema={
        "track": pl.String, "client": pl.Int64, "geo": pl.Int64, "lang": pl.String, "source": pl.Int64,
        "profile": pl.Int32, "machine": pl.Boolean, "unknown": pl.Boolean, "family": pl.String})  # fmt: skip
    links = h.filter(pl.col("kind") == "click").get_column("link").unique().drop_nulls().to_list()
    link_frame = pl.DataFrame({"link": links, "link_id": [builder.link_id(u) for u in links]},
                              schema={"link": pl.String, "link_id": pl.Int64})  # fmt: skip
    h = cells(h.join(profile_frame, on=["track", "client", "geo", "lang", "source"], how="left", nulls_equal=True)
              .join(link_frame, on="link", how="left"))  # fmt: skip
    personal = pl.col("track") == modes.PERSONAL
    anonymous = pl.col("track") == modes.ANONYMOUS
    rejected = pl.col("track") == modes.REJECTED
    kept_link = (pl.col("kind") == "click") & ~rejected
    unknown_job = pl.when(pl.col("mode").is_null()).then(pl.lit("unknown_job"))
    out = h.select(
        "hit_id",
        pl.from_epoch("received_at", time_unit="us").dt.replace_time_zone("UTC").alias("received_at"),
        "job_id", "kind", "track", "machine", "unknown", "family",
        pl.when(personal).then(pl.col("recipient_id")).alias("recipient_id"),
        pl.when(pl.col("track").is_in(sorted(modes.HASHED))).then(pl.col("rhash")).alias("rhash"),
        pl.when(kept_link).then(pl.col("link_id")).alias("link_id"),
        pl.when(kept_link).then(pl.col("link")).alias("link"),
        pl.when(rejected).then(pl.coalesce(pl.col("reject_reason"), unknown_job)).alias("reason"),
        pl.when(anonymous).then(pl.col("age_band")).alias("age_band"),
        pl.when(anonymous).then(pl.col("cell_gender")).alias("gender"),
        pl.when(anonymous).then(pl.col("cell_zip")).alias("zip"),
        "profile",
        pl.when(personal).then(pl.col("masked")).alias("client_ip"),
        pl.col("page").alias("_page"),
        pl.col("recipient_id").alias("_recipient"),
    )  # fmt: skip
    assert tuple(out.columns[: len(BATCH_COLUMNS)]) == BATCH_COLUMNS
    return out, builder.profile_rows()


# What of a batch row the marking reads (queries.MARK_ROLLED, DROP_ROLLED, ANALYZE_BATCH): nothing else reads
# rollup_batch on columns (merge_grouped, picks and after_seen group the frame), so only these go in.
MARKED = ("hit_id", "received_at", "job_id", "track", "recipient_id", "profile", *queries.STORED_INLINE)


async def copy_rows(conn: asyncpg.Connection, rows: pl.DataFrame, whole: Mapping[int, claims.Whole]) -> None:
    """What the marking reads of the batch rows into rollup_batch, but those of the jobs in ``whole`` (deleted by
    span, ``claims.Whole``). A uuid's binary form is its 16 bytes, as a bytea's is its bytes: the id goes as
    those."""
    rows = rows.select(MARKED)
    if whole:
        rows = rows.filter(~pl.col("job_id").is_in(list(whole)))
    table = rows.with_columns(pl.col("hit_id").str.replace_all("-", "", literal=True).str.decode("hex"))
    await copy_frame(conn, "rollup_batch", table)


@functools.cache
def warm() -> None:
    """Export a frame to Arrow once: a process's first export costs polars about 22-25 ms whatever its size (a
    tiny frame as much as a batch's 110,000 rows, whose next exports take 2-5 ms), paid where a run starts
    (rollup.rollup, an empty run as well) instead of in its first batch's COPY (loadtest/RESULTS.md §26)."""
    pl.DataFrame({"warm": [1]}).to_arrow()


async def copy_frame(conn: asyncpg.Connection, table: str, frame: pl.DataFrame) -> None:
    """``frame`` into ``table`` (its columns by name) in COPY's binary format, encoded from Arrow by pgpq (Rust):
    PostgreSQL parses a row of it in about half what a CSV row costs (loadtest/RESULTS.md §20)."""
    arrow = frame.to_arrow()
    encoder = ArrowToPostgresBinaryEncoder(arrow.schema)
    data = bytearray(encoder.write_header())
    for chunk in arrow.to_batches():
        data += encoder.write_batch(chunk)
    data += encoder.finish()
    await conn.copy_to_table(table, source=io.BytesIO(data), columns=frame.columns, format="binary")


def spans(hits: pl.DataFrame) -> dict[int, claims.Span]:
    """claims.spans of a frame."""
    got = hits.group_by("job_id").agg(pl.len(), pl.col("received_at").min().alias("first"),
                                      pl.col("received_at").max().alias("last"))  # fmt: skip
    return {job: claims.Span(n, at(first), at(last)) for job, n, first, last in got.iter_rows()}


def whole(
    hits: pl.DataFrame, dropped: Mapping[int, int], spanned: Mapping[int, claims.Span]
) -> dict[int, claims.Whole]:
    """claims.whole of a frame."""

    def keys(job: int) -> tuple[list[Any], list[dt.datetime]]:
        mine = hits.filter(pl.col("job_id") == job)
        return mine.get_column("hit_id").to_list(), [at(m) for m in mine.get_column("received_at").to_list()]

    return claims.whole(dropped, spanned, keys)


def dropped(hits: pl.DataFrame) -> dict[int, int]:
    """How many of each job's hits are on a track that keeps nothing per hit."""
    got = hits.filter(pl.col("track").is_in(sorted(modes.ROWLESS))).group_by("job_id").len()
    return dict(got.iter_rows())


def kept(hits: pl.DataFrame) -> dict[int, frozenset[str]]:
    """The tracks of each job's hits that keep a row (rollup.merge_copied)."""
    got = hits.filter(~pl.col("track").is_in(sorted(modes.ROWLESS))).group_by("job_id").agg(pl.col("track").unique())
    return {job: frozenset(tracks) for job, tracks in got.iter_rows()}


def documents(rows: pl.DataFrame) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """The batch's document views that reading.merge_reads counts (a page, not a machine's, not refused) as hits and
    batch rows, in batch order. A row holds only the columns merge_reads reads (reading.READ), the rest None: made
    whole, the rows cost about 5 us a view (their ids, links and times made Python objects; §26)."""
    views = rows.select("_page", "_recipient", *READ).filter(
        (pl.col("kind") == "doc") & pl.col("_page").is_not_null() & ~pl.col("machine").fill_null(False)
        & pl.col("track").ne_missing(modes.REJECTED))  # fmt: skip
    hits = [{"page": page, "recipient_id": rid} for page, rid in views.select("_page", "_recipient").iter_rows()]
    kept = [pl.col(name) if name in READ else pl.lit(None).alias(name) for name in BATCH_COLUMNS]
    return hits, list(views.select(kept).iter_rows())


# What a statement of the columns engine sends in rows: a temporary table of its own, filled by COPY in
# binary from a frame (copy_frame), that the statement reads where the per-hit path's reads the batch. Sent as
# unnest arrays instead, asyncpg encoded them element by element in Python (an isinstance check each): 432,931
# checks, and with the rest of their encoding 0.3 s of a 131,708-hit roll-up's 1.6 s of CPU (loadtest/RESULTS.md §21).
PG_TYPES: dict[str, Any] = {
    "bigint": pl.Int64, "integer": pl.Int32, "text": pl.String, "bytea": pl.Binary,
    "timestamptz": pl.Datetime("us", "UTC"),
}  # fmt: skip


@dataclass(frozen=True)
class Staged:
    """A statement (``sql``) whose rows come from the temporary table ``table`` of ``columns`` (name: type)."""

    table: str
    columns: dict[str, str]
    sql: str

    @property
    def create(self) -> str:
        typed = ", ".join(f'"{name}" {kind}' for name, kind in self.columns.items())
        return f"CREATE TEMP TABLE IF NOT EXISTS {self.table} ({typed}) ON COMMIT DELETE ROWS"

    async def fill(self, conn: asyncpg.Connection, frame: pl.DataFrame) -> None:
        """``frame``'s rows into the table, its columns taken in order as the table's."""
        if frame.height:
            await copy_frame(conn, self.table, frame.select(
                pl.col(c).cast(PG_TYPES[kind]).alias(name)
                for c, (name, kind) in zip(frame.columns, self.columns.items(), strict=True)))  # fmt: skip

    async def run(self, conn: asyncpg.Connection, frame: pl.DataFrame) -> None:
        """The statement over ``frame``'s rows (none: nothing to run)."""
        if frame.height:
            await self.fill(conn, frame)
            await conn.execute(self.sql)


def _in_place(sql: str, part: str, by: str) -> str:
    assert sql.count(part) == 1, part
    return sql.replace(part, by)


def _inserted(name: str, sql: str, types: tuple[str, ...]) -> Staged:
    """``sql``, an INSERT ... SELECT ... ON CONFLICT, inserting the rows of a table of its own instead."""
    head, tail = sql[: sql.index("\nSELECT")], sql[sql.index("ON CONFLICT") :]
    names = [n.strip() for n in head[head.index("(") + 1 : head.index(")")].split(",")]
    table = f"stage_{name}"
    return Staged(table, dict(zip(names, types, strict=True)), f"{head}\nSELECT * FROM {table}\n{tail}")


# The merges whose rows come from the batch's rows alone (not unique counting): grouped here (grouped), each
# the statement's own INSERT and ON CONFLICT around its table (loadtest/RESULTS.md §20: the grouping a merge
# makes over every batch row is most of its cost). The others read seen_delta too (AFTER_SEEN).
_TEXTS = ("text",) * 7
GROUPED_MERGES = {
    "hourly": _inserted("hourly", queries.MERGE_HOURLY, ("bigint", "timestamptz", "text", "bigint", "bigint",
                                                         "bigint")),
    "breakdowns": _inserted("breakdowns", queries.MERGE_BREAKDOWNS, ("bigint", "text", *_TEXTS, "bigint")),
    "machine": _inserted("machine", queries.MERGE_MACHINE, ("bigint", "text", "text", "text", "bigint")),
    "rejected": _inserted("rejected", queries.MERGE_REJECTED, ("bigint", "timestamptz", "text", "text", "bigint")),
    "recipients": _inserted("recipients", queries.MERGE_RECIPIENTS, ("bigint", "bigint", *("bigint",) * 6,
                                                                     *("timestamptz",) * 4)),
    "recipient_links": _inserted("recipient_links", queries.MERGE_RECIPIENT_LINKS,
                                 ("bigint",) * 6 + ("timestamptz",) * 2),
}  # fmt: skip
BREAKDOWN = ("traffic", "machine_reason", "device_class", "os", "browser", "mail_client", "country")


def count(where: pl.Expr, machine: bool | None = None) -> pl.Expr:
    """count(*) FILTER (WHERE ``where`` [AND machine / AND NOT machine]), as a bigint."""
    if machine is not None:
        where = where & (pl.col("machine") if machine else ~pl.col("machine"))
    return where.sum().cast(pl.Int64)


def at_of(where: pl.Expr, way: str) -> pl.Expr:
    """min or max (``way``) of received_at FILTER (WHERE ``where``): null when no row is."""
    times = pl.col("received_at").filter(where)
    return times.min() if way == "min" else times.max()


# What grouped, picks and after_seen read of the batch's rows (BATCH_COLUMNS, then the page and recipient for
# reading), each selected before it filters: a filter copies every column it is given, and the batch's rows carry
# ids, links, hashes and cells these do not read (a 204,698-hit batch's rows filtered whole: about 0.2 us a hit of
# the aggregator's CPU more; loadtest/RESULTS.md §26).
GROUPED_READS = ("job_id", "received_at", "kind", "track", "machine", "unknown", "profile", "family", "recipient_id",
                 "link_id", "reason")  # fmt: skip
PICKS_READS = ("job_id", "link_id", "rhash", "kind", "track", "machine", "unknown")
AFTER_SEEN_READS = ("job_id", "kind", "track", "machine", "unknown", "link_id", "link", "age_band", "gender", "zip",
                    "rhash")  # fmt: skip


def grouped(rows: pl.DataFrame, profiles: list[tuple[Any, ...]]) -> dict[str, pl.DataFrame]:
    """The rows of GROUPED_MERGES' statements, in their columns' order, each sorted by its key (as the SQL's ORDER
    BY inserts them): what queries.MERGE_HOURLY, MERGE_BREAKDOWNS, MERGE_MACHINE, MERGE_REJECTED,
    MERGE_RECIPIENTS and MERGE_RECIPIENT_LINKS group."""
    place = {name: 1 + columns.ENRICHED.index(name) for name in BREAKDOWN}  # a profile row: (number, *ENRICHED)
    rows = rows.select(GROUPED_READS)  # before the filters below, which copy every column they are given
    profile = pl.DataFrame([(p[0], *(p[place[n]] for n in BREAKDOWN)) for p in profiles], orient="row",
                           schema={"profile": pl.Int32, **dict.fromkeys(BREAKDOWN, pl.String)})  # fmt: skip
    counted = rows.filter(pl.col("track") != modes.REJECTED)
    rejected = rows.filter(pl.col("track") == modes.REJECTED)
    hour = pl.col("received_at").dt.truncate("1h").alias("hour")
    flags = (pl.len().cast(pl.Int64), pl.col("machine").sum().cast(pl.Int64), pl.col("unknown").sum().cast(pl.Int64))
    hits = pl.len().cast(pl.Int64).alias("hits")
    personal = rows.filter(pl.col("track") == modes.PERSONAL)
    opens, clicks = pl.col("kind") == "open", pl.col("kind") == "click"
    # Counted by profile number first (integer keys), then by the profile's columns: a batch holds a few thousand
    # profiles, so the strings are grouped over those rows, not over every hit (about 0.06 us a hit less).
    summed = pl.col("hits").sum()
    described = counted.group_by("job_id", "kind", "profile").agg(hits).join(profile, on="profile", how="left")
    machines = counted.filter("machine").group_by("job_id", "kind", "profile", "family").agg(hits).join(
        profile.select("profile", "machine_reason"), on="profile", how="left")
    keys = ("job_id", "kind", *BREAKDOWN)
    return {
        "hourly": counted.group_by("job_id", hour, "kind").agg(*flags).sort("job_id", "hour", "kind"),
        "breakdowns": described.with_columns(pl.col(BREAKDOWN).fill_null("")).group_by(keys).agg(summed).sort(keys),
        "machine": machines.group_by(
            "job_id", "kind", pl.col("machine_reason").fill_null("unknown"), pl.col("family").fill_null("")
        ).agg(summed).sort("job_id", "kind", "machine_reason", "family"),
        "rejected": rejected.group_by("job_id", hour, "kind", pl.col("reason").fill_null("unknown")).agg(hits).sort(
            "job_id", "hour", "kind", "reason"),
        "recipients": personal.group_by("job_id", "recipient_id").agg(
            count(opens, False).alias("opens"), count(opens, True).alias("machine_opens"),
            count(clicks, False).alias("clicks"), count(clicks, True).alias("machine_clicks"),
            count(opens & pl.col("unknown")).alias("unknown_opens"),
            count(clicks & pl.col("unknown")).alias("unknown_clicks"),
            at_of(opens & ~pl.col("machine"), "min").alias("first_open"),
            at_of(opens & ~pl.col("machine"), "max").alias("last_open"),
            at_of(clicks & ~pl.col("machine"), "min").alias("first_click"),
            at_of(clicks & ~pl.col("machine"), "max").alias("last_click"),
        ).sort("job_id", "recipient_id"),
        "recipient_links": personal.filter(clicks & pl.col("link_id").is_not_null()).group_by(
            "job_id", "recipient_id", "link_id").agg(
            count(~pl.col("machine")).alias("clicks"), count(pl.col("machine")).alias("machine"),
            count(pl.col("unknown")).alias("unknown"),
            at_of(~pl.col("machine"), "min").alias("first_click"), at_of(~pl.col("machine"), "max").alias("last_click"),
        ).sort("job_id", "recipient_id", "link_id"),
    }  # fmt: skip


async def merge_grouped(conn: asyncpg.Connection, rows: pl.DataFrame, profiles: list[tuple[Any, ...]],
                        add: Callable[[str, float], float], t: float) -> float:  # fmt: skip
    """GROUPED_MERGES from the batch's rows, each statement's time to its stage (``add``: rollup.RunStats.add)."""
    for name, frame in grouped(rows, profiles).items():
        await GROUPED_MERGES[name].run(conn, frame)
        t = add(f"merge_{name}", t)
    return t


# ------------------------------------------------------------- unique counting --
def _weighted(bits: pl.Expr) -> pl.Expr:
    """queries.SEEN_PICK's bits times a hit's weight: 0 for a machine's, 1 for an unknown agent's, 1 + RECOGNISED
    for a recognised one's."""
    weight = pl.when("machine").then(0).when("unknown").then(1).otherwise(1 + queries.RECOGNISED)
    return (bits * weight).cast(pl.Int32)


def picks(rows: pl.DataFrame) -> pl.DataFrame:
    """queries.SEEN_PICK's rows (seen_pick: job_id, link_id, hash, scopes, inferred) from the batch's rows."""
    kind = pl.col("kind")
    any_bit = pl.when(pl.col("track") == modes.ANONYMOUS).then(queries.ANY).otherwise(0).cast(pl.Int32)
    def bits(click: int) -> pl.Expr:
        return pl.when(kind == "open").then(queries.OPEN).when(kind == "click").then(click).when(
            kind == "doc").then(queries.DOC).otherwise(0)  # fmt: skip

    seen, plain = bits(queries.CLICK | queries.OPEN), bits(queries.CLICK)  # a click is an (inferred) open too
    hashed = rows.select(PICKS_READS).filter(pl.col("rhash").is_not_null())
    link = _weighted(pl.lit(queries.LINK))
    scoped = pl.concat([
        hashed.select("job_id", pl.lit(0, pl.Int64).alias("link_id"), pl.col("rhash").alias("hash"),
                      (_weighted(seen) | any_bit).alias("scopes"), (_weighted(plain) | any_bit).alias("plain")),
        hashed.filter((kind == "click") & ~pl.col("machine")).select(
            "job_id", "link_id", pl.col("rhash").alias("hash"), link.alias("scopes"), link.alias("plain")),
    ])  # fmt: skip
    return (
        scoped.filter(pl.col("scopes") != 0)
        .group_by("job_id", "link_id", "hash")
        .agg(pl.col("scopes").bitwise_or(), pl.col("plain").bitwise_or())
        .select("job_id", "link_id", "hash", "scopes", (pl.col("scopes") & ~pl.col("plain")).alias("inferred"))
    )


# The merges that read unique counting's seen_delta as well as the batch's rows: the batch's part of each
# (queries.TOTALS_OF_BATCH, ...) grouped here (after_seen) into a table of its own, the statement's seen_delta
# part as it is.
_OF_BATCH_TYPES = {
    "totals": {"job_id": "bigint", "kind": "text", "total": "bigint", "machine": "bigint", "unknown": "bigint"},
    "links": {"job_id": "bigint", "link_id": "bigint", "url": "text", "total": "bigint", "machine": "bigint",
              "unknown": "bigint"},
    "demographics": {"job_id": "bigint", "age_band": "text", "gender": "text", "zip": "text", "o": "bigint",
                     "c": "bigint", "m": "bigint", "xo": "bigint", "xc": "bigint"},
    "first_cells": {"job_id": "bigint", "rhash": "bytea", "gender": "text", "zip": "text",
                    **dict.fromkeys(("any", "open", "click", "r:open", "r:click"), "integer")},
}  # fmt: skip
# The columns of the batch's UNION branch in each statement (queries.TOTALS_OF_BATCH, ...), in order: the
# ones the table has not are zero.
_BRANCHES = {
    "totals": ("job_id", "kind", "total", "machine", "unknown", "uniq", "inferred", "uniq_r", "inferred_r"),
    "links": ("job_id", "link_id", "url", "total", "machine", "unknown", "uniq", "uniq_r"),
    "demographics": ("job_id", "age_band", "gender", "zip", "r", "o", "uo", "c", "uc", "m", "xo", "xc", "ruo", "ruc"),
}  # fmt: skip


def _of_batch(name: str) -> str:
    types = _OF_BATCH_TYPES[name]
    return f"SELECT {', '.join(n if n in types else f'0 AS {n}' for n in _BRANCHES[name])} FROM stage_{name}"


_AFTER_SEEN_SQL = {
    "totals": _in_place(queries.MERGE_TOTALS, queries.TOTALS_OF_BATCH, _of_batch("totals")),
    "links": _in_place(queries.MERGE_LINKS, queries.LINKS_OF_BATCH, _of_batch("links")),
    "demographics": _in_place(
        _in_place(queries.MERGE_DEMOGRAPHICS, queries.DEMOGRAPHICS_OF_BATCH, _of_batch("demographics")),
        queries.FIRST_CELLS_OF_BATCH, "SELECT * FROM stage_first_cells"),
    "first_cells": "",  # read by demographics' statement
}  # fmt: skip
AFTER_SEEN = {name: Staged(f"stage_{name}", types, _AFTER_SEEN_SQL[name]) for name, types in _OF_BATCH_TYPES.items()}
STAGED = {
    **GROUPED_MERGES, **AFTER_SEEN,
    "openers": Staged("stage_openers", {"job_id": "bigint", "hash": "bytea", "first_open": "timestamptz"},
                      _in_place(context.SAVE_OPENERS, "SELECT * FROM unnest($1::bigint[], $2::bytea[], "
                                "$3::timestamptz[])", "SELECT * FROM stage_openers")),
}  # fmt: skip
CREATE_STAGES = ";\n".join(staged.create for staged in STAGED.values())
# queries.FIRST_CELLS_OF_BATCH's scopes: which of an anonymous recipient's hits count in each.
_FIRST_IN = {
    "any": pl.lit(True), "open": ~pl.col("machine") & pl.col("kind").is_in(["open", "click"]),
    "click": ~pl.col("machine") & (pl.col("kind") == "click"),
    "r:open": ~pl.col("machine") & ~pl.col("unknown") & pl.col("kind").is_in(["open", "click"]),
    "r:click": ~pl.col("machine") & ~pl.col("unknown") & (pl.col("kind") == "click"),
}  # fmt: skip
assert tuple(_FIRST_IN) == tuple(_OF_BATCH_TYPES["first_cells"])[4:]


async def after_seen(conn: asyncpg.Connection, rows: pl.DataFrame) -> list[tuple[str, str]]:
    """AFTER_SEEN's tables filled; its statements (merge name, statement), to run once unique counting is
    done.

    The SQL's ``min`` of a text (a link id's URL, a recipient's gender and zip) follows the database's collation,
    polars' the bytes: the same here, as each is one value (a link id is its URL's 63-bit hash, so two URLs share
    one only by a collision; gender and zip are the recipient's, the same in every hit of theirs)."""
    rows = rows.select(AFTER_SEEN_READS)
    counted = rows.filter(pl.col("track") != modes.REJECTED)
    opens, clicks = pl.col("kind") == "open", pl.col("kind") == "click"
    anonymous = rows.filter(pl.col("track") == modes.ANONYMOUS)
    bands = pl.DataFrame({"age_band": queries.BAND_ORDER, "band": range(1, 1 + len(queries.BAND_ORDER))},
                         schema={"age_band": pl.String, "band": pl.Int32})  # fmt: skip
    flags = (pl.len().cast(pl.Int64).alias("total"), count(pl.col("machine")).alias("machine"),
             count(pl.col("unknown")).alias("unknown"))  # fmt: skip
    parts = {
        "totals": counted.group_by("job_id", "kind").agg(*flags),
        "links": counted.filter(clicks & pl.col("link_id").is_not_null()).group_by("job_id", "link_id").agg(
            pl.col("link").min().alias("url"), *flags),
        "demographics": anonymous.group_by("job_id", "age_band", "gender", "zip").agg(
            count(opens, False).alias("o"), count(clicks, False).alias("c"), count(pl.col("machine")).alias("m"),
            count(opens & pl.col("unknown")).alias("xo"), count(clicks & pl.col("unknown")).alias("xc")),
        "first_cells": anonymous.filter(pl.col("rhash").is_not_null()).join(bands, on="age_band", how="left")
        .group_by("job_id", "rhash").agg(
            pl.col("gender").min(), pl.col("zip").min(),
            *(pl.col("band").filter(where).min().alias(scope) for scope, where in _FIRST_IN.items())),
    }  # fmt: skip
    for name, frame in parts.items():
        await AFTER_SEEN[name].fill(conn, frame.select(*_OF_BATCH_TYPES[name]))
    return [(name, AFTER_SEEN[name].sql) for name in ("totals", "links", "demographics")]
