"""`pixeltrack report`'s documents section in the table and the CSV too, not only in the JSON.

The hits are test_reading's reading_job: r1 reads pages 1-4 (40, 60, 30 s,
the last untimed), r2 pre-loads every page, then reads page 2 for 300 s
(capped) and page 3. r1 was imported as a spreadsheet formula.
"""

from __future__ import annotations

import csv
import io

import asyncpg

from aggregator.mail.report import build_report
from aggregator.render import as_csv, as_table
from tests.aggregator.triggers.test_reading import reading_job

HYPERLINK = '=HYPERLINK("https://evil.example","x")'


async def report_of(conn: asyncpg.Connection, mode: str = "personal") -> dict:
    """reading_job's report, recipient 1 renamed to a formula."""
    job = await reading_job(conn, mode)
    await conn.execute("UPDATE recipients SET recipient = $2 WHERE job_id = $1 AND recipient_id = 1", job, HYPERLINK)
    return await build_report(conn, job)


def section(table: str, title: str) -> list[list[str]]:
    """The lines of one table section, split into cells at runs of two or more spaces."""
    lines = table.splitlines()
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return [[c for c in line.strip().split("  ") if c] for line in lines[start:end]]


class TestTable:
    """Per page, then per reader (personal tracking), under the job's other sections."""

    async def test_pages(self, conn: asyncpg.Connection) -> None:
        table = as_table(await report_of(conn))
        rows = section(table, "Documents: views and reading time per page (pre-loads apart)")
        assert [[c.strip() for c in r] for r in rows] == [
            ["views", "pre-loaded", "readers", "reached", "median s", "total s", "timed", "page"],
            ["1", "1", "1", "2", "40.0", "40.0", "1", "1"],
            ["2", "1", "2", "2", "180.0", "360.0", "2", "2"],
            ["2", "1", "2", "2", "30.0", "30.0", "1", "3"],
            ["1", "1", "1", "1", "-", "0.0", "0", "4"],
        ]  # fmt: skip

    async def test_readers(self, conn: asyncpg.Connection) -> None:
        table = as_table(await report_of(conn))
        rows = section(table, "Readers")
        assert [[c.strip() for c in r] for r in rows] == [
            ["seconds", "furthest page", "pages (page:views/seconds)", "recipient"],
            ["130.0", "4", "1:1/40.0 2:1/60.0 3:1/30.0 4:1/0.0", HYPERLINK],
            ["300.0", "3", "2:1/300.0 3:1/0.0", "r2@example.org"],
        ]  # fmt: skip

    async def test_blind_has_no_readers(self, conn: asyncpg.Connection) -> None:
        """A blind job: views per page, the rest unknown ('-'), no readers section."""
        table = as_table(await report_of(conn, "blind"))
        rows = section(table, "Documents: views and reading time per page (pre-loads apart)")
        assert [r[0].strip() for r in rows[1:]] == ["2", "3", "3", "2"] and rows[1][2:4] == ["-", "-"]
        assert "Readers" not in table.splitlines()

    async def test_none_without_documents(self, conn: asyncpg.Connection) -> None:
        report = await report_of(conn)
        del report["documents"]
        assert "Documents" not in as_table(report)


class TestCsv:
    """section,item,metric,value rows; the recipient's text neutralised (pixeltrack.core.csvsafe)."""

    async def test_rows(self, conn: asyncpg.Connection) -> None:
        rows = list(csv.reader(io.StringIO(as_csv(await report_of(conn)))))
        pages = [r for r in rows if r[0] == "documents"]
        assert len(pages) == 4 * 7
        assert {m: v for s, i, m, v in pages if i == "2"} == {
            "views": "2", "preloaded": "1", "unique_readers": "2", "reached": "2", "median_seconds": "180.0",
            "total_seconds": "360.0", "timed_views": "2",
        }  # fmt: skip
        assert ["documents", "4", "median_seconds", ""] in rows
        quoted = "'" + HYPERLINK
        assert [r for r in rows if r[0] == "documents:reader"] == [
            ["documents:reader", quoted, "total_seconds", "130.0"], ["documents:reader", quoted, "furthest_page", "4"],
            ["documents:reader", "r2@example.org", "total_seconds", "300.0"],
            ["documents:reader", "r2@example.org", "furthest_page", "3"],
        ]  # fmt: skip
        reader_pages = [(i, m, v) for s, i, m, v in rows if s == "documents:reader_page"]
        assert reader_pages[-4:] == [("r2@example.org|2", "views", "1"), ("r2@example.org|2", "seconds", "300.0"),
                                     ("r2@example.org|3", "views", "1"), ("r2@example.org|3", "seconds", "0.0")]  # fmt: skip
        assert (quoted + "|1", "seconds", "40.0") in reader_pages
        assert not any(cell.startswith("=") for row in rows for cell in row)

    async def test_unique_has_no_readers(self, conn: asyncpg.Connection) -> None:
        rows = list(csv.reader(io.StringIO(as_csv(await report_of(conn, "unique")))))
        assert len([r for r in rows if r[0] == "documents"]) == 28
        assert not [r for r in rows if r[0].startswith("documents:")]
