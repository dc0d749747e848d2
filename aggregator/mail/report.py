"""The report of one job, as a plain dict (rendered by render.py).

Headline numbers are human numbers: total minus machine. Unique counts are
None where the mode cannot know them (blind); per-recipient facts appear only
for personal tracking, demographic cells only for anonymous jobs, with cells
of fewer than k distinct recipients merged into "other".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import asyncpg

from aggregator.mail.reading import documents_section

JOB = "SELECT job_id, name, kind, mode, sent_at FROM jobs WHERE job_id = $1"
RECIPIENT_COUNT = "SELECT count(*) FROM recipients WHERE job_id = $1"
TOTALS = "SELECT kind, total, machine, unique_count, inferred FROM report_job_totals WHERE job_id = $1"
LINKS = """
SELECT coalesce(r.link_id, l.link_id) AS link_id, coalesce(l.url, r.url) AS url,
       coalesce(r.total, 0) AS total, coalesce(r.machine, 0) AS machine,
       coalesce(r.unique_count, 0) AS unique_count
FROM (SELECT * FROM report_links WHERE job_id = $1) r
FULL JOIN (SELECT * FROM links WHERE job_id = $1) l ON l.link_id = r.link_id
ORDER BY coalesce(r.total, 0) - coalesce(r.machine, 0) DESC, 2
"""
RECIPIENTS = """
SELECT a.recipient_id, r.recipient, a.opens, a.machine_opens, a.clicks, a.machine_clicks,
       a.first_open, a.last_open, a.first_click, a.last_click
FROM report_recipients a
LEFT JOIN recipients r ON r.job_id = a.job_id AND r.recipient_id = a.recipient_id
WHERE a.job_id = $1 ORDER BY a.recipient_id
"""
DEMOGRAPHICS = """
SELECT age_band, gender, zip, recipients, opens, unique_opens, clicks, unique_clicks, machine
FROM report_demographics WHERE job_id = $1 ORDER BY age_band, gender, zip
"""
TIMELINE = """
SELECT hour, sum(total - machine) FILTER (WHERE kind = 'open')::bigint AS opens,
       sum(total - machine) FILTER (WHERE kind = 'click')::bigint AS clicks,
       sum(machine) FILTER (WHERE kind = 'open')::bigint AS machine_opens,
       sum(machine) FILTER (WHERE kind = 'click')::bigint AS machine_clicks
FROM report_hourly WHERE job_id = $1 GROUP BY hour ORDER BY hour
"""
BREAKDOWNS = """
SELECT kind, traffic, machine_reason, device_class, os, browser, mail_client, country, hits
FROM report_breakdowns WHERE job_id = $1
"""
DIMENSIONS = ("traffic", "machine_reason", "device_class", "os", "browser", "mail_client", "country")
BLIND_DIMENSIONS = ("traffic", "machine_reason")
CELL_FIELDS = ("recipients", "opens", "unique_opens", "clicks", "unique_clicks", "machine")


class UnknownJob(LookupError):
    """No job has this id."""


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC, or None."""
    return None if value is None else value.astimezone(dt.UTC).isoformat()


def counts(row: asyncpg.Record | None, blind: bool, with_inferred: bool = False) -> dict[str, Any]:
    """total / human / machine / unique (None when blind) for one kind."""
    total, machine = (row["total"], row["machine"]) if row else (0, 0)
    out: dict[str, Any] = {"total": total, "human": total - machine, "machine": machine}
    out["unique"] = None if blind else (row["unique_count"] if row else 0)
    if with_inferred:
        out["inferred"] = None if blind else (row["inferred"] if row else 0)
    return out


def link_entries(rows: Iterable[asyncpg.Record], blind: bool) -> list[dict[str, Any]]:
    """One entry per tracked or clicked link."""
    return [
        {"link_id": r["link_id"], "url": r["url"], "clicks": r["total"] - r["machine"],
         "unique_clicks": None if blind else r["unique_count"], "machine": r["machine"], "total": r["total"]}
        for r in rows
    ]  # fmt: skip


def recipient_entries(rows: Iterable[asyncpg.Record]) -> list[dict[str, Any]]:
    """Per-recipient facts; an open is inferred when they clicked with images blocked."""
    return [
        {"recipient_id": r["recipient_id"], "recipient": r["recipient"], "opens": r["opens"],
         "clicks": r["clicks"], "first_open": iso(r["first_open"]), "last_open": iso(r["last_open"]),
         "first_click": iso(r["first_click"]), "last_click": iso(r["last_click"]),
         "open_inferred": r["opens"] == 0 and r["clicks"] > 0,
         "machine_opens": r["machine_opens"], "machine_clicks": r["machine_clicks"]}
        for r in rows
    ]  # fmt: skip


def demographic_cells(rows: Iterable[asyncpg.Record], k: int) -> list[dict[str, Any]]:
    """Cells with at least k distinct recipients, then the rest merged as "other"."""
    shown: list[dict[str, Any]] = []
    other = dict.fromkeys(CELL_FIELDS, 0)
    merged = 0
    for r in rows:
        if r["recipients"] >= k:
            shown.append({"age_band": r["age_band"], "gender": r["gender"], "zip": r["zip"]}
                         | {f: r[f] for f in CELL_FIELDS})  # fmt: skip
        else:
            merged += 1
            other = {f: other[f] + r[f] for f in CELL_FIELDS}
    if merged:
        shown.append({"age_band": "other", "gender": "other", "zip": "other"} | other)
    return shown


def breakdowns(rows: Iterable[asyncpg.Record], blind: bool) -> dict[str, dict[str, dict[str, int]]]:
    """Per dimension and value: human opens, human clicks, machine hits."""
    dims = BLIND_DIMENSIONS if blind else DIMENSIONS
    out: dict[str, dict[str, dict[str, int]]] = {d: {} for d in dims}
    for r in rows:
        machine = r["traffic"] == "machine"
        field = "machine" if machine else {"open": "opens", "click": "clicks"}.get(r["kind"], "views")
        for dim in dims:
            cell = out[dim].setdefault(r[dim] or "unknown", {"opens": 0, "clicks": 0, "views": 0, "machine": 0})
            cell[field] += r["hits"]
    return out


async def build_report(conn: asyncpg.Connection, job_id: int, k: int = 5) -> dict[str, Any]:
    """The report of ``job_id`` from the report tables."""
    job = await conn.fetchrow(JOB, job_id)
    if job is None:
        raise UnknownJob(f"no job {job_id}")
    mode, blind = job["mode"], job["mode"] == "blind"
    totals = {r["kind"]: r for r in await conn.fetch(TOTALS, job_id)}
    report: dict[str, Any] = {
        "job": job_id, "name": job["name"], "kind": job["kind"], "mode": mode,
        "sent_at": iso(job["sent_at"]), "recipients_count": await conn.fetchval(RECIPIENT_COUNT, job_id),
        "opens": counts(totals.get("open"), blind, with_inferred=True),
        "clicks": counts(totals.get("click"), blind),
        # Clicks seconds after the send are link scanners; without the send time that rule cannot apply.
        "send_time": {"sent_at": iso(job["sent_at"]), "rule_applied": job["sent_at"] is not None},
    }  # fmt: skip
    views = {kind: counts(row, blind) for kind, row in totals.items() if kind not in ("open", "click")}
    if views:
        report["views"] = views
    report["links"] = link_entries(await conn.fetch(LINKS, job_id), blind)
    if mode in ("personal", "permission_personal"):
        report["recipients"] = recipient_entries(await conn.fetch(RECIPIENTS, job_id))
    if mode == "anonymous":
        report["k_anonymity"] = k
        report["demographics"] = demographic_cells(await conn.fetch(DEMOGRAPHICS, job_id), k)
    report["timeline"] = [
        {"hour": iso(r["hour"]), "opens": r["opens"] or 0, "clicks": r["clicks"] or 0,
         "machine_opens": r["machine_opens"] or 0, "machine_clicks": r["machine_clicks"] or 0}
        for r in await conn.fetch(TIMELINE, job_id)
    ]  # fmt: skip
    report["breakdowns"] = breakdowns(await conn.fetch(BREAKDOWNS, job_id), blind)
    documents = await documents_section(conn, job_id, mode)  # document pages read, where there are any
    if documents is not None:
        report["documents"] = documents
    return report
