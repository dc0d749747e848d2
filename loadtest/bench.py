"""`python -m loadtest.bench [--quick]`: the collector against its baselines, as ratios.

Figures (see loadtest/RESULTS.md): 1 collector vs bare aiohttp+uvloop (CPU
per hit, hits/s); 2 nginx empty_gif with an access log; 3 p99 at half the
collector's maximum rate; 4 peak memory through a database outage; 5 COPY
ingest vs psql \\copy; 6 one worker vs two; 7 the aggregator (its own
script, when present). Prints a markdown report and writes it to
loadtest/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from loadtest import campaign as campaigns
from loadtest import driver_wrk, procs, support
from loadtest.bench_figures import (
    Measure,
    Plan,
    best,
    measure,
    median_ratio,
    plan,
    start_bare,
    start_collector,
    start_nginx,
    versus,
)
from loadtest.bench_ingest import ingest, memory
from loadtest.traffic import build_mix
from pixeltrack.core import db

HERE = Path(__file__).resolve().parent


def machine(pg: str) -> list[str]:
    """nproc, CPU model, kernel, Python, PostgreSQL (``pg``), wrk and library versions."""
    import aiohttp
    import asyncpg
    import uvloop

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())

    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0].strip()
    return [f"nproc {os.cpu_count()}, CPU {model}, kernel {platform.release()}",
            f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, uvloop {uvloop.__version__}, "
            f"asyncpg {asyncpg.__version__}, PostgreSQL {pg}, {wrk}"]


async def pg_version(url: str) -> str:
    """The server's version string."""
    conn = await db.connect(url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def line(m: Measure) -> str:
    """One drive as a short phrase."""
    return (f"{m.rps:,.0f} hits/s, {m.cpu_us:.1f} µs CPU/hit, p50 {m.p50:.2f} ms, p99 {m.p99:.2f} ms "
            f"({m.hits} hits in {m.seconds:.1f} s)")


async def versus_once(collector: procs.Server, baseline: procs.Server, requests: list,
                      p: Plan) -> tuple[list[Measure], list[Measure]]:
    """``versus``, then stop the baseline: it serves this one figure only."""
    try:
        return await versus(collector, baseline, requests, p)
    finally:
        baseline.stop()


async def figures_1_to_3(url: str, secret: str, requests: list, p: Plan, tmp: Path, out: list[str]) -> float:
    """Collector vs bare, vs nginx, and latency at half rate; return the collector's rate."""
    collector = start_collector(url, secret, tmp, p.server_cpus)
    bare = start_bare(tmp, p.server_cpus)
    try:
        subs, bases = await versus(collector, bare, requests, p)
        c, b = best(subs), best(bases)
        csubs, cbases = await versus_once(collector, start_bare(tmp, p.server_cpus, canned=True), requests, p)
        k = best(cbases)
        out += ["## 1. Collector vs the bare aiohttp+uvloop handler", "",
                "| server | hits/s | CPU µs/hit | p50 ms | p99 ms |", "|---|---|---|---|---|",
                f"| collector (persistence on) | {c.rps:,.0f} | {c.cpu_us:.1f} | {c.p50:.2f} | {c.p99:.2f} |",
                f"| bare handler | {b.rps:,.0f} | {b.cpu_us:.1f} | {b.p50:.2f} | {b.p99:.2f} |",
                f"| bare handler, prebuilt answer (`--canned`) | {k.rps:,.0f} | {k.cpu_us:.1f} | {k.p50:.2f} | "
                f"{k.p99:.2f} |", "",
                f"**CPU per hit, collector / bare: {median_ratio(subs, bases, 'cpu_us'):.2f}** (aim ≤ 1.10); "
                f"**hits/s, collector / bare: {median_ratio(subs, bases, 'rps'):.2f}** (aim ≥ 0.90); "
                f"median of {p.repeats} alternated pair(s)", "",
                "Against the bare handler answering from the same prebuilt bytes as the collector (what the "
                "collector's own work costs: token check, append, flush, COPY): "
                f"CPU per hit {median_ratio(csubs, cbases, 'cpu_us'):.2f}, "
                f"hits/s {median_ratio(csubs, cbases, 'rps'):.2f}", ""]
        nginx = start_nginx(tmp, p.server_cpus)
        if nginx is None:
            out += ["## 2. nginx empty_gif: not run (nginx not installed)", ""]
        else:
            nsubs, nbases = await versus_once(collector, nginx, requests, p)
            n = best(nbases)
            out += ["## 2. Against nginx `empty_gif` with an access log (1 worker)", "",
                    f"- nginx: {line(n)}", f"- collector: {line(best(nsubs))}", "",
                    f"**CPU per hit, collector / nginx: {median_ratio(nsubs, nbases, 'cpu_us'):.2f}**; "
                    f"**hits/s, collector / nginx: {median_ratio(nsubs, nbases, 'rps'):.2f}**", ""]
        half = c.rps / 2
        lat = await measure(collector, requests, p, rate=half)
        base_lat = await measure(bare, requests, p, rate=half)
        out += [f"## 3. Latency at half the collector's maximum rate ({half:,.0f} req/s, wrk, loopback)", "",
                f"- collector: p50 {lat.p50:.2f} ms, p90 {lat.p90:.2f} ms, **p99 {lat.p99:.2f} ms** "
                f"(aim < 5 ms), max {lat.max:.2f} ms, {lat.rps:,.0f} hits/s held",
                f"- bare handler, same rate: p50 {base_lat.p50:.2f} ms, p99 {base_lat.p99:.2f} ms, "
                f"max {base_lat.max:.2f} ms", ""]
        return c.rps
    finally:
        collector.stop()
        bare.stop()


async def figure_6(url: str, secret: str, requests: list, p: Plan, tmp: Path, out: list[str]) -> None:
    """--workers 1 vs --workers 2, nothing pinned (the two workers need both cores)."""
    unpinned = Plan(p.seconds, p.connections, p.repeats, None, None)
    rows = []
    for workers in (1, 2):
        server = start_collector(url, secret, tmp, None, workers=workers)
        try:
            await measure(server, requests, unpinned, seconds=2.0)
            rows.append(best([await measure(server, requests, unpinned) for _ in range(p.repeats)]))
        finally:
            server.stop()
    one, two = rows
    out += ["## 6. Scale-out: `--workers 1` vs `--workers 2` (nothing pinned)", "",
            f"- 1 worker: {line(one)}", f"- 2 workers: {line(two)}", "",
            f"**hits/s, 2 workers / 1 worker: {two.rps / one.rps:.2f}**", ""]


async def run(args: argparse.Namespace) -> list[str]:
    """Every figure this machine can run; the report's lines."""
    if not driver_wrk.available():
        raise SystemExit("loadtest.bench: needs wrk (apt-get install wrk)")
    server = campaigns.server_url(args.database_url)
    url = await support.create_database(server, "pt_bench")
    secret = secrets.token_urlsafe(32)
    p = plan(args.quick, args.connections)
    pin = (f"servers pinned to CPU {sorted(p.server_cpus)}, wrk to CPU {sorted(p.driver_cpus)}"
           if p.server_cpus and p.driver_cpus else "nothing pinned (fewer than 2 CPUs)")
    out = [f"# pixeltrack benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC", "",
           f"Command: `{' '.join(['python -m loadtest.bench', *sys.argv[1:]])}`", "",
           *[f"- {m}" for m in machine(await pg_version(url))],
           f"- wrk, 1 thread, {p.connections} connections, {p.seconds:g} s per drive; {pin}; "
           f"PostgreSQL on the same machine, its processes kept on CPU {sorted(p.driver_cpus or [])} "
           "during figures 1-3 (off the collector's core)", ""]
    try:
        camp = await campaigns.setup(url, args.recipients)
        requests = build_mix(camp, secret, args.mix_size)
        out.append(f"- traffic: {len(requests)} distinct requests over {camp.recipients} recipients in "
                   f"{len(camp.jobs)} jobs (70% opens, 20% clicks, 5% doc pages, 5% forged)\n")
        with tempfile.TemporaryDirectory(prefix="pixeltrack-bench-") as folder:
            tmp = Path(folder)
            with procs.postgres_on(p.driver_cpus):
                await figures_1_to_3(url, secret, requests, p, tmp, out)
            print("\n".join(out), flush=True)
            run_s, down = (20.0, 10.0) if args.quick else (60.0, 30.0)
            mem = await memory(url, secret, camp.job_ids, requests, p, tmp, run_s, down)
            out += [f"## 4. Memory: {run_s:g} s at full rate, PostgreSQL unreachable for {down:g} s of it", "",
                    f"- **peak RSS (VmHWM) {mem['peak_rss'] / 2**20:.0f} MB** (aim < 150 MB); "
                    f"{mem['hits']} hits at {mem['rps']:,.0f}/s; collector exit {mem['exit']}",
                    f"- after the outage and the spool's replay: {mem['loss']}", ""]
            rates = await ingest(url, requests, 50_000 if args.quick else 200_000, tmp)
            psql = max(rates["psql"], rates["psql2"])
            copy = {k: v for k, v in rates.items() if k.startswith("copy@")}
            out += ["## 5. Ingest: the collector's COPY path vs `psql \\copy`, same rows, same table", "",
                    "| writer | rows/s | vs psql |", "|---|---|---|",
                    f"| psql \\copy (CSV), best of 2 | {psql:,.0f} | 1.00 |",
                    *[f"| collector COPY, batch {k[5:]} | {v:,.0f} | {v / psql:.2f} |" for k, v in copy.items()],
                    ""]
            await figure_6(url, secret, requests, p, tmp, out)
        out += aggregator_figure(args)
    finally:
        await support.drop_database(server, url)
    return out


def aggregator_figure(args: argparse.Namespace) -> list[str]:
    """Figure 7 from loadtest/bench_aggregator.py when it exists."""
    if not (HERE / "bench_aggregator.py").exists():
        return ["## 7. Aggregator: loadtest/bench_aggregator.py does not exist yet; not run", ""]
    cmd = [sys.executable, "-m", "loadtest.bench_aggregator", *(["--quick"] if args.quick else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=HERE.parent)
    return ["## 7. Aggregator (`" + " ".join(["python", *cmd[1:]]) + "`)", "", proc.stdout.strip(),
            *([f"(exit {proc.returncode}: {proc.stderr.strip()[-500:]})"] if proc.returncode else []), ""]


def main(argv: list[str] | None = None) -> int:
    """Run, print and save the report."""
    p = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="5 s drives, one pair, 20 s memory run")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--recipients", type=int, default=20_000)
    p.add_argument("--mix-size", type=int, default=50_000)
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = p.parse_args(argv)
    import uvloop

    uvloop.install()
    report = "\n".join(asyncio.run(run(args)))
    print(report)
    folder = HERE / "out"
    folder.mkdir(exist_ok=True)
    path = folder / f"bench-{dt.datetime.now():%Y%m%d-%H%M%S}.md"
    path.write_text(report + "\n", encoding="utf-8")
    print(f"\n(written to {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
