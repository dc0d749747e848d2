"""Roll-up benchmark: `python -m loadtest.bench_aggregator [--quick]`.

Prints, does not assert:

1. roll-up throughput (raw hits per second) against a single bare
   ``INSERT ... SELECT ... GROUP BY`` over the same rows in the same run
   (aim: at least half its speed), with the flag-only enricher (the
   aggregator's own cost) and with the real enrichment;
2. the same new hits rolled up on an empty history and on top of millions of
   already-aggregated hits (aim: no more than 1.2x).

Makes its own throwaway database on the server of DATABASE_URL; rows are
generated in SQL with generate_series.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import time

import asyncpg

from aggregator import claims
from aggregator.config import AggregatorConfig
from aggregator.enrich import EnrichConfig
from aggregator.enrich.enricher import make_enricher
from aggregator.mail.queries import CLICK, OPEN
from aggregator.mail.rollup import RunStats, rollup
from loadtest.support import FlagEnricher, create_database, drop_database
from pixeltrack.core import db

MODES = ("personal", "permission_personal", "anonymous", "unique", "blind")
JOBS = 10  # two of each mode
RECIPIENTS = 5000  # per job
SETUP_JOBS = """
INSERT INTO jobs (job_id, name, mode, sent_at)
SELECT j, 'bench ' || j, ($1::text[])[1 + (j - 1) % 5], now() - interval '30 days' FROM generate_series(1, $2) j
"""
SETUP_RECIPIENTS = """
INSERT INTO recipients (job_id, recipient_id, recipient, consent, consent_changed_at, birth_year, gender, zip)
SELECT j, r, 'r' || r || '@job' || j || '.example', r % 3 = 0, now() - interval '40 days',
       1950 + r % 55, (ARRAY['f', 'm', 'x'])[1 + r % 3], lpad((10000 + r % 40)::text, 5, '0')
FROM generate_series(1, $1) j, generate_series(1, $2) r WHERE j % 5 <> 0
"""
# One open in four is a click on one of 20 links; one hit in 50 is a HEAD;
# recipients repeat, so do their addresses and agents.
GENERATE = """
INSERT INTO raw_hits (hit_id, received_at, kind, job_id, recipient_id, link, client_ip, user_agent,
                      accept_language, method, prefetch, rolled_at)
SELECT gen_random_uuid(), $1::timestamptz + (i * $2::float8 / $3) * interval '1 second',
       CASE WHEN i % 4 = 0 THEN 'click' ELSE 'open' END, 1 + i % $4,
       CASE WHEN (1 + i % $4) % 5 <> 0 THEN 1 + (i * 7919) % $5 END,
       CASE WHEN i % 4 = 0 THEN 'https://example.org/p/' || (i % 20) END,
       ('10.' || ((i * 7919) % $5) % 250 || '.' || ((i * 7919) % $5) / 250 % 250 || '.' || i % 7)::inet,
       (ARRAY['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
              'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148',
              'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15',
              'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0',
              'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36',
              'Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)',
              'Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)',
              'Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.10.1'])[1 + i % 8],
       'en-US,en;q=0.9', CASE WHEN i % 50 = 0 THEN 'HEAD' ELSE 'GET' END, i % 50 = 0, $6::timestamptz
FROM generate_series(1::bigint, $3::bigint) i
"""  # noqa: E501
BARE = """
INSERT INTO bench_bare (job_id, hour, kind, hits)
SELECT job_id, date_trunc('hour', received_at), kind, count(*) FROM raw_hits WHERE rolled_at IS NULL
GROUP BY 1, 2, 3
"""
# History made in SQL: hits already rolled up, and the roll-ups and keyed
# hashes they would have left (same sizes and keys as the aggregator's).
HISTORY_ROLLUPS = (
    """INSERT INTO report_hourly (job_id, hour, kind, total, machine)
       SELECT job_id, date_trunc('hour', received_at), kind, count(*), count(*) FILTER (WHERE prefetch)
       FROM raw_hits GROUP BY 1, 2, 3""",
    """INSERT INTO report_job_totals (job_id, kind, total, machine)
       SELECT job_id, kind, count(*), count(*) FILTER (WHERE prefetch) FROM raw_hits GROUP BY 1, 2""",
    """INSERT INTO report_links (job_id, link_id, url, total, machine)
       SELECT job_id, hashtextextended(link, 0) & 9223372036854775807, link, count(*),
              count(*) FILTER (WHERE prefetch) FROM raw_hits WHERE link IS NOT NULL GROUP BY 1, 2, 3""",
    """INSERT INTO report_breakdowns (job_id, kind, traffic, hits)
       SELECT job_id, kind, CASE WHEN prefetch THEN 'machine' ELSE 'unknown' END, count(*)
       FROM raw_hits GROUP BY 1, 2, 3""",
    f"""INSERT INTO unique_seen (job_id, link_id, hash, scopes)
       SELECT job_id, 0, substr(sha256((job_id || ':' || recipient_id)::bytea), 1, 16),
              bit_or(CASE kind WHEN 'click' THEN {CLICK} ELSE {OPEN} END)
       FROM raw_hits WHERE recipient_id IS NOT NULL GROUP BY 1, 2, 3""",
    """INSERT INTO report_recipients (job_id, recipient_id, opens, clicks)
       SELECT job_id, recipient_id, count(*) FILTER (WHERE kind = 'open'), count(*) FILTER (WHERE kind = 'click')
       FROM raw_hits WHERE recipient_id IS NOT NULL AND job_id % 5 IN (1, 2) GROUP BY 1, 2""",
)
BARE_TABLE = "CREATE UNLOGGED TABLE bench_bare (job_id bigint, hour timestamptz, kind text, hits bigint)"


async def generate(
    conn: asyncpg.Connection, rows: int, start: dt.datetime, seconds: float, rolled: dt.datetime | None = None
) -> float:
    """Insert ``rows`` hits spread over ``seconds`` from ``start``; return the time taken."""
    t = time.perf_counter()
    await conn.execute(GENERATE, start, seconds, rows, JOBS, RECIPIENTS, rolled)
    return time.perf_counter() - t


async def measure(conn: asyncpg.Connection, rows: int, real: bool, day: int) -> tuple[float, float]:
    """Fresh rows in their own day partition (``day`` days ahead), so every
    measurement starts from the same partition state; time the bare GROUP BY
    over them, then the roll-up (cold caches). Return both rates."""

    enricher = make_enricher(EnrichConfig.from_env(os.environ)) if real else FlagEnricher()
    label = "real enricher" if real else "flag enricher"
    start = dt.datetime.now(dt.UTC).replace(hour=10, minute=0, second=0, microsecond=0) + dt.timedelta(days=day)
    await generate(conn, rows, start, 3500)
    await conn.execute(claims.REBUILD_RUNS)  # written by hand: their runs
    await conn.execute("ANALYZE raw_hits")
    t = time.perf_counter()
    await conn.execute(BARE)
    bare = time.perf_counter() - t
    stats: RunStats = await rollup(conn, AggregatorConfig(), enricher)
    spent = sum(stats.seconds.values())
    assert stats.hits == rows, (stats.hits, rows)
    stages = ", ".join(f"{k} {v:.2f}" for k, v in stats.seconds.items())
    print(f"  {label}: bare GROUP BY {rows / bare:>10,.0f} hits/s ({bare:.3f} s); "
          f"roll-up {rows / spent:>9,.0f} hits/s ({spent:.2f} s) = {bare / spent:.2f}x bare")  # fmt: skip
    print(f"    stages (s): {stages}")
    return rows / bare, rows / spent


async def make_history(conn: asyncpg.Connection, rows: int) -> None:
    """``rows`` already-aggregated hits over the 10 days before today, then VACUUM ANALYZE."""
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - dt.timedelta(days=10)
    await db.ensure_partitions(conn, start.date())
    t = time.perf_counter()
    async with conn.transaction():
        await conn.execute("TRUNCATE report_hourly, report_job_totals, report_links, report_breakdowns,"
                           " unique_seen, report_recipients CASCADE")  # fmt: skip  (doc reading tables hang off them)
        await generate(conn, rows, start, 10 * 86400 - 1, rolled=today)
        for sql in HISTORY_ROLLUPS:
            await conn.execute(sql)
    made = time.perf_counter() - t
    t = time.perf_counter()
    await conn.execute("VACUUM ANALYZE")
    vacuum = time.perf_counter() - t
    print(f"  history: {rows:,} rolled-up hits and their roll-ups made in {made:.1f} s, vacuumed in {vacuum:.1f} s")


def host() -> str:
    """CPU, memory and Python version of this machine."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem = int(f.readline().split()[1]) // 1024 // 1024
    except (OSError, StopIteration, ValueError):
        mem = 0
    return f"{cpu}, {os.cpu_count()} CPUs, {mem} GiB; Python {platform.python_version()}"


async def bench(url: str, rows: int, history: int) -> None:
    """The whole benchmark on database ``url``."""
    conn = await db.connect(url)
    try:
        print(f"{host()}; PostgreSQL {await conn.fetchval('SHOW server_version')} on the same host")
        await conn.execute(SETUP_JOBS, list(MODES), JOBS)
        await conn.execute(SETUP_RECIPIENTS, JOBS, RECIPIENTS)
        await conn.execute(BARE_TABLE)
        print(f"{rows:,} new hits, {JOBS} jobs (2 per mode), {RECIPIENTS:,} recipients each, batch "
              f"{AggregatorConfig().batch_size:,}")  # fmt: skip
        print("empty history:")
        _, empty_flag = await measure(conn, rows, real=False, day=1)
        _, empty_real = await measure(conn, rows, real=True, day=2)
        await make_history(conn, history)
        print(f"on top of {history:,} aggregated hits:")
        _, hist_flag = await measure(conn, rows, real=False, day=3)
        _, hist_real = await measure(conn, rows, real=True, day=4)
        print(f"history cost ratio (time with history / time on empty; aim <= 1.2): "
              f"flag enricher {empty_flag / hist_flag:.2f}x, real enricher {empty_real / hist_real:.2f}x")  # fmt: skip
    finally:
        await conn.close()


async def main(quick: bool, keep: bool) -> None:
    """Make a throwaway database, run, drop it."""
    server = os.environ.get("DATABASE_URL")
    if not server:
        raise SystemExit("DATABASE_URL is not set: point it at a PostgreSQL server to benchmark on")
    url = await create_database(server, "pt_bench")
    try:
        await bench(url, 10_000 if quick else 100_000, 200_000 if quick else 5_000_000)
    finally:
        if not keep:
            await drop_database(server, url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 10k new hits on 200k history")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args()
    asyncio.run(main(args.quick, args.keep))
