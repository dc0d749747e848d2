"""The floor of a roll-up that stores what this one does: `python -m loadtest.bench_floor [--duration 10] [--rounds 3]`.

Issue 13 asks for a roll-up at most 0.25x of collecting the same hits. Seven
passes brought it from 0.88x to 0.42-0.57x, and every stage is now one
set-based statement or a cached lookup. This benchmark asks what no
implementation can go below while it keeps today's data model: every hit
judged by its job's mode and its recipient's consent, the report tables
grouped from the hits, the raw rows of the tracks that keep nothing per hit
deleted and the kept ones (personal and rejected hits) rewritten with their
enrichment and masked address.

On the same collected hits (the realistic mix of ``bench_cost``), a fresh
copy is rolled up each round by the product (``aggregator --once``, its CPU
and PostgreSQL's, as bench_cost counts them) and, alternating, by the floor:
SQL alone, no aggregator at all, in one transaction on one connection
(its backend's CPU):

- ``judge``: every waiting mail hit into a narrow temporary table, with its
  track worked out from the job's mode and the recipient's consent (a CASE,
  as tracks.track_of) and its hour; no enrichment, no machine verdict;
- ``group``: the nine report groupings from it (totals, hours, links,
  recipients, recipients' links, unique recipients into an indexed table,
  demographic cells, agents, rejected hits), each one statement;
- ``delete``: the raw rows of the tracks that keep nothing per hit;
- ``rewrite``: the kept raw rows marked rolled, their address masked, every
  enrichment column set (to constants of a typical width), a rejected row's
  headers cleared: what MARK_ROLLED writes, without its joins.

Apart, ``read`` prices what a roll-up that judges hits in Python pays before
any of its own work: every waiting hit sent to this process (the product's
CLAIM, one job at a time), the backend's CPU and this process's decoding.

What the floor leaves out is work any real roll-up does (enrichment, machine
verdicts, unique recipients looked up across batches, reading time), so the
product can only cost more. Measures and prints; asserts nothing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import psutil

from aggregator import claims
from aggregator.mail import queries
from aggregator.mail.rollup import EVER
from aggregator.mail.tracks import ROWLESS
from loadtest import support
from loadtest.bench_cost import Collected, Mix, StageCPU, collect, collect_and_measure, roll_up
from pixeltrack.core import columns, db

_ROWLESS = ", ".join(f"'{track}'" for track in sorted(ROWLESS))
JUDGE = """
CREATE TEMP TABLE judged ON COMMIT DROP AS
SELECT h.job_id, h.received_at, h.hit_id, h.kind, h.recipient_id, h.link, h.reject_reason,
       date_trunc('hour', h.received_at) AS hour, hashtext(h.user_agent) AS agent,
       CASE WHEN h.reject_reason IS NOT NULL OR j.mode IS NULL THEN 'rejected'
            WHEN j.mode = 'blind' OR h.recipient_id IS NULL THEN 'blind'
            WHEN j.mode = 'permission_personal'
                 THEN CASE WHEN r.consent AND r.consent_changed_at <= h.received_at THEN 'personal' ELSE 'unique' END
            ELSE j.mode END AS track
FROM raw_hits h
LEFT JOIN jobs j ON j.job_id = h.job_id
LEFT JOIN recipients r ON r.job_id = h.job_id AND r.recipient_id = h.recipient_id
WHERE h.rolled_at IS NULL AND h.kind <> 'page';
ANALYZE judged
"""
GROUPS = (
    "SELECT job_id, kind, count(*) FROM judged WHERE track <> 'rejected' GROUP BY 1, 2",
    "SELECT job_id, hour, kind, count(*) FROM judged WHERE track <> 'rejected' GROUP BY 1, 2, 3",
    "SELECT job_id, link, count(*) FROM judged WHERE kind = 'click' AND track <> 'rejected' GROUP BY 1, 2",
    """SELECT job_id, recipient_id, count(*) FILTER (WHERE kind = 'open'), count(*) FILTER (WHERE kind = 'click'),
              min(received_at), max(received_at) FROM judged WHERE track = 'personal' GROUP BY 1, 2""",
    """SELECT job_id, recipient_id, link, count(*), min(received_at), max(received_at)
       FROM judged WHERE track = 'personal' AND kind = 'click' GROUP BY 1, 2, 3""",
    """INSERT INTO f_seen SELECT job_id, recipient_id, bit_or(CASE kind WHEN 'open' THEN 1 WHEN 'click' THEN 3
                                                                    ELSE 4 END)
       FROM judged WHERE track IN ('personal', 'unique', 'anonymous') GROUP BY 1, 2 ORDER BY 1, 2""",
    """SELECT r.birth_year, r.gender, r.zip, count(*) FROM judged b
       JOIN recipients r ON r.job_id = b.job_id AND r.recipient_id = b.recipient_id
       WHERE b.track = 'anonymous' GROUP BY 1, 2, 3""",
    "SELECT job_id, kind, agent, count(*) FROM judged WHERE track <> 'rejected' GROUP BY 1, 2, 3",
    "SELECT job_id, hour, kind, reject_reason, count(*) FROM judged WHERE track = 'rejected' GROUP BY 1, 2, 3, 4",
)
SEEN = """
CREATE TEMP TABLE f_seen (job_id bigint, recipient_id bigint, scopes integer, PRIMARY KEY (job_id, recipient_id))
ON COMMIT DROP
"""
DELETE = f"""
DELETE FROM raw_hits r USING judged b
WHERE b.track IN ({_ROWLESS}) AND r.job_id = b.job_id AND r.received_at = b.received_at AND r.hit_id = b.hit_id
"""
# Constants of the width a typical hit's enrichment has (a desktop browser in a city).
TYPICAL = {
    "device_class": "'desktop'", "browser": "'Chrome'", "browser_version": "'120.0.6099.109'", "os": "'Windows'",
    "os_version": "'10'", "mail_client": "NULL", "traffic": "'human'", "machine_reason": "NULL", "country": "'DE'",
    "region": "'BE'", "city": "'Berlin'", "asn": "3320", "network": "'Deutsche Telekom AG'", "language": "'de'",
    "source_class": "'email'", "source_name": "'Gmail'", "search_phrase": "NULL", "utm_source": "'newsletter'",
    "utm_medium": "'email'", "utm_campaign": "'december'", "utm_term": "NULL", "utm_content": "NULL",
    "click_id": "NULL",
}  # fmt: skip
_HEADERS = ", ".join(f"{n} = CASE WHEN b.track = 'rejected' THEN NULL ELSE r.{n} END" for n in columns.HEADERS)
REWRITE = f"""
UPDATE raw_hits r SET rolled_at = now(),
    client_ip = set_masklen(client_ip, CASE WHEN family(client_ip) = 4 THEN 24 ELSE 48 END)::cidr::inet,
    {_HEADERS}, {", ".join(f"{n} = {TYPICAL[n]}" for n in columns.ENRICHED)}
FROM judged b
WHERE b.track NOT IN ({_ROWLESS}) AND r.job_id = b.job_id AND r.received_at = b.received_at AND r.hit_id = b.hit_id
"""
SQL_STEPS = ("judge", "group", "delete", "rewrite")
T = TypeVar("T")
Costs = dict[str, float]  # step -> µs a hit (this process + PostgreSQL backend)


async def floor(url: str) -> tuple[tuple[int, int, int], Costs]:
    """The SQL floor on ``url`` (every waiting hit, one transaction, committed).

    Returns the hits judged, deleted and rewritten, and each step's µs a hit.
    """
    conn = await db.connect(url)
    try:
        clock = StageCPU(psutil.Process(await conn.fetchval("SELECT pg_backend_pid()")))
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_nestloop = off")
            clock.restart()
            t = time.perf_counter()
            await conn.execute(JUDGE)
            hits = await conn.fetchval("SELECT count(*) FROM judged")
            t = clock.add("judge", t)
            await conn.execute(SEEN)
            for sql in GROUPS:
                await conn.execute(sql)
            t = clock.add("group", t)
            deleted = int((await conn.execute(DELETE)).split()[-1])
            t = clock.add("delete", t)
            rewritten = int((await conn.execute(REWRITE)).split()[-1])
            clock.add("rewrite", t)
    finally:
        await conn.close()
    return (hits, deleted, rewritten), {step: sum(cpu) / hits * 1e6 for step, cpu in clock.cpu.items()}


async def read(url: str) -> tuple[int, Costs]:
    """Every waiting mail hit sent to this process by the product's CLAIM; µs a hit, ours and the backend's."""
    conn = await db.connect(url)
    try:
        clock = StageCPU(psutil.Process(await conn.fetchval("SELECT pg_backend_pid()")))
        async with conn.transaction():
            pending = await claims.pending(conn, queries.PENDING)
            clock.restart()
            hits = 0
            for job in pending.todo:
                hits += len(await conn.fetch(queries.CLAIM, job, 2**62, pending.first, EVER))
            clock.add("read", time.perf_counter())
    finally:
        await conn.close()
    app, pg = clock.cpu["read"]
    return hits, {"read (aggregator)": app / hits * 1e6, "read (PostgreSQL)": pg / hits * 1e6}


async def on_copy(server_url: str, got: Collected, measure: Callable[[str], Awaitable[T]]) -> T:
    """``measure`` (floor or read) on a fresh copy of the collected hits."""
    copy = await support.create_database(server_url, "pt_floor", template=got.url)
    try:
        return await measure(copy)
    finally:
        await support.drop_database(server_url, copy)


async def bench(server_url: str, postmaster: psutil.Process, seconds: float, rounds: int, tmp: Path) -> None:
    """Collect once; ``rounds`` times the product, the floor and the read, alternating; medians against collect."""
    got = await collect(server_url, postmaster, seconds, tmp, Mix())
    print(f"{got.line}; collect {got.us:.1f} us per hit (collector {got.app / got.hits * 1e6:.1f} + PostgreSQL "
          f"{got.pg / got.hits * 1e6:.1f})", flush=True)
    runs: dict[str, list[float]] = {}
    try:
        for n in range(rounds):
            app, pg, _ = await roll_up(server_url, got.url, postmaster, None)
            product = (app + pg) / got.hits * 1e6
            runs.setdefault("product", []).append(product)
            (hits, deleted, rewritten), costs = await on_copy(server_url, got, floor)
            for step, us in costs.items():
                runs.setdefault(step, []).append(us)
            runs.setdefault("floor", []).append(sum(costs.values()))
            read_hits, reading = await on_copy(server_url, got, read)
            for step, us in reading.items():
                runs.setdefault(step, []).append(us)
            print(f"round {n + 1}: {hits:,} hits judged ({deleted:,} deleted, {rewritten:,} rewritten), {read_hits:,} "
                  f"read; product {product:.1f}, floor "
                  f"{sum(costs.values()):.1f}, read {sum(reading.values()):.1f} us per hit", flush=True)
    finally:
        await support.drop_database(server_url, got.url)
    median = {step: statistics.median(values) for step, values in runs.items()}
    print(f"medians of {rounds} rounds, µs per hit, and against collecting ({got.us:.1f} µs):")
    for step in ("product", *SQL_STEPS, "floor", "read (aggregator)", "read (PostgreSQL)"):
        print(f"  {step:<20} {median[step]:6.2f}  {median[step] / got.us:.3f}x")
    kept = median["floor"] - median["rewrite"]
    print(f"floor without the rewrite (kept rows left as collected): {kept:.2f} us per hit, {kept / got.us:.3f}x")
    with_read = median["floor"] + median["read (aggregator)"] + median["read (PostgreSQL)"]
    print(f"floor with every hit read by the aggregator: {with_read:.2f} us per hit, {with_read / got.us:.3f}x "
          "(aim 0.25x)")


def main() -> None:
    """A private PostgreSQL in a temporary folder; collect; the rounds; stop it."""
    collect_and_measure(__doc__ or "", "pixeltrack-floor-", "product, floor and read, alternating", bench)


if __name__ == "__main__":
    main()
