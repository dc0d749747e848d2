"""The column sets of pixeltrack.core.columns against the schema PostgreSQL really has."""

from __future__ import annotations

import asyncpg

from aggregator.enrich import EnrichConfig, Enricher
from aggregator.mail import queries as mail
from aggregator.mail.rows import BATCH_COLUMNS as MAIL_BATCH_COLUMNS
from aggregator.web import queries as web
from collector.rows import COLUMNS as COLLECTOR_COLUMNS
from pixeltrack.core import columns

TABLE_COLUMNS = """
SELECT column_name, is_nullable = 'YES' AS nullable FROM information_schema.columns
WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position
"""
TYPES = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
"""
TYPE_NAME = "SELECT format_type($1::regtype, NULL)"


async def table_columns(conn: asyncpg.Connection, table: str, schema: str = "public") -> list[str]:
    return [r["column_name"] for r in await conn.fetch(TABLE_COLUMNS, schema, table)]


async def types_of(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    return {r[0]: r[1] for r in await conn.fetch(TYPES, table)}


class TestRawHits:
    """RAW_HITS is raw_hits, column for column, in table order, with TYPES as its types."""

    async def test_columns_in_order(self, conn: asyncpg.Connection) -> None:
        """The table's columns are HIT, rolled_at, ENRICHED, PAGE_VIEW: 14 + 1 + 23 + 5."""
        assert await table_columns(conn, "raw_hits") == list(columns.RAW_HITS)
        assert (len(columns.HIT), len(columns.ENRICHED), len(columns.PAGE_VIEW), len(columns.RAW_HITS)) == (14, 23, 5, 43)

    async def test_types(self, conn: asyncpg.Connection) -> None:
        """TYPES names every column with the type schema.sql gives it."""
        declared = {name: await conn.fetchval(TYPE_NAME, typ) for name, typ in columns.TYPES.items()}
        assert declared == await types_of(conn, "raw_hits")

    async def test_personal_columns_can_be_scrubbed(self, conn: asyncpg.Connection) -> None:
        """Every PERSONAL column exists and may be NULL; none of the key columns is in it."""
        nullable = {r["column_name"]: r["nullable"] for r in await conn.fetch(TABLE_COLUMNS, "public", "raw_hits")}
        assert all(nullable[name] for name in columns.PERSONAL)
        assert not {"hit_id", "received_at", "job_id", "kind"} & set(columns.PERSONAL)
        assert set(columns.NARROWING) <= set(columns.ENRICHED) and set(columns.MACHINE) <= set(columns.ENRICHED)


class TestUsers:
    """The collector, the enricher and both roll-ups use the same sets."""

    def test_collector_copies_raw(self) -> None:
        """The collector's COPY columns are RAW."""
        assert COLLECTOR_COLUMNS == columns.RAW

    def test_enricher_outputs_enriched(self) -> None:
        """The enricher (and the tests' plain oracle) return ENRICHED in order, plus the machine's family
        (counted by the roll-up, not kept in raw_hits) and the masked address."""
        from tests.aggregator.enrich.reference import enrich as oracle

        hit = {"kind": "open", "job_id": 1, "recipient_id": 1, "client_ip": "203.0.113.7", "user_agent": "curl/8"}
        for [row] in (Enricher(EnrichConfig()).enrich([hit]), oracle(EnrichConfig(), [hit])):
            assert [name for name in row if name in columns.ENRICHED] == list(columns.ENRICHED)
            assert set(row) - set(columns.ENRICHED) == {"machine_family", "client_ip_masked"}
            assert (row["machine_reason"], row["machine_family"]) == ("crawler", "curl")

    async def test_claims_read_what_the_collector_wrote(self, conn: asyncpg.Connection) -> None:
        """The mail claim reads HIT but the method (folded into prefetch by the collector), the page-view claim RAW,
        nothing more (jobs, sites and recipients are looked up once a batch)."""
        mail_claim = [a.name for a in (await conn.prepare(mail.CLAIM)).get_attributes()]
        page_claim = [a.name for a in (await conn.prepare(web.CLAIM_PAGES)).get_attributes()]
        assert mail_claim == [name for name in columns.HIT if name != "method"] == list(mail.CLAIMED)
        assert page_claim == list(columns.RAW)

    async def test_batch_tables(self, conn: asyncpg.Connection) -> None:
        """The batch tables (mail: batch and profiles) hold what the roll-ups write back, typed as in raw_hits; nothing enriched is left out."""
        raw = await types_of(conn, "raw_hits")
        async with conn.transaction():
            await conn.execute(mail.CREATE_BATCH)
            await conn.execute(web.CREATE_BATCH)
            for tables, stored, as_text in (
                ((("rollup_batch", MAIL_BATCH_COLUMNS), ("rollup_profile", mail.PROFILE_COLUMNS)), mail.STORED,
                 {"client_ip"}),  # text in the batch, cast when written back
                ((("site_batch", web.BATCH_COLUMNS),), web.STORED, set()),
            ):  # fmt: skip
                held: set[str] = set()
                for table, batch_columns in tables:
                    found = await types_of(conn, table)
                    assert list(found) == list(batch_columns)
                    typed = {n: t for n, t in found.items() if n in raw}
                    assert typed == {n: "text" if n in as_text else raw[n] for n in typed}
                    held |= set(batch_columns)
                assert set(stored) <= held and set(columns.ENRICHED) <= set(stored)
        assert set(columns.PAGE_VIEW) <= set(web.STORED)
