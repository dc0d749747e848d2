"""The write-ahead journal: exact lines back, torn tails ignored, segments kept until safe, orphans replayed once."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg

from collector import journal
from collector.buffer import HitBuffer
from collector.cleaning import ClientAddress
from collector.journal import Journal, read_segment, take
from collector.rows import RowMaker, Tally
from collector.state import BUFFER
from tests.collector.test_rows import PREFIX, hit
from tests.support.collector import make_config, rows, running, scrape, wait_for

MiB = 1 << 20


def as_lists(hits: list[tuple[object, ...]]) -> list[list[object]]:
    """Hits as the journal gives them back (JSON arrays)."""
    return [list(h) for h in hits]


class TestJournal:
    def test_lines_come_back_exactly(self, tmp_path: Path) -> None:
        """Hits come back by ordinal with every value, undecodable header bytes and page-view fields included."""
        j = Journal(tmp_path, PREFIX, MiB)
        written = [hit(), hit(user_agent="caf\udce9 bot", recipient_id=None),
                   hit(kind="page", extra={"url": "https://s.example/a", "title": None, "contact": "3:4"})]
        for h in written:
            j.write(h)
        contents = read_segment(j.segments[0].path)
        assert (contents.prefix, contents.unreadable) == (PREFIX, 0)
        assert contents.hits == list(enumerate(as_lists(written)))
        assert (j.count, j.unjournaled, j.error) == (3, 0, None)

    def test_torn_tail_and_corrupt_line(self, tmp_path: Path) -> None:
        """A line cut short at the end (never answered) is left out; a damaged line in the middle is counted."""
        j = Journal(tmp_path, PREFIX, MiB)
        for i in range(4):
            j.write(hit(recipient_id=i))
        path = j.segments[0].path
        data = bytearray(path.read_bytes())
        end = data.index(b"\x00")
        lines = data[:end].split(b"\n")
        data[end : end + 20] = b'[4,[1790000000.25,"o'  # the process died while copying hit 4
        second = end - len(lines[-2]) - 1 - len(lines[-3]) - 1  # start of hit 2's line
        data[second + 5] = 0  # a page the disk never got, say
        path.write_bytes(bytes(data))
        contents = read_segment(path)
        assert [n for n, _ in contents.hits] == [0, 1, 3]
        assert contents.unreadable == 1

    def test_segments_rotate_and_go_once_safe(self, tmp_path: Path) -> None:
        """A full segment hands over to the next; only segments wholly below the safe mark are deleted."""
        j = Journal(tmp_path, PREFIX, MiB)
        big = "x" * 100_000
        for i in range(25):  # ~10 of these fill a segment
            j.write(hit(recipient_id=i, user_agent=big))
        firsts = [s.first for s in j.segments]
        assert len(firsts) == 3 and firsts[0] == 0
        assert j.covered(0, 25) == 25
        j.release(firsts[1]).run()  # hits below the second segment's first are safe
        assert [s.first for s in j.segments] == firsts[1:]
        assert not (tmp_path / f"{j.owner}-000001.journal").exists()
        j.release(25).run()  # the segment being written stays
        assert [s.first for s in j.segments] == firsts[2:]
        assert [n for n, _ in read_segment(j.segments[0].path).hits] == list(range(firsts[2], 25))

    def test_live_owner_keeps_its_files(self, tmp_path: Path) -> None:
        """While its writer lives a segment cannot be taken; closed with hits unsafe, it is kept and can be."""
        j = Journal(tmp_path, PREFIX, MiB)
        j.write(hit())
        path = j.segments[0].path
        assert take(path) is None
        assert journal.orphans(tmp_path, j) == []
        assert j.close(0) == [path]
        fd = take(path)
        assert fd is not None
        os.close(fd)
        assert journal.orphans(tmp_path) == [path]

    def test_close_when_all_safe_leaves_nothing(self, tmp_path: Path) -> None:
        """Closed with every hit safe elsewhere, the journal leaves no file behind."""
        j = Journal(tmp_path, PREFIX, MiB)
        for _ in range(3):
            j.write(hit())
        assert j.close(3) == []
        assert list(tmp_path.iterdir()) == []

    def test_no_segment_means_counted_not_raised(self, tmp_path: Path) -> None:
        """A journal folder that cannot be made: hits are counted as not journaled, nothing raises; a retry recovers."""
        blocked = tmp_path / "journal"
        blocked.write_text("a file where the folder should be")
        j = Journal(blocked, PREFIX, MiB)
        j.write(hit())
        j.write(hit())
        assert (j.count, j.unjournaled, j.error is not None) == (2, 2, True)
        blocked.unlink()
        j.retry()
        j.write(hit(recipient_id=7))
        assert (j.error, j.covered(0, 3)) == (None, 1)
        assert read_segment(j.segments[0].path).hits == [(2, as_lists([hit(recipient_id=7)])[0])]


class TestIds:
    def test_replayed_hits_get_the_ids_they_had(self, tmp_path: Path) -> None:
        """Rows remade from the journal carry the same ids (and times) as the rows the flusher made."""
        j = Journal(tmp_path, PREFIX, MiB)
        maker = RowMaker(PREFIX, ClientAddress(()))
        batch = [hit(recipient_id=i) for i in range(5)]
        for h in batch:
            j.write(h)
        made = maker.rows(batch[:2], Tally(), 0) + maker.rows(batch[2:], Tally(), 2)
        replayed = HitBuffer.rows_of(RowMaker(PREFIX, ClientAddress(())), read_segment(j.segments[0].path).hits)
        assert [(r[0], r[1], r[4]) for r in replayed] == [(r[0], r[1], r[4]) for r in made]
        gap = HitBuffer.rows_of(RowMaker(PREFIX, ClientAddress(())), [(0, batch[0]), (3, batch[3])])
        assert [r[0] for r in gap] == [made[0][0], made[3][0]]


class TestOrphans:
    async def test_dead_collectors_journal_is_replayed_once(self, db_url: str, tmp_path: Path,
                                                            conn: asyncpg.Connection) -> None:
        """A running collector replays a dead one's journal, skipping the hits already stored: 6 rows, not 8."""
        spool = tmp_path / "spool"
        dead = Journal(spool / "journal", PREFIX, MiB)
        hits = [hit(recipient_id=i) for i in range(6)]
        for h in hits:
            dead.write(h)
        stored = RowMaker(PREFIX, ClientAddress(())).rows(hits[:2], Tally(), 0)
        await conn.copy_records_to_table("raw_hits", records=stored, columns=[
            "hit_id", "received_at", "kind", "job_id", "recipient_id", "link", "page", "client_ip", "user_agent",
            "referer", "accept_language", "method", "prefetch", "reject_reason", "url", "title", "visitor_id",
            "screen", "contact"])
        live = Journal(spool / "journal", bytes(8), MiB)  # a collector still running: never taken
        live.write(hit(recipient_id=99))
        [path] = dead.close(0)
        async with running(make_config(db_url, spool, scan_interval=0.05)) as client:
            async def replayed() -> bool:
                await client.app[BUFFER].flush()
                return not path.exists() and not client.app[BUFFER].spool.pending()
            await wait_for(replayed)
            text = await scrape(client)
        got = await rows(conn)
        assert sorted(r["recipient_id"] for r in got) == list(range(6))
        assert {r["hit_id"] for r in got} == {r[0] for r in RowMaker(PREFIX, ClientAddress(())).rows(hits, Tally(), 0)}
        assert "pixeltrack_hits_recovered_total 6.0" in text
        assert live.segments[0].path.exists()
        live.close(1)

    async def test_unreadable_journal_goes_to_quarantine(self, db_url: str, tmp_path: Path) -> None:
        """A journal file without a readable header is moved to quarantine/ and counted; the collector goes on."""
        spool = tmp_path / "spool"
        (spool / "journal").mkdir(parents=True)
        (spool / "journal" / "1-2-000001.journal").write_bytes(b"not a header\n[0,[]]\n")
        async with running(make_config(db_url, spool, scan_interval=0.05)) as client:
            await wait_for(lambda: _flushed_until(client, lambda: (spool / "quarantine" / "1-2-000001.journal").exists()))
            text = await scrape(client)
        assert "pixeltrack_spool_quarantined_total 1.0" in text
        assert "no readable header" in (spool / "quarantine" / "1-2-000001.journal.reason").read_text()


async def _flushed_until(client: object, done: object) -> bool:
    await client.app[BUFFER].flush()  # type: ignore[attr-defined]
    return bool(done())  # type: ignore[operator]
