"""distribute.sql names every table of schema.sql once: reference tables, or distributed by job_id."""

from __future__ import annotations

import re

import asyncpg

from pixeltrack.core import db

TABLES = """
SELECT c.relname, EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'job_id') AS by_job
FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY 1
"""


def listed(name: str) -> list[str]:
    """The table names of the array ``name`` in distribute.sql."""
    found = re.search(rf"{name} text\[\] := ARRAY\[(.*?)\];", db.distribute_sql(), re.S)
    assert found is not None
    return re.findall(r"'(\w+)'", found.group(1))


# Tables that stay plain tables on the coordinator, written in the collector's COPY transaction: the tombstones
# (no job_id) and the runs waiting (a job_id, but read and deleted only by the roll-up, never joined).
COORDINATOR = {"copied_hits", "hit_runs"}


class TestLayout:
    """Every table of the schema (but the coordinator's own) is a reference table or distributed by job_id, once."""

    async def test_every_table_once(self, conn: asyncpg.Connection) -> None:
        """41 tables: 10 reference (no job of their own, or global), 31 distributed, each with a job_id; and the
        coordinator's own, left out."""
        tables = {r["relname"]: r["by_job"] for r in await conn.fetch(TABLES)}
        assert set(tables) >= COORDINATOR and not tables["copied_hits"] and tables["hit_runs"]
        tables = {t: by_job for t, by_job in tables.items() if t not in COORDINATOR}
        reference, by_job = listed("reference"), listed("by_job")
        assert sorted(reference + by_job) == sorted(tables) and len(set(reference + by_job)) == 41
        assert reference == ["jobs", "sites", "erasure_key", "site_salts", "dashboard_users", "dashboard_sessions",
                             "dashboard_api_tokens", "triggers", "trigger_events", "trigger_attempts"]
        assert by_job[0] == "raw_hits" and all(tables[t] for t in by_job)
