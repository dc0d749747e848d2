"""What marking a rolled-up raw row costs PostgreSQL, by table shape: `python -m loadtest.bench_marking`.

The roll-up rewrites each raw row a personal or rejected hit keeps
(queries.MARK_ROLLED: rolled_at, the masked address, the enrichment) and
deletes the others (DROP_ROLLED). The rewrite is the largest single stage of
a roll-up (loadtest/RESULTS.md, figure 16). This asks PostgreSQL what the same
rewrite of the same rows costs in other table shapes, as a guide for the
design, not the product's code path:

- ``product``: raw_hits' shape (primary key, the partial index of unrolled
  hits, the recipient index; pages filled by COPY);
- ``plain key``: the primary key as a plain (non-unique) index: no
  uniqueness check of the new key against the old version;
- ``key only``: the primary key and nothing else;
- ``no unrolled index``: rolled_at in no index, pages still full: a new
  tuple on another page and every index entry anew (not HOT);
- ``HOT, fillfactor 50``: rolled_at in no index and half of each page left
  free by the COPY: the new version on the same page, no index entry (a
  heap-only tuple);
- ``recipient, no dedup`` and ``key, no dedup``: the product's indexes
  without B-tree deduplication (the recipient index holds each recipient's
  hits under one key);
- ``reinserted``: the raw row deleted and its enriched version inserted
  into the same table by one statement;
- ``moved``: the kept hit inserted, enriched, into a table of its own (the
  key and the recipient index) and its raw row deleted, both timed;
- ``delete``: the rows deleted instead (the tracks that keep nothing).

Each shape is a fresh table of ``--rows`` rows of one job, written by COPY
and vacuumed, then updated (or deleted) from a temporary batch table by a
hash join, as the roll-up does; the backend's CPU per row is read from
/proc/PID/schedstat (nanoseconds; psutil's 10 ms ticks where there is
none), rounds alternate the shapes, and the medians are printed against
the product's, with the share of updates that were HOT. Measures and
prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import sys
import uuid

import asyncpg
import psutil

from loadtest import support
from pixeltrack.core import db

AGENT = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
         "Safari/537.36")
PRIMARY_KEY = "PRIMARY KEY (job_id, received_at, hit_id)"
UNROLLED = "CREATE INDEX ON {t} (job_id, received_at) WHERE rolled_at IS NULL AND kind <> 'page'"
RECIPIENT = "CREATE INDEX ON {t} (job_id, recipient_id) WHERE recipient_id IS NOT NULL"
RECIPIENT_NO_DEDUP = ("CREATE INDEX ON {t} (job_id, recipient_id) WITH (deduplicate_items = off) "
                      "WHERE recipient_id IS NOT NULL")
# name: (fillfactor, statements that index the table, what is timed)
SHAPES: dict[str, tuple[int, tuple[str, ...], str]] = {
    "product": (100, (f"ALTER TABLE {{t}} ADD {PRIMARY_KEY}", UNROLLED, RECIPIENT), "update"),
    "plain key": (100, ("CREATE INDEX ON {t} (job_id, received_at, hit_id)", UNROLLED, RECIPIENT), "update"),
    "key only": (100, (f"ALTER TABLE {{t}} ADD {PRIMARY_KEY}",), "update"),
    "no unrolled index": (100, (f"ALTER TABLE {{t}} ADD {PRIMARY_KEY}", RECIPIENT), "update"),
    "HOT, fillfactor 50": (50, (f"ALTER TABLE {{t}} ADD {PRIMARY_KEY}", RECIPIENT), "update"),
    "recipient, no dedup": (100, (f"ALTER TABLE {{t}} ADD {PRIMARY_KEY}", UNROLLED,
                                   RECIPIENT_NO_DEDUP), "update"),
    "key, no dedup": (100, (f"ALTER TABLE {{t}} ADD {PRIMARY_KEY} WITH (deduplicate_items = off)", UNROLLED,
                            RECIPIENT_NO_DEDUP), "update"),
    "reinserted": (100, (f"ALTER TABLE {{t}} ADD {PRIMARY_KEY}", UNROLLED, RECIPIENT), "reinsert"),
    "moved": (100, (f"ALTER TABLE {{t}} ADD {PRIMARY_KEY}", UNROLLED, RECIPIENT), "move"),
    "delete": (100, (f"ALTER TABLE {{t}} ADD {PRIMARY_KEY}", UNROLLED, RECIPIENT), "delete"),
}
# As MARK_ROLLED writes a personal hit: rolled_at, the masked address, the enrichment.
UPDATE = """
UPDATE {t} r SET rolled_at = now(), client_ip = '203.0.113.0'::inet, device_class = 'desktop', browser = 'Chrome',
    browser_version = '124.0.0', os = 'Windows', os_version = '10', traffic = 'human', country = 'DE', region = 'BE',
    city = 'Berlin', asn = 3320, network = 'Deutsche Telekom AG', language = 'en', source_class = 'direct'
FROM b WHERE r.job_id = 1 AND r.received_at = b.received_at AND r.hit_id = b.hit_id AND r.rolled_at IS NULL
"""
DELETE = "DELETE FROM {t} r USING b WHERE r.job_id = 1 AND r.received_at = b.received_at AND r.hit_id = b.hit_id"
# The kept hit's raw row deleted and its enriched version inserted into the same table, in one statement.
REINSERT = """
WITH d AS (
    DELETE FROM {t} r USING b WHERE r.job_id = 1 AND r.received_at = b.received_at AND r.hit_id = b.hit_id
      AND r.rolled_at IS NULL RETURNING r.*
)
INSERT INTO {t} (hit_id, received_at, kind, job_id, recipient_id, client_ip, user_agent, accept_language, method,
    rolled_at, device_class, browser, browser_version, os, os_version, traffic, country, region, city, asn, network,
    language, source_class)
SELECT hit_id, received_at, kind, job_id, recipient_id, '203.0.113.0'::inet, user_agent, accept_language, method, now(),
    'desktop', 'Chrome', '124.0.0', 'Windows', '10', 'human', 'DE', 'BE', 'Berlin', 3320, 'Deutsche Telekom AG', 'en',
    'direct'
FROM d
"""
# The kept hit written, enriched, into a table of kept hits (its key and the recipient index), the raw row deleted.
KEPT = f"""
DROP TABLE IF EXISTS kept; CREATE TABLE kept (LIKE raw_hits INCLUDING DEFAULTS, {PRIMARY_KEY});
{RECIPIENT.format(t="kept")}
"""
MOVE = """
INSERT INTO kept (hit_id, received_at, kind, job_id, recipient_id, client_ip, user_agent, accept_language, method,
    rolled_at, device_class, browser, browser_version, os, os_version, traffic, country, region, city, asn, network,
    language, source_class)
SELECT r.hit_id, r.received_at, r.kind, r.job_id, r.recipient_id, '203.0.113.0'::inet, r.user_agent, r.accept_language,
    r.method, now(), 'desktop', 'Chrome', '124.0.0', 'Windows', '10', 'human', 'DE', 'BE', 'Berlin', 3320,
    'Deutsche Telekom AG', 'en', 'direct'
FROM {t} r JOIN b ON r.job_id = 1 AND r.received_at = b.received_at AND r.hit_id = b.hit_id AND r.rolled_at IS NULL
"""
COLUMNS = ("hit_id", "received_at", "kind", "job_id", "recipient_id", "client_ip", "user_agent", "accept_language",
           "method")


def cpu_seconds(backend: psutil.Process) -> float:
    """CPU time of ``backend`` so far: the scheduler's nanoseconds, or psutil's user + system (10 ms ticks)."""
    try:
        with open(f"/proc/{backend.pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return float(sum(backend.cpu_times()[:2]))


def raw_rows(count: int) -> list[tuple[object, ...]]:
    """``count`` opens of job 1, a millisecond apart, as the collector writes them."""
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    return [(uuid.uuid4(), start + dt.timedelta(milliseconds=n), "open", 1, n % 15_000, "203.0.113.7", AGENT,
             "en-US,en;q=0.9", "GET") for n in range(count)]  # fmt: skip


async def one(
    conn: asyncpg.Connection, backend: psutil.Process, shape: str, rows: list[tuple[object, ...]]
) -> tuple[float, float]:
    """Backend CPU seconds of marking ``rows`` in a fresh table of ``shape``; the share of HOT updates."""
    fill, indexes, what = SHAPES[shape]
    await conn.execute(f"DROP TABLE IF EXISTS t; CREATE TABLE t (LIKE raw_hits INCLUDING DEFAULTS) "
                       f"WITH (fillfactor = {fill})")
    await conn.copy_records_to_table("t", records=rows, columns=COLUMNS)
    for sql in indexes:
        await conn.execute(sql.format(t="t"))
    await conn.execute("VACUUM ANALYZE t")
    await conn.execute("DROP TABLE IF EXISTS b; CREATE TEMP TABLE b AS SELECT hit_id, received_at FROM t; ANALYZE b")
    await conn.execute("CHECKPOINT")  # each shape starts from the same state of the WAL
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_nestloop = off")  # as the roll-up's marking
        before = cpu_seconds(backend)
        if what == "move":
            await conn.execute(KEPT)
            before = cpu_seconds(backend)
            await conn.execute(MOVE.format(t="t"))
        done = await conn.execute({"update": UPDATE, "move": DELETE, "delete": DELETE, "reinsert": REINSERT}[what]
                                  .format(t="t"))
        spent = cpu_seconds(backend) - before
        hot = await conn.fetchval("SELECT pg_stat_get_xact_tuples_hot_updated('t'::regclass)")
    if int(done.split()[-1]) != len(rows):
        raise RuntimeError(f"{shape}: {done}, expected {len(rows)} rows")
    return spent, hot / len(rows)


async def run(url: str, count: int, rounds: int) -> None:
    """Each shape ``rounds`` times, alternating; medians in µs per row, against the product's."""
    scratch = await support.create_database(url, "pt_marking")
    conn = await db.connect(scratch)
    try:
        backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))
        rows = raw_rows(count)
        spent: dict[str, list[float]] = {shape: [] for shape in SHAPES}
        hot: dict[str, float] = {}
        for _ in range(rounds):
            for shape in SHAPES:
                cpu, hot[shape] = await one(conn, backend, shape, rows)
                spent[shape].append(cpu / count * 1e6)
        base = statistics.median(spent["product"])
        print(f"{count:,} rows a shape, {rounds} rounds, µs of PostgreSQL CPU per row (median; all rounds):")
        for shape, values in spent.items():
            middle = statistics.median(values)
            print(f"  {shape:<20} {middle:6.2f}  {middle / base:5.2f}x product  {hot[shape]:4.0%} HOT  "
                  f"({', '.join(f'{v:.2f}' for v in values)})")
    finally:
        await conn.close()
        await support.drop_database(url, scratch)


def main(argv: list[str] | None = None) -> int:
    """On DATABASE_URL's server (a throwaway database), or on a private pgserver."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_marking", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows a shape (default 100,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all shapes (default 3)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="a server to make the throwaway database on (default: a private pgserver)")
    args = parser.parse_args(argv)
    if args.database_url:
        asyncio.run(run(args.database_url, args.rows, args.rounds))
        return 0
    import tempfile
    from pathlib import Path

    import pgserver

    with tempfile.TemporaryDirectory(prefix="pixeltrack-marking-") as name:
        server = pgserver.get_server(Path(name) / "pg", cleanup_mode="stop")
        asyncio.run(run(server.get_uri(), args.rows, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
