"""SQL of the roll-up, as named constants ($n parameters, never formatted).

Column lists come from pixeltrack.core.columns (joined once, at import).
"""

from __future__ import annotations

from aggregator import claims
from aggregator.mail.tracks import AGE_BANDS, PERSONAL, REJECTED, ROWLESS
from pixeltrack.core import columns

# What the roll-up writes back to each raw hit it keeps, as its track allows (aggregator.mail.tracks
# makes the values): the masked address in the hit's batch row (personal hits only: STORED_INLINE),
# the enrichment in a profile row that the batch's hits share (rollup_profile); the headers are the
# raw row's own, kept on the personal track and cleared on the rejected one (MARK_ROLLED), so they
# never travel to the aggregator and back through the batch.
STORED_INLINE = ("client_ip",)
STORED = (*STORED_INLINE, *columns.ENRICHED)

# ------------------------------------------------------------------ claim --
# The jobs with hits to roll up (aggregator.claims.pending): their runs of mail hits in hit_runs.
PENDING = claims.Backlog(pages=False)
# Claims the oldest unrolled hits of one job ($1), under the job's lock
# (aggregator.claims: no row lock needed, MARK_ROLLED checks they are still
# unrolled). Page views of websites are left to aggregator.web (its own claim
# and merge). $3: the oldest receive time to look at (the job's oldest run in
# hit_runs: the claim reads the key from there, skipping the rows rolled up
# and kept since), $4 the newest (the hold-back, see aggregator.mail.context).
# What the mode needs to know of the job and the recipients comes once a
# batch (JOBS, PEOPLE): joined here, it was looked up, projected, sent and
# decoded per hit (4-5 us a hit of PostgreSQL CPU of the claim's 6-7, 1.4 us
# of the aggregator's). The request's method is not read:
# the collector folds HEAD into prefetch, which the enrichment reads.
CLAIMED = tuple(name for name in columns.HIT if name != "method")
CLAIM = f"""
SELECT {columns.listed(CLAIMED, client_ip="host(client_ip)")}
FROM raw_hits WHERE job_id = $1 AND received_at BETWEEN $3 AND $4 AND rolled_at IS NULL AND kind <> 'page'
ORDER BY received_at LIMIT $2
"""
JOBS = "SELECT job_id, mode, sent_at FROM jobs WHERE job_id = ANY($1::bigint[])"
# The recipients ($2) of one job's ($1) claimed hits, and which of them are
# forgotten (one may have no row in recipients): each table named by $1, so on
# Citus one worker answers (tracks.Person).
FORGOTTEN = """
SELECT recipient_id, NULL, NULL, NULL, NULL, NULL, true
FROM forgotten_recipients WHERE job_id = $1 AND recipient_id = ANY($2::bigint[])
"""
PEOPLE = f"""
SELECT recipient_id, consent, consent_changed_at, birth_year, gender, zip, false AS forgotten
FROM recipients WHERE job_id = $1 AND recipient_id = ANY($2::bigint[])
UNION ALL {FORGOTTEN}"""
# The modes whose tracks read more of a recipient than whether they are forgotten:
# consent (permission_personal), the demographic cell (anonymous). The others
# look up FORGOTTEN alone; a blind job nothing.
PERSON_MODES = frozenset({"permission_personal", "anonymous"})

JOB_KEYS = "SELECT job_id, key FROM job_keys WHERE job_id = ANY($1::bigint[])"
NEW_JOB_KEYS = """
INSERT INTO job_keys (job_id, key)
SELECT * FROM unnest($1::bigint[], $2::bytea[]) ON CONFLICT (job_id) DO NOTHING
"""

# ------------------------------------------------------------ batch table --
# One row per claimed hit, already enriched and reduced to what its track may
# keep. ON COMMIT DELETE ROWS: nothing outlives the transaction. Of the three
# figures, `machine` and `unknown` are flags (neither: human, a recognised
# browser or mail client); `family` names a machine (job_machine).
# Its job_id analyzed once filled (ANALYZE_BATCH): MARK_ROLLED takes one
# job's rows, and a day partition not analyzed yet looks nearly empty to the
# planner, which without knowing how many rows a job has in the batch joined
# them by a nested loop that rescanned the batch per raw hit (12.6 s for 10k
# hits). Only job_id: the columns the join used to look up by the batch's key
# cost 0.6 us a hit to analyze, and the key itself (gone: MARK_ROLLED hashes
# the job's batch rows, nothing looks a row up) 0.9 us a hit
# in the COPY.
# The enrichment each hit keeps is a profile: its track's share of its
# client, place, language and source columns, numbered once per distinct
# combination in the batch (a mailing repeats a few hundred), so a hit's
# row carries its number instead of 23 values. The (masked) address goes in
# as text, cast by MARK_ROLLED: asyncpg encodes an inet with Python's
# ipaddress, PostgreSQL parses it in C (1.5 us a personal hit less).
# The batch's rows come job after job (claims.claim takes one job's hits after
# another), so a block-range index on job_id, summarized once filled
# (ANALYZE_BATCH), lets the marking's statements, one job each, read their job's
# few block ranges instead of the whole batch: read whole, the batch was scanned
# twice per job (50 jobs a batch: the marking 9.2-12.1 -> 6.2-6.5 us a hit of
# PostgreSQL CPU, the COPY 0.2-0.3 us dearer). A B-tree on job_id cost 0.4 us a
# hit more in the COPY than this; with 5 jobs none of the three is past noise.
BATCH_TYPES = {
    "track": "text", "machine": "boolean", "unknown": "boolean", "family": "text", "rhash": "bytea",
    "link_id": "bigint", "reason": "text", "age_band": "text", "gender": "text", "zip": "text",
    "profile": "integer", "client_ip": "text",
}  # fmt: skip
BATCH_COLUMNS = (
    "hit_id", "received_at", "job_id", "kind", "track", "machine", "unknown", "family", "recipient_id", "rhash",
    "link_id", "link", "reason", "age_band", "gender", "zip", "profile", *STORED_INLINE,
)  # fmt: skip
PROFILE_COLUMNS = ("profile", *columns.ENRICHED)
CREATE_BATCH = f"""
CREATE TEMP TABLE IF NOT EXISTS rollup_batch (
    {columns.typed(BATCH_COLUMNS, BATCH_TYPES)}
) ON COMMIT DELETE ROWS;
CREATE INDEX IF NOT EXISTS rollup_batch_job ON rollup_batch USING brin (job_id) WITH (pages_per_range = 8);
CREATE TEMP TABLE IF NOT EXISTS rollup_profile (
    {columns.typed(PROFILE_COLUMNS, BATCH_TYPES)}, PRIMARY KEY (profile)
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS seen_delta (
    job_id bigint, kind text, link_id bigint, hash bytea, inferred boolean, added boolean
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS seen_pick (
    job_id bigint, link_id bigint, hash bytea, scopes integer, inferred integer
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS seen_known (
    job_id bigint, link_id bigint, hash bytea, added integer, inferred integer, upgraded integer
) ON COMMIT DELETE ROWS;
DO $$ BEGIN
    IF (SELECT attstattarget FROM pg_attribute WHERE attrelid = 'pg_temp.rollup_batch'::regclass
        AND attname = 'job_id') IS DISTINCT FROM 1 THEN
        ALTER TABLE rollup_batch ALTER COLUMN job_id SET STATISTICS 1;
        ALTER TABLE rollup_profile ALTER COLUMN profile SET STATISTICS 1;
    END IF;
END $$;
"""
# What ANALYZE_BATCH needs of job_id is how many of the batch's rows each job
# has and that they come in order (the block-range index): a sample of 300
# rows (statistics target 1, set once a connection above) tells both. At the
# default 100 it read 30,000 rows of a 100,000-row table in psql, 34-61 ms
# (0.3-0.6 us a hit), against 3 ms (loadtest/RESULTS.md §24).
ANALYZE_BATCH = """
ANALYZE rollup_batch (job_id), rollup_profile (profile); SELECT brin_summarize_new_values('rollup_batch_job')
"""

# ---------------------------------------------------------------- uniques --
# Scopes 'open', 'click', 'doc', 'link' count recipients with a hit that is
# not a machine's (human or unknown); 'r:open', 'r:click', 'r:doc', 'r:link'
# the same for recognised browsers and mail clients only
# (PIXELTRACK_HEADLINE=recognised); 'any' every recipient of an anonymous job
# with a hit (its demographic cell); 'doc_page' the readers of a page
# (aggregator.mail.reading). A human click also makes its recipient an
# (inferred) opener: images may have been blocked; a real open turns an
# inferred opener into a plain one.
#
# unique_seen keeps one row per job, link_id and recipient hash, each scope
# a bit of its `scopes` and, for an inferred opener, of its `inferred`
# (schema.sql). The row is link_id 0's for every scope but 'link' and
# 'r:link' (the link's) and 'doc_page' (the page's): a page number or a link
# id of 0 shares a row with the others, each scope with its own bit.
# A recognised scope's bit is its scope's times RECOGNISED (shifted by 4).
OPEN, CLICK, DOC, LINK = 1, 2, 4, 8
RECOGNISED = 16
ANY, DOC_PAGE = 256, 512
SCOPES = {
    "open": OPEN, "click": CLICK, "doc": DOC, "link": LINK,
    "r:open": OPEN * RECOGNISED, "r:click": CLICK * RECOGNISED, "r:doc": DOC * RECOGNISED,
    "r:link": LINK * RECOGNISED, "any": ANY, "doc_page": DOC_PAGE,
}  # fmt: skip
_SCOPE_BITS = ", ".join(f"({bit}, '{kind}')" for kind, bit in SCOPES.items())
#
# SEEN_PICK works out the batch's rows per recipient (seen_pick): each hit's
# bits at link_id 0 and, for a click, at its link, OR-ed together by hashing
# (scopes), with the bits that no hit but an inferring click set (inferred).
# A hit's weight: 0 for a machine's, 1 for an unknown agent's, 1 +
# RECOGNISED for a recognised one (its scopes and their 'r:' scopes: every
# bit times RECOGNISED is its 'r:' bit). SEEN_KNOWN looks the rows up in
# unique_seen, one job ($1) a statement, each pick by key (a lateral
# subquery kept apart by OFFSET 0: joined, a job whose rows came after
# unique_seen was last analyzed was estimated at one row, and the planner
# scanned all of seen_pick once for each of the job's rows, 16-51 s a
# batch), so on Citus the job's picks go to its shard alone and are looked
# up there (a LEFT JOIN of a local table pulls the whole of unique_seen, or
# the job's part of it, to the coordinator); it keeps, of each known row,
# the scopes it lacks (added, and which of them are inferred) and its
# inferred openers that a real open of the batch upgrades (upgraded).
# seen_known is analyzed next: without statistics the planner sorted both
# sides of the anti-joins.
# SEEN_DELTA then spells out, locally, a row per new scope (added) and per
# upgraded inferred opener (not added): what the merges count. Only the
# rows with something new are written: the known ones by an UPDATE of their
# bits (not indexed: a HOT update where the page has room), one job a
# statement (on Citus an UPDATE joined with a local table for all jobs ran
# on every shard) and only in the jobs that have any (CHANGED); the new
# ones by a plain INSERT, since the job's lock (aggregator.claims) keeps any
# other batch from writing the job's rows meanwhile (a speculative insertion,
# ON CONFLICT DO NOTHING, of every candidate cost twice as much), sorted, so
# unique_seen's index takes them in its own order.
_WEIGHT = f"CASE WHEN machine THEN 0 WHEN unknown THEN 1 ELSE {1 + RECOGNISED} END"
SEEN_PICK = f"""
INSERT INTO seen_pick
SELECT job_id, link_id, hash, bit_or(scopes), bit_or(scopes) & ~bit_or(plain) FROM (
    SELECT job_id, 0::bigint AS link_id, rhash AS hash,
           CASE kind WHEN 'open' THEN {OPEN} WHEN 'click' THEN {CLICK | OPEN} WHEN 'doc' THEN {DOC} ELSE 0 END
           * {_WEIGHT} | CASE WHEN track = 'anonymous' THEN {ANY} ELSE 0 END AS scopes,
           CASE kind WHEN 'open' THEN {OPEN} WHEN 'click' THEN {CLICK} WHEN 'doc' THEN {DOC} ELSE 0 END
           * {_WEIGHT} | CASE WHEN track = 'anonymous' THEN {ANY} ELSE 0 END AS plain
    FROM rollup_batch WHERE rhash IS NOT NULL
    UNION ALL
    SELECT job_id, link_id, rhash, {LINK} * {_WEIGHT}, {LINK} * {_WEIGHT}
    FROM rollup_batch WHERE rhash IS NOT NULL AND kind = 'click' AND NOT machine
) c WHERE scopes <> 0 GROUP BY job_id, link_id, hash
"""
SEEN_KNOWN = """
INSERT INTO seen_known
SELECT p.job_id, p.link_id, p.hash, p.scopes & ~s.scopes, p.inferred & ~s.scopes, s.inferred & p.scopes & ~p.inferred
FROM seen_pick p
CROSS JOIN LATERAL (SELECT s.scopes, s.inferred FROM unique_seen s
                    WHERE s.job_id = $1 AND s.link_id = p.link_id AND s.hash = p.hash OFFSET 0) s
WHERE p.job_id = $1
"""
ANALYZE_KNOWN = "ANALYZE seen_known"
SEEN_DELTA = f"""
INSERT INTO seen_delta
SELECT d.job_id, b.kind, d.link_id, d.hash, d.added & b.bit = 0 OR d.inferred & b.bit <> 0, d.added & b.bit <> 0
FROM (
    SELECT p.job_id, p.link_id, p.hash, coalesce(k.added, p.scopes) AS added, p.inferred,
           coalesce(k.upgraded, 0) AS upgraded
    FROM seen_pick p LEFT JOIN seen_known k ON k.job_id = p.job_id AND k.link_id = p.link_id AND k.hash = p.hash
    WHERE k.hash IS NULL OR k.added | k.upgraded <> 0
) d JOIN (VALUES {_SCOPE_BITS}) AS b(bit, kind) ON (d.added | d.upgraded) & b.bit <> 0
"""
CHANGED = "SELECT DISTINCT job_id FROM seen_known WHERE added | upgraded <> 0 ORDER BY job_id"
SEEN_UPDATE = """
UPDATE unique_seen s SET scopes = s.scopes | k.added, inferred = (s.inferred & ~k.upgraded) | k.inferred
FROM seen_known k
WHERE k.added | k.upgraded <> 0 AND k.job_id = $1 AND s.job_id = $1 AND s.link_id = k.link_id AND s.hash = k.hash
"""
SEEN_INSERT = """
INSERT INTO unique_seen (job_id, link_id, hash, scopes, inferred)
SELECT p.job_id, p.link_id, p.hash, p.scopes, p.inferred
FROM seen_pick p LEFT JOIN seen_known k ON k.job_id = p.job_id AND k.link_id = p.link_id AND k.hash = p.hash
WHERE k.hash IS NULL ORDER BY p.job_id, p.link_id, p.hash
"""

# ----------------------------------------------------------------- merges --
# Nothing but columns of the row and EXCLUDED in a SET list: Citus refuses
# now() or a parameter there (the time of the merge comes in the SELECT list).
# The parts of MERGE_TOTALS, MERGE_LINKS and MERGE_DEMOGRAPHICS that read the batch's rows alone (not
# unique counting's seen_delta): the columns engine groups those rows itself and puts its rows in their
# place (aggregator.mail.frames.AFTER_SEEN).
TOTALS_OF_BATCH = """SELECT job_id, kind, count(*) AS total, count(*) FILTER (WHERE machine) AS machine,
           count(*) FILTER (WHERE unknown) AS unknown, 0 AS uniq, 0 AS inferred, 0 AS uniq_r, 0 AS inferred_r
    FROM rollup_batch WHERE track <> 'rejected' GROUP BY job_id, kind"""
MERGE_TOTALS = f"""
INSERT INTO report_job_totals AS t (job_id, kind, total, machine, unknown, unique_count, inferred,
                                    unique_recognised, inferred_recognised, updated_at)
SELECT job_id, kind, sum(total), sum(machine), sum(unknown), sum(uniq), sum(inferred), sum(uniq_r), sum(inferred_r),
       now()
FROM (
    {TOTALS_OF_BATCH}
    UNION ALL
    SELECT job_id, kind, 0, 0, 0, count(*) FILTER (WHERE added),
           count(*) FILTER (WHERE added AND inferred) - count(*) FILTER (WHERE NOT added), 0, 0
    FROM seen_delta WHERE kind NOT IN ('link', 'any') AND kind NOT LIKE 'r:%' GROUP BY job_id, kind
    UNION ALL
    SELECT job_id, substr(kind, 3), 0, 0, 0, 0, 0, count(*) FILTER (WHERE added),
           count(*) FILTER (WHERE added AND inferred) - count(*) FILTER (WHERE NOT added)
    FROM seen_delta WHERE kind LIKE 'r:%' AND kind <> 'r:link' GROUP BY job_id, kind
) s GROUP BY job_id, kind ORDER BY job_id, kind
ON CONFLICT (job_id, kind) DO UPDATE SET
    total = t.total + excluded.total, machine = t.machine + excluded.machine, unknown = t.unknown + excluded.unknown,
    unique_count = t.unique_count + excluded.unique_count, inferred = t.inferred + excluded.inferred,
    unique_recognised = t.unique_recognised + excluded.unique_recognised,
    inferred_recognised = t.inferred_recognised + excluded.inferred_recognised,
    updated_at = excluded.updated_at
"""

MERGE_HOURLY = """
INSERT INTO report_hourly AS t (job_id, hour, kind, total, machine, unknown)
SELECT job_id, date_trunc('hour', received_at), kind, count(*), count(*) FILTER (WHERE machine),
       count(*) FILTER (WHERE unknown)
FROM rollup_batch WHERE track <> 'rejected' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
ON CONFLICT (job_id, hour, kind) DO UPDATE SET
    total = t.total + excluded.total, machine = t.machine + excluded.machine, unknown = t.unknown + excluded.unknown
"""

LINKS_OF_BATCH = """SELECT job_id, link_id, min(link) AS url, count(*) AS total,
           count(*) FILTER (WHERE machine) AS machine, count(*) FILTER (WHERE unknown) AS unknown,
           0 AS uniq, 0 AS uniq_r
    FROM rollup_batch WHERE kind = 'click' AND track <> 'rejected' AND link_id IS NOT NULL
    GROUP BY job_id, link_id"""
MERGE_LINKS = f"""
INSERT INTO report_links AS t (job_id, link_id, url, total, machine, unknown, unique_count, unique_recognised)
SELECT job_id, link_id, max(url), sum(total), sum(machine), sum(unknown), sum(uniq), sum(uniq_r) FROM (
    {LINKS_OF_BATCH}
    UNION ALL
    SELECT job_id, link_id, NULL, 0, 0, 0, count(*) FILTER (WHERE kind = 'link'),
           count(*) FILTER (WHERE kind = 'r:link')
    FROM seen_delta WHERE kind IN ('link', 'r:link') AND added
    GROUP BY job_id, link_id
) s GROUP BY job_id, link_id ORDER BY job_id, link_id
ON CONFLICT (job_id, link_id) DO UPDATE SET
    total = t.total + excluded.total, machine = t.machine + excluded.machine, unknown = t.unknown + excluded.unknown,
    unique_count = t.unique_count + excluded.unique_count,
    unique_recognised = t.unique_recognised + excluded.unique_recognised
"""

MERGE_RECIPIENTS = """
INSERT INTO report_recipients AS t (job_id, recipient_id, opens, machine_opens, clicks, machine_clicks,
                                    unknown_opens, unknown_clicks, first_open, last_open, first_click, last_click)
SELECT job_id, recipient_id,
       count(*) FILTER (WHERE kind = 'open' AND NOT machine), count(*) FILTER (WHERE kind = 'open' AND machine),
       count(*) FILTER (WHERE kind = 'click' AND NOT machine),
       count(*) FILTER (WHERE kind = 'click' AND machine),
       count(*) FILTER (WHERE kind = 'open' AND unknown), count(*) FILTER (WHERE kind = 'click' AND unknown),
       min(received_at) FILTER (WHERE kind = 'open' AND NOT machine),
       max(received_at) FILTER (WHERE kind = 'open' AND NOT machine),
       min(received_at) FILTER (WHERE kind = 'click' AND NOT machine),
       max(received_at) FILTER (WHERE kind = 'click' AND NOT machine)
FROM rollup_batch WHERE track = 'personal' GROUP BY job_id, recipient_id ORDER BY 1, 2
ON CONFLICT (job_id, recipient_id) DO UPDATE SET
    opens = t.opens + excluded.opens, machine_opens = t.machine_opens + excluded.machine_opens,
    clicks = t.clicks + excluded.clicks, machine_clicks = t.machine_clicks + excluded.machine_clicks,
    unknown_opens = t.unknown_opens + excluded.unknown_opens,
    unknown_clicks = t.unknown_clicks + excluded.unknown_clicks,
    first_open = least(t.first_open, excluded.first_open),
    last_open = greatest(t.last_open, excluded.last_open),
    first_click = least(t.first_click, excluded.first_click),
    last_click = greatest(t.last_click, excluded.last_click)
"""

MERGE_RECIPIENT_LINKS = """
INSERT INTO report_recipient_links AS t (job_id, recipient_id, link_id, clicks, machine, unknown,
                                         first_click, last_click)
SELECT job_id, recipient_id, link_id, count(*) FILTER (WHERE NOT machine), count(*) FILTER (WHERE machine),
       count(*) FILTER (WHERE unknown),
       min(received_at) FILTER (WHERE NOT machine), max(received_at) FILTER (WHERE NOT machine)
FROM rollup_batch WHERE track = 'personal' AND kind = 'click' AND link_id IS NOT NULL
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
ON CONFLICT (job_id, recipient_id, link_id) DO UPDATE SET
    clicks = t.clicks + excluded.clicks, machine = t.machine + excluded.machine, unknown = t.unknown + excluded.unknown,
    first_click = least(t.first_click, excluded.first_click),
    last_click = greatest(t.last_click, excluded.last_click)
"""

# A recipient counted for the first time in a scope (seen_delta) is counted in
# the cell of their first hit of the batch that counts in it (SEEN_PICK's
# scopes): the age band is the age at the hit, and a recipient whose hits
# straddle a birthday year is still one recipient, in the cell they first
# came in, however the hits are cut into batches. Ages only grow, so the band
# of a recipient's first hit in a scope is the youngest band of their hits in
# it (_BANDS, youngest first): one grouping of the anonymous rows by recipient
# finds all five scopes' cells (gender and zip are the recipient's, the same
# in every hit of a batch), where sorting five copies of every row to take
# the first per scope (DISTINCT ON) cost 1.3 us a hit of PostgreSQL CPU.
BAND_ORDER = (*(band for _, band in AGE_BANDS), "65+", "unknown")
_BANDS = "ARRAY[" + ", ".join(f"'{band}'" for band in BAND_ORDER) + "]"
_FIRST_BAND = {
    "any": "", "open": "NOT machine AND kind IN ('open', 'click')", "click": "NOT machine AND kind = 'click'",
    "r:open": "NOT machine AND NOT unknown AND kind IN ('open', 'click')",
    "r:click": "NOT machine AND NOT unknown AND kind = 'click'",
}  # fmt: skip
_FIRST_BANDS = ", ".join(
    f"min(band) FILTER (WHERE {where}) AS \"{scope}\"" if where else f"min(band) AS \"{scope}\""
    for scope, where in _FIRST_BAND.items()
)
_BAND_OF_SCOPE = " ".join(f"WHEN '{scope}' THEN m.\"{scope}\"" for scope in _FIRST_BAND)
DEMOGRAPHICS_OF_BATCH = """SELECT job_id, age_band, gender, zip, 0 AS r,
           count(*) FILTER (WHERE kind = 'open' AND NOT machine) AS o, 0 AS uo,
           count(*) FILTER (WHERE kind = 'click' AND NOT machine) AS c, 0 AS uc,
           count(*) FILTER (WHERE machine) AS m,
           count(*) FILTER (WHERE kind = 'open' AND unknown) AS xo,
           count(*) FILTER (WHERE kind = 'click' AND unknown) AS xc, 0 AS ruo, 0 AS ruc
    FROM rollup_batch WHERE track = 'anonymous' GROUP BY 1, 2, 3, 4"""
# Each anonymous recipient's cell (gender, zip) and, per scope, the position in _BANDS of their youngest band.
FIRST_CELLS_OF_BATCH = f"""SELECT job_id, rhash, min(gender) AS gender, min(zip) AS zip, {_FIRST_BANDS}
          FROM (SELECT job_id, rhash, gender, zip, kind, machine, unknown, array_position({_BANDS}, age_band) AS band
                FROM rollup_batch WHERE track = 'anonymous' AND rhash IS NOT NULL) a
          GROUP BY job_id, rhash"""
MERGE_DEMOGRAPHICS = f"""
INSERT INTO report_demographics AS t (job_id, age_band, gender, zip, recipients, opens, unique_opens,
                                      clicks, unique_clicks, machine, unknown_opens, unknown_clicks,
                                      unique_opens_recognised, unique_clicks_recognised)
SELECT job_id, age_band, gender, zip, sum(r), sum(o), sum(uo), sum(c), sum(uc), sum(m), sum(xo), sum(xc),
       sum(ruo), sum(ruc) FROM (
    {DEMOGRAPHICS_OF_BATCH}
    UNION ALL
    SELECT d.job_id, ({_BANDS})[CASE d.kind {_BAND_OF_SCOPE} END], m.gender, m.zip,
           count(*) FILTER (WHERE d.kind = 'any'), 0,
           count(*) FILTER (WHERE d.kind = 'open'), 0, count(*) FILTER (WHERE d.kind = 'click'), 0, 0, 0,
           count(*) FILTER (WHERE d.kind = 'r:open'), count(*) FILTER (WHERE d.kind = 'r:click')
    FROM seen_delta d
    JOIN ({FIRST_CELLS_OF_BATCH}) m
      ON m.job_id = d.job_id AND m.rhash = d.hash
    WHERE d.added AND d.kind IN ('any', 'open', 'click', 'r:open', 'r:click') GROUP BY 1, 2, 3, 4
) s GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
ON CONFLICT (job_id, age_band, gender, zip) DO UPDATE SET
    recipients = t.recipients + excluded.recipients, opens = t.opens + excluded.opens,
    unique_opens = t.unique_opens + excluded.unique_opens, clicks = t.clicks + excluded.clicks,
    unique_clicks = t.unique_clicks + excluded.unique_clicks, machine = t.machine + excluded.machine,
    unknown_opens = t.unknown_opens + excluded.unknown_opens,
    unknown_clicks = t.unknown_clicks + excluded.unknown_clicks,
    unique_opens_recognised = t.unique_opens_recognised + excluded.unique_opens_recognised,
    unique_clicks_recognised = t.unique_clicks_recognised + excluded.unique_clicks_recognised
"""

# Counted per profile first (integers), then by the profiles' columns.
MERGE_BREAKDOWNS = """
INSERT INTO report_breakdowns AS t (job_id, kind, traffic, machine_reason, device_class, os, browser,
                                    mail_client, country, hits)
SELECT job_id, kind, coalesce(traffic, ''), coalesce(machine_reason, ''), coalesce(device_class, ''),
       coalesce(os, ''), coalesce(browser, ''), coalesce(mail_client, ''), coalesce(country, ''), sum(hits)
FROM (SELECT job_id, kind, profile, count(*) AS hits FROM rollup_batch WHERE track <> 'rejected' GROUP BY 1, 2, 3) b
JOIN rollup_profile USING (profile)
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9
ON CONFLICT (job_id, kind, traffic, machine_reason, device_class, os, browser, mail_client, country)
DO UPDATE SET hits = t.hits + excluded.hits
"""

MERGE_REJECTED = """
INSERT INTO report_rejected AS t (job_id, hour, kind, reason, hits)
SELECT job_id, date_trunc('hour', received_at), kind, coalesce(reason, 'unknown'), count(*)
FROM rollup_batch WHERE track = 'rejected' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
ON CONFLICT (job_id, hour, kind, reason) DO UPDATE SET hits = t.hits + excluded.hits
"""

# Machine hits by reason and family, for every mode (blind jobs keep no agent:
# the family comes from the enrichment of the batch, never from raw hits).
MERGE_MACHINE = """
INSERT INTO job_machine AS t (job_id, kind, reason, family, hits)
SELECT job_id, kind, coalesce(machine_reason, 'unknown'), coalesce(family, ''), sum(hits)
FROM (SELECT job_id, kind, profile, family, count(*) AS hits FROM rollup_batch
      WHERE machine AND track <> 'rejected' GROUP BY 1, 2, 3, 4) b
JOIN rollup_profile USING (profile)
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
ON CONFLICT (job_id, kind, reason, family) DO UPDATE SET hits = t.hits + excluded.hits
"""

MERGES = (
    ("totals", MERGE_TOTALS), ("hourly", MERGE_HOURLY), ("links", MERGE_LINKS),
    ("recipients", MERGE_RECIPIENTS), ("recipient_links", MERGE_RECIPIENT_LINKS),
    ("demographics", MERGE_DEMOGRAPHICS), ("breakdowns", MERGE_BREAKDOWNS), ("machine", MERGE_MACHINE),
    ("rejected", MERGE_REJECTED),
)  # fmt: skip

# Marks the claimed hits of one job ($2) rolled and leaves only what their
# track may keep (personal and rejected hits: the others are deleted,
# DROP_ROLLED). The job's time range in the batch prunes the day partitions
# it cannot touch, and the job's raw rows are found by primary
# key and joined with the batch's by hash, so the cost follows the batch, not
# the history. Only hits still unrolled (claims.mark counts them: exactly
# once). One job a statement: on Citus a join of the batch (a
# temporary table) with one shard ships that job's rows to one worker; with
# all of raw_hits it would ship the whole batch to every shard. The batch is
# joined with its profiles in a CTE, which Citus plans as one subplan: one
# result shipped and joined by key. Joined on the worker instead, two
# intermediate results without statistics made a nested loop over every
# profile per hit (Citus, 62k hits: marking 14.4 s -> 1.1 s). NOT
# MATERIALIZED, so that plain PostgreSQL inlines it: the raw rows are joined
# with the batch's and the profiles last, instead of every hit's wide row (its
# profile's 23 values) copied into the CTE's store and read back (a 20k-hit
# batch: 7.9 -> 6.2 us a hit of PostgreSQL CPU; Citus' plan is the same).
_MARKED_FROM_PROFILE = ", ".join(f"p.{n}" for n in columns.ENRICHED)
_ROWLESS = ", ".join(f"'{track}'" for track in sorted(ROWLESS))


def _marking(headers: str) -> str:
    """MARK_ROLLED with ``headers``: the assignments of the headers, each followed by a comma (or nothing)."""
    return f"""
WITH b AS NOT MATERIALIZED (
    SELECT b.hit_id, b.received_at, b.track, b.client_ip, b.recipient_id, {_MARKED_FROM_PROFILE}
    FROM rollup_batch b JOIN rollup_profile p ON p.profile = b.profile
    WHERE b.job_id = $2 AND b.track NOT IN ({_ROWLESS})
)
UPDATE raw_hits r SET rolled_at = $1, client_ip = b.client_ip::inet, {headers}
    {columns.assigned(("recipient_id", *columns.ENRICHED), "b")}
FROM b
WHERE r.job_id = $2 AND r.received_at BETWEEN $3 AND $4
  AND r.received_at = b.received_at AND r.hit_id = b.hit_id AND r.rolled_at IS NULL
"""


MARK_ROLLED = _marking("".join(f"{n} = CASE WHEN b.track = 'personal' THEN r.{n} END, " for n in columns.HEADERS))
# A job whose kept rows are all personal keeps their headers, or all rejected clears them: the same rows
# as MARK_ROLLED's without a CASE a row. Writing each header back cost the marking of a personal row about
# 0.5 us of its 4.3 (66,868 rows in psql: 290 ms, 255 without the headers; loadtest/RESULTS.md §25).
MARK_PERSONAL = _marking("")
MARK_REJECTED = _marking("".join(f"{n} = NULL, " for n in columns.HEADERS))


def marking(kept: frozenset[str]) -> str:
    """The marking of a job whose claimed hits that keep a row are on the tracks ``kept``."""
    if kept == {PERSONAL}:
        return MARK_PERSONAL
    return MARK_REJECTED if kept == {REJECTED} else MARK_ROLLED


# Deletes the claimed hits of one job ($2) whose track keeps nothing per hit
# (tracks.ROWLESS): a delete writes no new tuple and no index entry (the
# marking of those hits cost 10 us a hit of PostgreSQL CPU here, about a
# fifth of the roll-up). $1 job, $2 and $3 its first and last claimed hit.
DROP_ROLLED = f"""
WITH b AS NOT MATERIALIZED (
    SELECT b.hit_id, b.received_at FROM rollup_batch b WHERE b.job_id = $1 AND b.track IN ({_ROWLESS})
)
DELETE FROM raw_hits r USING b
WHERE r.job_id = $1 AND r.received_at BETWEEN $2 AND $3
  AND r.received_at = b.received_at AND r.hit_id = b.hit_id AND r.rolled_at IS NULL
"""
# A job whose claimed hits all keep nothing per hit (claims.Whole: the blind,
# unique and anonymous jobs): its unrolled mail hits in the claimed span
# ($1 job, $2 first, $3 last), deleted with no batch row to join. The claim
# took every such hit of the span and nothing but a collector's commit can
# add one since (claims.Whole), so a count equal to the claim's is the
# claimed hits. Per hit it costs about half the join's delete, and those
# hits' batch rows are never copied in (loadtest/RESULTS.md §24).
DROP_SPAN = """
DELETE FROM raw_hits WHERE job_id = $1 AND received_at BETWEEN $2 AND $3 AND rolled_at IS NULL AND kind <> 'page'
"""
# The same job's claimed hits by key ($4 ids, $5 times), when DROP_SPAN found more.
DROP_KEYS = """
DELETE FROM raw_hits r USING unnest($4::uuid[], $5::timestamptz[]) AS b (hit_id, received_at)
WHERE r.job_id = $1 AND r.received_at BETWEEN $2 AND $3
  AND r.received_at = b.received_at AND r.hit_id = b.hit_id AND r.rolled_at IS NULL
"""
# Both statements join the batch with raw rows the planner cannot size: a day
# partition not analyzed yet looks like one row, and the batch's track filter
# (a column not analyzed) like a hundredth of the batch. From those it chose a
# nested loop that scanned the batch once per raw row (630 us a hit). Any hash
# or merge join is linear, whichever side it builds on: so no nested loop
# while they run, and the default again after. On Citus the join runs on the
# worker, which takes the setting only when SET LOCAL is propagated
# (citus.propagate_set_commands; a placeholder without Citus): without it a
# worker joined a batch of 11 rows by a nested loop (checked on Citus 13.2.2).
NO_NESTED_LOOP = "SET LOCAL citus.propagate_set_commands = 'local'; SET LOCAL enable_nestloop = off"
NESTED_LOOP = "SET LOCAL enable_nestloop TO DEFAULT"
