"""Tombstones of copied hits: exact runs, and replays that put back nothing once copied, rows deleted or not."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from collector.cleaning import ClientAddress
from collector.metrics import Metrics
from collector.postgres import Copied, RowWriter, runs, waiting
from collector.rows import RowMaker, Tally
from collector.spool import Spool
from collector.state import BUFFER
from loadtest.support import with_application_name
from pixeltrack.core import db
from tests.collector.test_rows import AT, TS, hit
from tests.support.collector import make_config, running, wait_for

A = bytes.fromhex("00112233445566aa")
B = bytes.fromhex("00112233445566ab")  # A + 1: A's last ordinal and B's first are neighbouring integers
LAST = 2**64 - 1


def uid(prefix: bytes, ordinal: int) -> uuid.UUID:
    """The hit id of ``ordinal`` of the process with ``prefix``."""
    return uuid.UUID(bytes=prefix + ordinal.to_bytes(8, "big"))


def made(count: int, first: int = 0, prefix: bytes = A) -> list[tuple[object, ...]]:
    """COPY rows as a flush makes them: ``count`` opens of job 3, ids ``first + 1`` .. ``first + count``."""
    return RowMaker(prefix, ClientAddress(())).rows(
        [hit(recipient_id=n) for n in range(first + 1, first + count + 1)], Tally(), first)


class TestRuns:
    """Runs of consecutive ids of one prefix, exactly, whatever the order."""

    def test_a_flush_is_one_run(self) -> None:
        """The ids of one flush (asyncpg's own UUIDs) make one run, the ids' own objects at its ends."""
        ids = [r[0] for r in made(5, first=41)]
        assert runs(ids) == [(uid(A, 42), uid(A, 46), 5)]
        assert runs(ids)[0][0] is ids[0] and runs([]) == []

    def test_two_prefixes_gaps_unsorted(self) -> None:
        """Unsorted ids of two prefixes with gaps and a repeat: the runs by first id, a repeat counted twice;
        A's last ordinal and B's first are neighbours as integers but not one run."""
        ids = [uid(A, 7), uid(B, 1), uid(A, 3), uid(A, 4), uid(A, 5), uid(A, 9), uid(B, 2), uid(A, 8),
               uid(A, LAST), uid(B, 0), uid(A, 4)]
        assert runs(ids) == [(uid(A, 3), uid(A, 5), 4), (uid(A, 7), uid(A, 9), 3), (uid(A, LAST), uid(A, LAST), 1),
                             (uid(B, 0), uid(B, 2), 3)]

    def test_what_looks_like_one_run(self) -> None:
        """Ends as far apart as the count but not strictly increasing, or across two prefixes: not one run."""
        assert runs([uid(A, 1), uid(A, 3), uid(A, 3), uid(A, 4)]) == [(uid(A, 1), uid(A, 1), 1),
                                                                      (uid(A, 3), uid(A, 4), 3)]
        assert runs([uid(A, 2), uid(A, 1), uid(A, 3)]) == [(uid(A, 1), uid(A, 3), 3)]
        assert runs([uid(A, LAST), uid(B, 0)]) == [(uid(A, LAST), uid(A, LAST), 1), (uid(B, 0), uid(B, 0), 1)]


@pytest.fixture
async def writer(db_url: str, tmp_path: Path) -> AsyncIterator[RowWriter]:
    """The collector's RowWriter on the test's database, quarantining into ``tmp_path/quarantine``."""
    pool = await db.create_pool(db_url)
    yield RowWriter(pool, Metrics(), tmp_path / "quarantine")
    await pool.close()


async def tombstones(conn: asyncpg.Connection) -> list[tuple[uuid.UUID, uuid.UUID, int]]:
    """copied_hits' runs (first, last, hits), by first id."""
    return [tuple(r) for r in await conn.fetch("SELECT first_id, last_id, hits FROM copied_hits ORDER BY first_id")]


async def stored(conn: asyncpg.Connection) -> list[int]:
    """The ordinals of the hits in raw_hits (all of prefix A), in order."""
    return sorted(int.from_bytes(r["hit_id"].bytes[8:], "big") for r in await conn.fetch("SELECT hit_id FROM raw_hits"))


class TestDirect:
    """A COPY writes one tombstone per run of its rows, in its transaction; a refused row gets none."""

    async def test_one_tombstone_per_run(self, writer: RowWriter, conn: asyncpg.Connection) -> None:
        """A flush of 5: one run of 5; a batch with a gap (held hits read back from the journal): two runs."""
        assert await writer.copy(made(5)) == Copied(5, 0)
        assert await writer.copy(made(3, first=10) + made(2, first=20)) == Copied(5, 0)
        assert await tombstones(conn) == [(uid(A, 1), uid(A, 5), 5), (uid(A, 11), uid(A, 13), 3),
                                          (uid(A, 21), uid(A, 22), 2)]
        assert await stored(conn) == [1, 2, 3, 4, 5, 11, 12, 13, 21, 22]

    async def test_split_batch_tombstones_its_committed_rows(self, writer: RowWriter, conn: asyncpg.Connection,
                                                              tmp_path: Path) -> None:
        """Row 6 of 8 refused by PostgreSQL (a NUL): halves 1-4, 5-8, 5-6, 7-8 and 5 are committed alone,
        6 is quarantined; the tombstones are those of the committed parts."""
        rows = made(8)
        rows[5] = (*rows[5][:8], "a\x00b", *rows[5][9:])  # user_agent
        assert await writer.copy(rows) == Copied(7, 0)  # the eighth set aside, neither written nor skipped
        assert await tombstones(conn) == [(uid(A, 1), uid(A, 4), 4), (uid(A, 5), uid(A, 5), 1),
                                          (uid(A, 7), uid(A, 8), 2)]
        assert await stored(conn) == [1, 2, 3, 4, 5, 7, 8]
        assert len((tmp_path / "quarantine" / "rows.jsonl").read_text().splitlines()) == 1

    async def test_copy_again_after_delete_inserts_nothing(self, writer: RowWriter,
                                                           conn: asyncpg.Connection) -> None:
        """A batch COPYed again after its rows were rolled up and deleted: the tombstone's key refuses it, the
        idempotent way inserts none of it."""
        await writer.copy(made(5))
        await conn.execute("DELETE FROM raw_hits")
        assert await writer.copy(made(5)) == Copied(0, 5)
        assert (await stored(conn), await tombstones(conn)) == ([], [(uid(A, 1), uid(A, 5), 5)])

    async def test_copy_overlapping_a_run_inserts_only_new_ids(self, writer: RowWriter,
                                                                conn: asyncpg.Connection) -> None:
        """1-5 COPYed and deleted, then 3-8 COPYed (another first id, as when held hits are regrouped): the
        overlap refuses the tombstone, and the idempotent way inserts 6-8 only."""
        await writer.copy(made(5))
        await conn.execute("DELETE FROM raw_hits")
        assert await writer.copy(made(6, first=2)) == Copied(3, 3)
        assert await stored(conn) == [6, 7, 8]
        assert await tombstones(conn) == [(uid(A, 1), uid(A, 5), 5), (uid(A, 6), uid(A, 8), 3)]

    async def test_retry_after_conflict_tombstones_only_new_rows(self, writer: RowWriter,
                                                                 conn: asyncpg.Connection) -> None:
        """1-6 COPYed while 1-3 are in raw_hits (23505): 4-6 are inserted, with a tombstone of exactly 4-6."""
        await writer.copy(made(3))
        assert await writer.copy(made(6)) == Copied(3, 3)
        assert await stored(conn) == [1, 2, 3, 4, 5, 6]
        assert await tombstones(conn) == [(uid(A, 1), uid(A, 3), 3), (uid(A, 4), uid(A, 6), 3)]


async def replay(db_url: str, spool: Path, rows: list[tuple[object, ...]]) -> tuple[float | None, ...]:
    """Spool ``rows`` as one batch and let a collector's replayer take it, as after a COPY its client gave up on;
    the collector's counts of hits replayed, written and found stored already."""
    Spool(spool, 10**9).write(rows)
    async with running(make_config(db_url, spool)) as client:
        buffer = client.app[BUFFER]

        async def replayed() -> bool:
            await buffer.flush()
            return not buffer.spool.pending()

        await wait_for(replayed)
        sample = buffer.metrics.registry.get_sample_value
        return tuple(sample(f"pixeltrack_hits_{name}_total") for name in ("replayed", "written", "already_stored"))


class TestReplay:
    """A spooled batch replayed after its hits were copied and their rows deleted puts none of them back."""

    async def test_copied_and_deleted_batch_replays_nothing(self, writer: RowWriter, conn: asyncpg.Connection,
                                                            db_url: str, tmp_path: Path) -> None:
        """10 hits COPYed, rolled up and deleted, then their spooled batch replayed: 0 rows come back."""
        rows = made(10)
        await writer.copy(rows)
        await conn.execute("DELETE FROM raw_hits")
        assert await replay(db_url, tmp_path / "spool", rows) == (0, 0, 10)  # none written, none counted twice
        assert (await stored(conn), await tombstones(conn)) == ([], [(uid(A, 1), uid(A, 10), 10)])

    async def test_half_committed_batch_inserts_the_other_half(self, writer: RowWriter, conn: asyncpg.Connection,
                                                               db_url: str, tmp_path: Path) -> None:
        """Hits 1-5 of a batch of 10 committed (1-3 rolled up and deleted, 4-5 kept), 6-10 never: the replay
        inserts exactly 6-10, with one tombstone for exactly them."""
        rows = made(10)
        await writer.copy(rows[:5])
        await conn.execute("DELETE FROM raw_hits WHERE recipient_id <= 3")
        assert await replay(db_url, tmp_path / "spool", rows) == (5, 5, 5)
        assert await stored(conn) == [4, 5, 6, 7, 8, 9, 10]
        assert await tombstones(conn) == [(uid(A, 1), uid(A, 5), 5), (uid(A, 6), uid(A, 10), 5)]

    async def test_replay_around_other_runs(self, writer: RowWriter, conn: asyncpg.Connection, db_url: str,
                                            tmp_path: Path) -> None:
        """Runs 3-4 and 8 copied and deleted, ids of another prefix around them: a replay of 1-10 inserts 1-2,
        5-7 and 9-10, three tombstones, each with its count."""
        await writer.copy(made(2, first=2))
        await writer.copy(made(1, first=7))
        await writer.copy(made(3, first=100, prefix=B))
        await conn.execute("DELETE FROM raw_hits")
        await replay(db_url, tmp_path / "spool", made(10))
        assert await stored(conn) == [1, 2, 5, 6, 7, 9, 10]
        assert await tombstones(conn) == [(uid(A, 1), uid(A, 2), 2), (uid(A, 3), uid(A, 4), 2), (uid(A, 5), uid(A, 7), 3),
                                          (uid(A, 8), uid(A, 8), 1), (uid(A, 9), uid(A, 10), 2),
                                          (uid(B, 101), uid(B, 103), 3)]


# Holds a replay's inserts (sessions named RACER) after its statement took its snapshot, until the test
# lets go of the advisory lock RACE_LOCK: what the design's documented race needs, made to happen.
RACER, RACE_LOCK = "pt-race-replay", 7_404_242
HOLD_RACER = f"""
CREATE FUNCTION hold_racer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('application_name') = '{RACER}' THEN
        PERFORM pg_advisory_lock({RACE_LOCK});
        PERFORM pg_advisory_unlock({RACE_LOCK});
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER hold_racer BEFORE INSERT ON raw_hits FOR EACH ROW EXECUTE FUNCTION hold_racer();
"""


class TestRaceWithACopy:
    """The window postgres.py documents: a replay whose statement began before a COPY of the same ids committed."""

    async def test_replay_that_missed_the_copy_and_the_delete_rolls_back(
        self, writer: RowWriter, conn: asyncpg.Connection, db_url: str
    ) -> None:
        """A replay of 2-7 takes its snapshot (no row, no tombstone of them) and is held before its first insert;
        meanwhile a COPY of 1-6 commits with its tombstone and the roll-up deletes the rows. Let go, the replay
        inserts 2-7 (the deleted rows do not conflict), its tombstone 2-7 then overlaps the COPY's run 1-6 and
        takes its first id (23505), the whole replay rolls back, and its halves, retried, skip 2-6 and insert 7
        alone: nothing is counted twice."""
        await conn.execute(HOLD_RACER)
        rows = made(6, first=1)  # ids 2-7
        pool = await db.create_pool(with_application_name(db_url, RACER))
        racer = RowWriter(pool, Metrics(), writer.quarantine_dir)
        await conn.execute("SELECT pg_advisory_lock($1)", RACE_LOCK)
        try:
            replaying = asyncio.create_task(racer.copy(rows, idempotent=True))

            async def held() -> bool:
                return bool(await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event = 'advisory'",
                    RACER))

            await wait_for(held)
            assert await writer.copy(made(6)) == Copied(6, 0)  # the COPY of 1-6, committed with its tombstone
            await conn.execute("DELETE FROM raw_hits")  # rolled up: rows of a track that keeps nothing
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", RACE_LOCK)
        try:
            assert await asyncio.wait_for(replaying, 30) == Copied(1, 5)
        finally:
            await pool.close()
        assert (await stored(conn), await tombstones(conn)) == ([7], [(uid(A, 1), uid(A, 6), 6), (uid(A, 7), uid(A, 7), 1)])
        refused = racer.metrics.registry.get_sample_value("pixeltrack_copy_failures_total")
        assert refused is not None and refused >= 1  # the replay that inserted them again was refused
        assert not (writer.quarantine_dir / "rows.jsonl").exists()


def mixed(first: int = 0) -> list[tuple[object, ...]]:
    """Six COPY rows of three jobs and two kinds, out of time order (seconds after TS): job 3 opens at 5 and 2
    and a click at 9, job 4 an open at 1, job 4 a page view at 7, job 3 a page view at 4."""
    hits = [hit(ts=TS + 5), hit(ts=TS + 2), hit(job_id=4, ts=TS + 1), hit(kind="page", job_id=4, ts=TS + 7),
            hit(kind="click", ts=TS + 9, link="https://example.com/"), hit(kind="page", ts=TS + 4)]
    return RowMaker(A, ClientAddress(())).rows(hits, Tally(), first)


async def waiting_runs(conn: asyncpg.Connection) -> list[tuple[object, ...]]:
    """hit_runs (job, pages, first id's ordinal, seconds after TS of first and last, hits), by job, kind, first id."""
    return [(r["job_id"], r["pages"], int.from_bytes(r["first_id"].bytes[8:], "big"),
             (r["first_at"] - AT).total_seconds(), (r["last_at"] - AT).total_seconds(), r["hits"])
            for r in await conn.fetch("SELECT * FROM hit_runs ORDER BY job_id, pages, first_id")]  # fmt: skip


class TestWaiting:
    """Every transaction that puts hits into raw_hits records, in it, one run per job and kind of the hits it put
    there (hit_runs: the roll-up's list of what waits)."""

    def test_runs_of_a_batch(self) -> None:
        """The six rows: job 3's mail hits (ids 1, 2, 5: first id 1, 2 s to 9 s), its page view (id 6), job 4's
        open (id 3) and page view (id 4)."""
        columns = waiting(mixed())
        found = sorted(zip(*columns, strict=True), key=lambda r: (r[0], r[1]))
        assert [(job, pages, int.from_bytes(first.bytes[8:], "big"), (lo - AT).total_seconds(),
                 (hi - AT).total_seconds(), n) for job, pages, first, lo, hi, n in found] == [
            (3, False, 1, 2.0, 9.0, 3), (3, True, 6, 4.0, 4.0, 1), (4, False, 3, 1.0, 1.0, 1), (4, True, 4, 7.0, 7.0, 1)]

    async def test_copy_records_its_runs(self, writer: RowWriter, conn: asyncpg.Connection) -> None:
        """Two COPYs of the six rows' kinds (ids 1-6, then 11-16): one run per job and kind each, in the same
        transactions as their tombstones."""
        await writer.copy(mixed())
        await writer.copy(mixed(first=10))
        assert await waiting_runs(conn) == [
            (3, False, 1, 2.0, 9.0, 3), (3, False, 11, 2.0, 9.0, 3), (3, True, 6, 4.0, 4.0, 1),
            (3, True, 16, 4.0, 4.0, 1), (4, False, 3, 1.0, 1.0, 1), (4, False, 13, 1.0, 1.0, 1),
            (4, True, 4, 7.0, 7.0, 1), (4, True, 14, 7.0, 7.0, 1)]
        assert await tombstones(conn) == [(uid(A, 1), uid(A, 6), 6), (uid(A, 11), uid(A, 16), 6)]

    async def test_refused_batch_records_no_run(self, writer: RowWriter, conn: asyncpg.Connection) -> None:
        """Row 2 of the six refused (a NUL): the halves 1-3 and 4-6 split again; the runs are those of the
        rows committed (1 alone, 3 alone, 4-6), none for row 2."""
        rows = mixed()
        rows[1] = (*rows[1][:8], "a\x00b", *rows[1][9:])  # user_agent
        assert await writer.copy(rows) == Copied(5, 0)
        assert await waiting_runs(conn) == [(3, False, 1, 5.0, 5.0, 1), (3, False, 5, 9.0, 9.0, 1),
                                            (3, True, 6, 4.0, 4.0, 1), (4, False, 3, 1.0, 1.0, 1),
                                            (4, True, 4, 7.0, 7.0, 1)]

    async def test_run_key_taken(self, writer: RowWriter, conn: asyncpg.Connection, tmp_path: Path) -> None:
        """The six written, then their rows and tombstones deleted but not their runs, and the six written again:
        all six go in, nothing is set aside, and each run there covers both writes."""
        await writer.copy(mixed())
        await conn.execute("DELETE FROM raw_hits; DELETE FROM copied_hits")
        assert await writer.copy(mixed()) == Copied(6, 0)
        assert not (tmp_path / "quarantine" / "rows.jsonl").exists()
        assert await waiting_runs(conn) == [(3, False, 1, 2.0, 9.0, 6), (3, True, 6, 4.0, 4.0, 2),
                                            (4, False, 3, 1.0, 1.0, 2), (4, True, 4, 7.0, 7.0, 2)]

    async def test_replay_records_runs_of_what_it_inserted(self, writer: RowWriter, conn: asyncpg.Connection,
                                                           db_url: str, tmp_path: Path) -> None:
        """Rows 1-3 committed (their runs rolled up: deleted), then the six replayed: runs of rows 4-6 only."""
        rows = mixed()
        await writer.copy(rows[:3])
        await conn.execute("DELETE FROM hit_runs")
        assert await replay(db_url, tmp_path / "spool", rows) == (3, 3, 3)
        assert await waiting_runs(conn) == [(3, False, 5, 9.0, 9.0, 1), (3, True, 6, 4.0, 4.0, 1),
                                            (4, True, 4, 7.0, 7.0, 1)]
