"""Benchmark figures about the write side: COPY ingest rate, and memory through an outage."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import os
import random
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from loadtest import driver_wrk, verify
from loadtest.bench_figures import Plan, start_collector
from loadtest.support import Relay
from loadtest.traffic import Request
from pixeltrack.core import db


def make_records(requests: list[Request], count: int, columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """``count`` raw_hits rows shaped like the collector's, in ``columns`` order."""
    rng = random.Random(5)
    start = dt.datetime.now(dt.UTC)
    prefix = rng.getrandbits(64) << 64  # ids as one collector process makes them: a prefix, then 1, 2, ...
    rows = []
    for i in range(count):
        r = requests[i % len(requests)]
        h = dict(r.headers)
        kind, _, rejected = r.category.partition("/")
        values = {
            "hit_id": uuid.UUID(int=prefix | (i + 1)), "received_at": start + dt.timedelta(microseconds=i),
            "kind": kind, "job_id": 0 if rejected else rng.randint(1, 5),
            "recipient_id": None if rejected else rng.randrange(20_000),
            "link": "https://shop.example.com/spring-sale?utm_source=newsletter" if kind == "click" else None,
            "page": rng.randint(1, 24) if kind == "doc" and not rejected else None,
            "client_ip": f"203.0.113.{rng.randint(1, 254)}", "user_agent": h.get("User-Agent"),
            "referer": h.get("Referer"), "accept_language": h.get("Accept-Language"), "method": "GET",
            "prefetch": False, "reject_reason": "bad_signature" if rejected else None,
        }
        rows.append(tuple(values.get(c) for c in columns))
    return rows


def _csv_value(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, dt.datetime):
        return v.isoformat()
    return str(v)


async def _truncate(url: str) -> None:
    conn = await db.connect(url)
    try:
        await conn.execute("TRUNCATE raw_hits, copied_hits, hit_runs")  # tombstones and runs: the same ids come again
    finally:
        await conn.close()


async def copy_rate(url: str, records: list[tuple[Any, ...]], batch_size: int, tmp: Path) -> float:
    """Rows per second through the collector's own COPY call (HitBuffer._write), in its batches."""
    from collector.buffer import HitBuffer
    from collector.config import CollectorConfig
    from collector.metrics import Metrics
    from pixeltrack.core.config import Secrets

    config = CollectorConfig(database_url=url, secrets=Secrets("bench"), batch_size=batch_size,
                             spool_dir=Path(tempfile.mkdtemp(prefix="spool-", dir=tmp)))
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2, server_settings={"timezone": "UTC"})
    try:
        writer = HitBuffer(config, pool, Metrics())
        await _truncate(url)
        started = time.perf_counter()
        for at in range(0, len(records), batch_size):
            if not await writer._write(records[at:at + batch_size]):
                raise RuntimeError("COPY failed during the ingest benchmark")
        return len(records) / (time.perf_counter() - started)
    finally:
        await pool.close()


def psql_rate(url: str, records: list[tuple[Any, ...]], columns: tuple[str, ...], tmp: Path) -> float:
    """Rows per second of `psql \\copy` of the same rows into the same (emptied) table."""
    path = tmp / "hits.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        for row in records:
            out.writerow([_csv_value(v) for v in row])
    command = f"\\copy raw_hits ({', '.join(columns)}) FROM '{path}' WITH (FORMAT csv)"
    started = time.perf_counter()
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", command], check=True, timeout=600,
                   env={**os.environ, "PGTZ": "UTC"})
    return len(records) / (time.perf_counter() - started)


async def ingest(url: str, requests: list[Request], rows: int, tmp: Path,
                 batch_sizes: tuple[int, ...] = (500, 2000, 5000, 20000)) -> dict[str, float]:
    """Collector COPY rows/s per batch size, and psql \\copy rows/s, alternated."""
    from collector.rows import COLUMNS

    records = make_records(requests, rows, COLUMNS)
    await _truncate(url)
    out: dict[str, float] = {"psql": psql_rate(url, records, COLUMNS, tmp)}
    for size in batch_sizes:
        out[f"copy@{size}"] = await copy_rate(url, records, size, tmp)
    await _truncate(url)
    out["psql2"] = psql_rate(url, records, COLUMNS, tmp)  # blocking on purpose: nothing else runs
    await _truncate(url)
    return out


def _read_log(path: Path, keep: bool) -> str:
    """A collector's log; with ``keep``, also copied to loadtest/out/ (the temporary folder goes away)."""
    log = path.read_text()
    if keep:
        kept = Path(__file__).resolve().parent / "out" / f"memory-{path.name}"
        kept.parent.mkdir(exist_ok=True)
        kept.write_text(log)
    return log


async def memory(url: str, secret: str, job_ids: list[int], requests: list[Request], p: Plan, tmp: Path,
                 run: float, down: float) -> dict[str, Any]:
    """Peak RSS of a collector at full rate for ``run`` s, PostgreSQL cut off for ``down`` s of it."""
    relay = Relay(url)
    await relay.start()
    collector = start_collector(relay.route(url), secret, tmp, p.server_cpus)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)

    async def outage() -> None:
        await asyncio.sleep(run / 4)
        await relay.cut()
        await asyncio.sleep(down)
        await relay.restore()

    cutter = asyncio.create_task(outage())
    try:
        r = await driver_wrk.drive(requests, "127.0.0.1", collector.port, connections=p.connections,
                                   duration=run, threads=1, cpus=p.driver_cpus, show_progress=False)
        await cutter
        await verify.settle(url, since, job_ids, r.requests, quiet=10.0, limit=180.0)
        peak = collector.peak_rss()
    finally:
        code = collector.stop()
        await relay.close()
    found = await verify.count_hits(url, since, job_ids)
    loss, exact = verify.loss_line(r.answered, found)
    spooled = _read_log(tmp / f"collector-{collector.port}.log", keep=code != 0).count("spooling")
    return {"peak_rss": peak, "hits": r.requests, "rps": r.rate, "loss": loss, "exact": exact and r.exact,
            "exit": code, "outages_logged": spooled}
