"""`python -m loadtest.ab`: this tree's collector against a git revision's, alternated, as ratios.

For a change to the request or write path: is it faster, by how much, and is
that more than the noise? Both collectors (and the bare handlers, for scale)
run pinned to the last core, wrk to core 0 with PostgreSQL, on the same
database and the same wrk mix; drives alternate so a neighbour's load hits
both alike. Prints each drive, then the median ratio over the rounds
against the first server named. Run it with nothing else busy.

    python -m loadtest.ab --against HEAD~1 --rounds 6
    python -m loadtest.ab --servers bare,canned,collector --rounds 3
    python -m loadtest.ab --against HEAD --rate 15000       # latency at a fixed rate
    python -m loadtest.ab --rounds 1 --py-spy prof.txt      # where the collector's CPU goes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from loadtest import campaign as campaigns
from loadtest import driver_wrk, procs, support
from loadtest.bench_figures import Measure, Plan, measure, median_ratio, plan
from loadtest.traffic import build_mix

ROOT = Path(__file__).resolve().parent.parent


def worktree(revision: str, folder: Path) -> Path:
    """A detached checkout of ``revision`` in ``folder`` (removed by ``drop_worktree``)."""
    path = folder / "against"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(path), revision], check=True)
    return path


def drop_worktree(path: Path) -> None:
    """Remove a worktree made by ``worktree``."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)


def commands(port: int, against: Path | None) -> dict[str, list[str]]:
    """The command line of every server this tool knows, on ``port``."""
    bare = [sys.executable, "-m", "loadtest.bare", "--port", str(port)]
    out = {"bare": bare, "canned": [*bare, "--canned"], "collector": procs.collector_cmd(port)}
    if against is not None:  # same interpreter, the revision's packages first on the path
        out["against"] = ["env", f"PYTHONPATH={against}", "sh", "-c", f'cd "{against}" && exec "$@"', "sh",
                          *procs.collector_cmd(port)]
    return out


def start(name: str, url: str, secret: str, tmp: Path, cpus: set[int] | None, against: Path | None) -> procs.Server:
    """One server, ready."""
    port = support.free_port()
    env = procs.collector_env(url, secret, Path(tempfile.mkdtemp(prefix=f"spool-{name}-", dir=tmp)))
    server = procs.Server(commands(port, against)[name], port, env, cpus=cpus, log=tmp / f"{name}.log")
    server.wait_ready()
    return server


def profiler(server: procs.Server, out: str | None, seconds: float) -> subprocess.Popen[bytes] | None:
    """py-spy sampling ``server`` for most of one drive into ``out`` (raw stacks), when asked."""
    if not out:
        return None
    cmd = ["py-spy", "record", "-r", "500", "-f", "raw", "-o", out, "-d", str(max(1, int(seconds) - 1)),
           "-p", str(server.proc.pid)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_functions(path: str, count: int = 25) -> str:
    """The functions with the most samples of their own (self time) in a py-spy raw file."""
    own: Counter[str] = Counter()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        stack, _, samples = line.rpartition(" ")
        own[re.sub(r":\d+\)$", ")", stack.rsplit(";", 1)[-1])] += int(samples)
    total = sum(own.values()) or 1
    return "\n".join([f"py-spy: {total} samples, self time:",
                      *(f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(count))])


def ratios(results: dict[str, list[Measure]], base: str, attr: str) -> dict[str, float]:
    """Median over the rounds of each server's ``attr`` over the base server's."""
    return {name: median_ratio(ms, results[base], attr) for name, ms in results.items()}


async def run(args: argparse.Namespace, say: Callable[[str], None] = print) -> dict[str, list[Measure]]:
    """Set up, alternate the drives, tear down; the measures per server."""
    server_url = campaigns.server_url(args.database_url)
    url = await support.create_database(server_url, "pt_ab")
    tmp = Path(tempfile.mkdtemp(prefix="pixeltrack-ab-"))
    against = worktree(args.against, tmp) if args.against else None
    names = (["against"] if against else []) + args.servers.split(",")  # the first is the base
    servers: dict[str, procs.Server] = {}
    try:
        secret = secrets.token_urlsafe(32)
        requests = build_mix(await campaigns.setup(url, args.recipients), secret, args.mix_size)
        p = plan(False, args.connections)
        p = Plan(args.seconds, p.connections, args.rounds, p.server_cpus, p.driver_cpus)
        for name in names:
            servers[name] = start(name, url, secret, tmp, p.server_cpus, against)
        results: dict[str, list[Measure]] = {name: [] for name in names}
        with procs.postgres_on(p.driver_cpus):
            for name in names:
                await measure(servers[name], requests, p, seconds=2.0)  # warm-up
            for round_ in range(args.rounds):
                for name in names:
                    spy = profiler(servers[name], args.py_spy, p.seconds) if round_ == 0 and name == names[-1] else None
                    m = await measure(servers[name], requests, p, rate=args.rate)
                    if spy is not None:
                        spy.wait(30)
                        say(top_functions(args.py_spy))
                    results[name].append(m)
                    say(f"round {round_ + 1}  {name:10s} {m.rps:8,.0f} hits/s  {m.cpu_us:6.1f} µs CPU/hit  "
                        f"p99 {m.p99:6.2f} ms")
        return results
    finally:
        for server in servers.values():
            server.stop()
        if against:
            drop_worktree(against)
        await support.drop_database(server_url, url)


def main(argv: list[str] | None = None) -> int:
    """Parse, run, print the ratios."""
    p = argparse.ArgumentParser(prog="python -m loadtest.ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--against", help="git revision whose collector to compare with (a worktree is made)")
    p.add_argument("--servers", default="collector", help="comma-separated: collector, bare, canned")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rate", type=float, help="requests per second (default: as fast as possible); for latency")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--recipients", type=int, default=20_000)
    p.add_argument("--mix-size", type=int, default=50_000)
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    p.add_argument("--py-spy", metavar="FILE", help="profile the last server's first drive into FILE (needs py-spy)")
    args = p.parse_args(argv)
    if not driver_wrk.available():
        raise SystemExit("loadtest.ab: needs wrk (apt-get install wrk)")
    import uvloop

    uvloop.install()
    results = asyncio.run(run(args))
    base = next(iter(results))
    cpu, rps = ratios(results, base, "cpu_us"), ratios(results, base, "rps")
    print(f"\nmedian of {args.rounds} round(s), against {base}:")
    for name in results:
        print(f"  {name:10s} CPU/hit x{cpu[name]:.3f}  hits/s x{rps[name]:.3f}  "
              f"(CPU/hit {statistics.median(m.cpu_us for m in results[name]):.1f} µs, "
              f"p99 {statistics.median(m.p99 for m in results[name]):.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
