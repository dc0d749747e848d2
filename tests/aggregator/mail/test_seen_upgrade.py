"""schema.sql on a database whose unique_seen still has a row per scope: folded into bits, counting goes on the same.

The hits roll up into a control database and into the test's; the test's
unique_seen (and the reading state hanging off it) is then put back into
the shape it had before (a row per scope, keyed by kind, a boolean
inferred), as an older version left it, and schema.sql folds it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from aggregator.config import AggregatorConfig
from aggregator.enrich.enricher import Enricher, make_enricher
from aggregator.mail.queries import ANY, CLICK, DOC, DOC_PAGE, LINK, OPEN, RECOGNISED, SCOPES
from aggregator.mail.report import build_report
from aggregator.mail.rollup import rollup
from aggregator.privacy.forget import forget
from loadtest.support import create_database, drop_database
from pixeltrack.core import db
from tests.support.hits import SCOPES_ARGS, SEEN_BY_SCOPE, add_hits, add_job, add_recipients, hit

A = "https://example.org/a"
B = "https://example.org/b"
CFG = AggregatorConfig(batch_size=1000)
# unique_seen and doc_reading_state as they were made before scopes became bits.
OLD_SHAPE = """
DROP TABLE doc_reading_state, unique_seen;
CREATE TABLE unique_seen (
    job_id    bigint NOT NULL,
    kind      text NOT NULL,
    link_id   bigint NOT NULL DEFAULT 0,
    hash      bytea NOT NULL,
    inferred  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, kind, link_id, hash)
);
CREATE TABLE doc_reading_state (
    job_id        bigint NOT NULL,
    hash          bytea NOT NULL,
    seen_kind     text NOT NULL DEFAULT 'doc' CHECK (seen_kind = 'doc'),
    seen_link     bigint NOT NULL DEFAULT 0 CHECK (seen_link = 0),
    last_at       timestamptz NOT NULL,
    last_page     integer NOT NULL,
    last_preload  boolean NOT NULL,
    furthest      integer NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, hash),
    FOREIGN KEY (job_id, seen_kind, seen_link, hash) REFERENCES unique_seen (job_id, kind, link_id, hash)
        ON DELETE CASCADE
);
"""
READING_COLUMNS = "job_id, hash, last_at, last_page, last_preload, furthest"
# Every table the roll-up merges into, in a stable order (report_job_totals' updated_at aside).
REPORT_TABLES = ("report_job_totals", "report_hourly", "report_links", "report_demographics", "report_breakdowns",
                 "report_rejected", "job_machine", "doc_pages", "doc_page_seconds")  # fmt: skip
# A scope's count in the test's job, and how many of them are inferred.
BY_KIND = f"""
SELECT kind, count(*), count(*) FILTER (WHERE inferred) FROM ({SEEN_BY_SCOPE}) s
GROUP BY kind ORDER BY kind
"""

# The readers' states, their hashes aside (the job keys of two databases differ).
READERS = "SELECT job_id, last_at, last_page, last_preload, furthest FROM doc_reading_state ORDER BY 1, 2, 3"


def first_hits(job: int) -> list[tuple[Any, ...]]:
    """r1 opens, clicks A and reads pages 1 and 2; r2 clicks B with images blocked; r3 reads page 0 (the
    row of link_id 0) and r4's only open is a prefetch."""
    return [
        hit("open", job, 1, 0), hit("click", job, 1, 2, A), hit("doc", job, 1, 4, page=1), hit("doc", job, 1, 5, page=2),
        hit("click", job, 2, 3, B), hit("doc", job, 3, 6, page=0),
        hit("open", job, 4, 7, method="HEAD", prefetch=True),
    ]  # fmt: skip


def later_hits(job: int) -> list[tuple[Any, ...]]:
    """r2 opens after all (no longer inferred), r1 reads page 3 (its page 2 is timed), r3 clicks A (an inferred
    opener now), r5 opens."""
    return [hit("open", job, 2, 30), hit("doc", job, 1, 7, page=3), hit("click", job, 3, 31, A), hit("open", job, 5, 32)]


async def anonymous_job(conn: asyncpg.Connection) -> int:
    """An anonymous job (its recipients also counted per demographic cell, scope 'any') of 5 recipients."""
    job = await add_job(conn, "anonymous")
    await add_recipients(conn, job, 5, profile=(1990, "f", "10115"))
    return job


async def tables(conn: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    """Every row of the report tables."""
    out = {}
    for table in REPORT_TABLES:
        rows = [{k: v for k, v in r.items() if k != "updated_at"} for r in await conn.fetch(f"SELECT * FROM {table}")]
        out[table] = sorted(rows, key=lambda r: tuple(str(v) for v in r.values()))
    return out


async def to_old_shape(conn: asyncpg.Connection) -> None:
    """unique_seen and doc_reading_state rebuilt as an older version kept them, with the same content."""
    seen = await conn.fetch(SEEN_BY_SCOPE, *SCOPES_ARGS)
    reading = await conn.fetch(f"SELECT {READING_COLUMNS} FROM doc_reading_state")
    await conn.execute(OLD_SHAPE)
    await conn.executemany("INSERT INTO unique_seen (job_id, kind, link_id, hash, inferred) VALUES ($1, $2, $3, $4, $5)",
                           [tuple(r) for r in seen])  # fmt: skip
    await conn.executemany(f"INSERT INTO doc_reading_state ({READING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
                           [tuple(r) for r in reading])  # fmt: skip


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    """The production enricher: the hits' browser is recognised (scopes 'r:...')."""
    return make_enricher()  # type: ignore[return-value]


@pytest.fixture
async def control(server_url: str, template_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A second fresh database, rolled up without any change of shape."""
    url = await create_database(server_url, "pt_t", template=template_db)
    connection = await db.connect(url)
    yield connection
    await connection.close()
    await drop_database(server_url, url)


class TestFolded:
    """Rows per scope become a row per (job, link, hash) with a bit per scope; counting goes on as before."""

    async def test_migrated(self, conn: asyncpg.Connection, db_url: str, control: asyncpg.Connection,
                            enricher: Enricher) -> None:  # fmt: skip
        """23 rows of 10 scopes fold into 8 with the same scopes and flags; then the same reports as never folded."""
        for c in (conn, control):
            job = await anonymous_job(c)
            await add_hits(c, first_hits(job))
            await rollup(c, CFG, enricher)
        spelled = sorted(tuple(r) for r in await conn.fetch(SEEN_BY_SCOPE, *SCOPES_ARGS))
        await to_old_shape(conn)
        assert [tuple(r) for r in await conn.fetch("SELECT kind, count(*), count(*) FILTER (WHERE inferred)"
                                                   " FROM unique_seen GROUP BY kind ORDER BY kind")] == [
            ("any", 4, 0), ("click", 2, 0), ("doc", 2, 0), ("doc_page", 3, 0), ("link", 2, 0), ("open", 2, 1),
            ("r:click", 2, 0), ("r:doc", 2, 0), ("r:link", 2, 0), ("r:open", 2, 1),
        ]  # fmt: skip
        assert await conn.fetchval("SELECT count(*) FROM doc_reading_state") == 2

        await db.apply_schema(db_url)
        await db.apply_schema(db_url)  # once folded, nothing more to do

        assert sorted(tuple(r) for r in await conn.fetch(SEEN_BY_SCOPE, *SCOPES_ARGS)) == spelled
        rows = await conn.fetch("SELECT link_id = 0, scopes, inferred FROM unique_seen ORDER BY 1, 2, 3")
        both = 1 + RECOGNISED  # a recognised browser's scope, and its r: scope
        mail = (OPEN | CLICK) * both | ANY
        assert [tuple(r) for r in rows] == [
            (False, LINK * both, 0), (False, LINK * both, 0),  # r1's link A, r2's link B
            (False, DOC_PAGE, 0), (False, DOC_PAGE, 0),  # r1's pages 1 and 2
            (True, ANY, 0),  # r4: a prefetch is a machine's, but r4 is a recipient of the cell
            (True, mail, OPEN * both),  # r2, an inferred opener
            (True, mail | DOC * both, 0),  # r1
            (True, ANY | DOC * both | DOC_PAGE, 0),  # r3, page 0 in the same row
        ]  # fmt: skip
        assert await conn.fetchval("SELECT count(*) FROM doc_reading_state") == 2

        for c in (conn, control):
            job = await c.fetchval("SELECT job_id FROM jobs")
            await add_hits(c, later_hits(job))
            await rollup(c, CFG, enricher)
        assert await tables(conn) == await tables(control)
        for sql, args in ((BY_KIND, SCOPES_ARGS), (READERS, ())):
            assert [tuple(r) for r in await conn.fetch(sql, *args)] == [tuple(r) for r in await control.fetch(sql, *args)]
        pages = [tuple(r) for r in await conn.fetch("SELECT page, readers FROM doc_pages ORDER BY page")]
        assert pages == [(0, 1), (1, 1), (2, 1), (3, 1)]  # page 0's reader too, whose row was there already
        report = await build_report(conn, job)
        assert (report["opens"]["unique"], report["opens"]["inferred"], report["clicks"]["unique"]) == (4, 1, 3)

    async def test_reading_state_cascades(self, conn: asyncpg.Connection, db_url: str, enricher: Enricher) -> None:
        """After folding, forgetting a reader deletes their reading state with their row (and counts their 11 hashes)."""
        job = await anonymous_job(conn)
        await add_hits(conn, first_hits(job))
        await rollup(conn, CFG, enricher)
        await to_old_shape(conn)
        await db.apply_schema(db_url)
        [done] = await forget(conn, "r1@example.org")
        assert done.hashes == 11  # open, click, doc, link and their r: scopes, any, pages 1 and 2
        assert await conn.fetchval("SELECT count(*) FROM doc_reading_state") == 1  # r3's
        with pytest.raises(asyncpg.ForeignKeyViolationError):  # the key still holds
            await conn.execute("INSERT INTO doc_reading_state (job_id, hash, last_at, last_page, last_preload)"
                               " VALUES ($1, '\\x00'::bytea, now(), 1, false)", job)  # fmt: skip


class TestStrangeScope:
    """A scope this version has no bit for stops the upgrade: nothing is dropped unnoticed."""

    async def test_refused(self, conn: asyncpg.Connection, db_url: str) -> None:
        """schema.sql fails naming the scope, and the old rows stay as they were."""
        await conn.execute(OLD_SHAPE)
        await conn.execute("INSERT INTO unique_seen (job_id, kind, hash) VALUES (1, 'open', '\\x01'), (1, 'page', '\\x01')")
        with pytest.raises(asyncpg.RaiseError, match="unique_seen holds scopes with no bit: page"):
            await db.apply_schema(db_url)
        assert await conn.fetchval("SELECT count(*) FROM unique_seen") == 2


class TestScopeBits:
    """The column comment that tells an operator the bits is SCOPES."""

    async def test_comment(self, conn: asyncpg.Connection) -> None:
        comment = await conn.fetchval("SELECT col_description(attrelid, attnum) FROM pg_attribute"
                                      " WHERE attrelid = 'unique_seen'::regclass AND attname = 'scopes'")
        assert comment == "bits: " + ", ".join(f"{bit} {kind}" for kind, bit in SCOPES.items())
