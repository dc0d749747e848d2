"""Replaying what PostgreSQL could not take at once, and looking after the disk.

Once per flush the write buffer calls ``Replayer.turn``: spooled batches are
replayed in order, idempotently (staging table; ids in raw_hits or in a
tombstone of copied_hits are skipped, see ``collector.postgres``), within a
time budget. Every ``scan_interval`` it also looks at the spool folder as a
whole, whoever wrote into it: leftover temporary files go, claims of dead
replayers are handed back, batches other collectors left are picked up (no
restart needed), journals whose collector died are turned into spool batches
(``collector.journal``), and a spool or journal that failed is tried again. A
batch or journal file that cannot be read is moved to ``quarantine/`` and
counted; it never blocks the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from collector import journal
from collector.postgres import UNAVAILABLE
from collector.rows import COLUMN_TYPES, RowMaker
from collector.spool import BadBatch, Claim
from pixeltrack.core import db

if TYPE_CHECKING:
    from collector.buffer import HitBuffer

log = logging.getLogger(__name__)

PARTITION_EVERY = 3600.0


class Replayer:
    """The spool replay and the periodic look at the spool folder, for one write buffer."""

    def __init__(self, writer: HitBuffer) -> None:
        self.writer = writer
        self.config = writer.config
        self.metrics = writer.metrics
        self.spool = writer.spool
        self._next_replay = 0.0
        self._next_scan = 0.0
        self._next_partitions = 0.0
        self._unjournaled = 0
        self._waiting: set[str] = set()  # orphaned journals already said to wait for the spool

    async def turn(self) -> None:
        """Replay the spool when it holds batches; look at the folder when due; make partitions ahead."""
        now = time.monotonic()
        if now >= self._next_scan:
            self._next_scan = now + self.config.scan_interval
            await self.scan()
        if self.writer.spooled:
            await self.replay()
        await self._maintain_partitions()

    async def scan(self) -> None:
        """Tidy the spool folder, take orphaned journals, retry what failed, update the gauges."""
        w = self.writer
        self.spool.tidy()
        journal.tidy(w.journal.directory)
        self._recover_journals()
        w.journal.retry()
        if self.spool.error is not None and self.spool.probe():
            log.info("the spool folder %s takes writes again", self.spool.directory)
        if self.spool.pending():
            w.spooled = True  # ours, or another collector's: replayed here either way
        if not w.database_ok and not w.spooled and not w.pending:  # else replays and writes try it anyway
            await self._probe_database()
        if w.journal.unjournaled > self._unjournaled:
            self.metrics.unjournaled.inc(w.journal.unjournaled - self._unjournaled)
            self._unjournaled = w.journal.unjournaled
        self.metrics.journal_up.set(0 if w.journal.error else 1)
        self.metrics.spool_bytes.set(self.spool.bytes)

    # -- the spool ------------------------------------------------------------
    async def replay(self) -> None:
        """Replay spooled batches in order, idempotently, within a time budget."""
        now = time.monotonic()
        if now < self._next_replay:
            return
        deadline = now + max(1.0, 2 * self.config.flush_interval)
        for path in self.spool.pending():
            if time.monotonic() > deadline:
                return
            if not await self._replay_one(path):
                self._next_replay = time.monotonic() + min(5.0, 4 * self.config.flush_interval)
                return
        self.writer.spooled = bool(self.spool.pending())
        self.metrics.spool_bytes.set(self.spool.bytes)

    async def _replay_one(self, path: Path) -> bool:
        """One batch into PostgreSQL; False when PostgreSQL cannot take it now (the batch stays)."""
        claim = self.spool.claim(path)
        if claim is None:
            return True  # another collector is replaying it
        try:
            records = self.spool.read(claim, COLUMN_TYPES)
            copied = await asyncio.wait_for(self.writer.copier.copy(records, idempotent=True), self.config.copy_timeout)
        except BadBatch as exc:
            self._quarantine(claim, str(exc))
            return True
        except UNAVAILABLE:
            self.spool.release(claim)
            self.writer.set_database(False)
            return False
        except Exception as exc:
            log.exception("replaying %s failed unexpectedly", path.name)
            self.metrics.flush_errors.inc()
            self._quarantine(claim, f"{type(exc).__name__}: {exc}")
            return True
        except BaseException:
            self.spool.release(claim)
            raise
        self.spool.done(claim)
        self.metrics.replayed.inc(copied.written)
        self.metrics.written.inc(copied.written)
        self.metrics.already.inc(copied.already)
        self.writer.set_database(True)
        log.info("replayed %d spooled hits from %s (%d stored already)", copied.written, path.name, copied.already)
        return True

    def _quarantine(self, claim: Claim, reason: str) -> None:
        target = self.spool.quarantine(claim, reason)
        self.metrics.quarantined.inc()
        log.error("spooled batch %s cannot be replayed (%s): moved to %s", claim.original.name, reason, target)

    # -- journals of dead collectors ------------------------------------------
    def _recover_journals(self) -> None:
        own = self.writer.journal
        for path in journal.orphans(own.directory, own):
            fd = journal.take(path)
            if fd is None:
                continue  # its collector is alive (or another one took it first)
            try:
                self._recover(path)
            finally:
                os.close(fd)

    def _recover(self, path: Path) -> None:
        """Turn one orphaned journal into spool batches (replayed idempotently: ids come from the journal)."""
        try:
            contents = journal.read_segment(path)
            hits = sorted(contents.hits, key=lambda h: h[0])
            rows = self.writer.rows_of(RowMaker(contents.prefix, self.writer.rows.addresses), hits)
        except OSError as exc:
            log.warning("cannot read the orphaned journal %s: %s", path, exc)
            return
        except Exception as exc:
            self.spool.set_aside(path, path.name, f"{type(exc).__name__}: {exc}")
            self.metrics.quarantined.inc()
            log.error("orphaned journal %s cannot be read (%s): moved to quarantine/", path.name, exc)
            return
        try:
            for start in range(0, len(rows), self.config.batch_size):
                self.spool.write(rows[start : start + self.config.batch_size])
        except OSError as exc:
            if path.name not in self._waiting:
                log.warning("orphaned journal %s (%d hits) waits: the spool refuses (%s)", path.name, len(rows), exc)
                self._waiting.add(path.name)
            return
        path.unlink()
        self._waiting.discard(path.name)
        if rows:
            self.writer.spooled = True
        self.metrics.recovered.inc(len(rows))
        log.info("recovered %d hits from %s, the journal of a collector that died (%d unreadable lines)",
                 len(rows), path.name, contents.unreadable)

    # -- probes ---------------------------------------------------------------
    async def _probe_database(self) -> None:
        """Nothing to write yet PostgreSQL marked down: ask it, so readiness and held hits do not wait on traffic."""
        try:
            async with asyncio.timeout(min(2.0, self.config.copy_timeout)):
                async with self.writer.pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except UNAVAILABLE:
            return
        self.writer.set_database(True)

    async def _maintain_partitions(self) -> None:
        now = time.monotonic()
        if now < self._next_partitions or not self.writer.database_ok:
            return
        try:
            async with self.writer.pool.acquire() as conn:
                await asyncio.wait_for(db.ensure_partitions(conn), self.config.copy_timeout)
            self._next_partitions = now + PARTITION_EVERY
        except UNAVAILABLE as exc:
            log.warning("could not make partitions ahead: %s", exc)
            self._next_partitions = now + 60
