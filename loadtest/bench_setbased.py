"""What building a batch set-based would save: `python -m loadtest.bench_setbased [--duration 10] [--rounds 3]`.

The scale-out issue expects the roll-up to need "enrichment per distinct
value rather than per hit" and "grouping done by PostgreSQL in set-based
statements". Today every claimed hit comes to the aggregator, is enriched
from cached parts, judged and turned into a batch row, and goes back in a
COPY. This benchmark prices the alternative before anyone builds it: on the
same collected hits (the realistic mix of ``bench_cost``: 394 agents, 20,000
client addresses, five jobs of every mode), one batch is built both ways and
each step's CPU is split between this process and its PostgreSQL backend.

- ``today``: the product's own steps up to the batch table (claim, the
  jobs' and recipients' look-ups, tracks, context, enrichment, rows, the
  COPY of rows and profiles).
- ``set-based``, a prototype of the batch-building half only: the claim is
  an ``INSERT ... SELECT`` into a temporary table; the aggregator reads the
  batch's distinct agents, addresses, languages, sources, recipients and
  (agent, kind, prefetch, network) combinations, works each out once with
  the product's own enrichment (``run.Run``) and keyed hash, and COPYs
  them back as small tables; one ``INSERT ... SELECT`` joins the hits with
  them into the batch rows (track by a CASE on mode and consent, verdict,
  parts, hash). Clicks and document views, whose verdicts and reading time
  look at a recipient's other events, still come to the aggregator hit by
  hit and go through today's steps (their share is counted).

It leaves out what the prototype does not build (profile numbers, the
demographic cell, the click verdicts written back, the context saved for
later batches), so it is the most that set-based building could save, not a
design. Measures and prints; asserts nothing. The merges, unique counting
and the marking come after the batch table and are the same either way.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from aggregator import claims
from aggregator.config import AggregatorConfig
from aggregator.enrich.enricher import Enricher, enrich_parts, make_enricher
from aggregator.enrich.run import Run
from aggregator.mail import context, queries
from aggregator.mail import rollup as mail
from aggregator.mail import tracks as modes
from aggregator.mail.rows import BATCH_COLUMNS, PROFILE_COLUMNS
from loadtest import support
from loadtest.bench_cost import Mix, StageCPU, collect, collect_and_measure
from pixeltrack.core import db

BATCH = 100_000
Step = dict[str, list[float]]  # step -> [aggregator s, backend s] (StageCPU.cpu)

TABLES = """
CREATE TEMP TABLE claimed (hit_id uuid, received_at timestamptz, kind text, job_id bigint, recipient_id bigint,
    link text, page integer, client_ip text, user_agent text, referer text, accept_language text,
    prefetch boolean, reject_reason text) ON COMMIT DROP;
CREATE TEMP TABLE d_agent (user_agent text, agent integer) ON COMMIT DROP;
CREATE TEMP TABLE d_spot (client_ip text, place integer, masked text, apple boolean, scanner boolean) ON COMMIT DROP;
CREATE TEMP TABLE d_lang (accept_language text, lang text) ON COMMIT DROP;
CREATE TEMP TABLE d_source (kind text, link text, referer text, source integer) ON COMMIT DROP;
CREATE TEMP TABLE d_person (job_id bigint, recipient_id bigint, rhash bytea, consent_from timestamptz,
    forgotten boolean) ON COMMIT DROP;
CREATE TEMP TABLE d_verdict (agent integer, kind text, prefetch boolean, apple boolean, scanner boolean,
    client integer, machine boolean, unknown boolean, family text) ON COMMIT DROP;
CREATE TEMP TABLE built (hit_id uuid, received_at timestamptz, job_id bigint, kind text, track text,
    machine boolean, unknown boolean, family text, recipient_id bigint, rhash bytea, link text, reason text,
    client integer, place integer, lang text, source integer, client_ip text) ON COMMIT DROP;
"""
CLAIM = """
INSERT INTO claimed
SELECT hit_id, received_at, kind, job_id, recipient_id, link, page, host(client_ip), user_agent, referer,
       accept_language, prefetch, reject_reason
FROM raw_hits WHERE job_id = $1 AND rolled_at IS NULL AND kind <> 'page' ORDER BY received_at LIMIT $2
"""
# NULL keys joined as '' (hashable; IS NOT DISTINCT FROM is not), with every table analyzed and no
# nested loop: unanalyzed, the planner took the batch for one row and looped over it.
BUILD = """
ANALYZE claimed, d_agent, d_spot, d_lang, d_source, d_person, d_verdict;
SET LOCAL enable_nestloop = off; SET LOCAL work_mem = '64MB';
INSERT INTO built
SELECT c.hit_id, c.received_at, c.job_id, c.kind,
       CASE WHEN c.reject_reason IS NOT NULL OR j.mode IS NULL THEN 'rejected'
            WHEN j.mode = 'blind' OR c.recipient_id IS NULL OR p.forgotten THEN 'blind'
            WHEN j.mode = 'permission_personal'
                 THEN CASE WHEN p.consent_from <= c.received_at THEN 'personal' ELSE 'unique' END
            ELSE j.mode END,
       v.machine, v.unknown, v.family, c.recipient_id, p.rhash, c.link, c.reject_reason, v.client, s.place,
       l.lang, src.source, s.masked
FROM claimed c
LEFT JOIN jobs j ON j.job_id = c.job_id
JOIN d_agent a ON coalesce(a.user_agent, '') = coalesce(c.user_agent, '')
JOIN d_spot s ON coalesce(s.client_ip, '') = coalesce(c.client_ip, '')
JOIN d_verdict v ON v.agent = a.agent AND v.kind = c.kind AND v.prefetch = c.prefetch AND v.apple = s.apple
                AND v.scanner = s.scanner
JOIN d_lang l ON coalesce(l.accept_language, '') = coalesce(c.accept_language, '')
JOIN d_source src ON src.kind = c.kind AND coalesce(src.link, '') = coalesce(c.link, '')
                 AND coalesce(src.referer, '') = coalesce(c.referer, '')
LEFT JOIN d_person p ON p.job_id = c.job_id AND p.recipient_id = c.recipient_id
"""
VERDICTS = """
SELECT DISTINCT c.user_agent, c.kind, c.prefetch, s.apple, s.scanner
FROM claimed c JOIN d_spot s ON coalesce(s.client_ip, '') = coalesce(c.client_ip, '')
"""
PER_HIT = "SELECT * FROM claimed WHERE kind IN ('click', 'doc')"
RECIPIENTS = "SELECT DISTINCT job_id, recipient_id FROM claimed WHERE recipient_id IS NOT NULL"


async def per_hit(conn: asyncpg.Connection, hits: list[Any], enricher: Enricher, config: AggregatorConfig) -> int:
    """Today's steps up to the batch table for ``hits``; how many rows went in."""
    if not hits:
        return 0
    who = await mail.who_of(conn, hits)
    tracks = [modes.track_of(h, who) for h in hits]
    builder = await mail.builder_for(conn, hits, tracks, who)
    known = await context.load(conn, hits, tracks, builder, enricher, config)
    enriched = enrich_parts(enricher, hits, who.sent, known.outside)
    rows = builder.rows(hits, enriched, tracks)
    await conn.copy_records_to_table("rollup_profile", records=builder.profile_rows(), columns=PROFILE_COLUMNS)
    await conn.copy_records_to_table("rollup_batch", records=rows, columns=BATCH_COLUMNS)
    return len(rows)


async def today(conn: asyncpg.Connection, clock: StageCPU, enricher: Enricher, config: AggregatorConfig) -> int:
    """The product's batch: claim and every step to the batch table."""
    t = time.perf_counter()
    pending = await claims.pending(conn, queries.PENDING)
    hits = await claims.claim(conn, pending, queries.CLAIM, BATCH, mail.EVER)
    t = clock.add("today: claim", t)
    done = await per_hit(conn, hits, enricher, config)
    clock.add("today: judge, enrich, build, copy", t)
    return done


async def set_based(conn: asyncpg.Connection, clock: StageCPU, enricher: Enricher, config: AggregatorConfig) -> int:
    """The prototype's batch (see the module's text); how many hits it built."""
    await conn.execute(TABLES)
    clock.restart()
    t = time.perf_counter()
    left = BATCH
    for job in [r[0] for r in await conn.fetch("SELECT job_id FROM jobs UNION SELECT 0 ORDER BY 1")]:
        left -= int((await conn.execute(CLAIM, job, left)).split()[-1])
        if left <= 0:
            break
    t = clock.add("set: claim (INSERT ... SELECT)", t)
    run = Run(enricher)
    agents = {r[0]: n for n, r in enumerate(await conn.fetch("SELECT DISTINCT user_agent FROM claimed"))}
    parsed = {text: run.agent(text) for text in agents}
    await conn.copy_records_to_table("d_agent", records=list(agents.items()))
    places: dict[int, int] = {}
    spots = []
    for (address,) in await conn.fetch("SELECT DISTINCT client_ip FROM claimed"):
        geo, masked, apple, scanner = run.spot(address)
        spots.append((address, places.setdefault(id(geo), len(places)), masked, apple, scanner))
    await conn.copy_records_to_table("d_spot", records=spots)
    headers = await conn.fetch("SELECT DISTINCT accept_language FROM claimed")
    languages = [(text, run.language(text)) for (text,) in headers]
    await conn.copy_records_to_table("d_lang", records=languages)
    sources: dict[int, int] = {}
    found = []
    for kind, link, referer in await conn.fetch("SELECT DISTINCT kind, link, referer FROM claimed"):
        part = run.source({"kind": kind, "link": link, "referer": referer, "url": None}, kind)
        found.append((kind, link, referer, sources.setdefault(id(part), len(sources))))
    await conn.copy_records_to_table("d_source", records=found)
    t = clock.add("set: agents, addresses, languages, sources", t)
    by_job: dict[int, list[int]] = {}
    for job, rid in await conn.fetch(RECIPIENTS):
        by_job.setdefault(job, []).append(rid)
    keys = await mail.job_keys(conn, set(by_job))
    people = []
    for job, rids in sorted(by_job.items()):
        known = {r["recipient_id"]: r for r in await conn.fetch(queries.PEOPLE, job, rids)}
        key = keys.get(job)
        hasher = modes.recipient_hasher(key) if key is not None else None
        for rid in rids:
            person = known.get(rid)
            consent_from = person["consent_changed_at"] if person is not None and person["consent"] else None
            people.append((job, rid, None if hasher is None else hasher(rid), consent_from,
                           bool(person is not None and person["forgotten"])))  # fmt: skip
    await conn.copy_records_to_table("d_person", records=people)
    t = clock.add("set: recipients, keyed hashes", t)
    clients: dict[int, int] = {}
    verdicts = []
    for text, kind, prefetch, apple, scanner in await conn.fetch(VERDICTS):
        _, client = run.verdict(parsed[text], {"kind": kind, "prefetch": prefetch}, kind, apple, scanner)
        traffic = client.get("traffic")
        verdicts.append((agents[text], kind, prefetch, apple, scanner, clients.setdefault(id(client), len(clients)),
                         traffic == "machine", traffic == "unknown", client.get("machine_family")))  # fmt: skip
    await conn.copy_records_to_table("d_verdict", records=verdicts)
    t = clock.add("set: verdicts of (agent, kind, prefetch, networks)", t)
    await conn.execute(BUILD)
    built = int(await conn.fetchval("SELECT count(*) FROM built"))
    t = clock.add("set: batch rows (one INSERT ... SELECT)", t)
    hits = [dict(r) for r in await conn.fetch(PER_HIT)]
    await per_hit(conn, hits, enricher, config)
    clock.add("set: clicks and document views, hit by hit", t)
    return built


async def measure(url: str, rounds: int) -> None:
    """``rounds`` times each way, alternating, on fresh connections to ``url``; each step's median."""
    config = AggregatorConfig.from_env({})
    enricher = make_enricher(config.enrich)
    assert isinstance(enricher, Enricher)
    ways: dict[str, Callable[..., Awaitable[int]]] = {"today": today, "set-based": set_based}
    runs: dict[str, list[tuple[int, Step]]] = {name: [] for name in ways}
    conn = await db.connect(url)
    try:
        for (text,) in await conn.fetch("SELECT DISTINCT user_agent FROM raw_hits"):
            enricher.parse_agent(text)  # parsed agents are kept across batches: not what is compared
        for _ in range(rounds):
            for name, way in ways.items():
                clock = StageCPU(psutil.Process(await conn.fetchval("SELECT pg_backend_pid()")))
                tr = conn.transaction()
                await tr.start()
                try:
                    await conn.execute(queries.CREATE_BATCH)
                    enricher.forget_addresses()  # addresses are kept across calls too: each way places them anew
                    clock.restart()
                    hits = await way(conn, clock, enricher, config)
                finally:
                    await tr.rollback()
                runs[name].append((hits, clock.cpu))
                total = sum(sum(v) for v in clock.cpu.values()) / hits * 1e6
                print(f"{name}: {hits:,} hits, {total:.2f} us per hit", flush=True)
    finally:
        await conn.close()
    print(f"medians of {rounds} rounds, µs per hit of the batch (aggregator / PostgreSQL):")
    totals = {}
    for name, each in runs.items():
        steps = list(each[0][1])
        for step in steps:
            app = statistics.median(s[step][0] / n * 1e6 for n, s in each)
            pg = statistics.median(s[step][1] / n * 1e6 for n, s in each)
            print(f"  {step:<52} {app:6.2f} / {pg:6.2f}")
        totals[name] = statistics.median(sum(sum(v) for v in s.values()) / n * 1e6 for n, s in each)
        print(f"  {name + ', in all':<52} {totals[name]:6.2f}")
    print(f"set-based / today: {totals['set-based'] / totals['today']:.2f}x, "
          f"{totals['today'] - totals['set-based']:.2f} us per hit less")


async def main_async(server_url: str, postmaster: psutil.Process, seconds: float, rounds: int, tmp: Path) -> None:
    got = await collect(server_url, postmaster, seconds, tmp, Mix())
    print(got.line)
    try:
        await measure(got.url, rounds)
    finally:
        await support.drop_database(server_url, got.url)


def main() -> None:
    """A private PostgreSQL in a temporary folder; collect; both ways; stop it."""
    collect_and_measure(__doc__ or "", "pixeltrack-setbased-", "batches built each way, alternating", main_async)


if __name__ == "__main__":
    main()
