"""Triggers as the operator manages them: create (under the mode rules), list, delete, deliveries, replay.

Never beyond the mode: per-recipient events (first open, click, document
page, document read) exist only for personal jobs and the consenting
recipients of permission-based jobs; a site's identified contacts only on
personal sites. Anonymous, unique and blind jobs get aggregate events
(``job.threshold``) only, and anything else is refused with the reason.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from aggregator.triggers.signing import new_secret
from aggregator.triggers.targets import TargetRefused, check_email, check_webhook

PER_RECIPIENT = ("open.first", "click", "doc.page", "doc.read")
MAIL_EVENTS = (*PER_RECIPIENT, "job.threshold")
SITE_EVENTS = ("site.contact",)
EVENTS = (*MAIL_EVENTS, *SITE_EVENTS)
IDENTITY_MODES = ("personal", "permission_personal")
COUNTED = ("opens", "clicks")

JOB = "SELECT job_id, name, kind, mode FROM jobs WHERE job_id = $1"
INSERT = """
INSERT INTO triggers (job_id, event, filters, target_kind, target, secret, created_at, scanned_to)
VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $7) RETURNING trigger_id
"""
LIST = """
SELECT t.trigger_id, t.job_id, j.kind AS job_kind, j.name, t.event, t.filters::text AS filters, t.target_kind,
       t.target, t.created_at, t.scanned_to,
       count(e.*) FILTER (WHERE e.status = 'pending') AS pending,
       count(e.*) FILTER (WHERE e.status = 'delivered') AS delivered,
       count(e.*) FILTER (WHERE e.status = 'dead') AS dead
FROM triggers t JOIN jobs j ON j.job_id = t.job_id
LEFT JOIN trigger_events e ON e.trigger_id = t.trigger_id
GROUP BY t.trigger_id, j.kind, j.name ORDER BY t.trigger_id
"""
DELETE = "DELETE FROM triggers WHERE trigger_id = $1"
DELIVERIES = """
SELECT delivery_id, event_id, trigger_id, type, occurred_at, created_at, status, attempts, next_at,
       retry_until, delivered_at, last_error
FROM trigger_events WHERE $1::bigint IS NULL OR trigger_id = $1 ORDER BY delivery_id
"""
ATTEMPTS = """
SELECT a.delivery_id, a.attempt, a.started_at, a.seconds, a.ok, a.http_status, a.error
FROM trigger_attempts a JOIN trigger_events e USING (delivery_id)
WHERE $1::bigint IS NULL OR e.trigger_id = $1 ORDER BY a.delivery_id, a.attempt
"""
REPLAY = """
UPDATE trigger_events SET status = 'pending', next_at = $2::timestamptz,
    retry_until = $2::timestamptz + $3::float8 * interval '1 second',
    leased_until = NULL, lease_owner = NULL, delivered_at = NULL
WHERE delivery_id = $1 RETURNING delivery_id
"""


class TriggerRefused(ValueError):
    """A trigger that may not exist; the message says why."""


@dataclass(frozen=True)
class TriggerSpec:
    """What `pixeltrack trigger create` asks for."""

    event: str
    job_id: int | None = None
    site_id: int | None = None
    webhook: str | None = None
    secret: str | None = None
    email: str | None = None
    link: str | None = None
    page: int | None = None
    seconds: int | None = None
    url_pattern: str | None = None
    count: int | None = None
    of: str | None = None

    @property
    def owner(self) -> int:
        """The job or site watched."""
        owner = self.site_id if self.site_id is not None else self.job_id
        if owner is None:
            raise TriggerRefused("a trigger watches a job (--job J) or a site (--site S)")
        return owner


def check_filters(spec: TriggerSpec) -> dict[str, Any]:
    """The filters of ``spec`` as stored, refusing those its event does not take."""
    allowed = {"click": {"link"}, "doc.page": {"page"}, "doc.read": {"seconds"}, "site.contact": {"url_pattern"},
               "job.threshold": {"count", "of"}}.get(spec.event, set())  # fmt: skip
    names = ("link", "page", "seconds", "url_pattern", "count", "of")
    given = {k: v for k in names if (v := getattr(spec, k)) is not None}
    extra = sorted(set(given) - allowed)
    if extra:
        flags = ", ".join("--" + name.replace("_", "-") for name in extra)
        raise TriggerRefused(f"{flags} does not apply to {spec.event} events")
    if spec.event == "doc.read" and (spec.seconds is None or spec.seconds < 1):
        raise TriggerRefused("doc.read needs --seconds N (N >= 1): the reading time in all that raises it")
    if spec.event == "job.threshold":
        if spec.count is None or spec.count < 1:
            raise TriggerRefused("job.threshold needs --count N (N >= 1)")
        given["of"] = spec.of or "opens"
        if given["of"] not in COUNTED:
            raise TriggerRefused(f"--of is opens or clicks, not {given['of']!r}")
    if spec.page is not None and spec.page < 1:
        raise TriggerRefused("--page counts from 1")
    return given


def check_mode(spec: TriggerSpec, job: asyncpg.Record | None) -> None:
    """Refuse an event the job's (or site's) mode may not give, saying why."""
    noun = "site" if spec.site_id is not None else "job"
    if job is None or (job["kind"] == "site") != (noun == "site"):
        raise TriggerRefused(f"no {noun} {spec.owner}" + (" (it is a site: use --site)" if job else ""))
    if spec.event not in EVENTS:
        raise TriggerRefused(f"unknown event {spec.event!r}; one of {', '.join(EVENTS)}")
    if noun == "site":
        if spec.event not in SITE_EVENTS:
            raise TriggerRefused(f"a site raises only {', '.join(SITE_EVENTS)}; {spec.event} needs a mail job")
        if job["mode"] != "personal":
            raise TriggerRefused(
                f"site {spec.owner} is {job['mode']}: it keeps no identity, so no contact can be told; "
                "site.contact needs a personal site"
            )
        return
    if spec.event in SITE_EVENTS:
        raise TriggerRefused(f"{spec.event} watches a site: use --site S")
    if spec.event in PER_RECIPIENT and job["mode"] not in IDENTITY_MODES:
        raise TriggerRefused(
            f"job {spec.owner} is {job['mode']}: it keeps no identity, so {spec.event} (an event about one "
            "recipient) cannot exist; only job.threshold (counts) can be triggered on it"
        )


async def create_trigger(
    conn: asyncpg.Connection, spec: TriggerSpec, *, allow_private: bool = False, now: dt.datetime | None = None
) -> tuple[int, str | None]:
    """Create the trigger; return its id and its signing secret (made when a webhook has none)."""
    if (spec.webhook is None) == (spec.email is None):
        raise TriggerRefused("a trigger goes to one --webhook URL or one --email ADDRESS")
    check_mode(spec, await conn.fetchrow(JOB, spec.owner))
    filters = check_filters(spec)
    try:
        if spec.webhook is not None:
            await check_webhook(spec.webhook, allow_private)
        else:
            check_email(spec.email or "")
    except TargetRefused as exc:
        raise TriggerRefused(str(exc)) from None
    if spec.email is not None and spec.secret is not None:
        raise TriggerRefused("--secret signs webhooks; an e-mail alert has none")
    secret = (spec.secret or new_secret()) if spec.webhook is not None else None
    kind, target = ("webhook", spec.webhook) if spec.webhook is not None else ("email", spec.email)
    trigger_id = await conn.fetchval(INSERT, spec.owner, spec.event, json.dumps(filters), kind, target, secret,
                                     now or dt.datetime.now(dt.UTC))  # fmt: skip
    return int(trigger_id), secret


async def list_triggers(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every trigger with its delivery counts."""
    return list(await conn.fetch(LIST))


async def delete_trigger(conn: asyncpg.Connection, trigger_id: int) -> bool:
    """Delete a trigger and its outbox; False when there is none."""
    return bool(await conn.execute(DELETE, trigger_id) != "DELETE 0")


async def deliveries(
    conn: asyncpg.Connection, trigger_id: int | None = None
) -> tuple[list[asyncpg.Record], dict[int, list[asyncpg.Record]]]:
    """Deliveries (of one trigger or all) and every attempt of each."""
    attempts: dict[int, list[asyncpg.Record]] = {}
    for a in await conn.fetch(ATTEMPTS, trigger_id):
        attempts.setdefault(a["delivery_id"], []).append(a)
    return list(await conn.fetch(DELIVERIES, trigger_id)), attempts


async def replay(conn: asyncpg.Connection, delivery_id: int, retry_for: float, now: dt.datetime | None = None) -> bool:
    """Queue a delivery again (same event id: receivers drop what they already have); False when unknown."""
    return await conn.fetchval(REPLAY, delivery_id, now or dt.datetime.now(dt.UTC), retry_for) is not None
