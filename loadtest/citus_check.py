"""The whole product on a Citus cluster, against plain PostgreSQL: `python -m loadtest.citus_check`.

    /work/citus-cluster/fresh_db.sh pt_check     # a database with citus and the workers registered
    python -m loadtest.citus_check --citus postgresql://root@127.0.0.1:9700/pt_check \\
        --plain postgresql://root@127.0.0.1:5432/test

For each database (a throwaway one on the plain server, then the Citus one,
laid out with ``pixeltrack distribute``): a campaign (a job per mode, three
websites), the collector's COPY rate, a collector under the mail mix and
page views (personal site with identified contacts, cookie-less unique
site, blind site), a timed roll-up, more traffic rolled up by two
`pixeltrack aggregator --once` at once, every report in every format,
`forget`, `aggregator --purge` and a purge 100 days on. Prints each check
and the ingest and roll-up rates of Citus against plain PostgreSQL.
Measures and prints; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from aggregator.config import AggregatorConfig
from aggregator.enrich.enricher import make_enricher
from aggregator.privacy.retention import purge
from aggregator.rollup import rollup_all
from loadtest import campaign as campaigns
from loadtest import driver_asyncio, driver_wrk, procs, support, verify
from loadtest.bench_ingest import copy_rate, make_records
from loadtest.traffic import build_mix
from pixeltrack.core import db
from pixeltrack.core.tokens import KIND_CONTACT, Signer
from pixeltrack.core.websites import create_site, site_key

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
SITES = (("personal", False), ("unique", True), ("blind", False))  # (mode, cookie-less)
SETTINGS = ("citus.shard_count", "citus.max_cached_conns_per_worker", "citus.max_adaptive_executor_pool_size",
            "citus.multi_shard_modify_mode", "citus.override_table_visibility")
# Stored: what the collectors' tombstones say they put into raw_hits (the
# roll-up deletes the rows of the tracks that keep nothing per hit).
EXACT = """
SELECT (SELECT count(*) FROM raw_hits WHERE rolled_at IS NULL) AS unrolled,
       (SELECT coalesce(sum(hits), 0) FROM copied_hits) AS stored,
       (SELECT coalesce(sum(total), 0) FROM report_job_totals WHERE kind <> 'page') AS counted,
       (SELECT coalesce(sum(hits), 0) FROM report_rejected) AS refused_counted,
       (SELECT count(*) FROM raw_hits WHERE kind = 'page' AND reject_reason IS NULL AND job_id > 0) AS views,
       (SELECT coalesce(sum(pageviews + machine), 0) FROM site_totals) AS views_counted
"""


@dataclass
class Target:
    """One database under test and what was measured on it."""

    name: str
    url: str
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        """Record and print one check."""
        self.checks.append((name, ok, detail))
        print(f"  [{'ok' if ok else 'FAILED'}] {name}{': ' + detail if detail else ''}", flush=True)


def cli(url: str, secret: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """`pixeltrack ARGV` against ``url``."""
    env = {**os.environ, "DATABASE_URL": url, "PIXELTRACK_SECRET": secret}
    return subprocess.run([sys.executable, "-m", "pixeltrack.cli", *argv], env=env, capture_output=True,
                          text=True, timeout=600)


async def add_sites(url: str, signer: Signer) -> list[dict[str, Any]]:
    """The three websites, with their keys."""
    conn = await db.connect(url)
    try:
        sites = [await create_site(conn, f"{mode}.example", mode, cookieless=less) for mode, less in SITES]
    finally:
        await conn.close()
    return [{**s, "key": site_key(signer, s)} for s in sites]


async def page_views(port: int, sites: list[dict[str, Any]], signer: Signer, mail_job: int, count: int) -> int:
    """``count`` page views over the sites (visitors of 5 views each, every 7th arriving by an identifying
    click of the personal mail job); return how many were answered."""
    async def one(session: aiohttp.ClientSession, i: int) -> int:
        site = sites[i % len(sites)]
        visitor = i // (5 * len(sites))
        params = {"k": site["key"], "u": f"https://{site['domain']}/p/{i % 13}", "t": "page",
                  "v": f"visitor{visitor:06d}"}
        if i % (5 * len(sites)) < len(sites) and visitor % 7 == 0:
            params["c"] = signer.mint(KIND_CONTACT, mail_job, visitor % 100)
        async with session.get(f"http://127.0.0.1:{port}/r.gif", params=params, headers={"User-Agent": CHROME}) as r:
            await r.read()
            return int(r.status == 200)

    async with aiohttp.ClientSession() as session:
        answered = 0
        for start in range(0, count, 32):
            answered += sum(await asyncio.gather(*(one(session, i) for i in range(start, min(count, start + 32)))))
    return answered


async def traffic(t: Target, args: argparse.Namespace, secret: str, camp: campaigns.Campaign,
                  sites: list[dict[str, Any]], seconds: float, views: int, tmp: Path) -> int:
    """The collector under the mail mix for ``seconds`` and ``views`` page views; check nothing was lost."""
    requests = build_mix(camp, secret, 20_000)
    mail_job = next(j.job_id for j in camp.jobs if j.mode == "personal")
    port = support.free_port()
    collector = procs.Server(procs.collector_cmd(port), port, procs.collector_env(t.url, secret, tmp / f"spool{port}"),
                             log=tmp / f"collector-{port}.log")
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    try:
        collector.wait_ready()
        driver = driver_wrk if args.driver == "wrk" else driver_asyncio
        result = await driver.drive(requests, "127.0.0.1", port, connections=32, duration=seconds, show_progress=False)
        answered_views = await page_views(port, sites, Signer(secret), mail_job, views)
    finally:
        code = collector.stop()
    found = await verify.count_hits(t.url, since, camp.job_ids)
    loss, exact = verify.loss_line(result.answered, found)
    t.check(f"collector: mail mix for {seconds:g} s, {result.rate:,.0f} hits/s", exact and code == 0, loss)
    t.rates.setdefault("http", result.rate)
    conn = await db.connect(t.url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM raw_hits WHERE kind = 'page' AND received_at >= $1", since)
    finally:
        await conn.close()
    t.check("collector: page views stored", stored == answered_views == views, f"{stored} of {views}")
    return result.requests + views


async def exactly_once(t: Target, what: str) -> None:
    """Every raw hit rolled up, each counted once in the roll-ups."""
    conn = await db.connect(t.url)
    try:
        n = await conn.fetchrow(EXACT)
    finally:
        await conn.close()
    counted = n["counted"] + n["refused_counted"] + n["views_counted"]
    ok = n["unrolled"] == 0 and counted == n["stored"] and n["views"] == n["views_counted"]
    t.check(f"{what}: exactly once", ok, f"counted {counted} of {n['stored']} stored (hits {n['counted']}, refused "
            f"{n['refused_counted']}, page views {n['views_counted']}/{n['views']}), unrolled {n['unrolled']}")


async def run(t: Target, args: argparse.Namespace, tmp: Path) -> None:
    """Everything, on one database."""
    print(f"== {t.name}: {t.url}", flush=True)
    secret = secrets.token_urlsafe(32)
    camp = await campaigns.setup(t.url, args.recipients)
    sites = await add_sites(t.url, Signer(secret))
    await copy_ingest(t, args, camp, secret, tmp)
    hits = await traffic(t, args, secret, camp, sites, args.duration, args.page_views, tmp)
    await rollup_one(t, hits)
    await traffic(t, args, secret, camp, sites, args.duration / 2, args.page_views // 2, tmp)
    await rollup_two(t)
    await reports(t, secret, camp, sites)
    await forget_one(t, secret, next(j.job_id for j in camp.jobs if j.mode == "personal"))
    await purges(t, secret)


async def copy_ingest(t: Target, args: argparse.Namespace, camp: campaigns.Campaign, secret: str, tmp: Path) -> None:
    """The collector's COPY rate (its own writer, batch 5000, best of 2); raw_hits emptied after."""
    from collector.rows import COLUMNS

    records = make_records(build_mix(camp, secret, 20_000), args.copy_rows, COLUMNS)
    t.rates["copy"] = max([await copy_rate(t.url, records, 5000, tmp) for _ in range(2)])
    t.check(f"COPY through the collector's writer, batch 5000, best of 2: {t.rates['copy']:,.0f} rows/s", True)
    conn = await db.connect(t.url)
    try:
        await conn.execute("TRUNCATE raw_hits, copied_hits, hit_runs")
    finally:
        await conn.close()


async def rollup_one(t: Target, hits: int) -> None:
    """One aggregator, in this process, timed."""
    conn = await db.connect(t.url)
    try:
        started = time.perf_counter()
        stats, pages = await rollup_all(conn, AggregatorConfig(), make_enricher(AggregatorConfig().enrich))
        t.rates["rollup"] = (stats.hits + pages) / (time.perf_counter() - started)
    finally:
        await conn.close()
    stages = ", ".join(f"{name} {sec:.2f}" for name, sec in sorted(stats.seconds.items(), key=lambda kv: -kv[1]))
    t.check(f"roll-up (one aggregator): {t.rates['rollup']:,.0f} hits/s", stats.hits + pages == hits,
            f"{stats.hits} hits + {pages} page views of {hits}; mail stages, s: {stages}")
    await exactly_once(t, "one aggregator")


async def rollup_two(t: Target) -> None:
    """Two `pixeltrack aggregator --once` started together."""
    started = time.perf_counter()
    two = [await asyncio.create_subprocess_exec(sys.executable, "-m", "pixeltrack.cli", "aggregator", "--once",
                                                env={**os.environ, "DATABASE_URL": t.url}, stdout=subprocess.PIPE)
           for _ in range(2)]
    outs = [(await p.communicate())[0].decode().strip() for p in two]
    t.check(f"two `aggregator --once` at once ({time.perf_counter() - started:.1f} s)",
            all(p.returncode == 0 for p in two), " | ".join(outs))
    await exactly_once(t, "two aggregators")


async def reports(t: Target, secret: str, camp: campaigns.Campaign, sites: list[dict[str, Any]]) -> None:
    """Every mail job's and site's report in every format; the personal site's contacts."""
    formats = [(f"--job {j.job_id}", f) for j in camp.jobs for f in ("table", "json", "csv")]
    formats += [(f"--site {s['job_id']}", f) for s in sites for f in ("table", "json", "csv")]
    failed = [f"{w} {f}" for w, f in formats if cli(t.url, secret, "report", *w.split(), "--format", f).returncode]
    t.check(f"`pixeltrack report`: {len(formats)} reports (5 mail jobs, 3 sites, 3 formats)", not failed,
            ", ".join(failed))
    contacts = cli(t.url, secret, "report", "--site", str(sites[0]["job_id"]), "--format", "json").stdout
    t.check("personal site names contacts", '"contacts"' in contacts and '"mail_job_id"' in contacts)


async def purges(t: Target, secret: str) -> None:
    """`aggregator --purge` now, then a purge 100 days on: keys, scrub, day partitions."""
    done = cli(t.url, secret, "aggregator", "--purge")
    t.check("`pixeltrack aggregator --purge`", done.returncode == 0, done.stdout.strip() or done.stderr[-300:])
    conn = await db.connect(t.url)
    try:
        later = await purge(conn, AggregatorConfig(), dt.datetime.now(dt.UTC) + dt.timedelta(days=100))
        left = await conn.fetchval("SELECT (SELECT count(*) FROM raw_hits WHERE recipient_id IS NOT NULL)"
                                   " + (SELECT count(*) FROM job_keys WHERE key IS NOT NULL)")
    finally:
        await conn.close()
    t.check("purge 100 days on: keys destroyed, hits scrubbed, day partitions dropped",
            later.keys_destroyed >= 4 and later.partitions_dropped != () and left == 0,
            f"{later.keys_destroyed} keys, {later.hits_scrubbed} hits scrubbed, "
            f"{len(later.partitions_dropped)} partitions dropped, {left} keys or hits with a recipient left")


async def forget_one(t: Target, secret: str, job: int) -> None:
    """`pixeltrack forget` a recipient of the personal job who has hits; nothing of them stays."""
    conn = await db.connect(t.url)
    try:
        rid = await conn.fetchval("SELECT min(recipient_id) FROM report_recipients WHERE job_id = $1", job)
        who = await conn.fetchval("SELECT recipient FROM recipients WHERE job_id = $1 AND recipient_id = $2", job, rid)
        done = cli(t.url, secret, "forget", "--recipient", who, "--job", str(job))
        left = await conn.fetchval(
            "SELECT (SELECT count(*) FROM raw_hits WHERE job_id = $1 AND recipient_id = $2)"
            " + (SELECT count(*) FROM report_recipients WHERE job_id = $1 AND recipient_id = $2)"
            " + (SELECT count(*) FROM recipients WHERE job_id = $1 AND recipient_id = $2)", job, rid)
    finally:
        await conn.close()
    t.check(f"`pixeltrack forget` recipient #{rid} of job {job}", done.returncode == 0 and left == 0,
            done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:])


async def settings(url: str) -> str:
    """The Citus settings that matter, as the coordinator has them."""
    conn = await db.connect(url)
    try:
        values = [f"{s} = {await conn.fetchval(f'SHOW {s}')}" for s in SETTINGS]
        nodes = await conn.fetchval("SELECT count(*) FROM pg_dist_node WHERE shouldhaveshards")
        version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'citus'")
    finally:
        await conn.close()
    return f"Citus {version}, {nodes} workers; " + ", ".join(values)


async def main(args: argparse.Namespace) -> int:
    """Plain PostgreSQL (throwaway database), then Citus; the ratios."""
    targets = []
    with tempfile.TemporaryDirectory(prefix="pixeltrack-citus-") as name:
        tmp = Path(name)
        if args.plain:
            plain = Target("plain PostgreSQL", await support.create_database(args.plain, "pt_citus_check"))
            try:
                await run(plain, args, tmp)
            finally:
                await support.drop_database(args.plain, plain.url)
            targets.append(plain)
        citus = Target("Citus", args.citus)
        print(f"distribute: {len(await db.distribute(args.citus))} tables in Citus' metadata")
        print(await settings(args.citus))
        await run(citus, args, tmp)
        targets.append(citus)
    print("\n| | " + " | ".join(t.name for t in targets) + (" | Citus ÷ plain |" if len(targets) == 2 else " |"))
    for key, label in (("copy", "COPY rows/s (batch 5000)"), ("http", "collector hits/s (mail mix)"),
                       ("rollup", "roll-up hits/s (one aggregator)")):
        ratio = f" | {targets[1].rates[key] / targets[0].rates[key]:.2f}" if len(targets) == 2 else ""
        print(f"| {label} | " + " | ".join(f"{t.rates[key]:,.0f}" for t in targets) + ratio + " |")
    failed = [(t.name, c[0]) for t in targets for c in t.checks if not c[1]]
    print(f"checks: {sum(len(t.checks) for t in targets) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--citus", required=True, help="a database on the coordinator (citus created, workers added)")
    parser.add_argument("--plain", help="a plain PostgreSQL server to compare with (a throwaway database is made)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of mail traffic (then half of it)")
    parser.add_argument("--page-views", type=int, default=1500, help="page views (then half of them)")
    parser.add_argument("--recipients", type=int, default=5000, help="recipients over the mail jobs")
    parser.add_argument("--copy-rows", type=int, default=50_000, help="rows for the COPY rate")
    parser.add_argument("--driver", choices=("asyncio", "wrk"), default="asyncio")
    sys.exit(asyncio.run(main(parser.parse_args())))
