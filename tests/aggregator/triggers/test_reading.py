"""Reading time per document page: hand-built page sequences, exact seconds."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest

from aggregator.config import AggregatorConfig
from aggregator.enrich import EnrichConfig
from aggregator.enrich.enricher import make_enricher
from aggregator.mail.documents import median
from aggregator.mail.reading import PageView, Read, reads
from aggregator.mail.report import build_report
from aggregator.mail.rollup import rollup
from tests.support.hits import T0, add_hits, add_job, add_recipients, hit

IDLE = 300


def views(*pairs: tuple[float, int]) -> list[PageView]:
    """Page views at (seconds after T0, page)."""
    return [PageView(T0 + dt.timedelta(seconds=s), p) for s, p in pairs]


def timed(*pairs: tuple[float, int]) -> list[tuple[int, float | None, bool]]:
    """(page, seconds, pre-load) of each view as read."""
    return [(r.page, r.seconds, r.preload) for r in reads(views(*pairs), IDLE)]


class TestReads:
    """Each view is timed by the gap to the reader's next one."""

    def test_gaps(self) -> None:
        """Pages 1-4 at 0, 40, 100, 130 s: 40, 60 and 30 s; the last view is untimed."""
        assert timed((0, 1), (40, 2), (100, 3), (130, 4)) == [(1, 40, False), (2, 60, False), (3, 30, False),
                                                              (4, None, False)]  # fmt: skip

    def test_idle_cap(self) -> None:
        """A gap of 1000 s counts as the 300 s cap and ends the reading session."""
        out = reads(views((0, 1), (1000, 2), (1010, 3)), IDLE)
        assert [(r.page, r.seconds, r.new_session) for r in out] == [(1, 300, True), (2, 10, True), (3, None, False)]

    def test_gap_at_the_cap_counts_in_full(self) -> None:
        """Exactly 300 s is reading, and the session goes on."""
        out = reads(views((0, 1), (300, 2)), IDLE)
        assert [(r.seconds, r.new_session) for r in out] == [(300, True), (None, False)]

    def test_preload_burst(self) -> None:
        """Four pages within 0.6 s are a pre-load: no view, no time; reading resumes after."""
        assert timed((0.0, 1), (0.2, 2), (0.4, 3), (0.6, 4), (60, 1), (90, 2)) == [
            (1, None, True), (2, None, True), (3, None, True), (4, None, True), (1, 30, False), (2, None, False),
        ]  # fmt: skip

    def test_page_before_a_burst_keeps_its_time(self) -> None:
        """Page 1 read 30 s, then the viewer pre-loads pages 2 and 3."""
        assert timed((0, 1), (30.0, 2), (30.5, 3)) == [(1, 30, False), (2, None, True), (3, None, True)]

    def test_same_page_twice_within_a_second(self) -> None:
        """A repeated fetch of one page is one view, timed from the first."""
        assert timed((0, 1), (0.5, 1), (20, 2)) == [(1, 20, False), (2, None, False)]

    def test_order_of_arrival_does_not_matter(self) -> None:
        """Views are put in time order first."""
        assert timed((100, 3), (0, 1), (40, 2)) == [(1, 40, False), (2, 60, False), (3, None, False)]

    def test_read_record(self) -> None:
        """A read carries its time and page."""
        assert reads(views((0, 7)), IDLE) == [Read(T0, 7, None, False, True)]


class TestMedian:
    """Medians come from a histogram of seconds."""

    def test_odd_and_even(self) -> None:
        assert median([(10, 1), (20, 1), (90, 1)]) == 20
        assert median([(60, 1), (300, 1)]) == 180
        assert median([(5, 3), (50, 1)]) == 5
        assert median([]) is None


def doc(job: int, rid: int | None, seconds: float, page: int, **kw: object) -> tuple:
    """A document page pixel ``seconds`` after T0."""
    return hit("doc", job, rid, page=page, received_at=T0 + dt.timedelta(seconds=seconds), **kw)  # type: ignore[arg-type]


async def reading_job(conn: asyncpg.Connection, mode: str, batch: int = 1000) -> int:
    """r1 reads pages 1-4 at 0, 40, 100, 130 s (a HEAD of page 2 beside); r2's viewer pre-loads
    pages 1-4 at 600 s, then r2 reads page 2 at 700 s and page 3 at 1100 s (400 s later: capped)."""
    job = await add_job(conn, mode)
    await add_recipients(conn, job, 2)
    one, two = (None, None) if mode == "blind" else (1, 2)
    await add_hits(conn, [
        doc(job, one, 0, 1), doc(job, one, 40, 2), doc(job, one, 41, 2, method="HEAD", prefetch=True),
        doc(job, one, 100, 3), doc(job, one, 130, 4),
        doc(job, two, 600.0, 1), doc(job, two, 600.2, 2), doc(job, two, 600.4, 3), doc(job, two, 600.6, 4),
        doc(job, two, 700, 2), doc(job, two, 1100, 3),
    ])  # fmt: skip
    cfg = AggregatorConfig(batch_size=batch, reading_idle=IDLE, enrich=EnrichConfig())
    await rollup(conn, cfg, make_enricher(cfg.enrich))
    return job


def page_rows(report: dict) -> list[tuple]:
    """(page, views, pre-loaded, readers, reached, median, total, timed) per page."""
    keys = ("page", "views", "preloaded", "unique_readers", "reached", "median_seconds", "total_seconds", "timed_views")
    return [tuple(p[k] for k in keys) for p in report["documents"]["pages"]]


PAGES = [(1, 1, 1, 1, 2, 40, 40, 1), (2, 2, 1, 2, 2, 180, 360, 2), (3, 2, 1, 2, 2, 30, 30, 1),
         (4, 1, 1, 1, 1, None, 0, 0)]  # fmt: skip


class TestDocumentsReport:
    """`pixeltrack report` has a documents section, stored as the mode allows."""

    async def test_personal_pages(self, conn: asyncpg.Connection) -> None:
        """Per page: views, pre-loads, readers, reached, median and total seconds, timed views."""
        job = await reading_job(conn, "personal")
        assert page_rows(await build_report(conn, job)) == PAGES

    async def test_personal_readers(self, conn: asyncpg.Connection) -> None:
        """Per reader: 130 s over four pages; 300 s (capped) on page 2 and an untimed page 3."""
        job = await reading_job(conn, "personal")
        readers = (await build_report(conn, job))["documents"]["readers"]
        assert [(r["recipient"], r["total_seconds"], r["furthest_page"]) for r in readers] == [
            ("r1@example.org", 130, 4), ("r2@example.org", 300, 3)]  # fmt: skip
        assert [(p["page"], p["views"], p["seconds"]) for p in readers[1]["pages"]] == [(2, 1, 300), (3, 1, 0)]

    async def test_across_batches(self, conn: asyncpg.Connection) -> None:
        """Five hits per roll-up transaction: the same figures (the reader's last view is kept between)."""
        job = await reading_job(conn, "personal", batch=5)
        assert page_rows(await build_report(conn, job)) == PAGES

    async def test_burst_split_by_a_batch(self, conn: asyncpg.Connection) -> None:
        """A batch ending inside the pre-load: its first page is a pre-load at once (the roll-up looks a second ahead)."""
        job = await reading_job(conn, "personal", batch=6)
        rows = page_rows(await build_report(conn, job))
        assert [(r[0], r[1], r[2]) for r in rows] == [(1, 1, 1), (2, 2, 1), (3, 2, 1), (4, 1, 1)]
        assert [r[6] for r in rows] == [40, 360, 30, 0]

    async def test_unique_job_aggregates_only(self, conn: asyncpg.Connection) -> None:
        """A unique job: the same page figures from keyed hashes, no readers section, no recipient stored."""
        job = await reading_job(conn, "unique")
        report = await build_report(conn, job)
        assert page_rows(report) == PAGES
        assert "readers" not in report["documents"]
        assert await conn.fetchval("SELECT count(*) FROM doc_reader_pages") == 0

    async def test_blind_job_counts_only(self, conn: asyncpg.Connection) -> None:
        """A blind job tells no reader apart: views per page, nothing else."""
        job = await reading_job(conn, "blind")
        rows = page_rows(await build_report(conn, job))
        assert rows == [(1, 2, 0, None, None, None, None, None), (2, 3, 0, None, None, None, None, None),
                        (3, 3, 0, None, None, None, None, None), (4, 2, 0, None, None, None, None, None)]  # fmt: skip

    @pytest.mark.parametrize("batch", [1000, 1])
    async def test_consent_given_while_reading(self, conn: asyncpg.Connection, batch: int) -> None:
        """Consent from 50 s: of pages 1-3 at 0, 40 and 100 s only page 3 is the reader's (untimed, the last);
        page 2's 60 s, timed by the consented view, stay the page's, in one batch or in batches of one."""
        job = await add_job(conn, "permission_personal")
        await add_recipients(conn, job, 1, consent=True, changed_at=T0 + dt.timedelta(seconds=50))
        await add_hits(conn, [doc(job, 1, 0, 1), doc(job, 1, 40, 2), doc(job, 1, 100, 3)])
        cfg = AggregatorConfig(batch_size=batch, reading_idle=IDLE, enrich=EnrichConfig())
        await rollup(conn, cfg, make_enricher(cfg.enrich))
        assert page_rows(await build_report(conn, job)) == [
            (1, 1, 0, 1, 1, 40, 40, 1), (2, 1, 0, 1, 1, 60, 60, 1), (3, 1, 0, 1, 1, None, 0, 0)]  # fmt: skip
        readers = await conn.fetch("SELECT recipient_id, page, views, seconds FROM doc_reader_pages ORDER BY page")
        assert [tuple(r) for r in readers] == [(1, 3, 1, 0.0)]
        assert await conn.fetchval("SELECT last_personal FROM doc_reading_state") is True

    async def test_no_documents_no_section(self, conn: asyncpg.Connection) -> None:
        """A job without document pages has no documents section."""
        job = await add_job(conn, "personal")
        assert "documents" not in await build_report(conn, job)


class TestErasure:
    """What identifies a reader goes with `forget` and with the retention purge (foreign keys cascade)."""

    async def test_forget(self, conn: asyncpg.Connection) -> None:
        """Forgetting r1 deletes r1's per-page rows and reading state; r2's and the aggregates stay."""
        from aggregator.privacy.forget import forget

        job = await reading_job(conn, "personal")
        assert await conn.fetchval("SELECT count(*) FROM doc_reading_state") == 2
        await forget(conn, "r1@example.org", job)
        rows = await conn.fetch("SELECT DISTINCT recipient_id FROM doc_reader_pages")
        assert [r["recipient_id"] for r in rows] == [2]
        assert await conn.fetchval("SELECT count(*) FROM doc_reading_state") == 1
        assert await conn.fetchval("SELECT sum(views) FROM doc_pages WHERE job_id = $1", job) == 6

    async def test_retention(self, conn: asyncpg.Connection) -> None:
        """Once the job's key and hashes are destroyed, so is every reader's state."""
        from aggregator.privacy.retention import destroy_keys

        job = await reading_job(conn, "unique")
        await conn.execute("UPDATE jobs SET retention_days = 1, created_at = now() - interval '3 days'")
        # key; 'doc', 'doc_page' and the recognised readers' 'r:doc' hashes
        assert await destroy_keys(conn, dt.datetime.now(dt.UTC)) == (1, 2 + 6 + 2)
        assert await conn.fetchval("SELECT count(*) FROM doc_reading_state WHERE job_id = $1", job) == 0
