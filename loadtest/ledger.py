"""What a load run's database holds: hits stored, rolled up and pending, and what the reports count.

Both roll-up benchmarks (bench_keepup, bench_two_aggregators) account with
these. A mail hit is rolled up in the transaction that merges it into the
report tables, so at any snapshot the reports count exactly the hits whose
``rolled_at`` is set: every accepted hit once in report_job_totals (its kind,
documents too), every refused one once in report_rejected. Hits are
counted by category as ``loadtest.verify`` counts raw_hits and the drivers
count answers: the kind, "/rejected" added for a refused token.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

import asyncpg

# One statement, so one snapshot: rolled + pending = stored at that instant.
# Page views of websites are rolled up elsewhere (aggregator.web); the mail
# mix has none, and they are left out as the aggregator's PENDING leaves them.
# The hits waiting are read as the roll-up reads them: each job's by its key
# from the oldest of its runs waiting (hit_runs) on. A hit not rolled up has
# its run still waiting (a run is deleted with the last of its hits' roll-up).
SNAPSHOT = """
WITH waiting AS (SELECT job_id, min(first_at) AS first FROM hit_runs WHERE NOT pages GROUP BY job_id)
SELECT (SELECT coalesce(sum(total), 0) FROM report_job_totals)
     + (SELECT coalesce(sum(hits), 0) FROM report_rejected) AS rolled,
       coalesce(sum(w.n), 0) AS pending, min(w.oldest) AS oldest, now() AS at
FROM waiting j CROSS JOIN LATERAL (
    SELECT count(*) AS n, min(received_at) AS oldest FROM raw_hits r
    WHERE r.job_id = j.job_id AND r.received_at >= j.first AND r.rolled_at IS NULL AND r.kind <> 'page') w
"""
REPORTED = """
SELECT kind AS category, sum(total) AS n FROM report_job_totals GROUP BY kind
UNION ALL
SELECT kind || '/rejected', sum(hits) FROM report_rejected GROUP BY kind
"""
# A read of all of raw_hits (at the end of a run: nothing may be left).
UNROLLED = """
SELECT (SELECT count(*) FROM raw_hits WHERE rolled_at IS NULL AND kind <> 'page')
     + (SELECT count(*) FROM raw_hits WHERE rolled_at IS NULL AND kind = 'page')
"""
# What the collectors say they stored (their tombstones): the roll-up deletes
# the raw rows of the tracks that keep nothing per hit, so raw_hits alone no
# longer holds every stored hit once it is rolled up.
COPIED = "SELECT coalesce(sum(hits), 0) FROM copied_hits"

# Every table of the schema (partitions through their parent) with its
# columns, but the ones that say when a row was written, not what it holds.
WHEN_WRITTEN = ["updated_at", "rolled_at"]
TABLES = """
SELECT c.relname AS name,
       array_agg(a.attname::text ORDER BY a.attnum) AS columns,
       array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) AS types
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND a.attname <> ALL($1::text[])
GROUP BY c.relname ORDER BY c.relname
"""


@dataclass(frozen=True)
class Snapshot:
    """Hits rolled up and pending at one instant, and the age of the oldest pending one."""

    rolled: int
    pending: int
    lag: float  # seconds; 0 when nothing is pending

    @property
    def stored(self) -> int:
        """Hits in raw_hits at that instant."""
        return self.rolled + self.pending


async def snapshot(conn: asyncpg.Connection) -> Snapshot:
    """Rolled, pending and roll-up lag now (a cheap query: the reports and the partial index of pending hits)."""
    row = await conn.fetchrow(SNAPSHOT)
    oldest: dt.datetime | None = row["oldest"]
    lag = (row["at"] - oldest).total_seconds() if oldest else 0.0
    return Snapshot(int(row["rolled"]), int(row["pending"]), max(lag, 0.0))


async def reported(conn: asyncpg.Connection) -> Counter[str]:
    """Hits the report tables count, per category."""
    return Counter({r["category"]: int(r["n"]) for r in await conn.fetch(REPORTED)})


async def unrolled(conn: asyncpg.Connection) -> int:
    """Raw hits not rolled up (every kind)."""
    return int(await conn.fetchval(UNROLLED))


async def copied(conn: asyncpg.Connection) -> int:
    """Hits the collectors stored, by their tombstones (replays included, each hit once)."""
    return int(await conn.fetchval(COPIED))


# What every hit adds whatever its verdict (machine or not, a reader's view
# or a pre-load): a hit rolled up twice, or lost, changes one of these. How
# those hits split into human / unknown / machine, and so the unique counts
# and reading figures, follows a recipient's hits within one batch
# (aggregator/enrich/RULES.md), so it may change with where batches split.
HIT_COUNTS = (
    ("raw_hits", "SELECT hit_id, job_id, received_at, kind, rolled_at IS NOT NULL FROM raw_hits"),
    ("report_job_totals", "SELECT job_id, kind, total FROM report_job_totals"),
    ("report_hourly", "SELECT job_id, hour, kind, total FROM report_hourly"),
    ("report_links", "SELECT job_id, link_id, url, total FROM report_links"),
    ("report_rejected", "SELECT job_id, hour, kind, reason, hits FROM report_rejected"),
    ("report_breakdowns", "SELECT job_id, kind, sum(hits) FROM report_breakdowns GROUP BY job_id, kind"),
    ("report_recipients",
     "SELECT job_id, recipient_id, opens + machine_opens, clicks + machine_clicks FROM report_recipients"),
    ("report_recipient_links", "SELECT job_id, recipient_id, link_id, clicks + machine FROM report_recipient_links"),
    ("report_demographics", "SELECT job_id, age_band, gender, zip, opens + clicks + machine FROM report_demographics"),
)  # fmt: skip
Digests = dict[str, tuple[int, str]]


async def digest(conn: asyncpg.Connection, select: str) -> tuple[int, str]:
    """(rows, digest of the rows in any order) of a query: a constant, or built from catalog names."""
    row = await conn.fetchrow(
        f"SELECT count(*) AS n, md5(coalesce(string_agg(h, '' ORDER BY h), '')) AS digest "
        f"FROM (SELECT md5(r::text) AS h FROM ({select}) r) d"
    )
    return int(row["n"]), str(row["digest"])


async def hit_counts(conn: asyncpg.Connection) -> Digests:
    """Digests of ``HIT_COUNTS``: the same in two databases when each held the same hits, each counted once."""
    return {name: await digest(conn, sql) for name, sql in HIT_COUNTS}


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _column(name: str, type_name: str) -> str:
    # A double is a sum of floats: its last bits follow the order of the
    # additions, which follows how batches happened to split the hits.
    return f"round({_quoted(name)}::numeric, 6)" if type_name == "double precision" else _quoted(name)


async def fingerprints(conn: asyncpg.Connection) -> Digests:
    """Digests of every table, ``WHEN_WRITTEN`` columns left out."""
    out = {}
    for table in await conn.fetch(TABLES, WHEN_WRITTEN):
        columns = ", ".join(_column(c, t) for c, t in zip(table["columns"], table["types"], strict=True))
        out[table["name"]] = await digest(conn, f"SELECT {columns} FROM {_quoted(table['name'])}")
    return out


def differences(first: Digests, other: Digests) -> list[str]:
    """Tables whose rows differ between two fingerprints, with their row counts."""
    return [f"{name} ({first.get(name, (0, ''))[0]} vs {other.get(name, (0, ''))[0]} rows)"
            for name in sorted(first.keys() | other.keys()) if first.get(name) != other.get(name)]  # fmt: skip
