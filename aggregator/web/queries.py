"""SQL of the website roll-up, as named constants ($n parameters, never formatted).

Column lists come from pixeltrack.core.columns and the tuples below (joined
once, at import).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aggregator import claims
from pixeltrack.core import columns

# What the roll-up writes back to each raw page view (tracks.stored_row makes the values).
STORED = ("client_ip", *columns.HEADERS, *columns.PAGE_VIEW, *columns.ENRICHED)

# Jobs with page views to roll up (aggregator.claims), and the claim of one
# job's ($1) oldest unrolled page views from $3 on (its oldest run in
# hit_runs; the mail roll-up leaves kind 'page' alone); under the job's
# lock, no row lock, as for mail. In the order the batch is worked in,
# hit_id breaking ties: views of one instant cut by a batch go to sessions
# in the order one batch would take them. The sites'
# mode and settings come once a batch (SITE_SETTINGS; jobs and sites are
# reference tables on Citus): joined to the claim, two join levels and a
# sort per view (20k views of one site: 5.5 -> 2.8 us a view of PostgreSQL
# CPU, 9.8 -> 8.5 of the aggregator's).
PENDING = claims.Backlog(pages=True)
CLAIM_PAGES = f"""
SELECT {columns.listed(columns.RAW, client_ip="host(client_ip)")}
FROM raw_hits WHERE job_id = $1 AND received_at >= $3 AND rolled_at IS NULL AND kind = 'page'
ORDER BY received_at, hit_id LIMIT $2
"""
SITE_SETTINGS = """
SELECT j.job_id, j.mode, coalesce(s.cookieless, false) AS cookieless, coalesce(s.spa_hash, false) AS spa_hash
FROM jobs j LEFT JOIN sites s ON s.job_id = j.job_id
WHERE j.job_id = ANY($1::bigint[]) AND j.kind = 'site'
"""
# A claimed view of a job that is no site (or no longer exists): rejected (tracks.track_of).
UNKNOWN_SITE = {"mode": None, "cookieless": False, "spa_hash": False}

# ------------------------------------------------------------------ salts --
# Salts are made and destroyed in short transactions of their own, never in
# a roll-up batch (on Citus site_salts is a reference table, which a
# transaction that wrote many shards may not write).
OLD_SALTS = "SELECT EXISTS (SELECT 1 FROM site_salts WHERE day < $1)"
DESTROY_SALTS = "DELETE FROM site_salts WHERE day < $1"
DESTROY_SEEN = "DELETE FROM site_seen WHERE salt_day < $1"
DESTROY_SESSION_KEYS = "UPDATE site_sessions SET vkey = NULL WHERE salt_day < $1 AND vkey IS NOT NULL"
NEW_SALTS = """
INSERT INTO site_salts (day, salt) SELECT * FROM unnest($1::date[], $2::bytea[]) ON CONFLICT (day) DO NOTHING
"""
SALTS = "SELECT day, salt FROM site_salts WHERE day = ANY($1::date[])"

# --------------------------------------------------------------- contacts --
# Contacts a page view may name, of one mail job ($1; recipients live with
# their job's shard on Citus, so a batch asks job by job): personal mail
# jobs, or consenting recipients of permission_personal ones, never erased ones.
ALLOWED_CONTACTS = """
SELECT r.recipient_id
FROM recipients r JOIN jobs j ON j.job_id = r.job_id
WHERE r.job_id = $1 AND r.recipient_id = ANY($2::bigint[]) AND j.kind = 'mail'
  AND (j.mode = 'personal' OR (j.mode = 'permission_personal' AND r.consent))
  AND NOT EXISTS (SELECT 1 FROM forgotten_recipients f WHERE f.job_id = $1 AND f.recipient_id = r.recipient_id)
"""
IDENTIFY = """
INSERT INTO site_contacts (job_id, visitor_id, mail_job_id, recipient_id, identified_at, landing_url)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::timestamptz[], $6::text[])
ON CONFLICT (job_id, visitor_id) DO NOTHING
"""
# Every rolled view of the batch's visitors that belong to a contact: the
# batch's own and, for visitors identified just now, their earlier ones.
CONTACT_VIEWS = """
INSERT INTO site_contact_views (job_id, viewed_at, hit_id, mail_job_id, recipient_id, url, title)
SELECT h.job_id, h.received_at, h.hit_id, c.mail_job_id, c.recipient_id, h.url, h.title
FROM unnest($1::bigint[], $2::text[]) AS v(job_id, visitor_id)
JOIN site_contacts c ON c.job_id = v.job_id AND c.visitor_id = v.visitor_id
JOIN raw_hits h ON h.job_id = v.job_id AND h.visitor_id = v.visitor_id
WHERE h.kind = 'page' AND h.rolled_at IS NOT NULL
ON CONFLICT DO NOTHING
"""
# Views carrying a contact but no visitor id (cookie-less personal sites).
CONTACT_VIEWS_DIRECT = """
INSERT INTO site_contact_views (job_id, viewed_at, hit_id, mail_job_id, recipient_id, url, title)
SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::uuid[], $4::bigint[], $5::bigint[], $6::text[], $7::text[])
ON CONFLICT DO NOTHING
"""

# --------------------------------------------------------------- sessions --
OPEN_SESSIONS = """
SELECT DISTINCT ON (s.job_id, s.vkey) s.job_id, s.vkey, s.session_id, s.started_at, s.last_at, s.pages
FROM unnest($1::bigint[], $2::bytea[]) AS k(job_id, vkey)
JOIN site_sessions s ON s.job_id = k.job_id AND s.vkey = k.vkey
WHERE s.last_at > $3
ORDER BY s.job_id, s.vkey, s.last_at DESC
"""
UPDATE_SESSIONS = """
UPDATE site_sessions s SET started_at = u.started_at, last_at = u.last_at, pages = u.pages
FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[], $5::integer[])
     AS u(job_id, session_id, started_at, last_at, pages)
WHERE s.job_id = u.job_id AND s.session_id = u.session_id
"""
INSERT_SESSIONS = """
INSERT INTO site_sessions (job_id, vkey, salt_day, started_at, last_at, pages, entry_page)
SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::date[], $4::timestamptz[], $5::timestamptz[],
                     $6::integer[], $7::text[])
"""

# ----------------------------------------------------------------- merges --
SEEN = """
INSERT INTO site_seen (job_id, scope, bucket, vkey, salt_day)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::bytea[], $5::date[])
ON CONFLICT DO NOTHING
RETURNING job_id, scope, bucket
"""
# What each roll-up table counts, in the order of its merge's columns (the
# tallies of aggregator.web.rollup follow these tuples). pageviews: views not a
# machine's; unknown: those of them neither a recognised browser nor a machine.
HOURLY = ("pageviews", "machine", "unknown", "visitors", "visitors_recognised")
DAILY = (*HOURLY, "sessions")
PAGES = ("pageviews", "unknown", "entries")
BREAKDOWN = ("pageviews", "unknown")
SOURCE_KEYS = ("source_class", "source_name", "search_phrase", "utm_source", "utm_medium", "utm_campaign")
DEVICE_KEYS = ("device_class", "os", "browser", "country")


def _merge(table: str, keys: Mapping[str, str], counts: Sequence[str]) -> str:
    """INSERT ... SELECT FROM unnest($1..$n) ON CONFLICT (keys) DO UPDATE adding each count (constant names only)."""
    names = (*keys, *counts)
    arrays = ", ".join(f"${i}::{keys.get(n, 'bigint')}[]" for i, n in enumerate(names, 1))
    added = ", ".join(f"{c} = t.{c} + excluded.{c}" for c in counts)
    return (f"INSERT INTO {table} AS t ({', '.join(names)})\nSELECT * FROM unnest({arrays})\n"
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}")


MERGE_HOURLY = _merge("site_hourly", {"job_id": "bigint", "hour": "timestamptz"}, HOURLY)
MERGE_DAILY = _merge("site_daily", {"job_id": "bigint", "day": "date"}, DAILY)
MERGE_TOTALS = _merge("site_totals", {"job_id": "bigint"}, DAILY)
MERGE_PAGES = _merge("site_pages", {"job_id": "bigint", "page": "text"}, PAGES)
MERGE_SOURCES = _merge("site_sources", {"job_id": "bigint", **dict.fromkeys(SOURCE_KEYS, "text")}, ("sessions",))
MERGE_BREAKDOWNS = _merge("site_breakdowns", {"job_id": "bigint", **dict.fromkeys(DEVICE_KEYS, "text")}, BREAKDOWN)
# Machine page views by reason and family (kind 'page'), for every mode: the
# table the mail roll-up fills for its kinds (aggregator.mail.queries.MERGE_MACHINE).
MERGE_MACHINE = _merge(
    "job_machine", {"job_id": "bigint", "kind": "text", "reason": "text", "family": "text"}, ("hits",)
)
MERGE_REJECTED = """
INSERT INTO report_rejected AS t (job_id, hour, kind, reason, hits)
SELECT j, h, 'page', r, n FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::bigint[]) AS u(j, h, r, n)
ON CONFLICT (job_id, hour, kind, reason) DO UPDATE SET hits = t.hits + excluded.hits
"""

# ------------------------------------------------------------------- mark --
BATCH_COLUMNS = ("hit_id", "received_at", "job_id", *STORED)
CREATE_BATCH = f"""
CREATE TEMP TABLE IF NOT EXISTS site_batch (
    {columns.typed(BATCH_COLUMNS)}
) ON COMMIT DELETE ROWS
"""
# Analyzed for MARK_ROLLED, as the mail batch (aggregator.mail.queries.ANALYZE_BATCH): job_id only,
# no key (nothing looks a row up; MARK_ROLLED hashes the job's batch rows).
ANALYZE_BATCH = "ANALYZE site_batch (job_id)"
# Marks the claimed page views of one job ($2) rolled, keeping only what the
# site's mode allows; job by job, within the job's time range and only
# views still unrolled (claims.mark counts them), as for mail.
MARK_ROLLED = f"""
UPDATE raw_hits r SET rolled_at = $1, {columns.assigned(STORED, "b")}
FROM site_batch b
WHERE r.job_id = $2 AND b.job_id = $2 AND r.received_at BETWEEN $3 AND $4
  AND r.received_at = b.received_at AND r.hit_id = b.hit_id AND r.rolled_at IS NULL
"""
