"""The aggregator's commands through real processes, and its scheduler in-process."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import sys

import asyncpg

from aggregator.config import AggregatorConfig
from aggregator.scheduler import run_scheduler
from tests.support.hits import add_hits, add_job, add_recipients, hit

A = "https://example.org/a"


async def run_cli(db_url: str, *args: str) -> tuple[int, str, str]:
    """Run `python -m <args>` with DATABASE_URL set; return code, stdout, stderr."""
    env = dict(os.environ, DATABASE_URL=db_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def small_job(conn: asyncpg.Connection) -> int:
    """A personal job: r1 opens twice and clicks A, r2 opens once."""
    job = await add_job(conn, "personal", name="Spring letter")
    await add_recipients(conn, job, 2)
    await add_hits(conn, [hit("open", job, 1, 0), hit("open", job, 1, 1), hit("click", job, 1, 2, A),
                          hit("open", job, 2, 3)])  # fmt: skip
    return job


class TestOnceAndReport:
    """`python -m aggregator --once` rolls everything up; `pixeltrack report` prints it in 3 formats."""

    async def test_once_then_report(self, db_url: str, conn: asyncpg.Connection) -> None:
        """--once says 4 hits; JSON, CSV and table carry the same numbers."""
        job = await small_job(conn)
        code, out, err = await run_cli(db_url, "aggregator", "--once")
        assert code == 0, err
        assert out.startswith("rolled up 4 hits in 1 batches")
        code, out, err = await run_cli(db_url, "pixeltrack.cli.main", "report", "--job", str(job), "--format", "json")
        assert code == 0, err
        report = json.loads(out)
        assert (report["job"], report["mode"]) == (job, "personal")
        assert report["opens"]["unique"] == 2 and report["clicks"]["human"] == 1
        assert {"links", "recipients", "timeline", "breakdowns"} <= set(report)
        code, out, _ = await run_cli(db_url, "pixeltrack.cli.main", "report", "--job", str(job), "--format", "csv")
        rows = {(r["section"], r["item"], r["metric"]): r["value"] for r in csv.DictReader(io.StringIO(out))}
        assert rows[("totals", "opens", "human")] == "3" and rows[("links", A, "unique_clicks")] == "1"
        code, out, _ = await run_cli(db_url, "pixeltrack.cli.main", "report", "--job", str(job))
        assert "Spring letter" in out and "r1@example.org" in out and A in out

    async def test_unknown_job(self, db_url: str) -> None:
        """A report of a job that does not exist exits 1 with a message."""
        code, _, err = await run_cli(db_url, "pixeltrack.cli.main", "report", "--job", "999")
        assert code == 1 and "no job 999" in err


class TestRebuildRuns:
    """`python -m aggregator --rebuild-runs`: hits an older collector wrote (no run) become visible to the roll-up."""

    async def test_hits_without_runs(self, db_url: str, conn: asyncpg.Connection) -> None:
        """The small job's 4 hits with their runs deleted: --once rolls up none; --rebuild-runs records one run
        (one job, mail hits); --once then rolls up all 4."""
        await small_job(conn)
        await conn.execute("DELETE FROM hit_runs")
        assert (await run_cli(db_url, "aggregator", "--once"))[1].startswith("rolled up 0 hits")
        code, out, err = await run_cli(db_url, "aggregator", "--rebuild-runs")
        assert (code, out) == (0, "runs recorded for the hits waiting: 1 (one per job and kind, spanning them)\n"), err
        assert (await run_cli(db_url, "aggregator", "--once"))[1].startswith("rolled up 4 hits in 1 batches")
        assert await conn.fetchval("SELECT count(*) FROM hit_runs") == 0


class TestForgetCommand:
    """`pixeltrack forget` says what it removed."""

    async def test_forget(self, db_url: str, conn: asyncpg.Connection) -> None:
        """r1's 3 raw hits are scrubbed and their report entry disappears."""
        job = await small_job(conn)
        await run_cli(db_url, "aggregator", "--once")
        code, out, err = await run_cli(db_url, "pixeltrack.cli.main", "forget", "--recipient", "r1@example.org")
        assert code == 0, err
        assert f"job {job}, recipient #1: 3 raw hits scrubbed, 1 recipient and 1 per-link" in out
        _, out, _ = await run_cli(db_url, "pixeltrack.cli.main", "report", "--job", str(job), "--format", "json")
        assert [r["recipient_id"] for r in json.loads(out)["recipients"]] == [2]


class TestScheduler:
    """The scheduler rolls up on its interval and stops cleanly."""

    async def test_run_scheduler_until_stopped(self, db_url: str, conn: asyncpg.Connection) -> None:
        """Hits added while it runs are rolled up within a few intervals; stop returns promptly."""
        job = await small_job(conn)
        stop = asyncio.Event()
        task = asyncio.create_task(run_scheduler(db_url, AggregatorConfig(interval=1), stop))
        await add_hits(conn, [hit("open", job, 2, 10)])
        for _ in range(100):
            if not await conn.fetchval("SELECT count(*) FROM raw_hits WHERE rolled_at IS NULL"):
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert await conn.fetchval("SELECT total FROM report_job_totals WHERE job_id = $1 AND kind = 'open'", job) == 4

    async def test_sigterm(self, db_url: str, conn: asyncpg.Connection) -> None:
        """`python -m aggregator` exits 0 on SIGTERM after rolling up."""
        await small_job(conn)
        env = dict(os.environ, DATABASE_URL=db_url, PIXELTRACK_ROLLUP_INTERVAL="1")
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "aggregator", env=env,
                                                    stderr=asyncio.subprocess.PIPE)  # fmt: skip
        for _ in range(100):
            if not await conn.fetchval("SELECT count(*) FROM raw_hits WHERE rolled_at IS NULL"):
                break
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err.decode()
        assert b"aggregator stopped" in err
