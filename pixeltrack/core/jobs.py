"""Jobs and their recipients: creation, listing and the all-or-nothing CSV import."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from typing import Any

import asyncpg

from pixeltrack.core import erasure
from pixeltrack.core.times import as_utc

MODES = ("personal", "permission_personal", "anonymous", "unique", "blind")
KINDS = ("mail", "site")
CSV_COLUMNS = ("recipient", "consent", "birth_year", "gender", "zip")
MAX_FIELD = 320  # the longest legal e-mail address; anything longer is a mistake
YES = {"yes", "y", "true", "1"}
NO = {"no", "n", "false", "0", ""}

INSERT_JOB = "INSERT INTO jobs (name, mode, kind) VALUES ($1, $2, $3) RETURNING job_id"
# Counted per job and joined (Citus plans no correlated subquery over recipients).
SELECT_JOBS = """
SELECT j.job_id, j.name, j.kind, j.mode, j.created_at, j.sent_at, coalesce(r.recipients, 0) AS recipients
FROM jobs j LEFT JOIN (SELECT job_id, count(*) AS recipients FROM recipients GROUP BY job_id) r USING (job_id)
ORDER BY j.job_id"""
SELECT_JOB = "SELECT job_id, name, kind, mode, sent_at, retention_days FROM jobs WHERE job_id = $1"
# Locking the job row serialises imports into one job, so numbering is gap-free.
LOCK_JOB = "SELECT job_id FROM jobs WHERE job_id = $1 FOR UPDATE"
# Numbers of forgotten recipients are never given again: their old tokens carry them.
MAX_RECIPIENT = """
SELECT greatest((SELECT max(recipient_id) FROM recipients WHERE job_id = $1),
                (SELECT max(recipient_id) FROM forgotten_recipients WHERE job_id = $1), -1)"""
# The time of a consent change comes in VALUES and is taken from EXCLUDED:
# Citus refuses now() in the SET list of an upsert.
UPSERT_RECIPIENT = """
INSERT INTO recipients AS r (job_id, recipient_id, recipient, consent, consent_changed_at, birth_year, gender, zip)
VALUES ($1, $2, $3, $4, now(), $5, $6, $7)
ON CONFLICT (job_id, recipient) DO UPDATE SET
    consent = EXCLUDED.consent,
    consent_changed_at = CASE WHEN r.consent IS DISTINCT FROM EXCLUDED.consent
                              THEN EXCLUDED.consent_changed_at ELSE r.consent_changed_at END,
    birth_year = EXCLUDED.birth_year, gender = EXCLUDED.gender, zip = EXCLUDED.zip
RETURNING (xmax = 0) AS inserted"""
SELECT_RECIPIENT = "SELECT recipient_id FROM recipients WHERE job_id = $1 AND recipient = $2"
SELECT_RECIPIENTS = "SELECT recipient_id, recipient FROM recipients WHERE job_id = $1 ORDER BY recipient_id"
REGISTER_LINK = "INSERT INTO links (job_id, link_id, url) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
MARK_SENT = "UPDATE jobs SET sent_at = $2 WHERE job_id = $1 RETURNING sent_at"
# Clicks from the hour of the send on already judged by the aggregator: the send-time rule is not
# applied to them afterwards. Counted in report_hourly (the hour of each hit): the raw rows of the
# tracks that keep nothing per hit are gone once rolled up.
ROLLED_CLICKS_SINCE = """
SELECT coalesce(sum(total), 0) FROM report_hourly WHERE job_id = $1 AND kind = 'click' AND hour >= $2"""


class RecipientsError(Exception):
    """A CSV with bad rows; ``errors`` lists (line number, message)."""

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        super().__init__(f"{len(errors)} bad row(s); nothing was imported")
        self.errors = errors


@dataclass(frozen=True)
class Recipient:
    """One validated CSV row."""

    recipient: str
    consent: bool
    birth_year: int | None
    gender: str | None
    zip: str | None


async def create_job(conn: asyncpg.Connection, name: str, mode: str, kind: str = "mail") -> int:
    """Create a job and return its id."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    return int(await conn.fetchval(INSERT_JOB, name, mode, kind))


async def list_jobs(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every job with its recipient count."""
    return list(await conn.fetch(SELECT_JOBS))


async def get_job(conn: asyncpg.Connection, job_id: int) -> asyncpg.Record:
    """The job, or LookupError naming the id."""
    row = await conn.fetchrow(SELECT_JOB, job_id)
    if row is None:
        raise LookupError(f"no job {job_id}")
    return row


def _field(row: dict[str, Any], name: str) -> str:
    return (row.get(name) or "").strip()


def _parse_row(row: dict[str, Any]) -> Recipient:
    recipient = _field(row, "recipient")
    if not recipient:
        raise ValueError("recipient is empty")
    for name in CSV_COLUMNS:
        value = _field(row, name)
        if len(value) > MAX_FIELD or "\x00" in value:
            raise ValueError(f"{name} is too long or holds a NUL byte")
    consent_raw = _field(row, "consent").lower()
    if consent_raw not in YES | NO:
        raise ValueError(f"consent must be yes or no, got {consent_raw!r}")
    year_raw = _field(row, "birth_year")
    if year_raw and not (year_raw.isdigit() and 1900 <= int(year_raw) <= 2100):
        raise ValueError(f"birth_year must be a year, got {year_raw!r}")
    gender = _field(row, "gender").lower() or None
    return Recipient(recipient, consent_raw in YES, int(year_raw) if year_raw else None,
                     gender, _field(row, "zip") or None)


def parse_csv(text: str) -> list[Recipient]:
    """Validate a whole recipients CSV; raise RecipientsError listing every bad line."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    if "recipient" not in header:
        raise RecipientsError([(1, "header must have a 'recipient' column")])
    unknown = set(header) - set(CSV_COLUMNS)
    if unknown:
        raise RecipientsError([(1, f"unknown column(s): {', '.join(sorted(unknown))}")])
    reader.fieldnames = header
    rows: list[Recipient] = []
    errors: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        try:
            if None in row:
                raise ValueError("more fields than the header")
            parsed = _parse_row(row)
            if parsed.recipient in seen:
                raise ValueError(f"recipient repeats line {seen[parsed.recipient]}")
            seen[parsed.recipient] = line
            rows.append(parsed)
        except ValueError as exc:
            errors.append((line, str(exc)))
    if errors:
        raise RecipientsError(errors)
    return rows


async def import_recipients(conn: asyncpg.Connection, job_id: int, rows: list[Recipient]) -> tuple[int, int]:
    """Insert or update recipients in one transaction; return (added, updated).

    Recipients erased from this job with `pixeltrack forget` are refused
    (erasure.ForgottenInImport, a ValueError naming their data rows) and
    nothing is imported: tracking them again needs a new job.
    """
    await get_job(conn, job_id)
    added = updated = 0
    async with conn.transaction():
        await conn.execute(LOCK_JOB, job_id)
        forgotten = await erasure.forgotten_among(conn, job_id, [r.recipient for r in rows])
        if forgotten:
            raise erasure.ForgottenInImport(job_id, [i + 1 for i in forgotten])
        next_id = int(await conn.fetchval(MAX_RECIPIENT, job_id)) + 1
        for r in rows:
            inserted = await conn.fetchval(
                UPSERT_RECIPIENT, job_id, next_id, r.recipient, r.consent, r.birth_year, r.gender, r.zip
            )
            if inserted:
                added += 1
                next_id += 1
            else:
                updated += 1
    return added, updated


async def recipient_id(conn: asyncpg.Connection, job_id: int, recipient: str) -> int:
    """The per-job number of a recipient; erasure.ForgottenRecipient or LookupError when there is none."""
    value = await conn.fetchval(SELECT_RECIPIENT, job_id, recipient)
    if value is None:
        if await erasure.forgotten_among(conn, job_id, [recipient]):
            raise erasure.ForgottenRecipient(job_id, recipient)
        raise LookupError(f"job {job_id} has no recipient {recipient!r}")
    return int(value)


async def all_recipients(conn: asyncpg.Connection, job_id: int) -> list[asyncpg.Record]:
    """(recipient_id, recipient) of every recipient of a job."""
    return list(await conn.fetch(SELECT_RECIPIENTS, job_id))


async def register_links(conn: asyncpg.Connection, job_id: int, urls: list[str]) -> None:
    """Record minted destinations so reports list links nobody clicked yet."""
    from pixeltrack.core.tokens import link_id_for

    await conn.executemany(REGISTER_LINK, [(job_id, link_id_for(u), u) for u in urls])


async def mark_sent(conn: asyncpg.Connection, job_id: int, at: dt.datetime | None = None) -> dt.datetime:
    """Record when a mail job went out (now by default; a naive ``at`` is UTC); return the time stored.

    Link scanners click within seconds of the send; the aggregator can tell
    them only from this time, for clicks it rolls up after it is set. Call it
    when the mail goes out (`pixeltrack job sent J` does the same).
    """
    job = await get_job(conn, job_id)
    if job["kind"] != "mail":
        raise ValueError(f"job {job_id} is a website: only mail jobs are sent")
    sent = as_utc(at) if at is not None else dt.datetime.now(dt.UTC)
    return await conn.fetchval(MARK_SENT, job_id, sent)


async def rolled_clicks_since(conn: asyncpg.Connection, job_id: int, since: dt.datetime) -> tuple[int, dt.datetime]:
    """Clicks of the job already rolled up (judged without a later send time) from the hour of ``since`` on.

    Returns the count and the start of that hour: the roll-up counts clicks per hour.
    """
    hour = since.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return int(await conn.fetchval(ROLLED_CLICKS_SINCE, job_id, hour)), hour
