"""One aggregator against two on the same backlog: `python -m loadtest.bench_two_aggregators [--hits 200000]`.

A backlog is collected once (a real collector, the mail mix with hundreds
of distinct agents, 20 jobs: four in each tracking mode, and forged tokens),
then copied (CREATE DATABASE ... TEMPLATE) for every run, so each run starts
from the very same rows: (a) one `python -m aggregator --once`, (b) two of
them started together. Rounds alternate the order. Prints the wall time of
each run (process start to the last exit), the ratio, and how long each
aggregator's session waited on a lock (pg_stat_activity sampled every 20 ms).

Exactly once: in every run the aggregators' own counts add up to the
backlog, no raw hit is left unrolled, and what each hit adds whatever its
verdict (ledger.HIT_COUNTS: every raw hit rolled, totals per job, hour,
link, recipient, cell and breakdown) is identical to the first
one-aggregator run. Exit 0 only when that holds; timings are printed, never
asserted. Then every table (report tables, keyed hashes, the rolled-up raw
hits; updated_at and rolled_at aside) is compared with that run too, and
the differences printed: the human/unknown/machine verdict of a click
follows the recipient's other hits in the same batch (RULES.md of the
enricher), so where batches split shows. The jobs' hashing keys are made
with the backlog, so every run hashes with the same keys.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from loadtest import campaign as campaigns
from loadtest import collecting, ledger, procs, support, verify
from loadtest.bench_keepup import DEFAULT_SERVER
from loadtest.traffic import build_mix, vary_addresses, vary_agents
from pixeltrack.core import db

ROUNDS_OF_JOBS = 4  # campaign.setup makes one job per mode: four times over, 20 jobs
ONCE_LINE = re.compile(r"rolled up (\d+) hits")
WAITING = """
SELECT application_name, wait_event_type, wait_event FROM pg_stat_activity
WHERE application_name = ANY($1::text[]) AND wait_event_type = 'Lock'
"""
EVER = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # the loss check counts hits from a time: all of them
MACHINE = "SELECT kind, count(*) AS n FROM raw_hits WHERE traffic = 'machine' GROUP BY kind"
JOB_KEYS = "INSERT INTO job_keys (job_id, key) SELECT * FROM unnest($1::bigint[], $2::bytea[])"


async def make_backlog(url: str, args: argparse.Namespace, folder: Path) -> int:
    """The template database: 20 jobs, their keys, ``args.hits`` collected hits (vacuumed, analyzed); the hits."""
    jobs: list[campaigns.Job] = []
    for i in range(ROUNDS_OF_JOBS):
        jobs += (await campaigns.setup(url, args.recipients // ROUNDS_OF_JOBS, seed=7 + i)).jobs
    camp = campaigns.Campaign(tuple(jobs))
    secret = secrets.token_urlsafe(32)
    requests = vary_agents(build_mix(camp, secret, args.mix_size), args.agents)
    if args.addresses:
        requests = vary_addresses(requests, args.addresses)
    collected = await collecting.collect(url, requests, secret, folder, count=args.hits, balanced=bool(args.addresses))
    conn = await db.connect(url)
    try:
        await conn.execute(JOB_KEYS, camp.job_ids, [secrets.token_bytes(32) for _ in camp.job_ids])
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    stored = await verify.count_hits(url, EVER, camp.job_ids)
    loss, exact = verify.loss_line(collected.result.answered, stored)
    modes = ", ".join(sorted({j.mode for j in jobs}))
    print(f"backlog    {stored.total():,} hits collected at {collected.result.rate:,.0f}/s into {len(jobs)} jobs "
          f"({modes}), {camp.recipients:,} recipients; {loss}", flush=True)  # fmt: skip
    if not exact or collected.exit_code != 0:
        raise SystemExit("the backlog was not stored as answered")
    return stored.total()


@dataclass
class LockWaits:
    """Seconds each named session spent waiting on a lock, by wait event, from pg_stat_activity samples."""

    names: list[str]
    every: float = 0.02
    waited: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))

    async def sample(self, url: str) -> None:
        """Until cancelled: each sample's waiting sessions are charged the time since the previous sample."""
        conn = await db.connect(support.with_application_name(url, "pt-bench-sampler"))
        try:
            last = time.monotonic()
            while True:
                rows = await conn.fetch(WAITING, self.names)
                now = time.monotonic()
                for row in rows:
                    self.waited[row["application_name"]][row["wait_event"]] += now - last
                last = now
                await asyncio.sleep(self.every)
        finally:
            await conn.close()

    def describe(self, name: str) -> str:
        """e.g. "0.42 s (advisory 0.40, transactionid 0.02)"."""
        waits = self.waited[name]
        detail = ", ".join(f"{event} {s:.2f}" for event, s in sorted(waits.items(), key=lambda w: -w[1]))
        return f"{sum(waits.values()):.2f} s" + (f" ({detail})" if detail else "")


@dataclass
class Run:
    """One roll-up of a fresh copy of the backlog by ``count`` aggregators."""

    count: int
    wall: float
    lines: list[str]  # each aggregator's output line and lock waits
    rolled: int  # the sum of the aggregators' own counts
    unrolled: int
    counts: ledger.Digests  # what each hit adds, whatever its verdict: equal when exactly once held
    tables: ledger.Digests  # every table
    machine: Counter[str]  # hits found to be a machine's, per kind
    idle: float  # wall of one more `--once` afterwards, with nothing left: start-up and an empty run


async def aggregators(url: str, names: list[str]) -> list[str]:
    """Run one `python -m aggregator --once` per name at the same time; their output lines."""
    started = [
        await asyncio.create_subprocess_exec(
            *procs.aggregator_cmd("--once"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "DATABASE_URL": support.with_application_name(url, name)})
        for name in names
    ]  # fmt: skip
    outs = [(await p.communicate())[0].decode(errors="replace").strip() for p in started]
    for name, proc, out in zip(names, started, outs, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{out[-3000:]}")
    return outs


async def roll_up(server: str, template: str, count: int) -> Run:
    """A fresh copy of the backlog rolled up by ``count`` aggregators at once; what it did, then the copy dropped."""
    url = await support.create_database(server, "pt_two", template=template)
    try:
        names = [f"pt-aggregator-{i + 1}" for i in range(count)]
        waits = LockWaits(names)
        sampler = asyncio.create_task(waits.sample(url))
        started = time.perf_counter()
        outs = await aggregators(url, names)
        wall = time.perf_counter() - started
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        started = time.perf_counter()
        await aggregators(url, ["pt-aggregator-idle"])
        idle = time.perf_counter() - started
        conn = await db.connect(url)
        try:
            left, counts = await ledger.unrolled(conn), await ledger.hit_counts(conn)
            tables = await ledger.fingerprints(conn)
            machine = Counter({r["kind"]: int(r["n"]) for r in await conn.fetch(MACHINE)})
        finally:
            await conn.close()
    finally:
        await support.drop_database(server, url)
    lines = [f"{name}: {out}; lock waits {waits.describe(name)}" for name, out in zip(names, outs, strict=True)]
    rolled = sum(int(m[1]) for out in outs for m in ONCE_LINE.finditer(out))
    return Run(count, wall, lines, rolled, left, counts, tables, machine, idle)


def report(runs: list[Run], backlog: int) -> bool:
    """Walls and their ratio, the exactly-once checks; True when they hold."""
    one = [r for r in runs if r.count == 1]
    two = [r for r in runs if r.count == 2]
    ratios = [a.wall / b.wall for a, b in zip(one, two, strict=True)]
    print(f"wall       one aggregator {statistics.median(r.wall for r in one):.2f} s, two aggregators "
          f"{statistics.median(r.wall for r in two):.2f} s (medians)")  # fmt: skip
    print(
        f"start-up   one `--once` with nothing to do (start-up and an empty run, inside every wall): "
        f"{statistics.median(r.idle for r in runs):.2f} s (median)"
    )
    print(f"speed-up   one / two: {statistics.median(ratios):.2f}x (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    ok = all([exactly_once(one[0], r, backlog) for r in runs])  # a line for every run
    for r in runs:
        if r is not one[0]:
            identical(one[0], r)
    reports = ", ".join(f"{n} {rows:,}" for n, (rows, _) in sorted(one[0].tables.items()) if rows and n != "raw_hits")
    print(f"rows       raw_hits {one[0].tables['raw_hits'][0]:,}; {reports}")
    print("exactly once: yes" if ok else "EXACTLY ONCE FAILED", flush=True)
    return ok


def label(run: Run) -> str:
    """The run's name in the summary."""
    return "one aggregator" if run.count == 1 else "two aggregators"


def exactly_once(first: Run, run: Run, backlog: int) -> bool:
    """Print and return whether ``run`` rolled every hit once, counted as in ``first``."""
    diff = ledger.differences(first.counts, run.counts)
    print(f"{label(run):16} rolled up {run.rolled:,} of {backlog:,}, {run.unrolled} left unrolled; hit counts "
          + (f"DIFFER: {', '.join(diff)}" if diff else f"identical to the first one-aggregator run "
             f"({', '.join(n for n, _ in ledger.HIT_COUNTS)})"))  # fmt: skip
    return run.rolled == backlog and run.unrolled == 0 and not diff


def identical(first: Run, run: Run) -> None:
    """Print whether every table is the same as in ``first``, and the machine verdicts when not."""
    diff = ledger.differences(first.tables, run.tables)
    if not diff:
        print(f"{label(run):16} every table identical to the first one-aggregator run ({len(run.tables)} tables)")
        return
    verdicts = ", ".join(f"{k} {first.machine[k]:,} vs {run.machine[k]:,}" for k in sorted(first.machine | run.machine))
    print(
        f"{label(run):16} tables that differ from the first one-aggregator run: {', '.join(diff)}; "
        f"hits found a machine's: {verdicts}"
    )


async def bench(args: argparse.Namespace) -> bool:
    """Backlog, rounds of (a) and (b) in alternating order, the report; True when exactly once held."""
    server = args.database_url
    template = await support.create_database(server, "pt_two_src")
    try:
        with tempfile.TemporaryDirectory(prefix="pixeltrack-two-") as name:
            backlog = await make_backlog(template, args, Path(name))
        runs = []
        for i in range(args.rounds):
            for count in (1, 2) if i % 2 == 0 else (2, 1):
                run = await roll_up(server, template, count)
                print(f"round {i + 1}, {count} aggregator{'s' if count > 1 else ''}: wall {run.wall:.2f} s", flush=True)
                print("\n".join(f"    {line}" for line in run.lines), flush=True)
                runs.append(run)
        return report(runs, backlog)
    finally:
        await support.drop_database(server, template)


def main(argv: list[str] | None = None) -> int:
    """Parse flags and run; exit 0 only when every run rolled up exactly once."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_two_aggregators",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument("--hits", type=int, default=200_000, help="hits in the backlog (default 200000)")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs, order alternating (default 3)")
    parser.add_argument("--recipients", type=int, default=20_000, help="recipients over all jobs (default 20000)")
    parser.add_argument("--mix-size", type=int, default=50_000, help="distinct requests (default 50000)")
    parser.add_argument("--agents", type=int, default=30, help="builds of each agent of the mix (default 30)")
    parser.add_argument("--addresses", type=int, default=20_000,
                        help="client addresses behind the balancer (default 20000; 0: the mix's own)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_SERVER)
    return 0 if asyncio.run(bench(parser.parse_args(argv))) else 1


if __name__ == "__main__":
    sys.exit(main())
