"""Dashboard benchmark: `python -m loadtest.bench_dashboard [--scale 0.01] [--rounds 30]`.

Prints, does not assert: p50 / p95 / max latency of each page and API route
(aim: p95 < 300 ms), served by a real `pixeltrack dashboard` process.

Data, made in SQL with generate_series straight into the ROLL-UP tables (no
raw hits to roll up), at --scale 1:
- a personal mail job with 10 million rolled-up hits over 30 days (hourly
  series, 50 links, a breakdown cube) and 1 million recipients, every one
  with a report_recipients row;
- 20 smaller jobs of every mode (the overview lists them all);
- a website with a year of daily and hourly data, 2 000 pages, 500 sources,
  a session table of 1 000 sessions a day;
- raw hits of the last 30 minutes for the live panel and pipeline health
  (60 000 page views and 60 000 mail hits).

Makes its own throwaway database on the server of DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from loadtest.bench_aggregator import host
from loadtest.support import create_database, drop_database, free_port, with_database
from pixeltrack.core import db
from pixeltrack.dashboard import accounts

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench password 123"
JOB, SITE = 1, 100
WEEK_AGO = (dt.date.today() - dt.timedelta(days=7)).isoformat()
# $1 scale. Job 1: 10M hits x scale over 720 hours, 1 open in 4 a click, 1 hit in 25 machine.
SETUP = (
    """INSERT INTO jobs (job_id, name, mode, sent_at)
       VALUES (1, 'Spring sale (bench)', 'personal', date_trunc('hour', now()) - interval '30 days')""",
    """INSERT INTO jobs (job_id, name, mode, sent_at)
       SELECT j, 'Newsletter ' || j,
              (ARRAY['personal', 'permission_personal', 'anonymous', 'unique', 'blind'])[1 + j % 5],
              now() - j * interval '1 day' FROM generate_series(2, 21) j""",
    """INSERT INTO recipients (job_id, recipient_id, recipient, consent)
       SELECT 1, r, 'r' || r || '@customers.example', true FROM generate_series(1, (1000000 * $1::float8)::int) r""",
    """INSERT INTO recipients (job_id, recipient_id, recipient)
       SELECT j, r, 'r' || r || '@news.example' FROM generate_series(2, 21) j, generate_series(1, 2000) r""",
    """INSERT INTO report_hourly (job_id, hour, kind, total, machine)
       SELECT 1, date_trunc('hour', now()) - h * interval '1 hour', k,
              round(10000000 * $1::float8 / 720 * (CASE k WHEN 'open' THEN 0.75 ELSE 0.25 END)
                    * (1.5 - h::float8 / 720))::bigint AS total, 0
       FROM generate_series(0, 719) h, unnest(ARRAY['open', 'click']) k""",
    "UPDATE report_hourly SET machine = total / 25 WHERE job_id = 1",
    """INSERT INTO report_hourly (job_id, hour, kind, total, machine)
       SELECT j, date_trunc('hour', now()) - h * interval '1 hour', k, 40 + h % 17, h % 5
       FROM generate_series(2, 21) j, generate_series(0, 167) h, unnest(ARRAY['open', 'click']) k""",
    """INSERT INTO report_job_totals (job_id, kind, total, machine, unique_count, inferred)
       SELECT job_id, kind, sum(total), sum(machine),
              least(sum(total - machine), (SELECT count(*) FROM recipients r WHERE r.job_id = h.job_id) * 0.6)::bigint,
              0
       FROM report_hourly h GROUP BY job_id, kind""",
    """INSERT INTO report_links (job_id, link_id, url, total, machine, unique_count)
       SELECT j, l, 'https://shop.example/p/' || l, 1 + (t.total / (l * 2)), t.machine / (l * 2), t.total / (l * 5)
       FROM generate_series(1, 21) j, generate_series(1, 50) l, report_job_totals t
       WHERE t.job_id = j AND t.kind = 'click'""",
    """INSERT INTO report_breakdowns (job_id, kind, traffic, machine_reason, device_class, os, browser, mail_client,
                                      country, hits)
       SELECT j, k, CASE WHEN m THEN 'machine' ELSE 'human' END, CASE WHEN m THEN 'apple_mpp' ELSE '' END,
              d, o, b, c, 'C' || n, 1 + (n * 7919 + length(d || o || b || c)) % 5000
       FROM generate_series(1, 21) j, unnest(ARRAY['open', 'click']) k, unnest(ARRAY[false, true]) m,
            unnest(ARRAY['desktop', 'mobile', 'tablet']) d, unnest(ARRAY['Windows', 'iOS', 'Android', 'macOS']) o,
            unnest(ARRAY['Chrome', 'Safari', 'Firefox']) b, unnest(ARRAY['Outlook', 'Apple Mail', 'Gmail', '']) c,
            generate_series(1, 12) n""",
    """INSERT INTO report_recipients (job_id, recipient_id, opens, machine_opens, clicks, machine_clicks,
                                      first_open, last_open, first_click, last_click)
       SELECT 1, r, 1 + r % 9, r % 2, r % 4, 0, now() - (r % 700) * interval '1 hour',
              now() - (r % 300) * interval '1 hour',
              CASE WHEN r % 4 > 0 THEN now() - (r % 600) * interval '1 hour' END,
              CASE WHEN r % 4 > 0 THEN now() - (r % 200) * interval '1 hour' END
       FROM generate_series(1, (1000000 * $1::float8)::int) r""",
    """INSERT INTO report_demographics (job_id, age_band, gender, zip, recipients, opens, unique_opens, clicks,
                                        unique_clicks, machine)
       SELECT j, a, g, z, 3 + (length(a || g || z) * 13) % 40, 50, 20, 10, 5, 2
       FROM (SELECT job_id AS j FROM jobs WHERE mode = 'anonymous') x,
            unnest(ARRAY['18-24', '25-34', '35-44', '45-54', '55+']) a, unnest(ARRAY['f', 'm', 'x']) g,
            unnest(ARRAY['10115', '20095', '50667', '80331']) z""",
    # the website: a year of days and hours
    "INSERT INTO jobs (job_id, name, kind, mode) VALUES (100, 'shop.example', 'site', 'unique')",
    "INSERT INTO sites (job_id, domain) VALUES (100, 'shop.example')",
    """INSERT INTO site_daily (job_id, day, pageviews, machine, visitors, sessions)
       SELECT 100, current_date - d, (3000 + d % 7 * 400) * $1::float8, 100, (900 + d % 7 * 90) * $1::float8,
              (1000 * $1::float8)::bigint
       FROM generate_series(0, 364) d""",
    """INSERT INTO site_hourly (job_id, hour, pageviews, machine, visitors)
       SELECT 100, date_trunc('hour', now()) - h * interval '1 hour', (120 + h % 24 * 5) * $1::float8, 4,
              (40 + h % 24) * $1::float8
       FROM generate_series(0, 8759) h""",
    """INSERT INTO site_totals (job_id, pageviews, machine, visitors, sessions)
       SELECT 100, sum(pageviews), sum(machine), sum(visitors), sum(sessions) FROM site_daily WHERE job_id = 100""",
    """INSERT INTO site_pages (job_id, page, pageviews, entries)
       SELECT 100, '/product/' || p, 1 + 1000000 / p, 1 + 300000 / p FROM generate_series(1, 2000) p""",
    """INSERT INTO site_sources (job_id, source_class, source_name, search_phrase, sessions)
       SELECT 100, (ARRAY['search', 'social', 'referral', 'email', 'direct'])[1 + s % 5], 'site' || s || '.example',
              CASE WHEN s % 5 = 0 THEN 'phrase ' || s ELSE '' END, 1 + 200000 / s FROM generate_series(1, 500) s""",
    """INSERT INTO site_breakdowns (job_id, device_class, os, browser, country, pageviews)
       SELECT 100, d, o, b, 'C' || n, 1 + (n * 31 + length(d || o || b)) % 9000
       FROM unnest(ARRAY['desktop', 'mobile', 'tablet']) d, unnest(ARRAY['Windows', 'iOS', 'Android', 'macOS']) o,
            unnest(ARRAY['Chrome', 'Safari', 'Firefox', 'Edge']) b, generate_series(1, 40) n""",
    """INSERT INTO site_sessions (job_id, started_at, last_at, pages, entry_page)
       SELECT 100, now() - s * interval '1 minute' * 1440 / (1000 * $1::float8),
              now() - s * interval '1 minute' * 1440 / (1000 * $1::float8) + (s % 600) * interval '1 second',
              1 + s % 6, '/product/' || (1 + s % 2000)
       FROM generate_series(1, (365 * 1000 * $1::float8)::int) s""",
    # the last 30 minutes, raw: page views of the site and mail hits of job 1
    """INSERT INTO raw_hits (hit_id, received_at, kind, job_id, method, url)
       SELECT gen_random_uuid(), now() - (i % 1800) * interval '1 second', 'page', 100, 'POST',
              'https://shop.example/product/' || (1 + i % 50)
       FROM generate_series(1, (60000 * $1::float8)::int) i""",
    """INSERT INTO raw_hits (hit_id, received_at, kind, job_id, recipient_id, method)
       SELECT gen_random_uuid(), now() - (i % 1800) * interval '1 second', 'open', 1, 1 + i % 1000, 'GET'
       FROM generate_series(1, (60000 * $1::float8)::int) i""",
)
ROUTES = (
    ("overview", "/"),
    ("job page", f"/jobs/{JOB}"),
    ("job page, recipients page 1000", f"/jobs/{JOB}?page=1000"),
    ("job page, search", f"/jobs/{JOB}?q=r4242@"),
    ("job page, sorted by opens", f"/jobs/{JOB}?sort=opens&dir=desc"),
    ("job page, last 7 days", f"/jobs/{JOB}?from={WEEK_AGO}"),
    ("job CSV: links", f"/jobs/{JOB}?export=links"),
    ("small job page", "/jobs/7"),
    ("site page", f"/sites/{SITE}"),
    ("site live.json", f"/sites/{SITE}/live.json"),
    ("manage", "/manage"),
    ("API jobs", "/api/v1/jobs"),
    ("API report, small job", "/api/v1/jobs/7/report"),
    ("API report, site", f"/api/v1/sites/{SITE}/report"),
)
# The big job's full report holds every recipient (what `pixeltrack report --format json` prints).
HEAVY = (("API report, big job (every recipient)", f"/api/v1/jobs/{JOB}/report"),)


async def setup(url: str, scale: float) -> str:
    """Build the data; make an admin and an API token; return the token."""
    conn = await db.connect(url)
    try:
        await db.ensure_partitions(conn)
        for sql in SETUP:
            t = time.perf_counter()
            await conn.execute(sql, scale) if "$1::float8" in sql else await conn.execute(sql)
            print(f"  {time.perf_counter() - t:6.1f} s  {' '.join(sql.split())[:90]}")
        t = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        print(f"  {time.perf_counter() - t:6.1f} s  VACUUM ANALYZE")
        hits = await conn.fetchval("SELECT sum(total) FROM report_job_totals WHERE job_id = $1", JOB)
        people = await conn.fetchval("SELECT count(*) FROM report_recipients WHERE job_id = $1", JOB)
        print(f"job {JOB}: {hits:,} rolled-up hits, {people:,} recipients with activity")
        await accounts.add_user(conn, "bench@example.org", PASSWORD, "admin")
        return (await accounts.create_token(conn, "bench", "admin"))[1]
    finally:
        await conn.close()


async def log_in(session: aiohttp.ClientSession, base: str) -> None:
    form = await (await session.get(f"{base}/login")).text()
    csrf = form.split('name="csrf_token" value="')[1].split('"')[0]
    answer = await session.post(f"{base}/login", data={"email": "bench@example.org", "password": PASSWORD,
                                                       "csrf_token": csrf}, allow_redirects=False)
    assert answer.status == 302, answer.status


async def time_route(session: aiohttp.ClientSession, url: str, rounds: int, headers: dict[str, str]) -> list[float]:
    """Seconds per request, after one warm-up request; every answer must be 200."""
    times = []
    for i in range(rounds + 1):
        t = time.perf_counter()
        async with session.get(url, headers=headers) as answer:
            body = await answer.read()
            assert answer.status == 200, (url, answer.status, body[:200])
        if i:
            times.append(time.perf_counter() - t)
    return times


def summary(name: str, times: Sequence[float], size: int | None = None) -> str:
    ms = sorted(t * 1000 for t in times)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    extra = f"  ({size / 1e6:.1f} MB)" if size else ""
    return f"| {name} | {statistics.median(ms):.0f} | {p95:.0f} | {ms[-1]:.0f} | {len(ms)} |{extra}"


async def drive(base: str, token: str, rounds: int) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    api = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=600)) as session:
        await log_in(session, base)
        print("\n| route | p50 ms | p95 ms | max ms | requests |\n|---|---|---|---|---|")
        for name, path in ROUTES:
            times = await time_route(session, base + path, rounds, api if path.startswith("/api/") else {})
            print(summary(name, times), flush=True)
        for name, path in HEAVY:
            times = await time_route(session, base + path, max(2, rounds // 10), api)
            async with session.get(base + path, headers=api) as answer:
                size = len(await answer.read())
            print(summary(name, times, size), flush=True)


async def wait_listening(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit(f"dashboard exited {proc.returncode}")
            try:
                async with session.get(f"{base}/login"):
                    return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    raise SystemExit("dashboard did not start")


def start_dashboard(url: str, port: int) -> subprocess.Popen[bytes]:
    """`pixeltrack dashboard` on ``port``, a process of its own."""
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT), "PIXELTRACK_SECRET": "bench-secret-0123456789"}
    return subprocess.Popen([sys.executable, "-m", "pixeltrack.cli.main", "dashboard", "--port", str(port)],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def fresh_token(url: str) -> str:
    conn = await db.connect(url)
    try:
        return (await accounts.create_token(conn, "bench again", "admin"))[1]
    finally:
        await conn.close()


async def main(scale: float, rounds: int, keep: bool, reuse: str | None) -> None:
    """Make a throwaway database, fill it, serve it with a real dashboard process, measure, drop it."""
    server = os.environ.get("DATABASE_URL")
    if not server:
        raise SystemExit("DATABASE_URL is not set: point it at a PostgreSQL server to benchmark on")
    url = with_database(server, reuse) if reuse else await create_database(server, "pt_dash")
    name = url.rsplit("/", 1)[-1].split("?")[0]
    keep = keep or reuse is not None
    proc = None
    try:
        await db.apply_schema(url)
        conn = await db.connect(url)
        print(f"{host()}; PostgreSQL {await conn.fetchval('SHOW server_version')} on the same host; "
              f"database {name}, scale {scale}")
        await conn.close()
        token = await fresh_token(url) if reuse else await setup(url, scale)
        port = free_port()
        proc = start_dashboard(url, port)
        base = f"http://127.0.0.1:{port}"
        await wait_listening(base, proc)
        await drive(base, token, rounds)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        if not keep:
            await drop_database(server, url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="1 = 10M hits and 1M recipients; 0.01 for a smoke run")
    parser.add_argument("--rounds", type=int, default=30, help="requests per route (after one warm-up)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--reuse", metavar="DB", help="measure again on a kept database (no set-up)")
    args = parser.parse_args()
    asyncio.run(main(args.scale, args.rounds, args.keep, args.reuse))
