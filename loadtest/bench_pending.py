"""What finding the work costs a roll-up: `python -m loadtest.bench_pending`.

Each run of the aggregator first lists the jobs with hits waiting (both the
mail and the websites' roll-up: ``claims.pending``). The scheduled roll-up
leaves the hold-back's newest hits waiting at every run, so what it reads to
find its jobs is a backlog of hundreds of thousands of hits at a few
thousand a second. A throwaway database gets ``--hits`` mail hits waiting
over ``--jobs`` jobs and a tenth as many page views of two sites, written
fresh (not yet vacuumed, as the collector's rows are), and, alternating
``--rounds`` times, each roll-up's way of finding them is timed against one
read of every hit waiting (``Backlog.every``, what it did before the probes),
in the backend's and this process's CPU (/proc/PID/schedstat). Measures and
prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import asyncpg
import psutil

from aggregator import claims
from aggregator.mail import queries as mail
from aggregator.web import queries as web
from loadtest import support
from loadtest.bench_marking import cpu_seconds
from pixeltrack.core import db

DEFAULT_SERVER = "postgresql://root@127.0.0.1:5432/root"
FILL = """
INSERT INTO raw_hits (hit_id, received_at, kind, job_id, recipient_id, method, user_agent)
SELECT gen_random_uuid(), now() - interval '1 minute' + i * interval '1 ms', $1, 1 + i % $2, i, 'GET', 'agent'
FROM generate_series(1, $3) i
"""


async def fill(conn: asyncpg.Connection, hits: int, jobs: int) -> None:
    """``hits`` opens over ``jobs`` jobs and a tenth as many page views of two more; autovacuum off."""
    for (name,) in await conn.fetch("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                    "WHERE i.inhparent = 'raw_hits'::regclass"):  # fmt: skip
        await conn.execute(f'ALTER TABLE "{name}" SET (autovacuum_enabled = false)')
    await conn.execute(FILL, "open", jobs, hits)
    await conn.execute(FILL.replace("1 + i % $2", f"{jobs + 1} + i % $2"), "page", 2, hits // 10)
    await conn.execute("ANALYZE raw_hits")


async def bench(url: str, rounds: int) -> dict[str, list[float]]:
    """CPU ms of each way of finding each roll-up's jobs, ``rounds`` times, alternating."""
    conn = await db.connect(url)
    backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))

    def cpu() -> float:
        return time.process_time() + cpu_seconds(backend)

    ways = {
        "mail, probes": lambda: claims.pending(conn, mail.PENDING),
        "mail, read all": lambda: conn.fetch(mail.PENDING.every),
        "pages, probes": lambda: claims.pending(conn, web.PENDING),
        "pages, read all": lambda: conn.fetch(web.PENDING.every),
    }
    spent: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for way in ways.values():  # once untimed: the first read of fresh rows sets their hint bits
            await way()
        for _ in range(rounds):
            for name, way in ways.items():
                began = cpu()
                await way()
                spent[name].append((cpu() - began) * 1e3)
    finally:
        await conn.close()
    return spent


async def run(server: str, hits: int, jobs: int, rounds: int) -> None:
    url = await support.create_database(server, "pt_pending")
    try:
        conn = await db.connect(url)
        try:
            await fill(conn, hits, jobs)
        finally:
            await conn.close()
        spent = await bench(url, rounds)
    finally:
        await support.drop_database(server, url)
    mid = {name: statistics.median(values) for name, values in spent.items()}
    print(f"{hits:,} mail hits waiting over {jobs} jobs, {hits // 10:,} page views of 2 sites; CPU ms a listing "
          f"(aggregator + PostgreSQL backend), medians of {rounds}:")
    for kind in ("mail", "pages"):
        probes, whole = mid[f"{kind}, probes"], mid[f"{kind}, read all"]
        print(f"  {kind:<6} probes {probes:8.3f} ms; read all {whole:8.3f} ms: {probes / whole:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hits", type=int, default=250_000, help="mail hits waiting (default 250000)")
    parser.add_argument("--jobs", type=int, default=5, help="mail jobs they belong to (default 5)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_SERVER)
    args = parser.parse_args()
    asyncio.run(run(args.database_url, args.hits, args.jobs, args.rounds))


if __name__ == "__main__":
    main()
