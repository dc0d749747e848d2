"""Roll-up cost against collect cost: `python -m loadtest.bench_cost [--duration 10]`.

The cost of a hit is CPU time: the collector's and PostgreSQL's while hits
are collected (the mail mix, driven over HTTP), against the aggregator's and
PostgreSQL's while the same hits are rolled up by `pixeltrack aggregator
--once` (the real enricher). The aim of the scale-out issue: roll-up at most
0.25x of collect. The driver's CPU is not counted, nor the aggregator's
start-up (a second `--once` with nothing to do is subtracted).

The traffic is the mail mix with each agent in 30 builds (hundreds of
distinct agents, as the aim asks) and each request from one of 20,000 public
addresses (IPv4 and IPv6), named by X-Forwarded-For as a load balancer does
(``--agents 1 --addresses 0``: the mix as before, a few dozen agents and the
driver's one address, which flattered the roll-up: each distinct agent,
address and profile costs it work, collecting hardly any).

PostgreSQL is a private server (pgserver, in a temporary folder), so no
other session's work is counted: its CPU is its postmaster's and every
process it started, live and exited (children's times, as the kernel sums
them when they are reaped). Measures and prints; asserts nothing.

With ``--rounds N`` the collected hits are rolled up N times, each time in a
fresh copy of the collected database; with ``--against DIR`` (another source
tree, e.g. ``git worktree add /tmp/base <commit>``) that tree's aggregator
rolls up copies of the same hits too, alternating with this tree's, so the
two are compared on the same hits in the same session. ``--stages`` rolls up
in process and prints each stage's CPU, ours and the PostgreSQL backend's;
with ``--against DIR`` and ``--rounds N`` each round rolls up a copy with each
tree in a process of its own (agents parsed beforehand, so the stages hold
what the hits cost), alternating, and the medians of every stage are printed
side by side, then the longest statements' wall time: a change of 1 µs a hit
is below one run's noise on a shared machine and shows only in medians of
alternating runs. With ``--pairs N``
the whole measure is made N times, each roll-up right after its collect
(the machine's speed drifts on a shared host), and the ratios' median printed.

``--marginal F`` splits a run's cost in two: each round rolls up the collected
hits and a copy that keeps a share F of them (every job's, drawn by hit id,
their runs rebuilt), alternating. The difference over the difference in hits
is what one more hit costs; the rest is what a run costs whatever it rolls up
(a new connection's first statements, each distinct agent parsed, each
address placed: a scheduled aggregator keeps both its connection and its
enricher's tables from run to run, a `--once` pays them every time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from aggregator import claims
from aggregator.config import AggregatorConfig
from aggregator.enrich.enricher import make_enricher
from aggregator.mail.rollup import RunStats, rollup
from loadtest import campaign as campaigns
from loadtest import driver_asyncio, driver_wrk, procs, support
from loadtest.bench_figures import plan
from loadtest.traffic import Request, build_mix, vary_addresses, vary_agents
from pixeltrack.core import db


def pg_cpu(postmaster: psutil.Process) -> float:
    """CPU seconds of the server so far: the postmaster, its exited children, its live ones."""
    t = postmaster.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in postmaster.children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += c.user + c.system
    return total


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (the aggregator runs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def pixeltrack(url: str, tree: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `pixeltrack ARGS` on ``url`` with ``tree``'s code (None: this one's); it must succeed.

    In ``tree`` itself: `python -m` puts the working directory before PYTHONPATH.
    """
    env = {**os.environ, "DATABASE_URL": url} | ({"PYTHONPATH": str(tree)} if tree is not None else {})
    return subprocess.run([sys.executable, "-m", "pixeltrack.cli", *args], capture_output=True, text=True, env=env,
                          cwd=tree, timeout=1800, check=True)


def aggregate_once(url: str, tree: Path | None = None) -> tuple[float, str]:
    """Run `pixeltrack aggregator --once`; its CPU seconds and its line."""
    before = children_cpu()
    done = pixeltrack(url, tree, "aggregator", "--once")
    return children_cpu() - before, done.stdout.strip()


async def count_hits(url: str) -> int:
    """Rows in raw_hits."""
    conn = await db.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM raw_hits"))
    finally:
        await conn.close()


# The roll-up's own state, still empty in the collected hits, in a shape the
# trees compared may not share (unique_seen, and the reading state hanging
# off it): each tree's schema makes it afresh.
ROLLUP_STATE = "DROP TABLE doc_reading_state, unique_seen"


async def drop_rollup_state(url: str) -> None:
    """Drop ROLLUP_STATE's tables in ``url``."""
    conn = await db.connect(url)
    try:
        await conn.execute(ROLLUP_STATE)
    finally:
        await conn.close()


async def roll_up(server_url: str, url: str, postmaster: psutil.Process, tree: Path | None) -> tuple[float, float, str]:
    """Roll up a fresh copy of ``url`` with ``tree``'s aggregator: its CPU seconds, PostgreSQL's, its line.

    The copy gets ``tree``'s schema first; start-up and an empty run are subtracted.
    """
    copy = await support.create_database(server_url, "pt_cost_copy", template=url)
    try:
        await drop_rollup_state(copy)
        pixeltrack(copy, tree, "initdb")
        p0 = pg_cpu(postmaster)
        app, line = aggregate_once(copy, tree)
        pg = pg_cpu(postmaster) - p0
        p0 = pg_cpu(postmaster)
        idle_app, _ = aggregate_once(copy, tree)  # start-up and an empty run: not per hit
        idle_pg = pg_cpu(postmaster) - p0
    finally:
        await support.drop_database(server_url, copy)
    return app - idle_app, pg - idle_pg, line


class StageCPU(RunStats):
    """RunStats that also splits each stage's CPU between this process and its PostgreSQL backend."""

    def __init__(self, backend: psutil.Process) -> None:
        super().__init__()
        self.backend = backend
        self.cpu: dict[str, list[float]] = {}
        self._mark = self._now()

    def _now(self) -> tuple[float, float]:
        b = self.backend.cpu_times()
        return time.process_time(), b.user + b.system

    def restart(self) -> None:
        """Count from now on: what was spent since the last stage is no stage's."""
        self._mark = self._now()

    def add(self, stage: str, started: float) -> float:
        """As RunStats.add, and the CPU of both since the previous stage ended (or the batch began)."""
        now = self._now()
        spent = self.cpu.setdefault(stage, [0.0, 0.0])
        spent[0] += now[0] - self._mark[0]
        spent[1] += now[1] - self._mark[1]
        self._mark = now
        return super().add(stage, started)


async def stages(server_url: str, url: str, hits: int) -> None:
    """Roll up a fresh copy of ``url`` in this process; print each stage's CPU per hit, ours and the backend's."""
    copy = await support.create_database(server_url, "pt_cost_stages", template=url)
    conn = await db.connect(copy)
    try:
        config = AggregatorConfig.from_env({})
        enricher = make_enricher(config.enrich)
        stats = StageCPU(psutil.Process(await conn.fetchval("SELECT pg_backend_pid()")))
        await rollup(conn, config, enricher, stats=stats)
        print(f"stages of one in-process roll-up of {stats.hits:,} hits in {stats.batches} batches, µs per hit "
              "(aggregator / PostgreSQL backend; 'claim' includes the previous batch's commit):")
        total = [0.0, 0.0]
        for stage, (app, pg) in sorted(stats.cpu.items(), key=lambda kv: -sum(kv[1])):
            total[0] += app
            total[1] += pg
            print(f"  {stage:<22} {app / hits * 1e6:6.2f} / {pg / hits * 1e6:6.2f}")
        print(f"  {'total':<22} {total[0] / hits * 1e6:6.2f} / {total[1] / hits * 1e6:6.2f}")
    finally:
        await conn.close()
        await support.drop_database(server_url, copy)


# One in-process roll-up of a database (argv[1]) with the code of the tree it runs in, agents parsed
# beforehand; prints the hits, {stage: [aggregator s, backend s]} and {statement: wall s} as JSON (each
# statement named by its first 70 characters, or a COPY's table; timed around asyncpg's calls, so an older
# tree's are timed alike). Only what every tree of this issue since --stages has (StageCPU, rollup's stats),
# so that an older tree can be compared.
STAGE_RUN = """
import asyncio, json, sys, time
import asyncpg, psutil
from aggregator.config import AggregatorConfig
from aggregator.enrich.enricher import make_enricher
from aggregator.enrich.run import Run
from aggregator.mail.rollup import rollup
from loadtest.bench_cost import StageCPU
from pixeltrack.core import db

spent = {}

def timed(name):
    call = getattr(asyncpg.Connection, name)

    async def timing(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return await call(self, *args, **kwargs)
        finally:
            key = " ".join(args[0].split())[:70] if args and isinstance(args[0], str) else name
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - started

    setattr(asyncpg.Connection, name, timing)

async def main():
    conn = await db.connect(sys.argv[1])
    config = AggregatorConfig.from_env({})
    enricher = make_enricher(config.enrich)
    run = Run(enricher)  # parsed into the enricher's table, which the roll-up's runs read (parse_agent keeps none)
    for row in await conn.fetch("SELECT DISTINCT user_agent FROM raw_hits"):
        run.agent(row[0])
    stats = StageCPU(psutil.Process(await conn.fetchval("SELECT pg_backend_pid()")))
    for name in ("execute", "fetch", "fetchval", "fetchrow", "copy_from_query", "copy_to_table",
                 "copy_records_to_table"):
        timed(name)
    await rollup(conn, config, enricher, stats=stats)
    await conn.close()
    print(json.dumps({"hits": stats.hits, "stages": stats.cpu, "statements": spent}))

asyncio.run(main())
"""


async def stage_run(server_url: str, url: str, tree: Path | None) -> dict[str, Any]:
    """Roll up a fresh copy of ``url`` in a process of ``tree``'s (None: this one's); what STAGE_RUN printed."""
    copy = await support.create_database(server_url, "pt_cost_stages", template=url)
    try:
        await drop_rollup_state(copy)
        pixeltrack(copy, tree, "initdb")
        return stages_of(copy, tree)
    finally:
        await support.drop_database(server_url, copy)


def stages_of(url: str, tree: Path | None) -> dict[str, Any]:
    """STAGE_RUN on ``url`` in a process of ``tree``'s; what it printed."""
    env = {**os.environ} | ({"PYTHONPATH": str(tree)} if tree is not None else {})
    done = subprocess.run([sys.executable, "-c", STAGE_RUN, url], capture_output=True, text=True, env=env, cwd=tree,
                          timeout=1800)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"stage run in {tree or 'this tree'} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def compare_stages(server_url: str, url: str, rounds: int, against: Path) -> None:
    """``rounds`` times, in-process roll-ups of the collected hits by this tree and ``against``, alternating;
    each stage's median µs a hit (aggregator / PostgreSQL) for both."""
    trees: dict[str, Path | None] = {"this tree": None, "against": against}
    runs: dict[str, list[dict[str, list[float]]]] = {name: [] for name in trees}
    walls: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for n in range(rounds):
        for name, tree in trees.items():
            found = await stage_run(server_url, url, tree)
            hits = found["hits"]
            per_hit = {k: [v[0] / hits * 1e6, v[1] / hits * 1e6] for k, v in found["stages"].items()}
            runs[name].append(per_hit)
            walls[name].append({k: v / hits * 1e6 for k, v in found["statements"].items()})
            total = sum(sum(v) for v in per_hit.values())
            print(f"round {n + 1} {name}: {hits:,} hits, {total:.2f} us per hit", flush=True)

    def median(name: str, stage: str, side: int) -> float:
        return statistics.median(run.get(stage, [0.0, 0.0])[side] for run in runs[name])

    stages = sorted({k for each in runs.values() for run in each for k in run},
                    key=lambda k: -median("against", k, 0) - median("against", k, 1))
    print(f"medians of {rounds} rounds, µs per hit (aggregator / PostgreSQL); against = {against}")
    print(f"  {'stage':<22} {'this tree':>15} {'against':>15}")
    for stage in stages:
        ours, theirs = (f"{median(t, stage, 0):6.2f} / {median(t, stage, 1):5.2f}" for t in trees)
        print(f"  {stage:<22} {ours:>15} {theirs:>15}")
    totals = {name: statistics.median(sum(sum(v) for v in run.values()) for run in runs[name]) for name in trees}
    print(f"  {'total (median)':<22} {totals['this tree']:15.2f} {totals['against']:15.2f}"
          f"  ({totals['this tree'] / totals['against']:.2f}x)")

    def wall(name: str, statement: str) -> float:
        return statistics.median(run.get(statement, 0.0) for run in walls[name])

    named = {k for each in walls.values() for run in each for k in run}
    longest = sorted(named, key=lambda k: -max(wall(name, k) for name in trees))[:STATEMENTS]
    print(f"the {STATEMENTS} longest statements, median wall µs per hit (PostgreSQL's time and the transfer):")
    print(f"  {'this tree':>9} {'against':>9}  statement")
    for statement in longest:
        print(f"  {wall('this tree', statement):9.2f} {wall('against', statement):9.2f}  {statement}")


STATEMENTS = 12  # how many of the longest statements compare_stages prints


async def compare(server_url: str, url: str, postmaster: psutil.Process, hits: int, collect: float,
                  rounds: int, against: Path | None) -> None:
    """Roll up copies of the collected hits ``rounds`` times with this tree (and ``against``), alternating."""
    trees: dict[str, Path | None] = {"this tree": None} | ({f"against {against}": against} if against else {})
    totals: dict[str, list[float]] = {name: [] for name in trees}
    for n in range(rounds):
        for name, tree in trees.items():
            app, pg, line = await roll_up(server_url, url, postmaster, tree)
            totals[name].append((app + pg) / hits * 1e6)
            print(f"round {n + 1} {name}: aggregator {app / hits * 1e6:5.1f} + PostgreSQL {pg / hits * 1e6:5.1f} = "
                  f"{totals[name][-1]:5.1f} us per hit, {totals[name][-1] / collect:.2f}x collect [{line}]", flush=True)
    for name, values in totals.items():
        middle, least = statistics.median(values), min(values)
        # The least too: on a shared machine other processes only ever add CPU time (caches, cores), so
        # the cheapest round is the one least disturbed.
        print(f"{name}: median {middle:.1f} us per hit = {middle / collect:.2f}x collect ({collect:.1f} us), "
              f"least {least:.1f} = {least / collect:.2f}x; all {', '.join(f'{v:.1f}' for v in values)}")


# Keeps about $1 of the hits: a collector's hit ids end in a counter (the process's prefix first), so every
# job's are drawn alike, and the same ones for every tree compared. The kept rows are written anew, in the
# order they came, into emptied partitions: deleted in place, the others stayed as dead rows that every
# claim's index scan stepped over (about 20 ms a claim of a handful of hits), which made the part dearer
# and a hit more look cheaper than it is (loadtest/RESULTS.md §25).
KEEP_SHARE = """
CREATE TEMP TABLE kept_share AS
SELECT * FROM raw_hits WHERE ('x' || right(hit_id::text, 8))::bit(32)::int8 % 1000 < $1 * 1000;
TRUNCATE raw_hits;
INSERT INTO raw_hits SELECT * FROM kept_share ORDER BY received_at, hit_id;
DROP TABLE kept_share;
DELETE FROM hit_runs
"""


async def part_of(server_url: str, url: str, share: float) -> tuple[str, int]:
    """A copy of ``url`` with ``share`` of its hits (KEEP_SHARE), their runs rebuilt; its URL and hits."""
    copy = await support.create_database(server_url, "pt_cost_part", template=url)
    conn = await db.connect(copy)
    try:
        async with conn.transaction():
            await conn.execute(KEEP_SHARE.replace("$1", repr(float(share))))
            await conn.fetchval(claims.REBUILD_RUNS)
        return copy, int(await conn.fetchval("SELECT count(*) FROM raw_hits"))
    finally:
        await conn.close()


async def marginal(server_url: str, url: str, postmaster: psutil.Process, hits: int, collect: float,
                   rounds: int, share: float) -> None:
    """``rounds`` times, roll up copies of all the collected hits and of ``share`` of them, alternating; what a
    hit more costs (the slope) and what a run costs whatever it rolls up (the rest), medians."""
    part, part_hits = await part_of(server_url, url, share)
    spent: dict[str, list[tuple[float, float]]] = {"all": [], "part": []}
    try:
        for n in range(rounds):
            for name, copy, count in (("all", url, hits), ("part", part, part_hits)):
                app, pg, line = await roll_up(server_url, copy, postmaster, None)
                spent[name].append((app, pg))
                print(f"round {n + 1} {name}: {count:,} hits, aggregator {app:.3f} s + PostgreSQL {pg:.3f} s "
                      f"= {(app + pg) / count * 1e6:.1f} us per hit [{line}]", flush=True)
    finally:
        await support.drop_database(server_url, part)

    def median(name: str, side: int) -> float:
        return statistics.median(v[side] for v in spent[name])

    more = hits - part_hits
    slope = [(median("all", side) - median("part", side)) / more for side in (0, 1)]
    fixed = [median("all", side) - slope[side] * hits for side in (0, 1)]
    whole = (median("all", 0) + median("all", 1)) / hits * 1e6
    print(f"all {hits:,} hits: {whole:.1f} us per hit = {whole / collect:.2f}x collect ({collect:.1f} us); "
          f"a hit more: aggregator {slope[0] * 1e6:.1f} + PostgreSQL {slope[1] * 1e6:.1f} = {sum(slope) * 1e6:.1f} "
          f"us = {sum(slope) * 1e6 / collect:.2f}x; the rest, a run's: aggregator {fixed[0]:.2f} + PostgreSQL "
          f"{fixed[1]:.2f} s (medians of {rounds}; the part: {part_hits:,} hits)")


@dataclass
class Collected:
    """Hits a collector took under the mix, in a database of their own, and what collecting them cost."""

    url: str
    hits: int
    app: float  # CPU seconds of the collector
    pg: float  # and of PostgreSQL
    line: str  # how many at what rate, by which driver

    @property
    def us(self) -> float:
        """CPU per hit, both sides, in µs."""
        return (self.app + self.pg) / self.hits * 1e6


@dataclass(frozen=True)
class Mix:
    """What the collected traffic is made of: jobs of each mode, builds of each agent, client addresses."""

    sets: int = 1
    agents: int = 30  # builds of each of the mix's agents (as bench_keepup): hundreds of distinct agents
    addresses: int = 20_000  # distinct client addresses behind the balancer; 0: the mix's own (one, mostly)

    def requests(self, camp: campaigns.Campaign, secret: str) -> list[Request]:
        """The request list the driver cycles through."""
        requests = build_mix(camp, secret, 50_000)
        if self.agents > 1:
            requests = vary_agents(requests, self.agents)
        return vary_addresses(requests, self.addresses) if self.addresses else requests

    def describe(self, requests: list[Request]) -> str:
        """How many distinct agents and addresses ``requests`` bring."""
        agents = {v for r in requests for n, v in r.headers if n == "User-Agent"}
        addresses = {v for r in requests for n, v in r.headers if n == "X-Forwarded-For"}
        return f"{len(agents)} agents, {len(addresses) or 1} client addresses"


async def collect(
    server_url: str, postmaster: psutil.Process, seconds: float, tmp: Path, mix: Mix = Mix()
) -> Collected:
    """A fresh database and campaign; the collector under the mail mix for ``seconds``; its cost."""
    url = await support.create_database(server_url, "pt_cost")
    secret = secrets.token_urlsafe(32)
    camp = await campaigns.setup(url, 20_000, sets=mix.sets)
    requests = mix.requests(camp, secret)
    port = support.free_port()
    p = plan(quick=True, connections=32)  # as figure 1: the collector on the last core, wrk on the first
    # Behind a balancer on this machine: the collector takes the client's address from X-Forwarded-For.
    env = procs.collector_env(url, secret, tmp / "spool", PIXELTRACK_TRUSTED_PROXIES="127.0.0.1")
    collector = procs.Server(procs.collector_cmd(port), port, env,
                             cpus=p.server_cpus, log=tmp / "collector.log")
    try:
        collector.wait_ready()
        c0, p0 = collector.cpu_seconds(), pg_cpu(postmaster)
        if driver_wrk.available():
            result = await driver_wrk.drive(requests, "127.0.0.1", port, connections=32, duration=seconds,
                                            show_progress=False, cpus=p.driver_cpus)
        else:
            result = await driver_asyncio.drive(requests, "127.0.0.1", port, duration=seconds, show_progress=False)
        await asyncio.sleep(1.5)  # the last batch is written (flush interval 0.5 s)
        collect_app = collector.cpu_seconds() - c0
    finally:
        collector.stop()
    collect_pg = pg_cpu(postmaster) - p0
    hits = await count_hits(url)
    return Collected(url, hits, collect_app, collect_pg, f"{hits:,} hits collected at {result.rate:,.0f}/s "
                                                        f"({result.driver}; {mix.describe(requests)})")


async def pairs(server_url: str, postmaster: psutil.Process, seconds: float, tmp: Path, count: int,
                mix: Mix = Mix()) -> None:
    """``count`` times: collect, then roll up those hits at once; each pair's ratio, and their median.

    The machine's speed drifts between minutes on a shared host (collecting cost 62 to 93 µs a hit
    in one morning), so a ratio from a collect and a roll-up measured minutes apart moves with it;
    measured back to back, each pair shares the machine's state of the moment.
    """
    ratios = []
    for n in range(count):
        got = await collect(server_url, postmaster, seconds, tmp, mix)
        try:
            app, pg, line = await roll_up(server_url, got.url, postmaster, None)
        finally:
            await support.drop_database(server_url, got.url)
        roll = (app + pg) / got.hits * 1e6
        ratios.append(roll / got.us)
        print(f"pair {n + 1}: {got.line}; collect {got.app / got.hits * 1e6:.1f} + {got.pg / got.hits * 1e6:.1f} = "
              f"{got.us:.1f} us per hit; roll-up {app / got.hits * 1e6:.1f} + {pg / got.hits * 1e6:.1f} = {roll:.1f} "
              f"us per hit: {ratios[-1]:.2f}x [{line}]", flush=True)
    print(f"roll-up / collect, {count} pairs: median {statistics.median(ratios):.2f}x, least {min(ratios):.2f}x, "
          f"all {', '.join(f'{r:.2f}' for r in ratios)} (aim 0.25x)")


async def bench(server_url: str, postmaster: psutil.Process, seconds: float, tmp: Path, rounds: int = 1,
                against: Path | None = None, by_stage: bool = False, mix: Mix = Mix(), share: float = 0.0) -> None:
    """Collect for ``seconds``, then roll up; print both costs and their ratio."""
    got = await collect(server_url, postmaster, seconds, tmp, mix)
    url, hits, collect_app, collect_pg = got.url, got.hits, got.app, got.pg
    if share:
        print(f"{got.line}; collect: collector {collect_app / hits * 1e6:.1f} + PostgreSQL "
              f"{collect_pg / hits * 1e6:.1f} us per hit")
        await marginal(server_url, url, postmaster, hits, got.us, rounds, share)
        await support.drop_database(server_url, url)
        return
    if by_stage:
        print(got.line)
        if against is not None:
            await compare_stages(server_url, url, rounds, against)
            await support.drop_database(server_url, url)
            return
        for _ in range(rounds):
            await stages(server_url, url, hits)
        await support.drop_database(server_url, url)
        return
    if rounds > 1 or against is not None:
        print(f"{got.line}; collect: collector {collect_app / hits * 1e6:.1f} + PostgreSQL "
              f"{collect_pg / hits * 1e6:.1f} us per hit")
        await compare(server_url, url, postmaster, hits, got.us, rounds, against)
        await support.drop_database(server_url, url)
        return
    p0 = pg_cpu(postmaster)
    started = time.perf_counter()
    roll_app, line = aggregate_once(url)
    wall = time.perf_counter() - started
    roll_pg = pg_cpu(postmaster) - p0
    p0 = pg_cpu(postmaster)
    idle_app, _ = aggregate_once(url)  # start-up and an empty run: not per hit
    idle_pg = pg_cpu(postmaster) - p0
    roll_app, roll_pg = roll_app - idle_app, roll_pg - idle_pg

    def us(value: float) -> str:
        return f"{value / hits * 1e6:6.1f} µs"

    print(f"{got.line}; "
          f"rolled up in {wall:.1f} s: {line}")
    print(f"collect: collector {us(collect_app)} + PostgreSQL {us(collect_pg)} = "
          f"{us(collect_app + collect_pg)} per hit")
    print(f"roll-up: aggregator {us(roll_app)} + PostgreSQL {us(roll_pg)} = {us(roll_app + roll_pg)} per hit "
          f"(start-up and an empty run, {idle_app:.2f} + {idle_pg:.2f} s, subtracted)")
    print(f"roll-up / collect: {(roll_app + roll_pg) / (collect_app + collect_pg):.2f}x (aim 0.25x)")
    await support.drop_database(server_url, url)


Measure = Callable[[str, psutil.Process, float, int, Path], Coroutine[Any, Any, None]]


def collect_and_measure(doc: str, prefix: str, rounds: str, work: Measure) -> None:
    """The command of a benchmark that collects ``--duration`` seconds of the mix and measures ``--rounds`` times
    (``rounds``: what a round is, for its help): ``work(URL, postmaster, seconds, rounds, folder)`` on a private
    PostgreSQL (pgserver) in a temporary folder named from ``prefix``, stopped afterwards."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of traffic (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help=f"{rounds} (default 3)")
    args = parser.parse_args()
    import pgserver

    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        tmp = Path(name)
        server = pgserver.get_server(tmp / "pg", cleanup_mode="stop")
        asyncio.run(work(server.get_uri(), psutil.Process(server.get_pid()), args.duration, args.rounds, tmp))
    sys.stdout.flush()


def main() -> None:
    """A private PostgreSQL in a temporary folder; the benchmark; stop it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of traffic (default 10)")
    parser.add_argument("--rounds", type=int, default=1, help="roll-ups of copies of the collected hits (default 1)")
    parser.add_argument("--against", type=Path, help="another source tree whose aggregator rolls up copies too")
    parser.add_argument("--stages", action="store_true",
                        help="instead: roll up in this process and print each stage's CPU (``--rounds`` times;"
                             " with --against, each tree in a process of its own, alternating, and the medians)")
    parser.add_argument("--pairs", type=int, default=0,
                        help="instead: N times collect and roll up at once, each pair's ratio and the median")
    parser.add_argument("--marginal", type=float, default=0.0, metavar="SHARE",
                        help="instead: roll up all the hits and SHARE of them (e.g. 0.2), ``--rounds`` times each, "
                             "and print what a hit more costs and what a run costs whatever it rolls up")
    parser.add_argument("--sets", type=int, default=1,
                        help="jobs of each mode (default 1: five jobs; 10: fifty, a batch's most)")
    parser.add_argument("--agents", type=int, default=Mix.agents,
                        help=f"builds of each agent of the mix (default {Mix.agents}; 1: the mix's own few dozen)")
    parser.add_argument("--addresses", type=int, default=Mix.addresses,
                        help=f"client addresses, each request from one (default {Mix.addresses:,}; 0: the mix's own)")
    args = parser.parse_args()
    mix = Mix(args.sets, args.agents, args.addresses)
    import pgserver

    with tempfile.TemporaryDirectory(prefix="pixeltrack-cost-") as name:
        tmp = Path(name)
        server = pgserver.get_server(tmp / "pg", cleanup_mode="stop")
        postmaster = psutil.Process(server.get_pid())
        lines = server.psql("SHOW server_version").splitlines()
        print(f"PostgreSQL {lines[2].strip() if len(lines) > 2 else '?'} (private, pgserver)")
        if args.pairs:
            asyncio.run(pairs(server.get_uri(), postmaster, args.duration, tmp, args.pairs, mix))
        else:
            asyncio.run(bench(server.get_uri(), postmaster, args.duration, tmp, args.rounds, args.against,
                              args.stages, mix, args.marginal))


if __name__ == "__main__":
    main()
